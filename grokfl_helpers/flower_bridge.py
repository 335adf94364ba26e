"""The course's spam model on Flower: the adapter between ``grokfl_helpers`` and ``flwr`` (notebook 08).

Everything notebooks 02–07 built by hand has a name in Flower (https://flower.ai), the open
federated-learning framework this course hands you over to:

==========================================  =====================================================
grokfl (by hand)                            Flower
==========================================  =====================================================
a client: Bob with his emails               a ``ClientApp``, run by one SuperNode per organisation
the model that travels                      an ``ArrayRecord``: the model's weights as numpy arrays
``training.train`` on the client            the ClientApp's ``@app.train()`` function (calls it)
the server                                  a ``ServerApp`` (run by the SuperLink) with a strategy
``federated.fedavg(models, weights)``       ``flwr.serverapp.strategy.FedAvg`` (``num-examples``)
a round of ``federated.run_rounds``         a round of ``Strategy.start``
``secure_aggregation`` (notebook 05)        ``SecAggPlusWorkflow`` + ``secaggplus_mod``
``privacy.dp_fedavg_aggregate`` (nb 07)     ``DifferentialPrivacyServerSideFixedClipping``
==========================================  =====================================================

Which Flower API
    Flower 1.42 has two ways to write an app. The *Message API* (since 1.21, the one Flower's docs
    and templates now use) is what this module uses for FedAvg and DP: ``ClientApp`` functions
    decorated with ``@app.train()`` receive a ``Message`` whose content holds the global model as an
    ``ArrayRecord`` and send one back; the ``ServerApp``'s ``@app.main()`` runs a strategy from
    ``flwr.serverapp.strategy``. The older ``NumPyClient`` + ``flwr.server.strategy`` API now lives
    under ``flwr.compat``; Flower 1.42 still builds SecAgg+ on it (``SecAggPlusWorkflow`` needs a
    ``LegacyContext`` and ``secaggplus_mod`` reads the legacy ``fit`` reply), so the SecAgg+ apps
    below (``make_secagg_client_app`` / ``make_secagg_server_app``) use a ``NumPyClient`` — one
    that calls the very same ``training.train``.

Where the data comes from
    A client's emails never travel: each ClientApp loads the corpus (``data.load_enron``, cached on
    disk) in its own process and keeps the partition its SuperNode was given by its
    ``node_config``: ``partition-id`` (0, 1, 2, ...) and ``num-partitions``. Flower's simulation
    engine sets both for every virtual SuperNode; a real SuperNode is started with
    ``--node-config "partition-id=0 num-partitions=3"``. ``partitioning`` says how the training
    set is cut: ``"book"`` (Bob, Alice, Sue: ``federated.book_clients``), ``"mailbox"`` (one client
    per Enron mailbox: ``federated.mailbox_clients``) or ``"iid"`` (``federated.iid_clients``).

Reproducible like the hand-built loop
    Flower's ``FedAvg`` samples clients with Python's ``random`` over node IDs that are themselves
    random, so two runs train different clients. ``SeededFedAvg`` is Flower's ``FedAvg`` with two
    changes: it asks every node for its partition id once, then samples partitions exactly as
    ``federated.run_rounds`` does (all of them, or ``sorted(rng.choice(n, m, replace=False))`` from
    ``np.random.default_rng(seed)``); and it stops the run when a sampled client does not answer,
    where ``FedAvg`` would quietly average the others. Same start, same seed, same clients: the same
    global model, up to the order of floating-point additions.

Differential privacy
    ``DifferentialPrivacyServerSideFixedClipping`` around ``SeededFedAvg(..., weighted=False)`` is
    notebook 07's DP-FedAvg, except that Flower's noise also lands on the ``<unk>`` padding row;
    ``KeepPaddingRowZero`` around it sets that row back to 0, as ``privacy.dp_fedavg_round`` does.

Quiet
    Flower logs every step to stderr and Ray (the simulation engine) adds warnings of its own;
    ``simulate`` silences both while it runs, so a notebook cell shows only what it prints.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The course makes no network calls. Flower reads FLWR_TELEMETRY_ENABLED once, when it is first
# imported, and reports usage to Flower's servers unless it is "0"; FLWR_DISABLE_UPDATE_CHECK stops
# its commands from asking PyPI-like servers for a newer version. Set both before `flwr` loads
# (set either yourself, before importing this module, to decide otherwise).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy

from . import data, federated, training
from .tensor import Embedding

__all__ = [
    "PARTITIONINGS",
    "model_to_arrays",
    "arrays_to_model",
    "client_datasets",
    "FlowerRun",
    "SeededFedAvg",
    "KeepPaddingRowZero",
    "make_client_app",
    "make_server_app",
    "make_secagg_client_app",
    "make_secagg_server_app",
    "secagg_error_bound",
    "simulate",
    "quiet_flower",
]

PARTITIONINGS = ("book", "mailbox", "iid")

# Keys of the messages' records, and of the app's run config (pyproject.toml [tool.flwr.app.config]).
ARRAYS_KEY, CONFIG_KEY, METRICS_KEY = "arrays", "config", "metrics"
WEIGHT_BY_EXAMPLES, WEIGHT_EQUALLY = "num-examples", "equal-weight"
TRAINING_DEFAULTS = {"local-epochs": 1, "batch-size": 500, "learning-rate": 0.01}


# ---------------------------------------------------------------------------- model <-> arrays


def model_to_arrays(model) -> ArrayRecord:
    """The model's weights as Flower sends them: an ``ArrayRecord`` of copies of its numpy arrays."""
    return ArrayRecord([np.array(p.data, copy=True) for p in model.get_parameters()])


