"""Federated learning by hand: who holds which emails, how models are averaged, and a round.

A *round*: the server sends the global model to some clients; each trains a copy on its own
emails; each sends its model back; the server averages them into the next global model. The
emails never leave the clients — only models do, and notebook 04 shows what those give away.

* ``book_clients`` — the book's split: Bob, Alice and Sue.
* ``mailbox_clients`` — one client per Enron mailbox owner: a natural, non-IID split.
* ``iid_clients`` — many clients with a random share each.
* ``fedavg`` — the average of models, plain (the book) or weighted by data size (FedAvg,
  McMahan et al., 2017).
* ``Strategy``, ``FedAvg`` — a round's two halves (what a client does, how the server combines),
  as Flower's ``Strategy``; every algorithm of the course is one.
* ``run_rounds`` — the one round loop, whose strategy is a parameter; returns a ``History`` of
  accuracy, loss and traffic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .data import MAILBOXES
from .tensor import Layer
from .training import SPAM_TASK

__all__ = [
    "BOOK_SPLIT",
    "book_clients",
    "mailbox_clients",
    "mailbox_tests",
    "iid_clients",
    "fedavg",
    "model_update",
    "apply_update",
    "model_bytes",
    "flatten",
    "unflatten",
    "largest_difference",
    "train_locally",
    "Strategy",
    "FedAvg",
    "History",
    "poisson_sample_clients",
    "run_round",
    "run_rounds",
]


# ---------------------------------------------------------------------------- who holds what


# The book's split: which rows of the training set each client holds.
BOOK_SPLIT = {"Bob": slice(0, 1000), "Alice": slice(1000, 2000), "Sue": slice(2000, None)}


def book_clients(corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The book's split of the training set (``BOOK_SPLIT``): Bob the first 1,000 emails, Alice
    the next 1,000, Sue the rest (about 30,000).

    Taught in notebook 03, §2."""
    return {name: (corpus.train_x[rows], corpus.train_y[rows]) for name, rows in BOOK_SPLIT.items()}


