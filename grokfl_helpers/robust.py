"""Robust aggregation: server rules that a few malicious clients cannot steer. Taught in notebook 11.

FedAvg's mean gives every client a lever as long as it likes: a client that multiplies its update by
100 moves the average 100 times as far (model replacement, Bagdasaryan et al., AISTATS 2020). A
robust aggregator bounds that lever. Each rule below is a pure function on a matrix of updates (one
flattened update per row, ``federated.flatten``) and a ``federated.Strategy`` for the one round loop
(``federated.run_rounds(..., strategy=robust.Median())``); only the server's half, ``aggregate``,
changes.

* ``norm_bounded_mean`` / ``NormBounding`` — clip each update to L2 norm ``S``, average, optionally
  add Gaussian noise ("weak DP", Sun, Kairouz, Suresh, McMahan, *Can You Really Backdoor Federated
  Learning?*, 2019). The only one of these that works on a sum, so the only one that survives
  secure aggregation (and even then only if the clients clip themselves).
* ``coordinate_median`` / ``Median`` — each weight the median of the clients' values
  (Yin, Chen, Ramchandran, Bartlett, ICML 2018). Flower: ``FedMedian``.
* ``trimmed_mean`` / ``TrimmedMean`` — each weight the mean after dropping the ``int(beta * n)``
  largest and as many smallest values (Yin et al. 2018). Flower: ``FedTrimmedAvg(beta=...)``.
* ``krum_scores``, ``multi_krum`` / ``Krum``, ``MultiKrum`` — keep the update(s) closest to their
  ``n - f - 2`` nearest neighbours (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017).
  Flower: ``Krum``, ``MultiKrum``.
* ``bulyan`` / ``Bulyan`` — Multi-Krum's ``n - 2f`` updates, then per weight the mean of the
  ``n - 4f`` values closest to their median (El Mhamdi, Guerraoui, Rouault, ICML 2018). Flower:
  ``Bulyan``.

Where Flower 1.42 (``flwr.serverapp.strategy``) and the papers differ, we follow Flower, so that the
tests can assert equality (``flower_aggregate`` runs one of Flower's strategies on the same client
models), and say so in each docstring. Every rule here treats every client alike (no weighting by
data size): a weight per client would be one more lever for a liar, who can claim any number of
examples.

What these defend against: a minority of malicious clients (integrity). What they cost: they need
every client's update in the clear, so they cannot run under secure aggregation (notebook 05) or
homomorphic encryption (notebook 06); and on non-IID data they can outvote honest clients that are
merely unusual. Notebook 11 measures both.
"""

from __future__ import annotations

import logging
import time
from numbers import Integral, Real

import numpy as np

from .federated import Strategy, apply_update, flatten, model_update, unflatten

__all__ = [
    "stack_updates",
    "norm_bounded_mean",
    "coordinate_median",
    "trimmed_mean",
    "krum_scores",
    "multi_krum",
    "bulyan",
    "RobustAggregator",
    "NormBounding",
    "Median",
    "TrimmedMean",
    "Krum",
    "MultiKrum",
    "Bulyan",
    "largest_tolerated",
    "flower_aggregate",
]


# ---------------------------------------------------------------------------- checking inputs


def stack_updates(updates) -> np.ndarray:
    """Updates as one float matrix, a row per client. Taught in notebook 11, §4.

    ``updates`` is a 2-d array already, or a list whose items are each one array or a list of
    arrays (one per model parameter, as ``federated.model_update`` returns); each is flattened.
    """
    if isinstance(updates, np.ndarray) and updates.ndim == 2:
        matrix = updates.astype(np.float64, copy=False)
    else:
        if isinstance(updates, dict):
            raise TypeError("pass the updates as a list (e.g. list(updates.values())), not a dict")
        rows = [flatten(update)[0] for update in updates]
        if not rows:
            raise ValueError("no updates to aggregate: at least one client must send one")
        sizes = {row.size for row in rows}
        if len(sizes) > 1:
            raise ValueError(f"the updates have different numbers of weights {sorted(sizes)}; "
                             f"every client must train the same model")
        matrix = np.stack(rows).astype(np.float64, copy=False)
    if matrix.shape[0] == 0:
        raise ValueError("no updates to aggregate: at least one client must send one")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("an update contains NaN or inf; a client whose training diverged must be left out")
    return matrix


