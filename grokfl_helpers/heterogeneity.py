"""When clients differ: client drift, label skew, FedProx, SCAFFOLD, personalization, compressed updates.

Taught in notebook 09. Every algorithm here is a ``federated.Strategy`` passed to the course's one
round loop, ``federated.run_rounds``; none copies the loop.

* ``update_drift``, ``MeasureDrift`` — how far each client's update points from the average one.
* ``dirichlet_split``, ``dirichlet_clients`` — label skew dialled by α, drawn the way Flower
  Datasets' ``DirichletPartitioner`` draws it; ``iid_like`` — the same emails in the same sizes,
  dealt at random.
* ``proximal_term``, ``proximal_gradient``, ``FedProx`` — FedProx (Li et al., MLSys 2020):
  μ/2‖w − w_global‖² added to each client's loss; ``flower_fedprox_round`` runs one round through
  Flower's own ``FedProx`` strategy to check ours against it.
* ``scaffold_client_update``, ``scaffold_server_update``, ``Scaffold`` — SCAFFOLD (Karimireddy et
  al., ICML 2020): control variates that correct every local step.
* ``personalize`` — the global model fine-tuned on each client's own emails.
* ``stochastic_quantize``, ``dequantize``, ``QuantizedFedAvg`` — 8-bit unbiased updates;
  ``top_k``, ``TopKFedAvg`` — the k largest entries of an update, with error feedback.

The local training steps of FedProx and SCAFFOLD are ``training.train`` with a
``gradient_correction``: a function that adds to each parameter's gradient before the SGD step.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np

from .federated import FedAvg, Strategy, apply_update, flatten, model_bytes, model_update, train_locally, unflatten
from .tensor import Tensor
from .training import SPAM_TASK

__all__ = [
    "Drift",
    "update_drift",
    "MeasureDrift",
    "dirichlet_split",
    "dirichlet_clients",
    "iid_like",
    "proximal_term",
    "proximal_gradient",
    "FedProx",
    "flower_fedprox_round",
    "scaffold_client_update",
    "scaffold_server_update",
    "Scaffold",
    "personalize",
    "stochastic_quantize",
    "dequantize",
    "top_k",
    "QuantizedFedAvg",
    "TopKFedAvg",
]


def _parameters(model) -> list[np.ndarray]:
    return [p.data for p in model.get_parameters()]


def _check_real(name: str, value, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


# ---------------------------------------------------------------------------- 1. drift


class Drift(NamedTuple):
    """One client's update against the average update of its round.

    Taught in notebook 09, §1."""

    distance: float  # ‖Δᵢ − Δ̄‖
    cosine: float  # cos(Δᵢ, Δ̄): 1 = the same direction, 0 = at right angles


def update_drift(global_model, local_models: dict, weights: dict | None = None) -> dict:
    """``{name: Drift(distance, cosine)}``: how far each client's update Δᵢ = local − global lies
    from the average update Δ̄ (weighted by ``weights[name]`` if given, as FedAvg weights it), and
    the cosine of the angle between them. Taught in notebook 09, §1.
    """
    if not local_models:
        raise ValueError("update_drift needs at least one local model")
    start, _ = flatten(global_model)
    updates = {name: flatten(model)[0] - start for name, model in local_models.items()}
    w = np.array([1.0 if weights is None else float(weights[name]) for name in updates])
    if w.sum() <= 0:
        raise ValueError("update_drift: the weights sum to zero")
    mean = sum(wi * u for wi, u in zip(w / w.sum(), updates.values()))
    mean_norm = np.linalg.norm(mean)
    drift = {}
    for name, u in updates.items():
        norms = np.linalg.norm(u) * mean_norm
        drift[name] = Drift(float(np.linalg.norm(u - mean)), float(u @ mean / norms) if norms > 0 else float("nan"))
    return drift


class MeasureDrift(Strategy):
    """Any strategy, unchanged, with the drift of every round written down. Taught in notebook 09, §1.

    ``MeasureDrift(FedAvg(weighted=True))`` trains and aggregates exactly as the strategy it wraps;
    before aggregating it records ``update_drift`` (weighted as the wrapped strategy weights) in
    ``self.rounds``, one ``{name: Drift}`` per round.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.weighted = bool(getattr(strategy, "weighted", False))
        self.rounds: list[dict] = []

    def train_client(self, name, global_model, X, y, **kwargs):
        return self.strategy.train_client(name, global_model, X, y, **kwargs)

    def aggregate(self, global_model, local_models, sizes, rng):
        self.rounds.append(update_drift(global_model, local_models, sizes if self.weighted else None))
        return self.strategy.aggregate(global_model, local_models, sizes, rng)

    def bytes_per_client(self, global_model) -> int:
        return self.strategy.bytes_per_client(global_model)

    def mean_distance(self) -> list[float]:
        """Per round, the clients' mean ‖Δᵢ − Δ̄‖."""
        return [float(np.mean([d.distance for d in r.values()])) for r in self.rounds]

    def mean_cosine(self) -> list[float]:
        """Per round, the clients' mean cosine between Δᵢ and Δ̄."""
        return [float(np.nanmean([d.cosine for d in r.values()])) for r in self.rounds]

    def __repr__(self):
        return f"MeasureDrift({self.strategy!r})"


