"""How long the Enron-Spam corpus takes to prepare (cold) and to load from its cache (warm).

    python benchmarks/bench_data.py

Cold: load_enron() into a fresh temporary folder, so the six archives are read, checked and
tokenized and the cache is written. Warm: load_enron() again, from that cache (best and median of
five). Bars: cold <= 15 s, warm <= 1 s.

Memory (Linux): a warm load in a fresh process, its peak resident memory and its anonymous memory
at the end (what the process holds for itself; file pages mapped from the cache are shared with
every other process that maps them, and the kernel can drop and re-read them). The default split's
rows are memory-mapped from the cache (data.DEFAULT_SPLIT), so the 65 MB training matrix is shared
by every process that loads the corpus instead of being built by each; the same load with the rows
built in memory is printed beside it. The archives come from $GROKFL_DATA, or the repository's
data/ (downloaded there first if absent); nothing is written outside the temporary folder.
On a shared machine the figures are noisy: run it twice before believing a miss.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grokfl_helpers import data

COLD_BAR, WARM_BAR = 15.0, 1.0


def seconds(action):
    """Wall-clock seconds, and CPU seconds of this process (less sensitive to a busy machine)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - start, time.process_time() - start_cpu


MEASURE = """
import json, sys
from grokfl_helpers import data
if sys.argv[2] == "in-memory":
    data.DEFAULT_SPLIT = (0, 0, 0)  # no split is memory-mapped
corpus = data.load_enron(sys.argv[1], verbose=False)
corpus.train_x.sum(), corpus.test_x.sum()  # touch every row, as training does
def kilobytes(path, field):  # /proc: ru_maxrss would include the parent's peak from before exec
    return next(int(line.split()[1]) for line in open(path) if line.startswith(field + ":")) * 1024
print(json.dumps({"peak": kilobytes("/proc/self/status", "VmHWM"),
                  "anonymous": kilobytes("/proc/self/smaps_rollup", "Anonymous")}))
"""


def memory(folder, how):
    """Peak resident and anonymous bytes of a fresh process that loads the corpus warm (Linux)."""
    result = subprocess.run([sys.executable, "-c", MEASURE, folder, how], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> int:
    archives = data.ensure_archives()
    with tempfile.TemporaryDirectory(prefix="grokfl-bench-data-") as folder:
        for path in archives:  # the cache goes to the temporary folder, beside links to the archives
            (Path(folder) / path.name).symlink_to(path)
        os.environ.pop(data.DATA_ENV, None)
        cold, cold_cpu = seconds(lambda: data.load_enron(folder, verbose=False))
        warm_both = [seconds(lambda: data.load_enron(folder, verbose=False)) for _ in range(5)]
        warm = [wall for wall, _ in warm_both]
        warm_cpu = min(cpu for _, cpu in warm_both)
        corpus = data.load_enron(folder, verbose=False)
        mapped, in_memory = memory(folder, "mapped"), memory(folder, "in-memory")
    print(f"corpus: {corpus.n_emails:,} emails, vocabulary {len(corpus.vocab):,} words, "
          f"train {corpus.train_x.shape}, test {corpus.test_x.shape}, {corpus.n_truncated} truncated")
    print(f"cold preparation: {cold:6.2f} s wall ({cold_cpu:.2f} s CPU)   "
          f"bar {COLD_BAR:.0f} s: {'ok' if cold <= COLD_BAR else 'OVER THE BAR'}")
    print(f"warm load:        {min(warm):6.2f} s wall best, {statistics.median(warm):.2f} s median of {len(warm)} "
          f"({warm_cpu:.2f} s CPU)   bar {WARM_BAR:.0f} s: {'ok' if min(warm) <= WARM_BAR else 'OVER THE BAR'}")
    for label, used in (("rows memory-mapped (as load_enron does)", mapped), ("rows built in memory", in_memory)):
        print(f"warm load in a fresh process, {label:<40}: peak {used['peak'] / 1e6:4.0f} MB resident, "
              f"{used['anonymous'] / 1e6:4.0f} MB its own at the end")
    return 0 if cold <= COLD_BAR and min(warm) <= WARM_BAR else 1


if __name__ == "__main__":
    sys.exit(main())
