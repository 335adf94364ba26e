"""Seconds to run notebooks 01-04 top to bottom, each in a fresh kernel, with the data cache warm.

    python benchmarks/bench_notebooks.py              # each notebook once
    python benchmarks/bench_notebooks.py --repeats 3  # best of 3 per notebook (the machine is shared)

Issue 3's bar: notebooks 01-04 together run in <= 60 s once the Enron-Spam corpus has been prepared.
So the corpus is loaded here first (which prepares and caches it if needed); each notebook is then
executed by nbclient in a new kernel, from the notebooks/ folder as Jupyter runs it, and its outputs
are thrown away: the stored notebooks are never modified. A notebook's time includes starting its
kernel (printed separately, measured on an empty notebook). Notebooks that do not exist yet are
listed and skipped; the total is then over those that exist. Exit status 1 if a notebook fails or
the total is over the bar.

Timings on a machine shared with other work are noisy; --repeats takes the best of several runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
NUMBERS = ("01", "02", "03", "04")
BAR_SECONDS = 60.0


def run_notebook(notebook: nbformat.NotebookNode) -> float:
    """Execute a copy of ``notebook`` in a fresh kernel; return the wall-clock seconds it took."""
    client = NotebookClient(
        nbformat.from_dict(notebook), timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def best_of(notebook, repeats: int) -> float:
    return min(run_notebook(notebook) for _ in range(repeats))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per notebook; the best is kept (default 1)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    found, missing = {}, []
    for number in NUMBERS:
        paths = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
        if paths:
            found[number] = paths[0]
        else:
            missing.append(number)
    if not found:
        print(f"no notebooks 01-04 in {NOTEBOOKS}: nothing to time")
        return 1

    from grokfl_helpers.data import load_enron

    start = time.perf_counter()
    load_enron(verbose=False)  # prepares the cache if needed, so no notebook pays for it
    print(f"data cache warm (load_enron took {time.perf_counter() - start:.1f} s in this process)")

    kernel_start = best_of(nbformat.v4.new_notebook(), args.repeats)
    print(f"starting a kernel alone: {kernel_start:.1f} s (included in each time below)")

    total, failed = 0.0, []
    for number, path in found.items():
        try:
            seconds = best_of(nbformat.read(path, as_version=4), args.repeats)
        except CellExecutionError as error:
            print(f"{path.name:<32} FAILED: {error.ename}: {error.evalue}")
            failed.append(path.name)
            continue
        total += seconds
        print(f"{path.name:<32} {seconds:6.1f} s")

    if missing:
        print(f"not written yet, skipped: notebook(s) {', '.join(missing)}")
    label = "total" if not missing else f"total of the {len(found) - len(failed)} timed"
    verdict = "PASS" if total <= BAR_SECONDS and not failed else "FAIL"
    print(f"{label}: {total:.1f} s (bar: <= {BAR_SECONDS:.0f} s for notebooks 01-04): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
