"""Benchmark: the spam model on Flower — simulation engine and a real loopback deployment.

Prints the wall time of

* starting Flower's simulation engine (Ray, bounded as ``simulation.RAY_BACKEND`` says) and
  running an almost empty run on it (Bob, Alice and Sue, 1 round): mostly Ray's start-up;
* notebook 08's five simulations on one start of Ray, as notebook 08 runs them: Bob, Alice and
  Sue (3 rounds), the six mailboxes (5), 100 IID clients with 10 a round and 5 local epochs (5),
  DP-FedAvg on them (20 rounds), and SecAgg+ on Bob, Alice and Sue (3);
* the same FedAvg rounds by hand (``federated.run_rounds``), for scale;
* ``deployment.run_deployment``: a SuperLink and three SuperNodes on 127.0.0.1 with TLS and
  SuperNode authentication, 3 rounds, step by step (skip it with ``--no-deployment``).

Notebook 08 prints no timing (its outputs are compared on every test run); this is where they live.

    python benchmarks/bench_flower.py                  # about 2 minutes on 2 idle cores
    python benchmarks/bench_flower.py --no-deployment  # the simulations only

Wall time over all cores: whatever else runs on the machine changes it, Ray's start-up most of
all (about 10 s on an idle 2-core machine, 30 s and more on a busy one). Run twice if in doubt.
"""

import argparse
import time

from grokfl_helpers import data, deployment, federated, simulation, training


def timed(label, function):
    start = time.perf_counter()
    result = function()
    print(f"{label}: {time.perf_counter() - start:6.1f} s wall", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-deployment", action="store_true", help="skip the loopback deployment")
    args = parser.parse_args()
    corpus = data.load_enron(verbose=False)
    test = (corpus.test_x, corpus.test_y)
    start = training.new_spam_model(len(corpus.vocab))

    timed("Ray start + Bob/Alice/Sue, 1 round (simulation)", lambda: simulation.simulate(3, {"num-server-rounds": 1}))
    timed("notebook 08's five simulations on one Ray start (100 virtual SuperNodes)", lambda: simulation.simulate(
        100, {"num-server-rounds": 3},
        {"partitioning": "mailbox", "num-clients": 6, "num-server-rounds": 5},
        {"partitioning": "iid", "num-clients": 100, "clients-per-round": 10, "num-server-rounds": 5, "local-epochs": 5},
        {"partitioning": "iid", "num-clients": 100, "clients-per-round": 10, "num-server-rounds": 20,
         "dp-clipping-norm": 0.1, "dp-noise-multiplier": 1.0, "dp-noise-seed": 8, "keep-models": True},
        simulation.Run("grokfl_flower.secagg_app:server_app", {"num-server-rounds": 3, "rounding-seed": 0}),
        client_app="grokfl_flower.secagg_app:client_app"))
    timed("by hand: Bob/Alice/Sue 3 rounds, mailboxes 5, 100 IID clients 5 (5 epochs)", lambda: [
        federated.run_rounds(start, federated.book_clients(corpus), test, rounds=3, weighted=True),
        federated.run_rounds(start, federated.mailbox_clients(corpus), test, rounds=5, weighted=True),
        federated.run_rounds(start, federated.iid_clients(corpus, 100, seed=0), test, rounds=5, clients_per_round=10,
                             weighted=True, epochs=5, seed=0)])
    if not args.no_deployment:
        began = time.perf_counter()

        def step(line):
            print(f"  {time.perf_counter() - began:5.1f} s  {line}", flush=True)

        timed("deployment, SuperLink + 3 SuperNodes on loopback (TLS + auth), 3 rounds",
              lambda: deployment.run_deployment(3, log=step))


if __name__ == "__main__":
    main()
