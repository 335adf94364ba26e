"""What the Flower app (``flower_app/``), notebook 08 and its solutions share. Taught in notebook 08.

The app itself is Flower's own layout: ``flower_app/grokfl_flower/client_app.py`` and
``server_app.py`` each define a module-level ``ClientApp`` / ``ServerApp``, and
``flower_app/pyproject.toml`` names them and holds the run config. This module holds the pieces
both sides and the notebook need:

- ``model_to_arrays`` / ``arrays_to_model``: the spam model as the ``ArrayRecord`` Flower sends;
- ``partition``: the emails of partition ``i`` (Bob, Alice, Sue; a mailbox; an IID share);
- ``SeededFedAvg``: Flower's ``FedAvg``, sampling clients as ``federated.run_rounds`` does, and
  refusing two SuperNodes that claim the same partition;
- ``KeepPaddingRowZero``: puts ``training.keep_padding_zero`` after a strategy's aggregation;
- ``save_results`` / ``load_results``: a run's ``federated.History`` (the course's one result
  type) and its global models, written by the ServerApp to the run config's ``results-dir``;
- ``make_secagg_client_app`` / ``make_secagg_server_app``: SecAgg+ (Flower 1.42 builds it on its
  older ``NumPyClient`` API), and ``secagg_error_bound``;
- ``simulate``: runs apps on Flower's simulation engine (Ray) inside this Python process.

Nothing here changes the environment when it is imported. Flower reads ``FLWR_TELEMETRY_ENABLED``
when ``flwr`` is first imported and reports usage to Flower's servers unless it is ``"0"``;
``simulate`` switches that report off while it runs, and the deployment (``grokfl_helpers.
deployment``) starts every Flower process with it off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, Strategy

from . import data, federated, processes, training
from .tensor import Embedding

__all__ = [
    "APP_DIR", "PARTITIONINGS", "model_to_arrays", "arrays_to_model", "partition", "client_names",
    "SeededFedAvg", "SeededFedMedian", "STRATEGIES", "KeepPaddingRowZero", "save_results", "load_results", "load_models",
    "make_secagg_client_app", "make_secagg_server_app", "secagg_error_bound", "app_config", "available_memory_mb", "RAY_BACKEND", "simulate",
]

APP_DIR = Path(__file__).resolve().parents[1] / "flower_app"
"""The repository's Flower app: what ``flwr run`` ships and ``simulate`` runs by default."""
PARTITIONINGS = ("book", "mailbox", "iid")


# ---------------------------------------------------------------------------- model <-> arrays


def model_to_arrays(model) -> ArrayRecord:
    """The model's weights as Flower sends them: an ``ArrayRecord`` of copies of its arrays.
    Taught in notebook 08, §1."""
    return ArrayRecord([np.array(p.data, copy=True) for p in model.get_parameters()])


def arrays_to_model(arrays) -> Embedding:
    """A spam model (``training.new_spam_model``) holding the weights in ``arrays`` (an
    ``ArrayRecord`` or a list of numpy arrays). Taught in notebook 08, §1."""
    ndarrays = arrays.to_numpy_ndarrays() if isinstance(arrays, ArrayRecord) else list(arrays)
    if len(ndarrays) != 1 or ndarrays[0].ndim != 2 or ndarrays[0].shape[1] != 1:
        raise ValueError("expected the spam model's one weight matrix of shape (vocab_size, 1), got shapes "
                         f"{[a.shape for a in ndarrays]}: was this ArrayRecord made by model_to_arrays?")
    model = training.new_spam_model(ndarrays[0].shape[0])
    model.weight.data[...] = ndarrays[0]
    return model


# ---------------------------------------------------------------------------- who holds what


@functools.lru_cache(maxsize=1)
def corpus():
    """The corpus, loaded once per process (a ClientApp's, a Ray worker's or the ServerApp's)."""
    return data.load_enron(verbose=False)


