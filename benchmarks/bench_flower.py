"""Benchmark: the spam model on Flower — simulation engine and a real loopback deployment.

Prints the wall time of

* the simulation of Bob, Alice and Sue (3 clients, 3 rounds of FedAvg), and of 100 IID clients
  with 10 sampled per round (5 rounds, 5 local epochs, as notebook 08), with the time per round
  once Ray is up (round 1 also waits for Ray to start);
* the same rounds by hand (``federated.run_rounds``), for scale;
* ``scripts/run_flower_deployment.py``: a SuperLink and three SuperNodes on 127.0.0.1 with TLS and
  SuperNode authentication, 3 rounds (skip it with ``--no-deployment``).

Notebook 08 prints no timing (its outputs are compared on every test run); this is where they live.

    python benchmarks/bench_flower.py                  # about 3 minutes on 2 idle cores
    python benchmarks/bench_flower.py --no-deployment  # the simulations only

Wall time over all cores: whatever else runs on the machine changes it, Ray's start-up most of
all (from about 5 s on an idle machine to 30 s and more on a busy one). Run twice if in doubt.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from grokfl_helpers import data, federated, flower_bridge, training

REPO = Path(__file__).resolve().parent.parent


def time_simulation(label, strategy, partitioning, num_clients, rounds, epochs):
    server_app, run = flower_bridge.make_server_app(strategy, rounds=rounds, epochs=epochs)
    start = time.perf_counter()
    flower_bridge.simulate(server_app, flower_bridge.make_client_app(partitioning), num_clients=num_clients)
    total = time.perf_counter() - start
    # Ray starts while round 1 waits for it: rounds 2.. show what a round costs once it runs.
    later = (run.tested_at[rounds] - run.tested_at[1]) / (rounds - 1)
    print(f"{label}: {total:6.1f} s wall, of which {later:4.1f} s per round after the first; "
          f"test accuracy after round {rounds}: {run.accuracy[-1]:.1%}", flush=True)
    return run


def time_by_hand(label, clients, rounds, clients_per_round, epochs, corpus):
    start = time.perf_counter()
    history = federated.run_rounds(training.new_spam_model(len(corpus.vocab)), clients,
                                   (corpus.test_x, corpus.test_y), rounds=rounds,
                                   clients_per_round=clients_per_round, weighted=True, epochs=epochs, seed=0)
    print(f"{label}: {time.perf_counter() - start:6.1f} s wall by hand (federated.run_rounds); "
          f"test accuracy after round {rounds}: {history.accuracy[-1]:.1%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-deployment", action="store_true", help="skip the loopback deployment")
    args = parser.parse_args()
    corpus = data.load_enron(verbose=False)

    time_simulation("simulation, Bob/Alice/Sue, 3 rounds", flower_bridge.SeededFedAvg(3), "book", 3, 3, 1)
    time_by_hand("           Bob/Alice/Sue, 3 rounds", federated.book_clients(corpus), 3, None, 1, corpus)
    time_simulation("simulation, 100 IID clients, 10 per round, 5 rounds",
                    flower_bridge.SeededFedAvg(100, 10, seed=0), "iid", 100, 5, 5)
    time_by_hand("           100 IID clients, 10 per round, 5 rounds",
                 federated.iid_clients(corpus, 100, seed=0), 5, 10, 5, corpus)

    if not args.no_deployment:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "run_flower_deployment.py")],
                                capture_output=True, text=True, timeout=900, cwd=REPO)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"the deployment failed:\n{result.stdout}\n{result.stderr}")
        final = [line for line in result.stdout.splitlines() if line.startswith("round ")][-1]
        print(f"deployment, SuperLink + 3 SuperNodes on loopback (TLS + auth), 3 rounds: {elapsed:6.1f} s wall; "
              f"{final}", flush=True)


if __name__ == "__main__":
    main()