def arrays_to_model(arrays) -> Embedding:
    """A spam model (``training.new_spam_model``) holding the weights in ``arrays``.

    ``arrays``: an ``ArrayRecord`` or a list of numpy arrays, as ``model_to_arrays`` makes them.
    The vocabulary size is read from the weights' shape.
    """
    ndarrays = arrays.to_numpy_ndarrays() if isinstance(arrays, ArrayRecord) else list(arrays)
    if len(ndarrays) != 1 or ndarrays[0].ndim != 2 or ndarrays[0].shape[1] != 1:
        raise ValueError(
            "expected the spam model's one weight matrix of shape (vocab_size, 1), got shapes "
            f"{[a.shape for a in ndarrays]}: was this ArrayRecord made by model_to_arrays?"
        )
    model = training.new_spam_model(ndarrays[0].shape[0])
    model.weight.data[...] = ndarrays[0]
    return model


# ---------------------------------------------------------------------------- who holds what


@functools.lru_cache(maxsize=1)
def _corpus():
    """The corpus, loaded once per process (a ClientApp's, a Ray worker's or the ServerApp's)."""
    return data.load_enron(verbose=False)


@functools.lru_cache(maxsize=8)
def client_datasets(partitioning: str = "book", num_partitions: int = 3, seed: int = 0) -> tuple:
    """The clients of a partitioning, in partition-id order: ``((name, X, y), ...)``.

    ``"book"``: Bob, Alice, Sue (``num_partitions`` must be 3); ``"mailbox"``: the six Enron
    mailbox owners (6); ``"iid"``: ``num_partitions`` random equal shares, drawn with ``seed``.
    Cached per process, so a ClientApp process cuts the corpus once.
    """
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"partitioning must be one of {PARTITIONINGS}, got {partitioning!r}")
    corpus = _corpus()
    if partitioning == "book":
        clients = federated.book_clients(corpus)
    elif partitioning == "mailbox":
        clients = federated.mailbox_clients(corpus)
    else:
        clients = federated.iid_clients(corpus, num_partitions, seed=seed)
    if len(clients) != num_partitions:
        raise ValueError(
            f'partitioning "{partitioning}" has {len(clients)} clients but num-partitions is '
            f"{num_partitions}: start {len(clients)} SuperNodes (simulate(..., num_clients="
            f"{len(clients)})), or use \"iid\" for any number"
        )
    return tuple((name, X, y) for name, (X, y) in clients.items())


