"""Benchmark: seconds and megabytes per round of every defense on the scoreboard's federation.

Notebook 13 prints these per-round seconds in a cell whose output is not compared (they depend on
the machine and on its load); this benchmark prints the same measurement, each column's round run
``--repeat`` times, best time kept, so that the notebook's timing claims can be checked.

    python benchmarks/bench_scoreboard.py            # about half a minute on 2 cores
    python benchmarks/bench_scoreboard.py --repeat 3

What is timed is ``grokfl_helpers.scoreboard.run_defenses``: one round from the filter in service,
Bob + 9 clients (the clients' training runs one after another here; a real federation trains them in
parallel on their own devices). Homomorphic encryption is FedAvg's round plus the 10 clients' CKKS
encryptions of their updates (one after another here; in parallel on a real federation: the
per-client time is printed too), the sum of the ciphertexts and one decryption of the average.
"""

import argparse
import time

from grokfl_helpers import data, scoreboard


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each round; the fastest is printed")
    args = parser.parse_args()
    corpus = data.load_enron()
    fed = scoreboard.build_federation(corpus)
    best = {}
    for _ in range(max(1, args.repeat)):
        for defense, rnd in scoreboard.run_defenses(fed).items():
            seconds, megabytes = best.get(defense, (float("inf"), 0.0))
            best[defense] = (min(seconds, rnd.seconds), rnd.bytes / 1e6)
    print(f"{'defense':>24} | seconds per round (best of {args.repeat}) | MB per round")
    for defense, (seconds, megabytes) in best.items():
        print(f"{defense:>24} | {seconds:>31.2f} | {megabytes:>12.1f}")
    he = scoreboard.homomorphic_round(fed, scoreboard.run_defenses(fed, defenses=["none (FedAvg)"])["none (FedAvg)"])
    print(f"HE: one client's encryption {he.check['seconds to encrypt one update']:.2f} s")
    start = time.perf_counter()
    scoreboard.scoreboard(corpus)
    print(f"the whole grid (scoreboard.scoreboard, canary included): {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