def _check_count(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise TypeError(f"beta must be a number, got {type(beta).__name__}")
    beta = float(beta)
    if not 0.0 <= beta < 0.5:
        raise ValueError(
            f"beta is the fraction of values trimmed from EACH end, so it must lie in [0, 0.5); got {beta}. "
            f"At 0.5 nothing would be left to average; for the middle value use Median() instead."
        )
    return beta


def _check_krum(n: int, num_malicious: int, what: str = "Krum") -> None:
    if n <= 2 * num_malicious + 2:
        largest = (n - 3) // 2
        hint = (f"with {n} clients assume at most f = {largest}" if largest >= 0
                else f"{what} needs at least 3 clients")
        raise ValueError(
            f"{what} with f = {num_malicious} malicious clients needs n > 2f + 2 = {2 * num_malicious + 2} "
            f"clients in the round, got n = {n}: each score sums the distances to the n - f - 2 nearest "
            f"neighbours, and the guarantee (Blanchard et al. 2017) needs n > 2f + 2; {hint}"
        )


# ---------------------------------------------------------------------------- the rules, on arrays


def norm_bounded_mean(updates, clip_norm: float, noise_std: float = 0.0, rng: np.random.Generator | None = None):
    """Clip each update to L2 norm ``clip_norm``, average, add N(0, noise_std²) to every weight.

    Taught in notebook 11, §4. Sun et al. (2019) call the clipping *norm bounding* and the noise
    *weak differential privacy*: noise far below what a DP guarantee needs, enough to wash out a
    small backdoor. The clipping is ``privacy.clip_update``'s, and the mean is over the clients that
    sent an update (DP-FedAvg, notebook 07, divides by the *expected* number instead). Returns the
    aggregated update as a flat vector.
    """
    from .privacy import _check_clip_norm, _check_positive_finite  # the same checks as notebook 07's

    matrix = stack_updates(updates)
    clip_norm = _check_clip_norm(clip_norm)
    noise_std = _check_positive_finite("noise_std", noise_std, allow_zero=True)
    norms = np.linalg.norm(matrix, axis=1)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, np.finfo(float).tiny))
    mean = (matrix * scale[:, None]).mean(axis=0)
    if noise_std > 0:
        if not isinstance(rng, np.random.Generator):
            raise TypeError("noise_std > 0 needs rng, a seeded np.random.Generator (e.g. np.random.default_rng(0))")
        mean = mean + rng.normal(0.0, noise_std, size=mean.shape)
    return mean


def coordinate_median(updates) -> np.ndarray:
    """Each weight the median of the clients' values (the mean of the two middle ones for even n).

    Taught in notebook 11, §4. Flower's ``FedMedian`` computes ``np.median`` of the clients' models
    along the client axis: the same, since the median of models is the global model plus the median
    of updates. With fewer than half of the clients malicious, every weight stays within the honest
    clients' range.
    """
    return np.median(stack_updates(updates), axis=0)


def trimmed_mean(updates, beta: float = 0.2) -> np.ndarray:
    """Each weight the mean of its values after dropping the ``k = int(beta * n)`` largest and the
    ``k`` smallest. Taught in notebook 11, §4.

    As Flower's ``FedTrimmedAvg`` (and ``scipy.stats.trim_mean``): ``k`` is rounded *down*, so at
    Flower's default ``beta = 0.2`` three clients lose nobody (``int(0.6) = 0``: the plain mean) and
    ten lose two at each end. Yin et al. (2018) state it for ``beta * n`` a whole number. ``beta``
    must lie in [0, 0.5).
    """
    beta = _check_beta(beta)
    matrix = stack_updates(updates)
    n = matrix.shape[0]
    k = int(beta * n)
    ordered = np.sort(matrix, axis=0)
    return ordered[k:n - k].mean(axis=0)