# ---------------------------------------------------------------------------- 2. label skew


def dirichlet_split(labels, num_partitions: int, alpha: float, *, min_partition_size: int = 10,
                    self_balancing: bool = False, shuffle: bool = True, seed: int = 42) -> list[np.ndarray]:
    """Row indices of ``num_partitions`` partitions whose label mix is drawn from Dirichlet(α).
    Taught in notebook 09, §2.

    The draw of Flower Datasets' ``DirichletPartitioner`` (Yurochkin et al. 2019), with its defaults
    (``min_partition_size=10``, ``self_balancing=False``, ``shuffle=True``, ``seed=42``): for each
    label in order of first appearance, proportions p ~ Dir(α, …, α) over the partitions; with
    ``self_balancing=True``, a partition already above the average size gets no more (p set to 0 and
    the rest renormalised); that label's rows are cut at ``cumsum(p)·count``. The whole draw is
    repeated until every partition holds ``min_partition_size`` rows, at most 10 times more, then it
    gives up with a ``ValueError``. Each partition's rows are shuffled at the end. Large α gives
    every partition about the same mix; small α gives each partition mostly one label.
    """
    labels = np.asarray(labels).ravel()
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)) \
            or not 1 <= num_partitions <= len(labels):
        raise ValueError(f"num_partitions must be an integer between 1 and {len(labels)}, got {num_partitions!r}")
    alpha = _check_real("alpha", alpha, positive=True)
    if min_partition_size < 0:
        raise ValueError(f"min_partition_size must be >= 0, got {min_partition_size}")
    rng = np.random.default_rng(seed)
    _, first = np.unique(labels, return_index=True)
    classes = labels[np.sort(first)]
    average = len(labels) / num_partitions
    for attempt in range(11):
        parts = [[] for _ in range(num_partitions)]
        for label in classes:
            rows = np.flatnonzero(labels == label)
            p = rng.dirichlet(np.full(num_partitions, alpha))
            if self_balancing:
                p = np.where([len(part) > average for part in parts], 0.0, p)
                p = p / p.sum()
            cuts = (np.cumsum(p) * len(rows)).astype(int)[:-1]
            for part, piece in zip(parts, np.split(rows, cuts)):
                part.extend(piece.tolist())
        if min(len(part) for part in parts) >= min_partition_size:
            break
    else:
        raise ValueError(f"dirichlet_split: after 11 draws some partition still held fewer than "
                         f"min_partition_size={min_partition_size} rows (alpha={alpha}, {num_partitions} partitions, "
                         f"{len(classes)} labels). Raise alpha, or lower min_partition_size (0 lets a "
                         f"partition be empty), as Flower's DirichletPartitioner also asks")
    result = []
    for part in parts:
        if shuffle:
            rng.shuffle(part)
        result.append(np.array(part, dtype=np.int64))
    return result


def _distinct_training_rows(corpus) -> np.ndarray:
    """Each training email once (the book's interleaving repeats some), in training-set order."""
    _, first = np.unique(corpus.train_email, return_index=True)
    return np.sort(first)