def mailbox_clients(corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One client per Enron mailbox owner, holding that mailbox's training emails.

    The clients differ: enron1–3 are about 3 ham to 1 spam, enron4–6 about 1 to 3, and each
    mailbox's spam came from a different trap. An email the book's interleaving repeats is kept
    once. Keys look like ``"farmer-d (enron1)"``.

    Taught in notebook 03, §4.
    """
    _, first = np.unique(corpus.train_email, return_index=True)
    rows = np.sort(first)
    clients = {}
    for index, (archive, owner) in enumerate(MAILBOXES):
        mine = rows[corpus.train_mailbox[rows] == index]
        clients[f"{owner} ({archive})"] = (corpus.train_x[mine], corpus.train_y[mine])
    return clients


def mailbox_tests(corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each mailbox's own test emails, keyed as ``mailbox_clients`` is: the 2,000 test emails
    grouped by the mailbox they came from, for ``run_rounds(..., evaluate_on=...)``. Taught in
    notebook 03, §4."""
    return {f"{owner} ({archive})": (corpus.test_x[corpus.test_mailbox == index],
                                     corpus.test_y[corpus.test_mailbox == index])
            for index, (archive, owner) in enumerate(MAILBOXES)}


def iid_clients(corpus, n_clients: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``n_clients`` clients, each a random, equally sized share of the training set.

    Taught in notebook 03, §5."""
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

    Taught in notebook 03, §2.
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
    """What a client sends if it sends its change rather than its model: ``after - before``.

    Taught in notebook 04, §1."""
    a, b = _parameters(before), _parameters(after)
    if [x.shape for x in a] != [x.shape for x in b]:
        raise ValueError(f"model_update: shapes {[x.shape for x in a]} and {[x.shape for x in b]} differ")
    return [y - x for x, y in zip(a, b)]


def flatten(arrays) -> tuple[np.ndarray, tuple]:
    """A model's parameters as one flat vector, and the shapes to undo it. Taught in notebook 05.

    ``arrays`` is a model (anything with ``get_parameters()``), one array, or a list of arrays (as
    ``model_update`` returns). Secure aggregation masks, Paillier packs and CKKS encrypts one long
    vector; ``unflatten(vector, shapes)`` gives the arrays back.
    """
    if hasattr(arrays, "get_parameters"):
        arrays = _parameters(arrays)
    elif not isinstance(arrays, (list, tuple)):
        arrays = [arrays]
    arrays = [np.asarray(array) for array in arrays]
    if not arrays:
        raise ValueError("flatten: no arrays given (expected a model or one array per parameter)")
    shapes = tuple(array.shape for array in arrays)
    return np.concatenate([array.ravel() for array in arrays]), shapes


def unflatten(vector, shapes) -> list[np.ndarray]:
    """The arrays ``flatten`` made ``vector`` from, given their ``shapes``.

    Taught in notebook 05."""
    vector = np.asarray(vector)
    sizes = [int(np.prod(shape)) for shape in shapes]
    if vector.ndim != 1 or vector.size != sum(sizes):
        raise ValueError(f"unflatten: a vector of shape {vector.shape} cannot fill parameters of shapes "
                         f"{list(shapes)} ({sum(sizes)} numbers)")
    ends = np.cumsum(sizes)
    return [part.reshape(shape) for part, shape in zip(np.split(vector, ends[:-1]), shapes)]


def largest_difference(model_a, model_b) -> float:
    """The largest |difference| between corresponding weights of two models of one architecture:
    how the course checks that two ways of computing a model (by hand, secure, encrypted, on
    Flower) agree.

    Taught in notebook 05, §4."""
    return float(max(np.abs(u).max() for u in model_update(model_a, model_b)))


def apply_update(model, update):
    """A new model: ``model`` (left unchanged) plus ``update``, one array per parameter, as
    ``model_update`` returns and an aggregation step produces. Taught in notebook 07, §2: how a
    server that combines updates, not models (DP-FedAvg, the robust rules of notebook 11), moves
    the global model."""
    new_model = copy.deepcopy(model)
    parameters = new_model.get_parameters()
    if len(update) != len(parameters) or any(np.shape(u) != p.data.shape for u, p in zip(update, parameters)):
        raise ValueError(f"apply_update: an update of shapes {[np.shape(u) for u in update]} for parameters "
                         f"of shapes {[p.data.shape for p in parameters]}")
    for parameter, change in zip(parameters, update):
        parameter.data += change
        parameter.grad = None
    return new_model


def model_bytes(model) -> int:
    """Bytes needed to send the model's parameters as they are stored (float64: 8 per number).

    Taught in notebook 03, §7."""
    return int(sum(p.nbytes for p in _parameters(model)))


# ---------------------------------------------------------------------------- rounds


def train_locally(global_model, clients: dict, *, epochs: int = 1, batch_size: int = 500,
                  alpha: float = 0.01, task=SPAM_TASK) -> dict:
    """The clients' half of a plain FedAvg round: each trains its own copy of ``global_model``.

    Taught in notebook 03, §1. ``clients`` maps a name to ``(X, y)``; the result maps the same
    names to the trained models. ``global_model`` itself is left unchanged (``copy.deepcopy``:
    what the server sends out). ``task`` says how to train the model (``training.SPAM_TASK``).
    """
    return {name: task.train(copy.deepcopy(global_model), X, y, batch_size=batch_size, epochs=epochs, alpha=alpha)
            for name, (X, y) in clients.items()}


class Strategy:
    """One round's two halves, as Flower's ``Strategy`` has them: what each client does with the
    global model, and how the server combines what comes back. Taught in notebook 03, §3.

    ``run_rounds`` is the one round loop of the course; every algorithm is a ``Strategy`` passed to
    it: ``FedAvg`` here, ``privacy.DPFedAvg`` (notebook 07), the robust aggregators of notebook 11,
    FedProx and SCAFFOLD (notebook 09). Subclasses override what differs:

    * ``train_client(name, global_model, X, y, *, epochs, batch_size, alpha, task)``: the client's
      half; returns its trained model (by default: ``task.train`` on a copy, as the book does);
    * ``aggregate(global_model, local_models, sizes, rng)``: the server's half; ``local_models``
      and ``sizes`` map each participating client's name to its model and number of examples,
      ``rng`` is the round loop's seeded generator; returns the next global model;
    * ``bytes_per_client(global_model)``: what one client sends and receives in a round.
    """

    def train_client(self, name, global_model, X, y, *, epochs=1, batch_size=500, alpha=0.01, task=None):
        task = SPAM_TASK if task is None else task
        return task.train(copy.deepcopy(global_model), X, y, batch_size=batch_size, epochs=epochs, alpha=alpha)

    def aggregate(self, global_model, local_models: dict, sizes: dict, rng: np.random.Generator):
        raise NotImplementedError(f"{type(self).__name__} must define aggregate()")

    def bytes_per_client(self, global_model) -> int:
        """The model down to the client and back up, at 8 bytes a weight."""
        return 2 * model_bytes(global_model)


class FedAvg(Strategy):
    """The average of the clients' models: plain, as the book does (``weighted=False``), or weighted
    by each client's number of examples (FedAvg, McMahan et al. 2017). Taught in notebook 03."""

    def __init__(self, weighted: bool = False):
        self.weighted = bool(weighted)

    def aggregate(self, global_model, local_models, sizes, rng):
        weights = [sizes[name] for name in local_models] if self.weighted else None
        return fedavg(list(local_models.values()), weights)

    def __repr__(self):
        return f"FedAvg(weighted={self.weighted})"


def poisson_sample_clients(num_clients: int, sampling_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the clients taking part in a round: each independently with probability q.

    Taught in notebook 07. This is the sampling the DP accountant assumes (the sampled Gaussian
    mechanism of Mironov et al. 2019, and McMahan et al. 2018). Picking exactly m clients at random
    instead is a different mechanism, analysed under a different neighbouring relation (replace one
    client). On average ``num_clients · sampling_rate`` clients are returned, sorted; the count
    varies from round to round and may be zero.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.floating)):
        raise TypeError(f"sampling_rate must be a real number, got {type(sampling_rate).__name__}")
    if not 0.0 <= float(sampling_rate) <= 1.0:
        raise ValueError(f"sampling_rate is the probability that a client takes part in a round, so it must lie "
                         f"in [0, 1]; got {sampling_rate}. For m clients sampled out of N on average, pass m / N.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, e.g. np.random.default_rng(0); got {type(rng).__name__}")
    return np.flatnonzero(rng.random(int(num_clients)) < float(sampling_rate))


@dataclass
class History:
    """What happened in each round (index 0 is round 1).

    Taught in notebook 03, §3 (what run_rounds returns)."""

    accuracy: list[float] = field(default_factory=list)  # global model on the test set
    loss: list[float] = field(default_factory=list)  # global model's loss on the test set
    bytes_sent: list[int] = field(default_factory=list)  # models down to clients + models back up
    clients: list[list[str]] = field(default_factory=list)  # who took part
    extra_accuracy: dict[str, list[float]] = field(default_factory=dict)  # global model on other sets
    model: Layer | None = None  # the global model after the last round

    @property
    def rounds(self) -> list[int]:
        return list(range(1, len(self.accuracy) + 1))


def _check_distinct(names, where: str):
    seen, twice = set(), []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    if twice:
        raise ValueError(f"{where}: client(s) {twice} named more than once; each client takes part at most once "
                         f"per round (a client counted twice moves the model, and spends privacy, twice)")


def run_round(global_model, clients: dict, participants, *, strategy: Strategy | None = None,
              rng: np.random.Generator | None = None, epochs: int = 1, batch_size: int = 500,
              alpha: float = 0.01, task=None):
    """One round of the loop: the new global model (``global_model`` is left unchanged).

    Taught in notebook 03, §3 (one round of the loop; notebooks 07 and 08 call it on their own). Each of ``participants`` (names in ``clients``, each at most once)
    runs ``strategy.train_client``; ``strategy.aggregate`` combines their models (``FedAvg()`` by
    default); ``task.fix`` then keeps the padding row at zero. With no participants nothing is
    released and a copy of ``global_model`` comes back.
    """
    strategy = FedAvg() if strategy is None else strategy
    task = SPAM_TASK if task is None else task
    rng = np.random.default_rng(0) if rng is None else rng
    participants = list(participants)
    unknown = [name for name in participants if name not in clients]
    if unknown:
        raise ValueError(f"participants {unknown} are not among the clients ({len(clients)} of them)")
    _check_distinct(participants, "run_round")
    if not participants:
        return copy.deepcopy(global_model)
    local_models = {name: strategy.train_client(name, global_model, *clients[name], epochs=epochs,
                                                batch_size=batch_size, alpha=alpha, task=task)
                    for name in participants}
    sizes = {name: len(clients[name][0]) for name in participants}
    new_model = strategy.aggregate(global_model, local_models, sizes, rng)
    task.fix(new_model)
    return new_model


def run_rounds(
    model,
    clients: dict,
    test: tuple,
    rounds: int = 3,
    *,
    strategy: Strategy | None = None,
    clients_per_round: int | None = None,
    sampling_rate: float | None = None,
    weighted: bool = False,
    epochs: int = 1,
    batch_size: int = 500,
    alpha: float = 0.01,
    evaluate_on: dict | None = None,
    task=None,
    seed: int | None = 0,
    on_round=None,
) -> History:
    """The course's one round loop: ``rounds`` rounds of federated training from ``model`` (left
    unchanged). Taught in notebook 03; every later algorithm is a ``strategy`` passed to it.

    Each round:

    1. **who takes part** — all of ``clients`` (in their given order), or ``clients_per_round`` of
       them drawn without replacement, or, with ``sampling_rate=q``, each client independently
       with probability q (Poisson sampling, which the DP accountant of notebook 07 assumes; a
       round may then have nobody, and the model does not change);
    2. **the clients' half** — ``strategy.train_client`` on each participant's ``(X, y)``;
    3. **the server's half** — ``strategy.aggregate`` turns the local models into the next global
       model (default ``FedAvg(weighted)``: the plain mean, or FedAvg by data size);
    4. ``task.fix`` keeps what is fixed by construction fixed (the spam model's padding row at 0);
    5. the global model is evaluated on ``test = (X, y)`` and on every set in ``evaluate_on``;
       ``on_round(round_number, global_model)`` is called if given.

    One ``np.random.default_rng(seed)`` draws who takes part and whatever the strategy draws (DP's
    noise), in that order, so a run repeats exactly. A printed seed makes the sampling predictable
    to anyone who reads it, which the DP accountant's amplification by sampling does not allow:
    ``seed=None`` draws a fresh seed from the operating system's entropy instead (notebook 07, §2). ``task`` says how to train and evaluate the
    model: ``training.SPAM_TASK`` by default.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if not clients:
        raise ValueError("run_rounds needs at least one client")
    if strategy is None:
        strategy = FedAvg(weighted=weighted)
    elif weighted:
        raise ValueError("pass weighted= to FedAvg(weighted=True) when you pass a strategy, not to run_rounds")
    task = SPAM_TASK if task is None else task
    names = list(clients)
    if clients_per_round is not None and sampling_rate is not None:
        raise ValueError("choose clients_per_round (exactly m clients a round) or sampling_rate "
                         "(each client with probability q), not both")
    m = len(names) if clients_per_round is None else clients_per_round
    if not 1 <= m <= len(names):
        raise ValueError(f"clients_per_round must be between 1 and {len(names)}, got {clients_per_round}")
    if sampling_rate is not None and not 0 < float(sampling_rate) <= 1:
        raise ValueError(f"sampling_rate is each client's chance to take part in a round and must lie in "
                         f"(0, 1], got {sampling_rate}")
    rng = np.random.default_rng(seed)
    history = History(extra_accuracy={name: [] for name in (evaluate_on or {})})
    global_model = copy.deepcopy(model)
    for round_number in range(1, rounds + 1):
        if sampling_rate is not None:
            chosen = [names[i] for i in poisson_sample_clients(len(names), sampling_rate, rng)]
        elif m == len(names):
            chosen = names
        else:
            chosen = [names[i] for i in sorted(rng.choice(len(names), m, replace=False))]
        history.bytes_sent.append(len(chosen) * strategy.bytes_per_client(global_model))
        global_model = run_round(global_model, clients, chosen, strategy=strategy, rng=rng, epochs=epochs,
                                 batch_size=batch_size, alpha=alpha, task=task)
        history.clients.append(list(chosen))
        history.accuracy.append(task.accuracy(global_model, *test))
        history.loss.append(task.loss(global_model, *test))
        for name, (X, y) in (evaluate_on or {}).items():
            history.extra_accuracy[name].append(task.accuracy(global_model, X, y))
        if on_round is not None:
            on_round(round_number, global_model)
    history.model = global_model
    return history