def _my_partition(context: Context, partitioning: str, seed: int):
    """(partition id, name, X, y) of the SuperNode running this ClientApp, from its node_config."""
    config = context.node_config
    missing = [key for key in ("partition-id", "num-partitions") if key not in config]
    if missing:
        raise ValueError(
            f"this SuperNode's node_config lacks {missing}: start it with "
            "--node-config \"partition-id=<0, 1, ...> num-partitions=<how many>\""
        )
    partition_id, num_partitions = int(config["partition-id"]), int(config["num-partitions"])
    clients = client_datasets(partitioning, num_partitions, seed)
    if not 0 <= partition_id < len(clients):
        raise ValueError(f"partition-id {partition_id} is not in 0..{len(clients) - 1}")
    name, X, y = clients[partition_id]
    return partition_id, name, X, y


# ---------------------------------------------------------------------------- the client


def make_client_app(partitioning: str = "book", seed: int = 0) -> ClientApp:
    """A ``ClientApp`` (Message API) that trains the spam model on its SuperNode's own emails.

    ``@app.train()``: turn the received ``ArrayRecord`` into a model, ``training.train`` it on this
    node's partition with the epochs, batch size and learning rate the server put in the message's
    ``ConfigRecord``, and reply with the new weights and ``num-examples`` (FedAvg's weight).
    ``@app.evaluate()``: the global model's accuracy on this node's emails.
    ``@app.query()``: tell the server this node's partition id (``SeededFedAvg`` asks once).
    """
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"partitioning must be one of {PARTITIONINGS}, got {partitioning!r}")
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        _, _, X, y = _my_partition(context, partitioning, seed)
        model = arrays_to_model(message.content[ARRAYS_KEY])
        settings = {**TRAINING_DEFAULTS, **dict(message.content.get(CONFIG_KEY, ConfigRecord()))}
        training.train(
            model, X, y,
            batch_size=int(settings["batch-size"]),
            epochs=int(settings["local-epochs"]),
            alpha=float(settings["learning-rate"]),
        )
        metrics = MetricRecord({WEIGHT_BY_EXAMPLES: len(X), WEIGHT_EQUALLY: 1})
        return Message(RecordDict({ARRAYS_KEY: model_to_arrays(model), METRICS_KEY: metrics}),
                       reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        _, _, X, y = _my_partition(context, partitioning, seed)
        model = arrays_to_model(message.content[ARRAYS_KEY])
        metrics = MetricRecord({"accuracy": training.accuracy(model, X, y), WEIGHT_BY_EXAMPLES: len(X),
                                WEIGHT_EQUALLY: 1})
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=message)

    @app.query()
    def partition(message: Message, context: Context) -> Message:
        partition_id, _, X, _ = _my_partition(context, partitioning, seed)
        metrics = MetricRecord({"partition-id": partition_id, WEIGHT_BY_EXAMPLES: len(X)})
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=message)

    return app


# ---------------------------------------------------------------------------- the server