def _squared_distances(matrix: np.ndarray) -> np.ndarray:
    """All pairwise squared L2 distances between rows, as Flower computes them:
    ``|x|² + |y|² - 2 x·y`` (so a row's distance to itself may come out as ±1e-16, not 0).

    Made exactly symmetric (a matrix product need not be, in its last bit), so that two clients that
    are each other's nearest neighbour get exactly equal scores on every machine, and the tie goes
    to the first of them everywhere."""
    norms = np.square(matrix).sum(axis=1)
    distances = norms[:, None] + norms[None, :] - 2 * matrix @ matrix.T
    return (distances + distances.T) / 2


def krum_scores(updates, num_malicious: int) -> np.ndarray:
    """Each client's Krum score: the sum of squared distances from its update to its ``n - f - 2``
    nearest neighbours (itself excluded). Taught in notebook 11, §4.

    Summing over the nearest n - f - 2 rather than all n - 1 keeps an honest client's score from
    being inflated by the f liars however far away they sit, while a liar's own score still counts
    distances to honest clients (Blanchard et al. 2017). Needs n > 2f + 2, and raises otherwise;
    Flower does not check, and falls back to one neighbour (``max(1, n - f - 2)``). Distances
    between updates equal distances between the models Flower compares (the same global model is
    subtracted from each).

    Flower sorts each row of the distance matrix and drops the first entry, taking it to be the
    client itself; we drop the client itself. The two differ only when two clients sent identical
    updates, and then only by rounding (both dropped distances are 0).
    """
    matrix = stack_updates(updates)
    f = _check_count("num_malicious", num_malicious)
    n = matrix.shape[0]
    _check_krum(n, f)
    distances = _squared_distances(matrix)
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(distances[i], i)
        scores[i] = np.sort(others)[:n - f - 2].sum()
    return scores


def multi_krum(updates, num_malicious: int, num_selected: int | None = None, weights=None):
    """Multi-Krum: the (weighted) mean of the ``m`` updates with the lowest Krum scores, and the
    indices of those clients (best first). ``m = 1`` is Krum itself. Taught in notebook 11, §4.

    ``num_selected`` (m) defaults to ``n - f``, as Blanchard et al. suggest. ``weights`` (say the
    clients' numbers of examples) weights the mean of the selected updates as Flower's
    ``MultiKrum`` does with its ``weighted_by_key``; ``None`` is the paper's plain mean. Ties in
    score go to the client that comes first (``np.argsort``'s stable order, as Flower's).
    """
    matrix = stack_updates(updates)
    n = matrix.shape[0]
    f = _check_count("num_malicious", num_malicious)
    m = n - f if num_selected is None else _check_count("num_selected", num_selected, minimum=1)
    if m > n:
        raise ValueError(f"num_selected = {m} but only {n} clients sent an update")
    scores = krum_scores(matrix, f)
    chosen = np.argsort(scores, kind="stable")[:m]
    if weights is None:
        return matrix[chosen].mean(axis=0), chosen
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,) or np.any(weights < 0) or weights[chosen].sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers, one per client, positive on the chosen ones")
    w = weights[chosen] / weights[chosen].sum()
    return (w[:, None] * matrix[chosen]).sum(axis=0), chosen


def bulyan(updates, num_malicious: int) -> np.ndarray:
    """Bulyan: Multi-Krum keeps ``theta = n - 2f`` updates; then each weight is the mean of the
    ``beta = theta - 2f`` of their values closest to the median of those values.

    Taught in notebook 11, §4. Needs ``n >= 4f + 3``. As Flower 1.42's ``Bulyan``
    (``flwr.serverapp.strategy``), the ``theta`` updates are chosen in one pass of Multi-Krum over
    all n scores. El Mhamdi et al. (2018), and Flower's older ``flwr.server.strategy.Bulyan``, run
    Krum again after removing each pick, so the scores of later picks are computed among fewer
    clients; the two can choose different sets.
    """
    matrix = stack_updates(updates)
    n = matrix.shape[0]
    f = _check_count("num_malicious", num_malicious)
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan with f = {f} needs n >= 4f + 3 = {4 * f + 3} clients in the round, got n = {n}; "
                         f"assume at most f = {max((n - 3) // 4, 0)}")
    theta, beta = n - 2 * f, n - 4 * f
    _, chosen = multi_krum(matrix, f, theta)
    selected = matrix[chosen]
    median = np.median(selected, axis=0)
    closest = np.argpartition(np.abs(selected - median), beta - 1, axis=0)[:beta]
    return np.take_along_axis(selected, closest, axis=0).mean(axis=0)