@functools.lru_cache(maxsize=4)
def _clients(partitioning: str, num_partitions: int, seed: int) -> dict:
    if partitioning not in PARTITIONINGS:
        raise ValueError(f"partitioning must be one of {PARTITIONINGS}, got {partitioning!r}")
    if partitioning == "book":
        clients = federated.book_clients(corpus())
    elif partitioning == "mailbox":
        clients = federated.mailbox_clients(corpus())
    else:
        clients = federated.iid_clients(corpus(), num_partitions, seed=seed)
    if len(clients) != num_partitions:
        raise ValueError(f'partitioning "{partitioning}" has {len(clients)} clients, not {num_partitions}: '
                         f'set num-clients = {len(clients)}, or use "iid", which cuts any number')
    return clients


def client_names(partitioning: str = "book", num_partitions: int = 3, seed: int = 0) -> list[str]:
    """The clients' names in partition-id order ("Bob", "Alice", "Sue"; "client 07", ...). Not cached:
    the ServerApp needs only the names, and should not keep a copy of every client's emails."""
    return list(_clients.__wrapped__(partitioning, num_partitions, seed))


def partition(partition_id: int, partitioning: str = "book", num_partitions: int = 3, seed: int = 0):
    """``(X, y)``: the emails of partition ``partition_id`` of the training set. Taught in notebook 08, §2.

    ``"book"``: Bob, Alice, Sue (``federated.book_clients``, 3); ``"mailbox"``: the six Enron
    mailboxes (6); ``"iid"``: ``num_partitions`` random equal shares drawn with ``seed``.
    """
    clients = _clients(partitioning, int(num_partitions), int(seed))
    if not 0 <= int(partition_id) < len(clients):
        raise ValueError(f"partition-id {partition_id} is not in 0..{len(clients) - 1} "
                         f'(partitioning "{partitioning}" has {len(clients)} clients)')
    return list(clients.values())[int(partition_id)]


# ---------------------------------------------------------------------------- the strategy


class SeededFedAvg(FedAvg):
    """Flower's ``FedAvg``, sampling clients the way ``federated.run_rounds`` does. Taught in notebook 08, §2.

    Flower's ``FedAvg`` samples with Python's ``random`` over node IDs that are themselves random.
    This one first asks every SuperNode which partition it holds (a ``query`` message), then
    samples partitions ``0 .. num_clients - 1`` exactly as ``run_rounds``: all of them, or
    ``sorted(rng.choice(n, m, replace=False))`` from ``np.random.default_rng(seed)``. Nodes with a
    larger partition id take no part. Two nodes claiming the same partition stop the run: the
    server could not tell which one is really Bob. A sampled client that fails or does not answer
    stops the run too, where ``FedAvg`` would quietly average the others. ``weighted=True``
    weighs each client by its ``num-examples`` (FedAvg), ``False`` equally (the book's mean; DP).
    """

    def __init__(self, num_clients: int, clients_per_round: int | None = None, *, seed: int = 0,
                 weighted: bool = True) -> None:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        m = num_clients if clients_per_round is None else clients_per_round
        if not 1 <= m <= num_clients:
            raise ValueError(f"clients_per_round must be between 1 and {num_clients}, got {clients_per_round}")
        with _quiet():  # FedAvg warns about fraction_evaluate=0.0: the server tests the model instead
            super().__init__(fraction_train=m / num_clients, fraction_evaluate=0.0, min_train_nodes=m,
                             min_evaluate_nodes=0, min_available_nodes=num_clients,
                             weighted_by_key="num-examples" if weighted else "equal-weight")
        self.num_clients, self.clients_per_round = num_clients, m
        self.rng = np.random.default_rng(seed)
        self.node_of_partition: dict[int, int] = {}
        self.sampled: dict[int, list[int]] = {}  # round -> the partitions that trained in it

    def learn_partitions(self, grid: Grid, timeout: float = 300.0) -> None:
        """Ask every node which partition it holds; refuse a partition claimed twice."""
        deadline = time.monotonic() + timeout
        while len(nodes := list(grid.get_node_ids())) < self.num_clients:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {self.num_clients} SuperNodes connected in {timeout:.0f} s")
            time.sleep(0.2)
        questions = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=node) for node in nodes]
        claims: dict[int, list[int]] = {}
        for reply in grid.send_and_receive(questions, timeout=timeout):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} failed: {reply.error.reason}")
            claims.setdefault(int(reply.content["metrics"]["partition-id"]), []).append(reply.metadata.src_node_id)
        twice = {p: sorted(n) for p, n in claims.items() if len(n) > 1 and p < self.num_clients}
        if twice:
            raise RuntimeError(f"partition(s) claimed by more than one SuperNode {twice} (partition: node ids): "
                               "a partition is only what a node says about itself, so the server cannot tell "
                               "the real one; stop the extra SuperNode, and register nodes' keys (SuperNode "
                               "authentication) so that only known organisations can join")
        missing = [p for p in range(self.num_clients) if p not in claims]
        if missing:
            raise RuntimeError(f"no SuperNode holds partition(s) {missing}: start one per partition 0..{self.num_clients - 1}")
        self.node_of_partition = {p: claims[p][0] for p in range(self.num_clients)}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        if not self.node_of_partition:
            self.learn_partitions(grid)
        n, m = self.num_clients, self.clients_per_round
        chosen = list(range(n)) if m == n else sorted(int(i) for i in self.rng.choice(n, m, replace=False))
        self.sampled[server_round] = chosen
        config["server-round"] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.node_of_partition[p])
                for p in chosen]

    def check_replies(self, server_round: int, replies) -> list:
        """The replies, once every sampled client has sent a model back (else the run stops)."""
        replies = list(replies)
        failed = [reply for reply in replies if reply.has_error()]
        expected = len(self.sampled.get(server_round, []))
        if failed or len(replies) != expected:
            reason = f"; first error: {failed[0].error.reason}" if failed else ""
            raise RuntimeError(f"round {server_round}: {len(replies) - len(failed)} of {expected} sampled "
                               f"clients sent a model back{reason}")
        return replies

    def aggregate_train(self, server_round: int, replies) -> tuple:
        return super().aggregate_train(server_round, self.check_replies(server_round, replies))


