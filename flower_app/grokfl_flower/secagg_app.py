"""The same federation with SecAgg+, Flower's secure aggregation (notebook 08, §4).

Flower 1.42 builds SecAgg+ on its older API, so this file holds a second pair of apps, in that
API: ``server_app`` runs FedAvg inside a ``SecAggPlusWorkflow``; ``client_app`` is a
``NumPyClient`` behind ``secaggplus_mod``, which runs the protocol's client side (key agreement,
secret-sharing, quantizing and masking) around its ``fit``. The messages of server_app.py's runs
are handed to client_app.py's app, so one simulation can run runs of both.

Its settings are in the run config (../pyproject.toml): secagg-num-shares,
secagg-reconstruction-threshold, secagg-clipping-range, secagg-quantization-range,
secagg-max-weight, rounding-seed and drop-out. `simulation.simulate` runs it with
``Run("grokfl_flower.secagg_app:server_app", {...})`` and ``client_app="grokfl_flower.secagg_app:client_app"``.
"""

import numpy as np
from flwr.app import Context, MessageType
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from grokfl_helpers import federated, training
from grokfl_helpers.flower_bridge import SeededFedAvg, arrays_to_model, client_names, corpus, partition, save_results

from . import client_app as main_app


# ---------------------------------------------------------------------------- the clients


class SpamClient(NumPyClient):
    def __init__(self, partition_id: int):
        self.partition_id = partition_id

    def fit(self, parameters, config):
        if str(self.partition_id) in str(config["drop-out"]).split():
            raise RuntimeError(f"partition {self.partition_id} drops out (drop-out = {config['drop-out']!r})")
        if config["rounding-seed"] >= 0:  # SecAgg+ rounds with numpy's global generator
            np.random.seed([config["rounding-seed"], self.partition_id, config["server-round"]])
        X, y = partition(self.partition_id, config["partitioning"], config["num-partitions"], config["seed"])
        model = arrays_to_model(parameters)
        training.train(model, X, y, batch_size=config["batch-size"], epochs=config["local-epochs"],
                       alpha=config["learning-rate"])
        return [model.weight.data], len(X), {}


def plain_runs_to_main_app(message, context, call_next):
    """A mod: the messages of server_app.py's runs (a model with its "config", or SeededFedAvg's
    empty query) go to client_app.py's app; SecAgg+'s, and the older API's, go on to secaggplus_mod."""
    content = message.content
    plain = RECORD_KEY_CONFIGS not in content.config_records and (
        "config" in content.config_records or (message.metadata.message_type == MessageType.QUERY and len(content) == 0))
    return main_app.app(message, context) if plain else call_next(message, context)


client_app = ClientApp(client_fn=lambda context: SpamClient(int(context.node_config["partition-id"])).to_client(),
                       mods=[plain_runs_to_main_app, secaggplus_mod])


# ---------------------------------------------------------------------------- the server


class OnlyTheseNodes(FedAvg):
    """FedAvg (the older API's) that trains only the SuperNodes in ``nodes``: the ones holding
    partitions 0 .. num-clients - 1, as SeededFedAvg learned them (a node claiming a partition
    that another node claims too stops the run there)."""

    def __init__(self, nodes, **kwargs):
        super().__init__(**kwargs)
        self.nodes = set(nodes)

    def configure_fit(self, server_round, parameters, client_manager):
        everyone = super().configure_fit(server_round, parameters, client_manager)
        return [(proxy, fit_ins) for proxy, fit_ins in everyone if proxy.node_id in self.nodes]


class CountingSecAggPlus(SecAggPlusWorkflow):
    """SecAggPlusWorkflow, counting the rounds whose sum was unmasked: a halted round otherwise
    keeps the old model silently, and the run goes on."""

    completed = 0

    def unmask_stage(self, grid, context, state):
        done = super().unmask_stage(grid, context, state)
        self.completed += bool(done)
        return done


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg of clients 0 .. num-clients - 1, every round, from the all-zero model, summed by
    SecAgg+. Each client sends [w, w * model], w = num-examples / secagg-max-weight, quantized."""
    cfg = context.run_config
    n, rounds = cfg["num-clients"], cfg["num-server-rounds"]
    if cfg["clients-per-round"] not in (0, n) or cfg["aggregation"] != "fedavg" or cfg["dp-clipping-norm"] > 0:
        raise ValueError("secagg_app.py trains every client each round with FedAvg and no DP: leave "
                         "clients-per-round, aggregation and dp-clipping-norm at their defaults")
    names = client_names(cfg["partitioning"], n, cfg["seed"])
    max_weight = cfg["secagg-max-weight"]
    if max_weight <= 0:  # the largest client's emails: a simulation can count them, a real server must be told
        max_weight = max(len(partition(i, cfg["partitioning"], n, cfg["seed"])[0]) for i in range(n))
    test_x, test_y = corpus().test_x, corpus().test_y
    history, models = federated.History(), {}

    def evaluate(server_round, ndarrays, _config):
        model = models[server_round] = arrays_to_model(ndarrays)
        if server_round > 0:
            history.accuracy.append(training.accuracy(model, test_x, test_y))
            history.loss.append(training.mean_squared_error(model, test_x, test_y))
            history.clients.append(names)
        return 0.0, {}

    seeded = SeededFedAvg(n)  # asks every node its partition, refusing a partition claimed twice
    seeded.learn_partitions(grid)
    fit_config = {key: cfg[key] for key in ("partitioning", "seed", "local-epochs", "batch-size", "learning-rate",
                                            "rounding-seed", "drop-out")}
    start = ndarrays_to_parameters([np.zeros((len(corpus().vocab), 1))])  # the book's all-zero model
    strategy = OnlyTheseNodes(seeded.node_of_partition.values(), fraction_fit=1.0, fraction_evaluate=0.0,
                              min_fit_clients=n, min_available_clients=n, evaluate_fn=evaluate, initial_parameters=start,
                              on_fit_config_fn=lambda r: {**fit_config, "num-partitions": n, "server-round": r})
    secagg = CountingSecAggPlus(num_shares=cfg["secagg-num-shares"],
                                reconstruction_threshold=cfg["secagg-reconstruction-threshold"],
                                clipping_range=cfg["secagg-clipping-range"],
                                quantization_range=cfg["secagg-quantization-range"], max_weight=float(max_weight))
    DefaultWorkflow(fit_workflow=secagg)(grid, LegacyContext(context, config=ServerConfig(num_rounds=rounds),
                                                             strategy=strategy))
    if cfg["results-dir"]:
        save_results(cfg["results-dir"], history, models)
    if secagg.completed != rounds:
        raise RuntimeError(f"SecAgg+ completed {secagg.completed} of {rounds} rounds: too few clients survived to "
                           "unmask (see Flower's log), or the SuperNodes do not run secagg_app.py's client_app")