# ---------------------------------------------------------------------------- as strategies


class RobustAggregator(Strategy):
    """The server's half of a round as a robust rule on the clients' updates: ``combine`` maps the
    matrix of updates (a row per client, in the order the round loop lists them) and the round's
    ``rng`` to one aggregated update, which is added to the global model. Clients train as in
    FedAvg. Taught in notebook 11, §4.
    """

    def combine(self, updates: np.ndarray, names: list, sizes: list, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define combine()")

    def aggregate(self, global_model, local_models, sizes, rng):
        names = list(local_models)
        rows = [flatten(model_update(global_model, local_models[name]))[0] for name in names]
        _, shapes = flatten(global_model)
        change = unflatten(self.combine(np.stack(rows), names, [sizes[name] for name in names], rng), shapes)
        return apply_update(global_model, change)


class NormBounding(RobustAggregator):
    """Clip every update to L2 norm ``clip_norm``, average, and add ``noise_std`` Gaussian noise to
    every weight if it is above 0 (``norm_bounded_mean``; Sun et al. 2019). Taught in notebook 11.

    Unlike ``privacy.DPFedAvg`` this divides by the number of clients in the round and makes no
    privacy claim: the noise is there to blunt a backdoor, and is far too small for a useful ε.
    """

    def __init__(self, clip_norm: float, noise_std: float = 0.0):
        from .privacy import _check_clip_norm, _check_positive_finite

        self.clip_norm = _check_clip_norm(clip_norm)
        self.noise_std = _check_positive_finite("noise_std", noise_std, allow_zero=True)

    def combine(self, updates, names, sizes, rng):
        return norm_bounded_mean(updates, self.clip_norm, self.noise_std, rng)

    def __repr__(self):
        return f"NormBounding(clip_norm={self.clip_norm}, noise_std={self.noise_std})"


class Median(RobustAggregator):
    """The coordinate-wise median of the updates (``coordinate_median``), as Flower's ``FedMedian``.

    Taught in notebook 11, §4."""

    def combine(self, updates, names, sizes, rng):
        return coordinate_median(updates)

    def __repr__(self):
        return "Median()"


class TrimmedMean(RobustAggregator):
    """The coordinate-wise trimmed mean (``trimmed_mean``), as Flower's ``FedTrimmedAvg(beta)``:
    ``int(beta * n)`` values dropped at each end of every weight.

    Taught in notebook 11, §4."""

    def __init__(self, beta: float = 0.2):
        self.beta = _check_beta(beta)

    def combine(self, updates, names, sizes, rng):
        return trimmed_mean(updates, self.beta)

    def __repr__(self):
        return f"TrimmedMean(beta={self.beta})"


class MultiKrum(RobustAggregator):
    """The mean of the ``num_selected`` updates with the best Krum scores (``multi_krum``).

    ``num_malicious`` is f, the number of malicious clients the server assumes per round (a round
    needs n > 2f + 2); ``num_selected`` defaults to n - f; ``weighted=True`` weights the selected
    updates by their clients' numbers of examples, as Flower's ``MultiKrum`` does by default.
    ``last_selected`` holds the names chosen in the latest round.

    Taught in notebook 11, §4.
    """

    def __init__(self, num_malicious: int, num_selected: int | None = None, weighted: bool = False):
        self.num_malicious = _check_count("num_malicious", num_malicious)
        self.num_selected = None if num_selected is None else _check_count("num_selected", num_selected, minimum=1)
        self.weighted = bool(weighted)
        self.last_selected: list = []

    def combine(self, updates, names, sizes, rng):
        change, chosen = multi_krum(updates, self.num_malicious, self.num_selected,
                                    weights=sizes if self.weighted else None)
        self.last_selected = [names[i] for i in chosen]
        return change

    def __repr__(self):
        return (f"{type(self).__name__}(num_malicious={self.num_malicious}, num_selected={self.num_selected}, "
                f"weighted={self.weighted})")


class Krum(MultiKrum):
    """Krum: the one update with the lowest score becomes the round's update (``multi_krum`` with
    m = 1), as Flower's ``Krum``. ``num_malicious`` is f; a round needs n > 2f + 2 clients.

    Taught in notebook 11, §4."""

    def __init__(self, num_malicious: int):
        super().__init__(num_malicious, num_selected=1)

    def __repr__(self):
        return f"Krum(num_malicious={self.num_malicious})"


class Bulyan(RobustAggregator):
    """Bulyan (``bulyan``): Multi-Krum's n - 2f, then a trimmed mean around the median per weight,
    as Flower 1.42's ``Bulyan``; a round needs n >= 4f + 3 clients.

    Taught in notebook 11, §4."""

    def __init__(self, num_malicious: int):
        self.num_malicious = _check_count("num_malicious", num_malicious)

    def combine(self, updates, names, sizes, rng):
        return bulyan(updates, self.num_malicious)

    def __repr__(self):
        return f"Bulyan(num_malicious={self.num_malicious})"


def largest_tolerated(n_clients: int) -> int:
    """The largest f Krum accepts with ``n_clients`` in a round: n > 2f + 2, so f = (n - 3) // 2.

    Taught in notebook 11, §4."""
    return max((int(n_clients) - 3) // 2, 0)


# ---------------------------------------------------------------------------- checked against Flower


def flower_aggregate(flower_strategy, models, sizes, *, server_round: int = 1) -> list[np.ndarray]:
    """The global model's arrays that a Flower strategy's server step makes of the clients' ``models``.
    Taught in notebook 11, §4 (and used by ``tests/test_poisoning.py``).

    ``flower_strategy``: one of Flower's Message-API strategies, e.g.
    ``flwr.serverapp.strategy.FedMedian()``. ``models``: one per client, each a course model (anything
    with ``get_parameters()``) or a list of numpy arrays. ``sizes``: each client's number of examples,
    sent as the ``"num-examples"`` metric (the key Flower's strategies weight by, by default).

    Each model becomes the reply a Flower client sends after training (a ``Message`` holding an
    ``ArrayRecord`` of its arrays and a ``MetricRecord``), and the replies go to the strategy's
    ``aggregate_train``: only the server's function runs, with no simulation, no network and no
    Ray. ``flwr`` is imported here, on the first call, so that ``import robust`` stays light; its
    INFO log is silenced while the strategy runs.
    """
    if not hasattr(flower_strategy, "aggregate_train"):
        raise TypeError("flower_strategy must be one of Flower's Message-API strategies (from "
                        f"flwr.serverapp.strategy, e.g. FedMedian()), got {type(flower_strategy).__name__}")
    models, sizes = list(models), list(sizes)
    if not models or len(models) != len(sizes):
        raise ValueError(f"give one size per model and at least one model, got {len(models)} models and "
                         f"{len(sizes)} sizes")
    sizes = [_check_count("each size (number of examples)", n, minimum=1) for n in sizes]

    from flwr.app import ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

    def as_arrays(model):
        parameters = model.get_parameters() if hasattr(model, "get_parameters") else model
        return ArrayRecord([np.array(getattr(p, "data", p), dtype=np.float64, copy=True) for p in parameters])

    replies = [Message(RecordDict({"arrays": as_arrays(model), "metrics": MetricRecord({"num-examples": n})}),
                       metadata=Metadata(run_id=1, message_id=f"reply {i}", src_node_id=i + 1, dst_node_id=0,
                                         reply_to_message_id=f"instruction {i}", group_id=str(server_round),
                                         created_at=time.time(), ttl=60.0, message_type=MessageType.TRAIN))
               for i, (model, n) in enumerate(zip(models, sizes))]
    flower_log = logging.getLogger("flwr")
    saved_level = flower_log.level
    flower_log.setLevel(logging.ERROR)
    try:
        arrays, _ = flower_strategy.aggregate_train(server_round, replies)
    finally:
        flower_log.setLevel(saved_level)
    if arrays is None:
        raise ValueError(f"{type(flower_strategy).__name__} returned no model for these {len(models)} replies "
                         "(check its preconditions, e.g. Bulyan's n >= 4f + 3)")
    return arrays.to_numpy_ndarrays()