class SeededFedMedian(SeededFedAvg):
    """``SeededFedAvg``'s sampling with Flower's ``FedMedian`` aggregation: the coordinate-wise
    median of the clients' models instead of their mean. Taught in notebook 08 (exercise 5)."""

    def aggregate_train(self, server_round: int, replies) -> tuple:
        return FedMedian.aggregate_train(self, server_round, self.check_replies(server_round, replies))


STRATEGIES = {"fedavg": SeededFedAvg, "median": SeededFedMedian}
"""The run config's ``aggregation`` values and the strategy each names."""


class KeepPaddingRowZero(Strategy):
    """Wraps a strategy and applies ``training.keep_padding_zero`` after every aggregation, as
    ``federated.run_round`` does; needed around Flower's DP wrapper, whose noise lands on the
    padding row too. Taught in notebook 08, §5."""

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def configure_train(self, server_round, arrays, config, grid):
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            model = arrays_to_model(arrays)
            training.keep_padding_zero(model)
            arrays = model_to_arrays(model)
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()


def base_strategy(strategy):
    """The ``SeededFedAvg`` inside ``strategy`` (itself, or wrapped by DP or padding wrappers)."""
    while strategy is not None and not isinstance(strategy, SeededFedAvg):
        strategy = getattr(strategy, "strategy", None)
    return strategy


# ---------------------------------------------------------------------------- results


def save_results(results_dir, history: federated.History, models: dict | None = None) -> None:
    """Write a run's ``History`` (``history.json``) and global models (``round-<r>.npz``, ``r``
    from 0, the starting model) to ``results_dir``. The ServerApps call it; ``load_results`` reads it."""
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fields = {"accuracy": history.accuracy, "loss": history.loss, "bytes_sent": history.bytes_sent,
              "clients": history.clients}
    (directory / "history.json").write_text(json.dumps(fields, indent=1), encoding="utf-8")
    for round_number, model in (models or {}).items():
        np.save(directory / f"round-{round_number}.npy", model.weight.data)


