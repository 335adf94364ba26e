"""How long secure aggregation takes for a model the size of the course's spam model.

    python benchmarks/bench_secure_aggregation.py [--weights 160000] [--clients 3 10 30]

Prints, per number of clients: key setup (DH key pairs + Shamir shares), one client's masking,
and the server's unmasking with no dropout and with one client dropped. Times are wall-clock on
whatever else the machine is doing; take the median of a few runs before comparing.
"""
import argparse
import time

import numpy as np

from grokfl_helpers import secure_aggregation as sa


def seconds(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench(num_weights, num_clients, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"client{i:03d}" for i in range(num_clients)]
    threshold = num_clients // 2 + 1
    updates = {name: [rng.normal(0.0, 0.01, (num_weights, 1))] for name in names}

    def setup():
        clients = {name: sa.Client(name, rng) for name in names}
        public_keys = {name: c.public_key for name, c in clients.items()}
        for owner, client in clients.items():
            for recipient, share in client.share_secrets(public_keys, threshold).items():
                clients[recipient].receive_share(owner, share)
        return clients, public_keys

    setup_time, (clients, public_keys) = seconds(setup)
    mask_time, _ = seconds(lambda: clients[names[0]].mask_update(updates[names[0]], public_keys))
    rows = {"key setup, all clients": setup_time, "masking, one client": mask_time}
    for dropped in ([], names[-1:]):
        clients, public_keys = setup()
        masked = {n: clients[n].mask_update(updates[n], public_keys) for n in names if n not in dropped}
        revealed = [clients[n].reveal_shares(set(masked)) for n in masked]
        label = f"unmasking, {len(dropped)} dropped"
        rows[label], total = seconds(lambda: sa.unmask_sum(masked, public_keys, revealed, threshold))
        error = np.abs(total[0] - sum(updates[n][0] for n in masked)).max()
        assert error <= len(masked) * 2.0 ** -(sa.FRACTIONAL_BITS + 1) * (1 + 1e-6), error
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=int, default=160_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30])
    args = parser.parse_args()
    print(f"{args.weights:,} weights, fixed point with {sa.FRACTIONAL_BITS} fractional bits in Z/2^64")
    for num_clients in args.clients:
        for label, took in bench(args.weights, num_clients).items():
            print(f"  {num_clients:3d} clients  {label:<24s} {took * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
