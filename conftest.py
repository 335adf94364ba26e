"""Rules for every pytest run in this repository, also `pytest notebooks/NN_x.ipynb` run alone
(which would not load tests/conftest.py, where the unit tests' fixtures are):

- the `slow` marker (registered in pyproject.toml) is given by rule, not by hand, so notebooks added
  later are covered: `pytest -m "not slow"` is the quick run;
- nbval: a cell whose kernel has died (killed for lack of memory, say) fails within seconds, saying
  so, instead of waiting for the cell timeout (--nbval-cell-timeout in pyproject.toml).
"""

import time
from pathlib import Path
from queue import Empty

import pytest

# The quick run re-runs notebooks 01-05 under nbval (together about half a minute on an idle 2-core
# machine). Every later notebook (06 homomorphic encryption, 07 DP, 08 Flower, all of Part II) and
# every solution (01-05's together take about as long again) is slow: the full run checks them.
LAST_QUICK_NOTEBOOK = 5
# Test files that are slow as a whole: the browser test drives JupyterLab in Chromium.
SLOW_TEST_FILES = {"test_browser.py"}


def is_slow(path: Path) -> bool:
    """Whether every item collected from this file is slow (see LAST_QUICK_NOTEBOOK)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        prefix = path.name.split("_", 1)[0]
        quick = path.parent.name == "notebooks" and prefix.isdigit() and int(prefix) <= LAST_QUICK_NOTEBOOK
        return not quick
    return path.name in SLOW_TEST_FILES


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_slow(Path(str(item.path))):
            item.add_marker(pytest.mark.slow)


# --- nbval: a dead kernel fails fast ---------------------------------------------------------------

POLL_SECONDS = 2.0


def _await_reply_while_alive(self, msg_id, timeout=None):
    """nbval's RunningKernel.await_reply, polling every few seconds whether the kernel still lives.
    nbval alone waits for the whole cell timeout (--nbval-cell-timeout) on a dead kernel."""
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    while True:
        wait = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            raise Empty
        try:
            msg = self.get_message(stream="shell", timeout=wait)
        except Empty:
            if not self.is_alive():
                raise RuntimeError(
                    "the notebook's kernel died while this cell ran (killed by the operating system, "
                    "most often for lack of memory: the course needs about 2 GB); the cells after it "
                    "fail with 'Kernel dead on test start'"
                ) from None
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["content"]["status"] == "aborted":
                raise RuntimeError("Kernel aborted execution request")
            return


def pytest_configure(config):
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # nbval not installed: no notebook items to guard
        return
    RunningKernel.await_reply = _await_reply_while_alive
