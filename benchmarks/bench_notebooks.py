"""Seconds to run each notebook top to bottom in a fresh kernel, with the data cache warm, against
its time budget, and the total.

    python benchmarks/bench_notebooks.py              # every notebook in notebooks/, once
    python benchmarks/bench_notebooks.py 06 09        # only these notebooks
    python benchmarks/bench_notebooks.py --repeats 3  # best of 3 per notebook (the machine is shared)
    python benchmarks/bench_notebooks.py 08 --cells 5 # and where the time goes: the 5 slowest cells

Every notebooks/NN_*.ipynb is timed (found by globbing, so a new notebook is covered without
editing this file). Budgets, on an idle 2-core machine:
  - notebooks 01-04 together: 60 s (issue 3's bar);
  - 05, 06, 07, 08, 09, 10, 11: 60 s each;
  - 12, 13: 120 s each;
  - any other number: no budget yet, its time is printed.
The corpus is loaded here first (which prepares and caches it if needed), so no notebook pays for
that; each notebook is then executed by nbclient in a new kernel, from the notebooks/ folder as
Jupyter runs it, and its outputs are thrown away: the stored notebooks are never modified. A
notebook's time includes starting its kernel (printed separately, measured on an empty notebook).
Exit status 1 if a notebook fails or a budget is exceeded.

Timings on a machine shared with other work are noisy; --repeats takes the best of several runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
TOGETHER = ("01", "02", "03", "04")  # budgeted as one group
TOGETHER_BUDGET = 60.0
BUDGETS = {"05": 60.0, "06": 60.0, "07": 60.0, "08": 60.0, "09": 60.0, "10": 60.0, "11": 60.0,
           "12": 120.0, "13": 120.0}


def run_notebook(notebook: nbformat.NotebookNode) -> tuple[float, list[tuple[float, int, str]]]:
    """Execute a copy of ``notebook`` in a fresh kernel; return the wall-clock seconds it took, and
    each code cell's (seconds, index, first line), from the timings nbclient records."""
    client = NotebookClient(
        nbformat.from_dict(notebook), timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}}, record_timing=True,
    )
    start = time.perf_counter()
    executed = client.execute()
    seconds = time.perf_counter() - start
    cells = []
    for index, cell in enumerate(executed.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            began, ended = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                            for key in ("iopub.execute_input", "shell.execute_reply"))
            cells.append(((ended - began).total_seconds(), index, cell.source.splitlines()[0] if cell.source else ""))
    return seconds, cells


def best_of(notebook, repeats: int) -> tuple[float, list]:
    return min((run_notebook(notebook) for _ in range(repeats)), key=lambda result: result[0])


def budget_of(number: str):
    return TOGETHER_BUDGET if number in TOGETHER else BUDGETS.get(number)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers to time, e.g. 06 09 (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per notebook; the best is kept (default 1)")
    parser.add_argument("--cells", type=int, default=0, metavar="N", help="also print each notebook's N slowest cells")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.numbers:
        wanted = {number.zfill(2) for number in args.numbers}
        unknown = wanted - {path.name[:2] for path in paths}
        if unknown:
            parser.error(f"no notebook numbered {', '.join(sorted(unknown))} in {NOTEBOOKS}")
        paths = [path for path in paths if path.name[:2] in wanted]
    if not paths:
        print(f"no notebooks in {NOTEBOOKS}: nothing to time")
        return 1

    from grokfl_helpers.data import load_enron

    start = time.perf_counter()
    load_enron(verbose=False)  # prepares the cache if needed, so no notebook pays for it
    print(f"data cache warm (load_enron took {time.perf_counter() - start:.1f} s in this process)")

    kernel_start, _ = best_of(nbformat.v4.new_notebook(), args.repeats)
    print(f"starting a kernel alone: {kernel_start:.1f} s (included in each time below)\n")

    seconds, failed, over = {}, [], []
    print(f"{'notebook':<36} {'seconds':>8}  budget")
    for path in paths:
        number = path.name[:2]
        try:
            seconds[number], cells = best_of(nbformat.read(path, as_version=4), args.repeats)
        except CellExecutionError as error:
            print(f"{path.name:<36}   FAILED  {error.ename}: {error.evalue}")
            failed.append(path.name)
            continue
        budget = budget_of(number)
        if number in TOGETHER:
            verdict = f"(01-04 together: {TOGETHER_BUDGET:.0f} s)"
        elif budget is None:
            verdict = "(none yet)"
        else:
            verdict = f"{budget:.0f} s: " + ("ok" if seconds[number] <= budget else "OVER")
            if seconds[number] > budget:
                over.append(path.name)
        print(f"{path.name:<36} {seconds[number]:8.1f}  {verdict}")
        if args.cells:
            slowest = sorted(cells, reverse=True)
            for cell_seconds, index, first_line in slowest[:args.cells]:
                print(f"    cell {index:>3} {cell_seconds:6.1f} s  {first_line[:70]}")
            in_cells = sum(cell[0] for cell in cells)
            print(f"    the other {len(slowest[args.cells:])} code cells {sum(c[0] for c in slowest[args.cells:]):.1f} s; "
                  f"outside cells (the kernel's start, nbclient) {seconds[number] - in_cells:.1f} s")

    together = [number for number in TOGETHER if number in seconds]
    if together:
        group = sum(seconds[number] for number in together)
        complete = len(together) == len(TOGETHER)
        label = "01-04 together" if complete else f"{', '.join(together)} (of 01-04) together"
        ok = group <= TOGETHER_BUDGET
        print(f"{label:<36} {group:8.1f}  {TOGETHER_BUDGET:.0f} s: {'ok' if ok else 'OVER'}")
        if not ok:
            over.append("01-04 together")
    print(f"{'total':<36} {sum(seconds.values()):8.1f}  ({len(seconds)} notebooks timed)")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    if over:
        print(f"over budget: {', '.join(over)}")
    return 1 if failed or over else 0


if __name__ == "__main__":
    sys.exit(main())
