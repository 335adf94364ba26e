"""What is installed is what was tested: every version pinned in requirements.txt (the direct
dependencies) and constraints.txt (everything they bring) is the one installed.

nbval compares every stored output strictly, so a package that moved (a newer numpy, matplotlib,
Flower) can change a printed number with no commit here. This fails first, and says what to update.
"""

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
HOW_TO_UPDATE = (
    "Either install the tested versions (`pip install -r requirements.txt` from the repository root), "
    "or, to move the course to the installed ones: run the full `pytest`, re-run the notebooks "
    "(scripts/execute_notebooks.py), then write the new versions into requirements.txt and regenerate "
    "constraints.txt as its header says."
)


def pins(path: Path) -> dict:
    """{canonical name: (version, line)} of every `name==version` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # exactly one specifier, and it must be ==
        assert spec.operator == "==", f"{path.name}: {line!r} is not pinned with =="
        found[canonicalize_name(requirement.name)] = (spec.version, line)
    return found


def installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


DIRECT = pins(REPO / "requirements.txt")
ALL = pins(REPO / "constraints.txt")


def test_requirements_use_the_constraints_and_agree_with_them():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert "-c constraints.txt" in lines, "requirements.txt must read constraints.txt (-c constraints.txt)"
    for name, (version, line) in DIRECT.items():
        assert name in ALL, f"{line!r} of requirements.txt is missing from constraints.txt"
        assert ALL[name][0] == version, f"requirements.txt pins {line!r}, constraints.txt {ALL[name][1]!r}"


def test_direct_dependencies_are_installed_at_their_pins():
    wrong = [f"  {line}: installed {installed(name) or 'nothing'}"
             for name, (version, line) in DIRECT.items() if installed(name) != version]
    assert not wrong, "requirements.txt pins differ from what is installed:\n" + "\n".join(wrong) + "\n" + HOW_TO_UPDATE


def test_every_installed_pinned_package_is_at_its_pin():
    # A pinned package that is not installed at all (one only some platforms need) is left alone.
    wrong = [f"  {line}: installed {installed(name)}"
             for name, (version, line) in ALL.items() if installed(name) not in (None, version)]
    assert not wrong, "constraints.txt pins differ from what is installed:\n" + "\n".join(wrong) + "\n" + HOW_TO_UPDATE


@pytest.mark.parametrize("path", ["pyproject.toml", "flower_app/pyproject.toml", "README.md", "runtime.txt"])
def test_every_place_says_python_3_11(path):
    text = (REPO / path).read_text()
    old = re.search(r"python[^\n]{0,30}3\.(10|[0-9])\b", text, flags=re.IGNORECASE)
    assert not old, f"{path} says {old.group(0)!r}; flwr 1.42 needs Python 3.11 or newer"
    assert re.search(r"3\.11", text), f"{path} should say Python 3.11"
