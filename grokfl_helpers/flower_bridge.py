"""What the Flower app (``flower_app/``), notebook 08 and its solutions share. Taught in notebook 08.

The app itself is Flower's own layout: ``flower_app/grokfl_flower/client_app.py`` and
``server_app.py`` each define a module-level ``ClientApp`` / ``ServerApp`` (``secagg_app.py``, the
same with SecAgg+), and ``flower_app/pyproject.toml`` names them and holds the run config. This
module holds what the apps, the notebook and the runners (``simulation``, ``deployment``) share:

- ``model_to_arrays`` / ``arrays_to_model``: the spam model as the ``ArrayRecord`` Flower sends;
- ``partition``: the emails of partition ``i`` (Bob, Alice, Sue; a mailbox; an IID share);
- ``SeededFedAvg``: Flower's ``FedAvg``, sampling clients as ``federated.run_rounds`` does, and
  refusing two SuperNodes that claim the same partition;
- ``KeepPaddingRowZero``: puts ``training.keep_padding_zero`` after a strategy's aggregation;
- ``save_results`` / ``load_results``: a run's ``federated.History`` (the course's one result
  type) and its global models, written by a ServerApp to the run config's ``results-dir``;
- ``secagg_error_bound``: how far SecAgg+'s average may be from the exact one.

Nothing here changes the environment when it is imported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, Strategy

from . import data, federated, training
from .tensor import Embedding

__all__ = [
    "APP_DIR", "PARTITIONINGS", "model_to_arrays", "arrays_to_model", "corpus", "partition", "client_names",
    "SeededFedAvg", "SeededFedMedian", "STRATEGIES", "KeepPaddingRowZero", "save_results", "load_results",
    "load_models", "secagg_error_bound", "quiet_flower",
]

APP_DIR = Path(__file__).resolve().parents[1] / "flower_app"
"""The repository's Flower app: what ``flwr run`` ships and ``simulation.simulate`` runs by default."""
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
    the ServerApp needs only the names, and should not keep a copy of every client's emails.

    Used by the ServerApps of notebook 08, §2."""
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
        with quiet_flower():  # FedAvg warns about fraction_evaluate=0.0: the server tests the model instead
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


# ---------------------------------------------------------------------------- results


def save_results(results_dir, history: federated.History, models: dict | None = None) -> None:
    """Write a run's ``History`` (``history.json``) and global models (``round-<r>.npz``, ``r``
    from 0, the starting model) to ``results_dir``. The ServerApps call it; ``load_results`` reads it.

    Used by the ServerApps of notebook 08, §2 (results-dir)."""
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fields = {"accuracy": history.accuracy, "loss": history.loss, "bytes_sent": history.bytes_sent,
              "clients": history.clients}
    (directory / "history.json").write_text(json.dumps(fields, indent=1), encoding="utf-8")
    for round_number, model in (models or {}).items():
        np.save(directory / f"round-{round_number}.npy", model.weight.data)


def load_models(results_dir) -> dict[int, Embedding]:
    """The global model after each round that ``save_results`` kept: ``{round: model}``.

    Taught in notebook 08, §4."""
    files = Path(results_dir).glob("round-*.npy")
    return dict(sorted((int(f.stem.split("-")[1]), arrays_to_model([np.load(f)])) for f in files))


def load_results(results_dir) -> federated.History:
    """The ``federated.History`` that a ServerApp saved, with ``model`` its last global model.

    Used by simulation.simulate and the deployment of notebook 08, §2 and §6."""
    fields = json.loads((Path(results_dir) / "history.json").read_text(encoding="utf-8"))
    history = federated.History(**fields)
    models = load_models(results_dir)
    history.model = models[max(models)] if models else None
    return history


# ---------------------------------------------------------------------------- SecAgg+


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


# ---------------------------------------------------------------------------- quiet


@contextlib.contextmanager
def quiet_flower(level: int = logging.ERROR) -> Iterator[None]:
    """Show only Flower's errors while the block runs (its INFO log goes to stderr otherwise).

    Used by simulation.simulate and SeededFedAvg (notebook 08, §2)."""
    handlers = [(handler, handler.level) for handler in logging.getLogger("flwr").handlers]
    for handler, _ in handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        for handler, old_level in handlers:
            handler.setLevel(old_level)