def load_models(results_dir) -> dict[int, Embedding]:
    """The global model after each round that ``save_results`` kept: ``{round: model}``."""
    files = Path(results_dir).glob("round-*.npy")
    return dict(sorted((int(f.stem.split("-")[1]), arrays_to_model([np.load(f)])) for f in files))


def load_results(results_dir) -> federated.History:
    """The ``federated.History`` that a ServerApp saved, with ``model`` its last global model."""
    fields = json.loads((Path(results_dir) / "history.json").read_text(encoding="utf-8"))
    history = federated.History(**fields)
    models = load_models(results_dir)
    history.model = models[max(models)] if models else None
    return history


# ---------------------------------------------------------------------------- SecAgg+ (legacy API)


def make_secagg_client_app(partitioning: str = "book", num_partitions: int = 3, *,
                           rounding_seed: int | None = None, drop_out=()):
    """A ``ClientApp`` that takes part in SecAgg+: a ``NumPyClient`` behind ``secaggplus_mod``.
    Taught in notebook 08, §4.

    ``fit`` trains as the Message-API ClientApp does; ``secaggplus_mod`` then runs the protocol's
    client side around it (key agreement, secret-sharing, quantizing and masking). SecAgg+ rounds
    each weight at random with numpy's global generator: ``rounding_seed`` seeds it per client and
    round so that a run repeats exactly (``None``, for real use, leaves it alone). ``drop_out``:
    partition ids whose ``fit`` fails after they shared their keys (notebook 05, §7).
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    drop_out = {int(p) for p in drop_out}

    class SpamClient(NumPyClient):
        def __init__(self, partition_id):
            self.partition_id = partition_id
            self.X, self.y = partition(partition_id, partitioning, num_partitions)

        def fit(self, parameters, config):
            if self.partition_id in drop_out:
                raise RuntimeError(f"partition {self.partition_id} drops out (drop_out={sorted(drop_out)})")
            if rounding_seed is not None:
                np.random.seed([rounding_seed, self.partition_id, int(config["server-round"])])
            model = arrays_to_model(parameters)
            training.train(model, self.X, self.y, batch_size=int(config["batch-size"]),
                           epochs=int(config["local-epochs"]), alpha=float(config["learning-rate"]))
            return [p.data for p in model.get_parameters()], len(self.X), {}

    return ClientApp(client_fn=lambda context: SpamClient(int(context.node_config["partition-id"])).to_client(),
                     mods=[secaggplus_mod])


def make_secagg_server_app(*, num_clients: int = 3, num_shares: int = 3, reconstruction_threshold: int = 2,
                           clipping_range: float = 8.0, quantization_range: int = 2**22,
                           max_weight: float | None = None, partitioning: str = "book") -> ServerApp:
    """A ``ServerApp`` whose rounds aggregate with SecAgg+ (``SecAggPlusWorkflow``), all clients each
    round, from the book's all-zero model. Taught in notebook 08, §4.

    ``num_shares``: each client's keys are Shamir-shared among this many neighbours;
    ``reconstruction_threshold``: how many must survive to unmask. Each client sends
    ``[w, w · model]`` quantized to ``quantization_range`` levels over ``±clipping_range``, with
    ``w = num-examples / max_weight`` (default: the largest client's size). Rounds, epochs, batch
    size, learning rate and ``results-dir`` come from the run config, as for the app's ServerApp.
    A round that could not be unmasked (too few survivors) fails the run.
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class CountingSecAggPlus(SecAggPlusWorkflow):
        completed = 0  # rounds whose sum was unmasked; a halted round keeps the old model silently

        def unmask_stage(self, grid, context, state):
            done = super().unmask_stage(grid, context, state)
            self.completed += bool(done)
            return done

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = context.run_config
        rounds, test_x, test_y = int(cfg["num-server-rounds"]), corpus().test_x, corpus().test_y
        sizes = [len(partition(i, partitioning, num_clients)[0]) for i in range(num_clients)]
        history, models = federated.History(), {}

        def evaluate(server_round, ndarrays, _config):
            model = models[server_round] = arrays_to_model(ndarrays)
            if server_round > 0:
                history.accuracy.append(training.accuracy(model, test_x, test_y))
                history.loss.append(training.mean_squared_error(model, test_x, test_y))
                history.clients.append(client_names(partitioning, num_clients))
            return 0.0, {}

        strategy = LegacyFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=num_clients, min_available_clients=num_clients,
            evaluate_fn=evaluate, initial_parameters=ndarrays_to_parameters(
                [np.zeros((len(corpus().vocab), 1))]),
            on_fit_config_fn=lambda r: {"server-round": r, "local-epochs": cfg["local-epochs"],
                                        "batch-size": cfg["batch-size"], "learning-rate": cfg["learning-rate"]})
        secagg = CountingSecAggPlus(num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
                                    clipping_range=clipping_range, quantization_range=quantization_range,
                                    max_weight=float(max(sizes)) if max_weight is None else max_weight)
        DefaultWorkflow(fit_workflow=secagg)(grid, LegacyContext(context, config=ServerConfig(num_rounds=rounds),
                                                                 strategy=strategy))
        save_results(cfg["results-dir"], history, models)
        if secagg.completed != rounds:
            raise RuntimeError(f"SecAgg+ completed {secagg.completed} of {rounds} rounds (too few clients "
                               "survived to unmask): see Flower's log")

    return app


