"""Federated learning by hand: who holds which emails, how models are averaged, and a round.

A *round*: the server sends the global model to some clients; each trains a copy on its own
emails; each sends its model back; the server averages them into the next global model. The
emails never leave the clients — only models do, and notebook 04 shows what those give away.

* ``book_clients`` — the book's split: Bob, Alice and Sue.
* ``mailbox_clients`` — one client per Enron mailbox owner: a natural, non-IID split.
* ``iid_clients`` — many clients with a random share each.
* ``fedavg`` — the average of models, plain (the book) or weighted by data size (FedAvg,
  McMahan et al., 2017).
* ``run_rounds`` — rounds of the above, returning a ``History`` of accuracy, loss and traffic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .data import MAILBOXES
from .tensor import Layer
from .training import accuracy, mean_squared_error, train

__all__ = [
    "BOOK_SPLIT",
    "book_clients",
    "mailbox_clients",
    "iid_clients",
    "fedavg",
    "model_update",
    "model_bytes",
    "largest_difference",
    "train_locally",
    "History",
    "run_rounds",
]


# ---------------------------------------------------------------------------- who holds what


# The book's split: which rows of the training set each client holds.
BOOK_SPLIT = {"Bob": slice(0, 1000), "Alice": slice(1000, 2000), "Sue": slice(2000, None)}


def book_clients(corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The book's split of the training set (``BOOK_SPLIT``): Bob the first 1,000 emails, Alice
    the next 1,000, Sue the rest (about 30,000)."""
    return {name: (corpus.train_x[rows], corpus.train_y[rows]) for name, rows in BOOK_SPLIT.items()}


def mailbox_clients(corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One client per Enron mailbox owner, holding that mailbox's training emails.

    The clients differ: enron1–3 are about 3 ham to 1 spam, enron4–6 about 1 to 3, and each
    mailbox's spam came from a different trap. An email the book's interleaving repeats is kept
    once. Keys look like ``"farmer-d (enron1)"``.
    """
    _, first = np.unique(corpus.train_email, return_index=True)
    rows = np.sort(first)
    clients = {}
    for index, (archive, owner) in enumerate(MAILBOXES):
        mine = rows[corpus.train_mailbox[rows] == index]
        clients[f"{owner} ({archive})"] = (corpus.train_x[mine], corpus.train_y[mine])
    return clients


def iid_clients(corpus, n_clients: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``n_clients`` clients, each a random, equally sized share of the training set."""
    n = len(corpus.train_x)
    if not 1 <= n_clients <= n:
        raise ValueError(f"n_clients must be between 1 and {n}, got {n_clients}")
    order = np.random.default_rng(seed).permutation(n)
    width = len(str(n_clients - 1))
    return {
        f"client {i:0{width}d}": (corpus.train_x[np.sort(part)], corpus.train_y[np.sort(part)])
        for i, part in enumerate(np.array_split(order, n_clients))
    }


# ---------------------------------------------------------------------------- averaging


def _parameters(model) -> list[np.ndarray]:
    return [p.data for p in model.get_parameters()]


def fedavg(models, weights=None) -> Layer:
    """A new model whose every parameter is the average of the models' parameters.

    ``weights=None`` is the plain mean (the book's ``(bob + alice + sue) / 3``); FedAvg weights
    each client by its number of training examples, ``weights=[len(X_bob), ...]``.
    """
    models = list(models)
    if not models:
        raise ValueError("fedavg needs at least one model; no client sent one back this round")
    shapes = [[p.shape for p in _parameters(m)] for m in models]
    for i, s in enumerate(shapes[1:], start=1):
        if s != shapes[0]:
            raise ValueError(f"fedavg: model {i} has parameter shapes {s}, model 0 has {shapes[0]}; "
                             f"all clients must train the same architecture")
    if weights is None:
        weights = np.ones(len(models))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(models),):
        raise ValueError(f"fedavg: {len(weights)} weights for {len(models)} models")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError(f"fedavg: weights must be finite and non-negative, got {weights.tolist()}")
    if weights.sum() == 0:
        raise ValueError("fedavg: the weights sum to zero, so there is nothing to average "
                         "(did every client have zero examples?)")
    weights = weights / weights.sum()
    # Averaged as first + sum_i w_i (model_i - first): the same number mathematically, but a weight
    # that no client changed stays bit-for-bit what it was (a plain sum of w_i * x rounds it by
    # ~1e-17), so the rows nobody trained are exactly the rows that did not move.
    average = copy.deepcopy(models[0])
    for k, param in enumerate(average.get_parameters()):
        first = _parameters(models[0])[k]
        param.data[...] = first + sum(w * (_parameters(m)[k] - first) for w, m in zip(weights[1:], models[1:]))
        param.grad = None
    return average


