"""Execute notebooks top to bottom in a fresh kernel and store them with their outputs, the way the
course keeps them: no execution timestamps, volatile outputs marked by nbval's cell tags.

    python scripts/execute_notebooks.py notebooks/09_heterogeneity.ipynb solutions/09_solutions.ipynb
    python scripts/execute_notebooks.py --check notebooks/*.ipynb solutions/*.ipynb   # what CI checks

Each notebook runs from its own folder (as JupyterLab runs it) with the data cache warm; a notebook
that raises is not written, and the error is printed. ``--check`` executes nothing: it fails if a
stored notebook has execution timestamps, execution counts that are not 1, 2, 3, … from a fresh
kernel, an error output, or an ``NBVAL_`` comment a learner would read (use the cell tag
``nbval-ignore-output`` instead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

IGNORE_COMMENT = "# NBVAL_IGNORE_OUTPUT"
IGNORE_TAG = "nbval-ignore-output"


def tidy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip execution timestamps and turn a visible ``# NBVAL_IGNORE_OUTPUT`` line into nbval's tag."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        if lines and lines[0].strip() == IGNORE_COMMENT:
            cell.source = "\n".join(lines[1:])
            tags = cell.metadata.setdefault("tags", [])
            if IGNORE_TAG not in tags:
                tags.append(IGNORE_TAG)
    return notebook


def problems(path: Path) -> list[str]:
    """What is wrong with a stored notebook, as ``--check`` and the tests see it."""
    notebook = nbformat.read(path, as_version=4)
    found = []
    counts = [cell.get("execution_count") for cell in notebook.cells
              if cell.cell_type == "code" and cell.source.strip()]
    if counts and counts != list(range(1, len(counts) + 1)):
        found.append(f"{path}: not stored as one fresh top-to-bottom run (execution counts {counts[:8]}...)")
    if any("execution" in cell.metadata for cell in notebook.cells):
        found.append(f"{path}: stores execution timestamps (run scripts/execute_notebooks.py, which strips them)")
    if any(output.get("output_type") == "error" for cell in notebook.cells for output in cell.get("outputs", [])):
        found.append(f"{path}: a stored output is an error")
    if any(cell.cell_type == "code" and "NBVAL_" in cell.source for cell in notebook.cells):
        found.append(f"{path}: a cell shows an NBVAL_ comment to the learner; use the cell tag {IGNORE_TAG!r}")
    return found


def execute(path: Path, timeout: int) -> float:
    notebook = tidy(nbformat.read(path, as_version=4))
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(tidy(notebook), path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="check the stored notebooks; execute nothing")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    if args.check:
        found = [problem for path in args.paths for problem in problems(path)]
        print("\n".join(found) if found else f"{len(args.paths)} notebooks stored as they should be")
        return 1 if found else 0
    failed = 0
    for path in args.paths:
        try:
            print(f"{path}: {execute(path, args.timeout):.1f} s", flush=True)
        except CellExecutionError as error:
            failed += 1
            print(f"{path}: FAILED, not written\n{error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
