"""The rules of the repository's root conftest.py.

A notebook whose kernel dies (as the out-of-memory killer does it) fails within seconds under nbval,
with a message that says so, instead of hanging until the cell timeout; here the root conftest.py
is loaded as a plugin (`-p conftest`) for a notebook outside the repository. And the `slow` marker
is given by rule, so that notebooks added later are covered."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 300  # what nbval alone would wait for on a dead kernel


@pytest.mark.slow
def test_a_dead_kernel_fails_fast_and_says_why(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("import os, signal, time\nos.kill(os.getpid(), signal.SIGKILL)\ntime.sleep(600)"),
        nbformat.v4.new_code_cell("print(x)"),
    ])
    nbformat.write(notebook, tmp_path / "dies.ipynb")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "--nbval",
         "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT}", "dies.ipynb"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=2 * CELL_TIMEOUT,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # nbval alone would report "Timeout of 300 seconds exceeded" after waiting that long
    assert "the notebook's kernel died while this cell ran" in result.stdout, result.stdout
    assert "Timeout" not in result.stdout, result.stdout
    assert "1 passed" in result.stdout and "2 failed" in result.stdout, result.stdout


def test_the_slow_rule_covers_notebooks_added_later():
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    assert not rules.is_slow(REPO / "notebooks" / "03_federated_rounds.ipynb")
    assert not rules.is_slow(REPO / "tests" / "test_data.py")
    for slow in ("notebooks/06_homomorphic_encryption.ipynb", "notebooks/14_not_written_yet.ipynb",
                 "solutions/01_solutions.ipynb", "tests/test_browser.py"):
        assert rules.is_slow(REPO / slow), slow