@dataclass
class FlowerRun:
    """What a Flower run produced, filled in by the ServerApp as the rounds go by.

    ``test_accuracy[r]``: the global model's accuracy on the test set after round ``r`` (``0`` is
    the starting model). ``models[r]``: the global model after round ``r``. ``clients[r]``: the
    partition ids that trained in round ``r``. ``seconds``: the ServerApp's wall time;
    ``tested_at[r]``: when round ``r``'s test finished (``time.monotonic()``, for benchmarks).
    """

    test_accuracy: dict[int, float] = field(default_factory=dict)
    models: dict[int, object] = field(default_factory=dict)
    clients: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    tested_at: dict[int, float] = field(default_factory=dict)

    @property
    def model(self):
        """The global model after the last round."""
        return self.models[max(self.models)] if self.models else None

    @property
    def accuracy(self) -> list[float]:
        """Test accuracy after rounds 1, 2, ... — the shape of ``federated.History.accuracy``."""
        return [self.test_accuracy[r] for r in sorted(self.test_accuracy) if r > 0]

    def save(self, directory) -> None:
        """``history.json`` and ``global_model.npz`` in ``directory`` (the deployment script's results)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        history = {"test_accuracy": {str(r): a for r, a in self.test_accuracy.items()},
                   "clients": {str(r): c for r, c in self.clients.items()}, "seconds": self.seconds}
        (directory / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        if self.models:
            np.savez(directory / "global_model.npz", *[p.data for p in self.model.get_parameters()])

    @classmethod
    def load(cls, directory) -> "FlowerRun":
        directory = Path(directory)
        history = json.loads((directory / "history.json").read_text(encoding="utf-8"))
        run = cls(test_accuracy={int(r): a for r, a in history["test_accuracy"].items()},
                  clients={int(r): c for r, c in history["clients"].items()},
                  seconds=history.get("seconds", 0.0))
        model_file = directory / "global_model.npz"
        if model_file.exists():
            with np.load(model_file) as arrays:
                run.models[max(run.test_accuracy)] = arrays_to_model([arrays[k] for k in arrays.files])
        return run


def _wait_for_nodes(grid: Grid, count: int, timeout: float = 300.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {count} SuperNodes connected within {timeout:.0f} s")
        time.sleep(0.5)
    return nodes


class SeededFedAvg(FedAvg):
    """Flower's ``FedAvg``, sampling clients reproducibly, the way ``federated.run_rounds`` does.

    ``num_clients``: how many SuperNodes to wait for. ``clients_per_round``: how many train each
    round (``None``: all). ``weighted=True`` is FedAvg (each client weighs its ``num-examples``),
    ``False`` the book's plain mean (also what DP needs: every client weighs the same).
    Aggregation is Flower's own ``FedAvg.aggregate_train``; only ``configure_train`` changes.
    """

    def __init__(self, num_clients: int, clients_per_round: int | None = None, *, seed: int = 0,
                 weighted: bool = True) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        m = num_clients if clients_per_round is None else clients_per_round
        if not 1 <= m <= num_clients:
            raise ValueError(f"clients_per_round must be between 1 and {num_clients}, got {clients_per_round}")
        with quiet_flower():  # FedAvg logs a warning for fraction_evaluate=0.0: the server tests instead
            super().__init__(
                fraction_train=m / num_clients, fraction_evaluate=0.0, min_train_nodes=m,
                min_evaluate_nodes=0, min_available_nodes=num_clients,
                weighted_by_key=WEIGHT_BY_EXAMPLES if weighted else WEIGHT_EQUALLY,
            )
        self.num_clients, self.clients_per_round, self.seed = num_clients, m, seed
        self.rng = np.random.default_rng(seed)
        self.node_of_partition: dict[int, int] = {}
        self.sampled: dict[int, list[int]] = {}

    def _learn_partitions(self, grid: Grid) -> None:
        """Ask every node, once, which partition it holds (a ``query`` message)."""
        nodes = _wait_for_nodes(grid, self.num_clients)
        questions = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=node) for node in nodes]
        for reply in grid.send_and_receive(questions, timeout=600.0):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} failed: {reply.error.reason}")
            pid = int(reply.content[METRICS_KEY]["partition-id"])
            self.node_of_partition[pid] = reply.metadata.src_node_id
        if sorted(self.node_of_partition) != list(range(self.num_clients)):
            raise RuntimeError(f"expected partition ids 0..{self.num_clients - 1}, the nodes hold "
                               f"{sorted(self.node_of_partition)}")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        if not self.node_of_partition:
            self._learn_partitions(grid)
        n, m = self.num_clients, self.clients_per_round
        chosen = list(range(n)) if m == n else sorted(int(i) for i in self.rng.choice(n, m, replace=False))
        self.sampled[server_round] = chosen
        config["server-round"] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.node_of_partition[p])
                for p in chosen]

    def aggregate_train(self, server_round: int, replies) -> tuple:
        """Flower's FedAvg aggregation, after checking that every sampled client sent a model back.

        Flower's FedAvg would average whoever answered; a client that crashed would silently
        change the result. Here a missing or failed client stops the run with its error.
        """
        replies = list(replies)
        failed = [reply for reply in replies if reply.has_error()]
        expected = len(self.sampled.get(server_round, []))
        if failed or len(replies) != expected:
            reason = f"; first error: {failed[0].error.reason}" if failed else ""
            raise RuntimeError(f"round {server_round}: {len(replies) - len(failed)} of {expected} sampled "
                               f"clients sent a model back{reason}")
        return super().aggregate_train(server_round, replies)


class KeepPaddingRowZero(Strategy):
    """Wraps a strategy and sets the spam model's ``<unk>`` row back to 0 after every aggregation.

    Row ``data.UNK`` is padding: ``training.train`` keeps it at 0, so plain FedAvg never moves it.
    A DP wrapper adds noise to *every* weight, this one included, and a noisy padding weight is
    added to an email's score once per padding slot (hundreds of times). Notebook 07's
    ``privacy.dp_fedavg_round`` zeroes the row after the noise; this wrapper does the same around
    Flower's DP strategy. Zeroing a row everyone knows is padding is post-processing of the
    release: it uses no private data and costs no privacy.
    """

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def configure_train(self, server_round, arrays, config, grid):
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            model = arrays_to_model(arrays)
            model.weight.data[data.UNK] = 0.0
            arrays = model_to_arrays(model)
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()


def _base_fedavg(strategy: Strategy) -> SeededFedAvg | None:
    """The ``SeededFedAvg`` inside ``strategy`` (itself, or wrapped by a DP wrapper)."""
    while strategy is not None and not isinstance(strategy, SeededFedAvg):
        strategy = getattr(strategy, "strategy", None)
    return strategy


def make_server_app(strategy: Strategy | None = None, *, rounds: int = 3, epochs: int = 1,
                    batch_size: int = 500, alpha: float = 0.01,
                    round_timeout: float = 600.0) -> tuple[ServerApp, FlowerRun]:
    """A ``ServerApp`` running ``strategy`` for ``rounds`` rounds from the book's all-zero model.

    ``strategy`` defaults to ``SeededFedAvg(num_clients=3)`` (Bob, Alice, Sue, weighted by data
    size). Each round's ``ConfigRecord`` carries ``local-epochs``, ``batch-size`` and
    ``learning-rate`` to the clients; after each round the global model is tested on the corpus's
    test set on the server (Flower's ``evaluate_fn``). Returns the app and the ``FlowerRun`` it fills.
    A round whose clients have not all answered within ``round_timeout`` seconds fails the run.

    When the app runs from ``flwr run`` (a deployment), the run config of the app's
    ``pyproject.toml`` — ``num-server-rounds``, ``num-clients``, ``local-epochs``, ``batch-size``,
    ``learning-rate``, ``results-dir`` — overrides these arguments; ``results-dir`` (if not empty)
    receives ``FlowerRun.save``'s files. Under ``simulate`` the run config is empty.
    """
    run = FlowerRun()
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from flwr.supercore import log  # Flower's own logger: shown by `flwr run --stream`

        started = time.monotonic()
        cfg = dict(context.run_config)
        chosen = strategy or SeededFedAvg(num_clients=int(cfg.get("num-clients", 3)))
        base = _base_fedavg(chosen)
        if base is not None and base.node_of_partition:
            raise RuntimeError("this SeededFedAvg has already run (its sampler has moved on): "
                               "make a new strategy for every run")
        num_rounds = int(cfg.get("num-server-rounds", rounds))
        train_config = ConfigRecord({
            "local-epochs": int(cfg.get("local-epochs", epochs)),
            "batch-size": int(cfg.get("batch-size", batch_size)),
            "learning-rate": float(cfg.get("learning-rate", alpha)),
        })
        corpus = _corpus()

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model = arrays_to_model(arrays)
            accuracy = training.accuracy(model, corpus.test_x, corpus.test_y)
            run.test_accuracy[server_round], run.models[server_round] = accuracy, model
            run.tested_at[server_round] = time.monotonic()
            if base is not None and server_round in base.sampled:
                run.clients[server_round] = list(base.sampled[server_round])
            log(logging.INFO, "grokfl: round %d: test accuracy %.2f%%", server_round, 100 * accuracy)
            return MetricRecord({"accuracy": accuracy})

        result = chosen.start(grid=grid, initial_arrays=model_to_arrays(training.new_spam_model(len(corpus.vocab))),
                              num_rounds=num_rounds, timeout=round_timeout, train_config=train_config,
                              evaluate_fn=evaluate)
        missing = [r for r in range(1, num_rounds + 1) if r not in result.train_metrics_clientapp]
        if missing:
            raise RuntimeError(f"no client sent a model back in round(s) {missing}: see the ClientApps' logs")
        run.seconds = time.monotonic() - started
        if results_dir := str(cfg.get("results-dir", "")):
            run.save(results_dir)

    return app, run


# ---------------------------------------------------------------------------- SecAgg+ (legacy API)


def make_secagg_client_app(partitioning: str = "book", seed: int = 0,
                           rounding_seed: int | None = None, drop_out=()) -> ClientApp:
    """A ``ClientApp`` that takes part in SecAgg+: a ``NumPyClient`` behind ``secaggplus_mod``.

    The ``NumPyClient.fit`` is the same training as ``make_client_app``'s; ``secaggplus_mod`` then
    runs the protocol's client side around it: key agreement, secret-sharing its keys with its
    neighbours, quantizing and masking the (``num-examples``-weighted) model before it leaves.

    SecAgg+ rounds each weight *stochastically* (up or down at random, so that the rounding is
    unbiased) with numpy's global generator. ``rounding_seed`` seeds that generator in each
    client's ``fit`` (from the seed, the partition id and the round), so that a run can be
    repeated exactly: the masks cancel exactly, so the aggregate then depends on nothing else.
    ``None`` (the default, and what a real deployment should use) leaves it unseeded.

    ``drop_out``: partition ids whose ``fit`` fails — clients that drop out after they have shared
    their keys, as Alice does in notebook 05, section 7. The survivors' shares unmask the round.
    """
    drop_out = {int(p) for p in drop_out}
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    class SpamClient(NumPyClient):
        def __init__(self, partition_id, X, y):
            self.partition_id, self.X, self.y = partition_id, X, y

        def fit(self, parameters, config):
            if self.partition_id in drop_out:
                raise RuntimeError(f"partition {self.partition_id} drops out (drop_out={sorted(drop_out)})")
            if rounding_seed is not None:
                np.random.seed([rounding_seed, self.partition_id, int(config.get("server-round", 0))])
            model = arrays_to_model(parameters)
            settings = {**TRAINING_DEFAULTS, **config}
            training.train(model, self.X, self.y, batch_size=int(settings["batch-size"]),
                           epochs=int(settings["local-epochs"]), alpha=float(settings["learning-rate"]))
            return [p.data for p in model.get_parameters()], len(self.X), {}

    def client_fn(context: Context):
        partition_id, _, X, y = _my_partition(context, partitioning, seed)
        return SpamClient(partition_id, X, y).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def make_secagg_server_app(*, num_clients: int = 3, rounds: int = 1, num_shares: int = 3,
                           reconstruction_threshold: int = 2, clipping_range: float = 8.0,
                           quantization_range: int = 2**22, max_weight: float | None = None,
                           epochs: int = 1, batch_size: int = 500, alpha: float = 0.01,
                           partitioning: str = "book", seed: int = 0) -> tuple[ServerApp, FlowerRun]:
    """A ``ServerApp`` whose rounds aggregate with SecAgg+ (``SecAggPlusWorkflow``), all clients each round.

    ``num_shares``: each client's keys are Shamir-shared among this many neighbours;
    ``reconstruction_threshold``: how many of them must survive to unmask (or to recover a client
    that dropped out). Each client sends ``[w, w · model]`` quantized to ``quantization_range``
    levels over ``[-clipping_range, clipping_range]``, with ``w = num-examples / max_weight``;
    ``max_weight`` defaults to the largest client's number of examples so that no weight exceeds 1.
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class CountingSecAggPlus(SecAggPlusWorkflow):
        """SecAgg+ that counts the rounds whose sum was actually unmasked. When too few clients
        survive, Flower logs "Secure aggregation halted." and carries on with the old model."""

        completed = 0

        def unmask_stage(self, grid, context, state):
            done = super().unmask_stage(grid, context, state)
            self.completed += bool(done)
            return done

    run = FlowerRun()
    if max_weight is None:
        max_weight = float(max(len(X) for _, X, _ in client_datasets(partitioning, num_clients, seed)))
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        started = time.monotonic()
        corpus = _corpus()

        def evaluate(server_round, ndarrays, _config):
            model = arrays_to_model(ndarrays)
            run.test_accuracy[server_round] = training.accuracy(model, corpus.test_x, corpus.test_y)
            run.models[server_round] = model
            if server_round > 0:
                run.clients[server_round] = list(range(num_clients))
            return training.mean_squared_error(model, corpus.test_x, corpus.test_y), {}

        start = training.new_spam_model(len(corpus.vocab))
        strategy = LegacyFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=num_clients,
            min_available_clients=num_clients, evaluate_fn=evaluate,
            initial_parameters=ndarrays_to_parameters([p.data for p in start.get_parameters()]),
            on_fit_config_fn=lambda server_round: {"server-round": server_round, "local-epochs": epochs,
                                                   "batch-size": batch_size, "learning-rate": alpha},
        )
        legacy_context = LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        secagg = CountingSecAggPlus(
            num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
            clipping_range=clipping_range, quantization_range=quantization_range, max_weight=max_weight,
        )
        DefaultWorkflow(fit_workflow=secagg)(grid, legacy_context)
        # A halted SecAgg+ round keeps the old model and is still evaluated, so count unmaskings.
        if secagg.completed != rounds:
            raise RuntimeError(f"SecAgg+ completed {secagg.completed} of {rounds} rounds (too few "
                               f"clients survived to unmask): see Flower's log")
        run.seconds = time.monotonic() - started

    return app, run