def secagg_error_bound(num_clients: int, total_weight: float, *, clipping_range: float = 8.0,
                       quantization_range: int = 2**22) -> float:
    """Largest possible |SecAgg+ average − exact FedAvg average| for one round, per weight.
    Taught in notebook 08, §4.

    Each client rounds ``w_i · model_i`` to a grid of step ``2 · clipping_range / quantization_range``
    (off by less than a step), and its weight ``w_i`` to ``1 / quantization_range`` (a second
    step); the server divides the sum by ``total_weight = Σ w_i``. Valid while every
    ``w_i · model_i`` lies inside ``±clipping_range``.
    """
    return 2 * num_clients * (2 * clipping_range / quantization_range) / total_weight


# ---------------------------------------------------------------------------- running a simulation


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (Ray's processes inherit them), then restore them."""
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
def _quiet(level: int = logging.ERROR) -> Iterator[None]:
    """Show only Flower's errors while the block runs (its INFO log goes to stderr otherwise)."""
    handlers = [(handler, handler.level) for handler in logging.getLogger("flwr").handlers]
    for handler, _ in handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        for handler, old_level in handlers:
            handler.setLevel(old_level)


@contextlib.contextmanager
def _no_telemetry() -> Iterator[None]:
    """Flower reports usage to its servers unless FLWR_TELEMETRY_ENABLED was "0" when flwr was
    imported; switch the report off for the block, in this process and in the ones it starts."""
    from flwr.supercore import telemetry

    saved, telemetry.FLWR_TELEMETRY_ENABLED = telemetry.FLWR_TELEMETRY_ENABLED, "0"
    try:
        with _environment(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1"):
            yield
    finally:
        telemetry.FLWR_TELEMETRY_ENABLED = saved


def app_config(app_dir=APP_DIR) -> dict:
    """The app's default run config: ``[tool.flwr.app.config]`` of its ``pyproject.toml``."""
    return dict(tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])


def _load_app(app_dir, component: str):
    """The app object named in ``[tool.flwr.app.components]`` (``"serverapp"`` or ``"clientapp"``)."""
    reference = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"][component]
    module_name, attribute = reference.split(":")
    if str(Path(app_dir).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(app_dir).resolve()))  # as `flwr run` does; Ray's workers inherit it
    return getattr(importlib.import_module(module_name), attribute)