def dirichlet_clients(corpus, num_clients: int = 20, alpha: float = 1.0, *, min_partition_size: int = 10,
                      self_balancing: bool = True, seed: int = 42) -> dict:
    """The training emails (each once) split over ``num_clients`` clients by ``dirichlet_split`` on
    the spam/ham label. Taught in notebook 09, §2. Keys ``"client 00"`` …; a client may hold no
    email when ``min_partition_size=0``. Self-balancing is on by default here (Flower's partitioner
    has it off by default): with two labels it keeps the clients' sizes closer together."""
    rows = _distinct_training_rows(corpus)
    parts = dirichlet_split(corpus.train_y[rows, 0], num_clients, alpha, min_partition_size=min_partition_size,
                            self_balancing=self_balancing, seed=seed)
    width = len(str(num_clients - 1))
    return {f"client {i:0{width}d}": (corpus.train_x[rows[part]], corpus.train_y[rows[part]])
            for i, part in enumerate(parts)}


def iid_like(clients: dict, seed: int = 0) -> dict:
    """The same emails as ``clients``, pooled, shuffled and dealt out again in the same sizes: an IID
    split to compare a non-IID one with, everything else equal. Taught in notebook 09, §1."""
    X = np.concatenate([X for X, _ in clients.values()])
    y = np.concatenate([y for _, y in clients.values()])
    order = np.random.default_rng(seed).permutation(len(X))
    ends = np.cumsum([len(X) for X, _ in clients.values()])
    return {f"iid {i}": (X[np.sort(part)], y[np.sort(part)])
            for i, part in enumerate(np.split(order, ends[:-1]))}


# ---------------------------------------------------------------------------- 3. FedProx


def proximal_term(w: Tensor, w_global, mu: float) -> Tensor:
    """FedProx's addition to a client's loss, μ/2‖w − w_global‖², built from notebook 01's Tensor
    ops so that autograd differentiates it. Taught in notebook 09, §3.

    ``w`` is a parameter ``Tensor``; ``w_global`` the same parameter as the server sent it (an array
    or a ``Tensor``, held constant). Returns a 0-d ``Tensor``.
    """
    mu = _check_real("mu", mu, minimum=0.0)
    w_global = w_global if isinstance(w_global, Tensor) else Tensor(np.asarray(w_global, dtype=np.float64))
    if w.shape != w_global.shape:
        raise ValueError(f"proximal_term: w has shape {w.shape}, w_global {w_global.shape}; pass the same parameter")
    difference = w - w_global
    total = difference * difference
    while total.data.ndim:
        total = total.sum(0)
    return total * Tensor(np.array(mu / 2))


def proximal_gradient(w, w_global, mu: float) -> np.ndarray:
    """The gradient of ``proximal_term`` with respect to ``w``, written down: μ(w − w_global).
    Taught in notebook 09, §3 (beside the term, and checked against it)."""
    mu = _check_real("mu", mu, minimum=0.0)
    w = w.data if isinstance(w, Tensor) else np.asarray(w, dtype=np.float64)
    w_global = w_global.data if isinstance(w_global, Tensor) else np.asarray(w_global, dtype=np.float64)
    if w.shape != w_global.shape:
        raise ValueError(f"proximal_gradient: w has shape {w.shape}, w_global {w_global.shape}")
    return mu * (w - w_global)


class FedProx(FedAvg):
    """FedProx (Li et al., MLSys 2020) as a strategy of the round loop. Taught in notebook 09, §3.

    Each client minimises its loss plus μ/2‖w − w_global‖²: every local SGD step adds
    ``proximal_gradient`` to the gradient (``training.train``'s ``gradient_correction``), pulling
    the model back towards the one the server sent. The server averages as FedAvg does (plain or
    ``weighted``). μ = 0 is FedAvg exactly. ``task.train`` must accept ``gradient_correction``
    (``training.SPAM_TASK``'s does). The bytes are FedAvg's: μ travels once, in the round's config.
    """

    def __init__(self, mu: float, weighted: bool = False):
        self.mu = _check_real("mu", mu, minimum=0.0)
        super().__init__(weighted)

    def train_client(self, name, global_model, X, y, *, epochs=1, batch_size=500, alpha=0.01, task=None):
        task = SPAM_TASK if task is None else task
        anchor = [w.copy() for w in _parameters(global_model)]

        def pull_back(parameters):
            for p, w_global in zip(parameters, anchor):
                p.grad.data += proximal_gradient(p.data, w_global, self.mu)

        return task.train(copy.deepcopy(global_model), X, y, batch_size=batch_size, epochs=epochs, alpha=alpha,
                          gradient_correction=pull_back)

    def __repr__(self):
        return f"FedProx(mu={self.mu}, weighted={self.weighted})"