def secagg_error_bound(num_clients: int, total_weight: float, *, clipping_range: float = 8.0,
                       quantization_range: int = 2**22) -> float:
    """Largest possible |SecAgg+ average − exact FedAvg average| for one round, per weight.

    Each client rounds ``w_i · model_i`` (stochastically) to a grid of step
    ``2 · clipping_range / quantization_range``: off by less than one step. The server divides the
    sum of ``num_clients`` such values by ``Σ w_i`` (``total_weight``, with ``w_i = n_i / max_weight``).
    The weights are themselves rounded to ``1 / quantization_range``, which the bound covers with a
    second step per client. Valid while every ``w_i · model_i`` lies inside ``±clipping_range``.
    """
    step = 2 * clipping_range / quantization_range
    return 2 * num_clients * step / total_weight


# ---------------------------------------------------------------------------- running a simulation


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, leave alone) environment variables for the block, then restore them."""
    values = {key: value for key, value in values.items() if value is not None}
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet_flower(level: int = logging.ERROR) -> Iterator[None]:
    """Show only Flower's errors while the block runs (its INFO log goes to stderr otherwise).

    Also silences Ray's warning about GPU environment variables and keeps its workers' lines
    apart, for the processes started inside the block.
    """
    handlers = [(handler, handler.level) for handler in logging.getLogger("flwr").handlers]
    for handler, _ in handlers:
        handler.setLevel(level)
    try:
        with _environment(RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0", RAY_DEDUP_LOGS="0"):
            yield
    finally:
        for handler, old_level in handlers:
            handler.setLevel(old_level)


def simulate(server_app: ServerApp, client_app: ClientApp, num_clients: int, *,
             quiet: bool = True) -> None:
    """Run ``server_app`` with ``num_clients`` virtual SuperNodes on Flower's simulation engine (Ray).

    Each virtual SuperNode ``i`` runs ``client_app`` with ``partition-id = i`` and
    ``num-partitions = num_clients``. Ray keeps its default of 2 CPUs per ClientApp, so a 2-core
    machine trains one client at a time. ``quiet=True`` keeps Flower's and Ray's logs out of the
    output (errors still show, and exceptions propagate).
    """
    # Imported in a notebook, Ray logs a hint about ipywidgets to stderr; it concerns only Ray's own
    # widgets, which Flower does not use. (Set before Ray is imported: its logging setup keeps it.)
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    from flwr.simulation import run_simulation

    backend_config = {"init_args": {"logging_level": "ERROR", "log_to_driver": not quiet}}
    # Flower keeps an identifier in $FLWR_HOME (~/.flwr unless set): give it a temporary one.
    with tempfile.TemporaryDirectory(prefix="grokfl-flwr-home-") as flwr_home, \
            _environment(FLWR_HOME=None if "FLWR_HOME" in os.environ else flwr_home), \
            quiet_flower(logging.ERROR if quiet else logging.INFO):
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_clients,
                       backend_config=backend_config)
