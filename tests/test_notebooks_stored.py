"""Every notebook and solution is stored as a learner should find it: executed top to bottom from a
fresh kernel, with no error output, no execution timestamps, and no test machinery in sight."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from execute_notebooks import problems  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_notebook_is_stored_executed_and_tidy(path):
    found = problems(path)
    assert not found, "\n".join(found) + "\nRe-run it with: python scripts/execute_notebooks.py " + str(path.relative_to(REPO))


def test_the_check_catches_a_timestamp_and_a_visible_marker(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\n1 + 1")])
    notebook.cells[0].execution_count = 1
    notebook.cells[0].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    path = tmp_path / "bad.ipynb"
    nbformat.write(notebook, path)
    found = problems(path)
    assert any("timestamps" in problem for problem in found)
    assert any("NBVAL_" in problem for problem in found)