def flower_fedprox_round(global_model, clients: dict, mu: float, *, epochs: int = 1, batch_size: int = 500,
                         alpha: float = 0.01):
    """One round driven by Flower's own ``FedProx`` strategy (``flwr.serverapp.strategy.FedProx``),
    with our FedProx clients: ``(new global model, the μ each client received)``. Taught in notebook
    09, §3.

    No simulation and no network: Flower's ``configure_train`` writes the messages (the global model
    and a config holding ``"proximal-mu"``) to a stand-in for the grid with one node per client;
    each client reads μ from its message and trains with ``FedProx(mu).train_client``; Flower's
    ``aggregate_train`` averages the replies, weighted by ``"num-examples"``. The result should
    equal ``run_round(..., strategy=FedProx(mu, weighted=True))`` up to the order of additions.

    Taught in notebook 09, §3.
    """
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedProx as FlowerFedProx
    from flwr.supercore.task_identity import TaskIdentity

    from .flower_bridge import arrays_to_model, model_to_arrays, quiet_flower

    names = list(clients)
    node_of = {1000 + i: name for i, name in enumerate(names)}

    class _Nodes:  # the one thing configure_train asks of a Grid here: who is connected
        def get_node_ids(self):
            return list(node_of)

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # Flower stamps messages with it
    try:
        with quiet_flower():  # Flower logs every step; only errors are shown here
            strategy = FlowerFedProx(proximal_mu=float(mu), min_train_nodes=len(names),
                                     min_available_nodes=len(names))
            questions = strategy.configure_train(1, model_to_arrays(global_model), ConfigRecord(), _Nodes())
            replies, received = [], {}
            for question in sorted(questions, key=lambda q: q.metadata.dst_node_id):
                name = node_of[question.metadata.dst_node_id]
                received[name] = question.content["config"]["proximal-mu"]
                X, y = clients[name]
                local = FedProx(received[name]).train_client(name, arrays_to_model(question.content["arrays"]), X, y,
                                                             epochs=epochs, batch_size=batch_size, alpha=alpha)
                content = RecordDict({"arrays": model_to_arrays(local),
                                      "metrics": MetricRecord({"num-examples": len(X)})})
                replies.append(Message(content, reply_to=question))
            arrays, _ = strategy.aggregate_train(1, replies)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    new_model = arrays_to_model(arrays)
    SPAM_TASK.fix(new_model)
    return new_model, received


# ---------------------------------------------------------------------------- 4. SCAFFOLD


def _check_controls(reference, *controls, what: str):
    shapes = [np.shape(a) for a in reference]
    for control in controls:
        got = [np.shape(a) for a in control]
        if got != shapes:
            raise ValueError(f"{what}: control variates of shapes {got} for parameters of shapes {shapes}; "
                             f"a control variate has exactly the model's shape (one per parameter)")