def available_memory_mb() -> float | None:
    """Memory this process may still use, in MB: the smaller of the machine's available memory and
    what its memory cgroup (a container's or Binder's limit) leaves; None if neither can be read.
    Taught in notebook 08, §2 (checked before Ray starts)."""
    candidates = []
    try:
        import psutil  # a dependency of Ray

        candidates.append(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # "0::/path" (cgroup v2) or "4:memory:/path" (v1)
        _, controllers, where = line.split(":", 2)
        if controllers == "":
            files = [Path("/sys/fs/cgroup") / where.lstrip("/") / name for name in ("memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            files = [Path("/sys/fs/cgroup/memory") / where.lstrip("/") / name
                     for name in ("memory.limit_in_bytes", "memory.usage_in_bytes")]
        else:
            continue
        try:
            limit, usage = (f.read_text().strip() for f in files)
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            candidates.append(int(limit) - int(usage))
    return min(candidates) / 2**20 if candidates else None


def _ray_did_not_start(error: BaseException) -> bool:
    while error is not None:
        if "timed out during startup" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


RAY_BACKEND = {
    # One ClientApp at a time in one Ray worker, and a small object store (Ray's minimum is 75 MB;
    # a model is 1.3 MB): Ray's default reserves 30% of the machine's memory and starts a worker per
    # core. Notebook 08 measures what this costs: it fits in 2 GB.
    "init_args": {"num_cpus": 1, "object_store_memory": 80 * 2**20, "logging_level": "ERROR",
                  "log_to_driver": False, "include_dashboard": False},
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
}


def simulate(num_supernodes: int, *run_configs: dict, server_app=None, client_app=None,
             app_dir=APP_DIR, results_dir=None) -> list[federated.History]:
    """Run the ServerApp once per run config, one run after another, on ``num_supernodes`` virtual
    SuperNodes of Flower's simulation engine, started once. Taught in notebook 08, §2.

    Each run config is the app's defaults (``app_config``) updated with the given keys, as
    ``flwr run --run-config`` does. Virtual SuperNode ``i`` has ``partition-id = i``. The apps
    default to the ones ``app_dir``'s ``pyproject.toml`` names. Returns each run's ``History``;
    with ``results_dir``, run ``i``'s results stay in ``results_dir/<i>`` (``load_models`` reads them).
    Flower's and Ray's logs are kept out of the output; errors still show, and exceptions propagate.
    """
    server_app = _load_app(app_dir, "serverapp") if server_app is None else server_app
    client_app = _load_app(app_dir, "clientapp") if client_app is None else client_app
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)  # a hint about ipywidgets Ray does not use
    from flwr.simulation import run_simulation

    with contextlib.ExitStack() as stack:
        if results_dir is None:
            results_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="grokfl-results-"))
        results_dirs = [Path(results_dir) / str(i) for i in range(len(run_configs))]
        configs = [{**app_config(app_dir), **config, "results-dir": str(results_dirs[i])}
                   for i, config in enumerate(run_configs)]
        runs = ServerApp()

        @runs.main()
        def main(grid: Grid, context: Context) -> None:
            for config in configs:
                server_app(grid, Context(run_id=context.run_id, node_id=context.node_id, node_config={},
                                         state=RecordDict(), run_config=config))

        flwr_home = stack.enter_context(tempfile.TemporaryDirectory(prefix="grokfl-flwr-home-"))
        stack.enter_context(_no_telemetry())
        stack.enter_context(_environment(FLWR_HOME=os.environ.get("FLWR_HOME", flwr_home),
                                         RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0", RAY_DEDUP_LOGS="0"))
        stack.enter_context(_quiet())
        stack.enter_context(warnings.catch_warnings())  # Ray loads tqdm.auto, which warns in Jupyter without
        warnings.filterwarnings("ignore", message="IProgress not found")  # ipywidgets (Ray's bars only)
        for attempt in (1, 2, 3):
            children_before = set(processes.children_of(os.getpid()))
            try:
                run_simulation(server_app=runs, client_app=client_app, num_supernodes=num_supernodes,
                               backend_config=json.loads(json.dumps(RAY_BACKEND)))
                break
            except RuntimeError as error:
                # On a busy machine Ray may not start within its fixed 30 s ("The current node timed
                # out during startup") and leaves its half-started processes behind: stop exactly
                # those (the children this call started), and try again (three times in all).
                import ray

                ray.shutdown()
                started = [p for p in processes.children_of(os.getpid()) if p not in children_before]
                processes.stop_processes([q for p in started for q in processes.descendants_of(p.pid)] + started)
                if attempt == 3 or not _ray_did_not_start(error):
                    raise
        return [load_results(directory) for directory in results_dirs]
