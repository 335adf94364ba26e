"""Run the cells of a course notebook that build something, to use or test what they build.

Notebook 01 builds its ``Tensor`` cell by cell; the cells that do are tagged ``build`` (in the
cell's metadata). Solution 01 continues from them, and the tests prove that what they build agrees
with the package. Both run them with this one function, so there is one loader:

    namespace = notebook_cells.run_build_cells("01")   # notebook 01's tagged cells, in order
    Tensor = namespace["Tensor"]

It reads the notebook as JSON (no Jupyter needed) and finds it from this file's location, so it
works wherever Jupyter or pytest was started.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"

__all__ = ["run_build_cells", "build_cells"]


def _notebook_path(notebook) -> Path:
    """A path as given, or notebooks/NN_*.ipynb for a number such as "01" or 1."""
    if isinstance(notebook, Path) or (isinstance(notebook, str) and notebook.endswith(".ipynb")):
        path = Path(notebook)
        if not path.is_file():
            raise FileNotFoundError(f"no notebook at {path}")
        return path
    if isinstance(notebook, bool) or not isinstance(notebook, (int, str)) or not str(notebook).isdigit():
        raise TypeError(f"notebook must be a number such as '01' or a path to an .ipynb file, got {notebook!r}")
    matches = sorted(NOTEBOOKS_DIR.glob(f"{int(notebook):02d}_*.ipynb"))
    if len(matches) != 1:
        raise FileNotFoundError(
            f"expected one notebook {int(notebook):02d}_*.ipynb in {NOTEBOOKS_DIR}, found {len(matches)}: "
            f"run from a copy of the course's repository, where notebooks/ sits beside grokfl_helpers/"
        )
    return matches[0]


def build_cells(notebook, tag: str = "build") -> list[str]:
    """The sources of the code cells of ``notebook`` (a number such as "01", or a path) tagged
    ``tag``, in order. Taught in solution 01, Exercise 1 (with run_build_cells)."""
    path = _notebook_path(notebook)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "code" and tag in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    if not sources:
        raise ValueError(f"{path.name} has no code cells tagged {tag!r}")
    return sources


def run_build_cells(notebook, namespace: dict | None = None, tag: str = "build") -> dict:
    """Execute the code cells of ``notebook`` tagged ``tag``, in order, in ``namespace`` (a new one
    holding ``np`` if None; pass ``globals()`` to define their names in a notebook), and return it.
    Taught in solution 01, Exercise 1.
    """
    path = _notebook_path(notebook)
    namespace = {"np": np} if namespace is None else namespace
    for source in build_cells(path, tag):
        exec(compile(source, str(path), "exec"), namespace)
    return namespace