def scaffold_client_update(global_params, local_params, server_control, client_control, *, steps: int,
                           alpha: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A SCAFFOLD client's new control variate, after its local steps. Taught in notebook 09, §4.

    During its ``steps`` local SGD steps of size ``alpha`` the client added ``c − cᵢ`` to every
    gradient. Afterwards (option II of Karimireddy et al.):
    ``cᵢ⁺ = cᵢ − c + (x − y) / (steps · alpha)``, with x the global and y the local parameters.
    Returns ``(cᵢ⁺, Δcᵢ = cᵢ⁺ − cᵢ)``; the client keeps cᵢ⁺ and sends Δcᵢ with its model.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer (the local SGD steps taken), got {steps!r}")
    alpha = _check_real("alpha", alpha, positive=True)
    _check_controls(global_params, local_params, server_control, client_control, what="scaffold_client_update")
    new = [ci - c + (x - y) / (steps * alpha)
           for x, y, c, ci in zip(global_params, local_params, server_control, client_control)]
    return new, [n - ci for n, ci in zip(new, client_control)]


def scaffold_server_update(server_control, delta_controls: list, num_clients: int, *, sizes: list | None = None,
                           total_examples: int | None = None) -> list[np.ndarray]:
    """The server's new control variate, from the round's Δcᵢ. Taught in notebook 09, §4.

    Unweighted (``sizes=None``), the paper's rule: ``c + (1/N) Σᵢ Δcᵢ`` over the clients of the
    round, N being all the clients of the federation, sampled or not; it keeps c = (1/N) Σ cᵢ.
    Weighted (``sizes``: each reporting client's number of examples nᵢ, in the order of
    ``delta_controls``; ``total_examples``: n, the whole federation's examples):
    ``c + Σᵢ (nᵢ/n) Δcᵢ``, which keeps c = Σ (nᵢ/n) cᵢ, the average gradient of the weighted
    objective Σ (nᵢ/n) fᵢ that FedAvg weighted by data size minimizes.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if len(delta_controls) > num_clients:
        raise ValueError(f"{len(delta_controls)} clients reported in a federation of num_clients={num_clients}")
    _check_controls(server_control, *delta_controls, what="scaffold_server_update")
    if sizes is None and total_examples is None:
        return [c + sum(delta[k] for delta in delta_controls) / num_clients for k, c in enumerate(server_control)]
    if sizes is None or total_examples is None:
        raise ValueError("the weighted rule needs both sizes (each reporting client's number of examples) and "
                         "total_examples (the whole federation's); pass neither for the unweighted rule")
    if len(sizes) != len(delta_controls) or any(n < 0 for n in sizes):
        raise ValueError(f"sizes must give one number of examples >= 0 per reporting client: {len(sizes)} sizes "
                         f"for {len(delta_controls)} clients")
    if isinstance(total_examples, bool) or not isinstance(total_examples, (int, np.integer)) or total_examples < 1 \
            or sum(sizes) > total_examples:
        raise ValueError(f"total_examples must be a positive integer at least the round's {sum(sizes)} examples "
                         f"(it counts the whole federation's), got {total_examples!r}")
    return [c + sum(n * delta[k] for n, delta in zip(sizes, delta_controls)) / total_examples
            for k, c in enumerate(server_control)]


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al., ICML 2020) as a strategy of the round loop. Taught in notebook 09, §4.

    State kept across rounds (so use a new ``Scaffold`` for each run): the server's control variate
    c and each client's cᵢ, all starting at zero. A client adds ``c − cᵢ`` to every local gradient
    (``training.train``'s ``gradient_correction``): its own drift direction out, the federation's
    in. Then ``scaffold_client_update`` (option II) gives its new cᵢ; the server averages the models
    as FedAvg does (global step size 1) and applies ``scaffold_server_update``. ``num_clients`` is
    the size of the whole federation. Each client receives the model and c and sends its model and
    Δcᵢ: twice FedAvg's bytes.

    Which variant: ``weighted=False`` is the paper's algorithm (models averaged plainly,
    c ← c + (1/N) Σ Δcᵢ). ``weighted=True`` is its version for the data-size-weighted objective
    Σ (nᵢ/n) fᵢ that weighted FedAvg minimizes: models averaged by nᵢ over the round's clients, and
    c ← c + Σ (nᵢ/n) Δcᵢ with n = ``total_examples``, the whole federation's examples, so that
    c stays the weighted average of the cᵢ. (Weighting the models but not c would steer every local
    step towards the unweighted objective: a large difference when client sizes differ by 1000×.)
    """

    def __init__(self, num_clients: int, weighted: bool = False, *, total_examples: int | None = None):
        if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
            raise ValueError(f"num_clients must be a positive integer (the size of the federation), "
                             f"got {num_clients!r}")
        if weighted and (isinstance(total_examples, bool) or not isinstance(total_examples, (int, np.integer))
                         or total_examples < 1):
            raise ValueError(f"Scaffold(weighted=True) moves c by the sum of (n_i / n) * delta_c_i, so it needs n, the "
                             f"whole federation's number of examples: pass total_examples=sum(len(X) for X, _ in "
                             f"clients.values()); got total_examples={total_examples!r}")
        if not weighted and total_examples is not None:
            raise ValueError("total_examples is used only by Scaffold(weighted=True); the unweighted rule divides "
                             "by num_clients")
        self.total_examples = None if total_examples is None else int(total_examples)
        super().__init__(weighted)
        self.num_clients = int(num_clients)
        self.server_control: list[np.ndarray] | None = None
        self.client_controls: dict[str, list[np.ndarray]] = {}
        self._deltas: dict[str, list[np.ndarray]] = {}

    def _zeros(self, model):
        return [np.zeros_like(w) for w in _parameters(model)]

    def train_client(self, name, global_model, X, y, *, epochs=1, batch_size=500, alpha=0.01, task=None):
        task = SPAM_TASK if task is None else task
        if self.server_control is None:
            self.server_control = self._zeros(global_model)
        c = self.server_control
        ci = self.client_controls.get(name) or self._zeros(global_model)
        _check_controls(_parameters(global_model), c, ci, what="Scaffold")
        correction = [cs - cc for cs, cc in zip(c, ci)]

        def correct(parameters):
            for p, d in zip(parameters, correction):
                p.grad.data += d

        local = task.train(copy.deepcopy(global_model), X, y, batch_size=batch_size, epochs=epochs, alpha=alpha,
                           gradient_correction=correct)
        steps = epochs * math.ceil(len(X) / batch_size)
        if steps == 0:  # a client with no emails took no step: nothing to learn about its drift
            self._deltas[name] = self._zeros(global_model)
            return local
        new_ci, delta = scaffold_client_update(_parameters(global_model), _parameters(local), c, ci,
                                               steps=steps, alpha=alpha)
        self.client_controls[name] = new_ci
        self._deltas[name] = delta
        return local

    def aggregate(self, global_model, local_models, sizes, rng):
        new_model = super().aggregate(global_model, local_models, sizes, rng)
        deltas = [self._deltas.pop(name) for name in local_models]
        if self.weighted:
            self.server_control = scaffold_server_update(self.server_control, deltas, self.num_clients,
                                                         sizes=[sizes[name] for name in local_models],
                                                         total_examples=self.total_examples)
        else:
            self.server_control = scaffold_server_update(self.server_control, deltas, self.num_clients)
        return new_model

    def bytes_per_client(self, global_model) -> int:
        """Model and control variate, down and up: 4 copies of the model's size."""
        return 4 * model_bytes(global_model)

    def __repr__(self):
        total = f", total_examples={self.total_examples}" if self.weighted else ""
        return f"Scaffold(num_clients={self.num_clients}, weighted={self.weighted}{total})"


# ---------------------------------------------------------------------------- 5. personalization


def personalize(global_model, clients: dict, *, epochs: int = 1, batch_size: int = 500, alpha: float = 0.01,
                task=None) -> dict:
    """Each client's own copy of the global model, fine-tuned on its own emails for ``epochs``
    passes: ``{name: model}``. Taught in notebook 09, §5.

    The computation is a round's client half (``federated.train_locally``); the difference is what
    happens next: nothing is sent, each client keeps its model.
    """
    return train_locally(global_model, clients, epochs=epochs, batch_size=batch_size, alpha=alpha,
                         task=SPAM_TASK if task is None else task)


# ---------------------------------------------------------------------------- 6. compression


def stochastic_quantize(vector, bits: int = 8, rng: np.random.Generator | None = None, *,
                        scale: float | None = None) -> tuple[np.ndarray, float]:
    """``(q, scale)``: ``vector`` rounded to integers in [−L, L], L = 2^(bits−1) − 1, sent as ``bits``
    bits each, with the one float ``scale = max|vector|`` alongside. Taught in notebook 09, §6.

    Each entry x·L/scale is rounded down or up at random, up with probability equal to its
    fractional part, so ``dequantize(q, scale, bits)`` is unbiased: its expectation is ``vector``.
    ``scale=S`` uses a scale agreed in advance instead (entries beyond ±S are clipped to it): with
    one shared scale the clients' integers can be added, as secure aggregation adds them (§7).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8 (one signed byte or less), got {bits!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("stochastic_quantize needs rng=np.random.default_rng(seed): the rounding is random")
    vector = np.asarray(vector, dtype=np.float64).ravel()
    levels = 2 ** (bits - 1) - 1
    if scale is None:
        scale = float(np.abs(vector).max()) if vector.size else 0.0
    else:
        scale = _check_real("scale", scale, minimum=0.0)
        vector = np.clip(vector, -scale, scale)
    if scale == 0.0:
        return np.zeros(vector.size, dtype=np.int8), 0.0
    x = vector * (levels / scale)
    low = np.floor(x)
    q = low + (rng.random(vector.size) < x - low)
    return np.clip(q, -levels, levels).astype(np.int8), scale


def dequantize(q, scale: float, bits: int = 8) -> np.ndarray:
    """The numbers ``stochastic_quantize`` encoded: ``q · scale / L``. Taught in notebook 09, §6."""
    return np.asarray(q, dtype=np.float64) * (float(scale) / (2 ** (bits - 1) - 1))


def top_k(vector, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values)`` of the ``k`` entries of largest magnitude, indices sorted. Taught in
    notebook 09, §6. ``k`` equal to the length keeps everything."""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer count of entries, got {type(k).__name__}")
    if not 1 <= k <= vector.size:
        raise ValueError(f"k must be between 1 and the vector's length {vector.size}, got {k}")
    indices = np.sort(np.argpartition(np.abs(vector), vector.size - k)[vector.size - k:])
    return indices, vector[indices]


class _CompressedUpdates(FedAvg):
    """FedAvg whose clients send a compressed update. ``train_client`` returns the model the server
    rebuilds from what was sent (global + decoded update), so ``aggregate`` is FedAvg's."""

    def compress(self, name, update: np.ndarray) -> np.ndarray:  # -> the update the server decodes
        raise NotImplementedError

    def upload_bytes(self, n: int) -> int:
        raise NotImplementedError

    def train_client(self, name, global_model, X, y, **kwargs):
        local = super().train_client(name, global_model, X, y, **kwargs)
        update, shapes = flatten(model_update(global_model, local))
        return apply_update(global_model, unflatten(self.compress(name, update), shapes))

    def bytes_per_client(self, global_model) -> int:
        """The float64 model down, the compressed update up."""
        n = sum(w.size for w in _parameters(global_model))
        return model_bytes(global_model) + self.upload_bytes(n)


class QuantizedFedAvg(_CompressedUpdates):
    """FedAvg with each client's update sent as ``stochastic_quantize`` integers (``bits`` bits each)
    and one 8-byte scale. Taught in notebook 09, §6. Its own generator (``seed``) draws the rounding."""

    def __init__(self, bits: int = 8, weighted: bool = False, seed: int = 0):
        stochastic_quantize(np.zeros(1), bits, np.random.default_rng(0))  # checks bits
        super().__init__(weighted)
        self.bits = int(bits)
        self.rng = np.random.default_rng(seed)

    def compress(self, name, update):
        q, scale = stochastic_quantize(update, self.bits, self.rng)
        return dequantize(q, scale, self.bits)

    def upload_bytes(self, n):
        return math.ceil(n * self.bits / 8) + 8

    def __repr__(self):
        return f"QuantizedFedAvg(bits={self.bits}, weighted={self.weighted})"


class TopKFedAvg(_CompressedUpdates):
    """FedAvg with each client sending only the ``fraction`` of its update's entries that are largest
    in magnitude, as (4-byte index, 8-byte value) pairs. Taught in notebook 09, §6.

    With ``error_feedback`` (Stich et al. 2018; Karimireddy et al. 2019) each client keeps what it
    did not send and adds it to its next update, so nothing is lost, only delayed: per-client state,
    so use a new ``TopKFedAvg`` for each run.
    """

    def __init__(self, fraction: float, error_feedback: bool = True, weighted: bool = False):
        fraction = _check_real("fraction", fraction)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction is the share of entries sent and must lie in (0, 1], got {fraction}")
        super().__init__(weighted)
        self.fraction = fraction
        self.error_feedback = bool(error_feedback)
        self.residuals: dict[str, np.ndarray] = {}

    def k(self, n: int) -> int:
        """Entries sent out of ``n``."""
        return max(1, round(self.fraction * n))

    def compress(self, name, update):
        if self.error_feedback:
            update = update + self.residuals.get(name, 0.0)
        indices, values = top_k(update, self.k(update.size))
        sent = np.zeros_like(update)
        sent[indices] = values
        if self.error_feedback:
            self.residuals[name] = update - sent
        return sent

    def upload_bytes(self, n):
        return self.k(n) * (4 + 8)

    def __repr__(self):
        return f"TopKFedAvg(fraction={self.fraction}, error_feedback={self.error_feedback}, weighted={self.weighted})"