def model_update(before, after) -> list[np.ndarray]:
    """What a client sends if it sends its change rather than its model: ``after - before``."""
    a, b = _parameters(before), _parameters(after)
    if [x.shape for x in a] != [x.shape for x in b]:
        raise ValueError(f"model_update: shapes {[x.shape for x in a]} and {[x.shape for x in b]} differ")
    return [y - x for x, y in zip(a, b)]


def largest_difference(model_a, model_b) -> float:
    """The largest |difference| between corresponding weights of two models of one architecture:
    how the course checks that two ways of computing a model (by hand, secure, encrypted, on
    Flower) agree."""
    return float(max(np.abs(u).max() for u in model_update(model_a, model_b)))


def model_bytes(model) -> int:
    """Bytes needed to send the model's parameters as they are stored (float64: 8 per number)."""
    return int(sum(p.nbytes for p in _parameters(model)))


# ---------------------------------------------------------------------------- rounds


def train_locally(global_model, clients: dict, *, epochs: int = 1, batch_size: int = 500,
                  alpha: float = 0.01) -> dict:
    """The clients' half of a round: each trains its own copy of ``global_model`` on its own emails.

    ``clients`` maps a name to ``(X, y)``; the result maps the same names to the trained models.
    ``global_model`` itself is left unchanged (``copy.deepcopy``: what the server sends out).
    """
    return {name: train(copy.deepcopy(global_model), X, y, batch_size=batch_size, epochs=epochs, alpha=alpha)
            for name, (X, y) in clients.items()}


@dataclass
class History:
    """What happened in each round (index 0 is round 1)."""

    accuracy: list[float] = field(default_factory=list)  # global model on the test set
    loss: list[float] = field(default_factory=list)  # global model's mean squared error on the test set
    bytes_sent: list[int] = field(default_factory=list)  # models down to clients + models back up
    clients: list[list[str]] = field(default_factory=list)  # who took part
    extra_accuracy: dict[str, list[float]] = field(default_factory=dict)  # global model on other sets
    model: Layer | None = None  # the global model after the last round

    @property
    def rounds(self) -> list[int]:
        return list(range(1, len(self.accuracy) + 1))


def run_rounds(
    model,
    clients: dict,
    test: tuple,
    rounds: int = 3,
    *,
    clients_per_round: int | None = None,
    weighted: bool = False,
    epochs: int = 1,
    batch_size: int = 500,
    alpha: float = 0.01,
    evaluate_on: dict | None = None,
    seed: int = 0,
) -> History:
    """Run ``rounds`` rounds of federated training starting from ``model`` (left unchanged).

    Each round samples ``clients_per_round`` of ``clients`` (all by default, in their given
    order), trains a copy of the global model on each for ``epochs`` local epochs, and averages
    the copies — plainly, as the book, or by data size with ``weighted=True`` (FedAvg). After each
    round the global model is evaluated on ``test`` and on every set in ``evaluate_on``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not clients:
        raise ValueError("run_rounds needs at least one client")
    names = list(clients)
    m = len(names) if clients_per_round is None else clients_per_round
    if not 1 <= m <= len(names):
        raise ValueError(f"clients_per_round must be between 1 and {len(names)}, got {clients_per_round}")
    rng = np.random.default_rng(seed)
    history = History(extra_accuracy={name: [] for name in (evaluate_on or {})})
    global_model = copy.deepcopy(model)
    for _ in range(rounds):
        chosen = names if m == len(names) else [names[i] for i in sorted(rng.choice(len(names), m, replace=False))]
        local_models = list(train_locally(global_model, {name: clients[name] for name in chosen},
                                          epochs=epochs, batch_size=batch_size, alpha=alpha).values())
        weights = [len(clients[name][0]) for name in chosen] if weighted else None
        history.bytes_sent.append(2 * len(chosen) * model_bytes(global_model))
        global_model = fedavg(local_models, weights)
        history.clients.append(chosen)
        history.accuracy.append(accuracy(global_model, *test))
        history.loss.append(mean_squared_error(global_model, *test))
        for name, (X, y) in (evaluate_on or {}).items():
            history.extra_accuracy[name].append(accuracy(global_model, X, y))
    history.model = global_model
    return history
