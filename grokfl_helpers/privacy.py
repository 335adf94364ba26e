"""Differential privacy for federated averaging: DP-FedAvg and an accountant for its (ε, δ).

Secure aggregation (notebook 05) hides each client's update but gives the server their exact sum,
and the sum still spells out the union of the clients' words. DP-FedAvg (McMahan, Ramage, Talwar,
Zhang, *Learning Differentially Private Recurrent Language Models*, ICLR 2018) changes what is
released instead of who sees it:

1. each sampled client's update is **clipped** to L2 norm at most ``S`` (the norm over *all* of its
   parameters together), so no single client can move the model by more than ``S``;
2. the server **averages** the clipped updates, dividing by the *expected* number of clients per
   round ``m = q·N``, never by the number that actually turned up (see ``dp_fedavg_aggregate``);
3. the server **adds Gaussian noise** of standard deviation ``z·S/m`` to every coordinate, where
   ``z`` is the *noise multiplier*.

``dp_fedavg_aggregate`` is that server step, on plain arrays; ``DPFedAvg`` is the same step as a
strategy of the course's one round loop, ``federated.run_rounds(..., strategy=DPFedAvg(...),
sampling_rate=q)``, which samples clients the Poisson way. The accountant (``dp_fedavg_epsilon``)
then says how well one client is hidden after ``T`` rounds: the run is (ε, δ)-differentially
private.

What is protected — the neighbouring relation
    Two federations are *neighbours* when one has one whole client more than the other: Bob with
    all of his emails is either in or out (add/remove one client). This is user-level DP — here
    client-level — as in McMahan et al. 2018: the guarantee covers everything Bob contributes, not
    a single email of his. Adding or removing Bob changes the sum of clipped updates by at most
    ``S`` in L2 norm, which is the sensitivity the noise is calibrated to.

The δ we use, and why
    (ε, δ)-DP tolerates a total failure with probability about δ *per client*: a mechanism that
    publishes each client's entire mailbox independently with probability δ is (0, δ)-DP. So δ has
    to be far below 1/N for N clients. We fix ``DEFAULT_DELTA = 1e-5``: 1,000× below 1/N for the
    100 clients of notebook 07, and below 1/N for any federation of up to 100,000 clients. The
    popular rule δ = 1/N^1.1 would give δ ≈ 0.006 for 100 clients (a 0.6% chance, per person, that
    everything leaks) and δ ≈ 0.30 for Bob, Alice and Sue — publishing each of their mailboxes with
    probability 30% would still count as "private". So with three clients any δ large enough to
    help is absurd, and with a sensible δ a useful model costs an ε in the tens (notebook 07).

The accountant
    Rényi differential privacy (Mironov, CSF 2017). One round of DP-FedAvg is the *sampled Gaussian
    mechanism*: each of the N clients takes part independently with probability q (Poisson
    sampling, ``poisson_sample_clients``), and noise of multiplier z is added to the sum. Its RDP at
    order α is

    * q = 1 (every client, every round): ``α / (2 z²)`` — the plain Gaussian mechanism;
    * 0 < q < 1, integer α ≥ 2 (Mironov, Talwar, Zhang, *Rényi Differential Privacy of the Sampled
      Gaussian Mechanism*, 2019, Sec. 3.3):
      ``log( Σ_{k=0..α} C(α,k) (1−q)^(α−k) q^k exp((k²−k) / (2z²)) ) / (α − 1)``,
      summed here in log space (every term is positive, so a log-sum-exp neither overflows nor
      cancels).

    RDP composes by addition: T rounds cost T times one round, at every order. The conversion to
    (ε, δ) is the improved one of Canonne, Kamath & Steinke (*The Discrete Gaussian for Differential
    Privacy*, 2020, Prop. 12; the same bound appears in Balle et al., AISTATS 2020, and Asoodeh et
    al. 2021), which Google's ``dp_accounting`` also uses:
    ``ε = min_α [ RDP(α) + log((α−1)/α) − (log δ + log α) / (α−1) ]``. The classic conversion of
    Mironov 2017 (Prop. 3), ``ε = min_α [ RDP(α) + log(1/δ) / (α−1) ]``, is always a little larger
    and is available as ``conversion="classic"`` for comparison with older papers.

    Orders are integers 2…512 by default: the sampled-Gaussian formula above needs integer α, and
    in the regime that matters (ε of a few units or less) the best order is large enough that the
    integer grid costs almost nothing. For q = 1 any real α > 1 may be passed.

Everything is plain numpy and the standard library. Noise comes from the operating system's secure
random source unless the caller passes a seeded ``np.random.Generator`` (or ``reproducible=True``
to ``DPFedAvg``), which the notebooks do only so that their printed numbers repeat exactly.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import numpy as np

from .federated import Strategy, apply_update, model_update, poisson_sample_clients

__all__ = [
    "DEFAULT_DELTA",
    "RDP_ORDERS",
    "update_norm",
    "clip_update",
    "dp_fedavg_noise_std",
    "dp_fedavg_aggregate",
    "poisson_sample_clients",
    "secure_gaussian",
    "format_epsilon",
    "DPFedAvg",
    "rdp_sampled_gaussian",
    "epsilon_from_rdp",
    "dp_fedavg_epsilon",
    "noise_multiplier_for_epsilon",
    "classic_gaussian_noise_multiplier",
]

DEFAULT_DELTA = 1e-5
"""δ used throughout the course: far below 1/N for every federation we build (see the module doc)."""

RDP_ORDERS = range(2, 513)
"""Rényi orders α at which the accountant evaluates RDP (integers, as the sampled Gaussian needs)."""


# --------------------------------------------------------------------------- checking inputs


def _check_positive_finite(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def _check_rate(sampling_rate) -> float:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, Real):
        raise TypeError(f"sampling_rate must be a real number, got {type(sampling_rate).__name__}")
    q = float(sampling_rate)
    if not 0.0 <= q <= 1.0:
        raise ValueError(
            f"sampling_rate is the probability that a client takes part in a round, so it must lie "
            f"in [0, 1]; got {q}. For m clients sampled out of N on average, pass m / N."
        )
    return q


def _check_delta(delta) -> float:
    if isinstance(delta, bool) or not isinstance(delta, Real):
        raise TypeError(f"delta must be a real number, got {type(delta).__name__}")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(
            f"delta must lie strictly between 0 and 1 (and far below 1/number_of_clients to mean "
            f"anything), got {delta}"
        )
    return delta


def _as_parameter_list(update, what: str) -> tuple[list[np.ndarray], bool]:
    """An update as a list of float arrays, and whether it came as one bare array."""
    if isinstance(update, np.ndarray):
        arrays, single = [update], True
    elif isinstance(update, (list, tuple)):
        if len(update) == 0:
            raise ValueError(f"{what} is empty: expected one numpy array per model parameter")
        arrays, single = list(update), False
    else:
        raise TypeError(
            f"{what} must be a numpy array or a list of numpy arrays (one per model parameter, as "
            f"federated.model_update returns), got {type(update).__name__}"
        )
    checked = []
    for index, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"{what}: parameter {index} is a {type(array).__name__}, not a numpy array. "
                f"Pass plain arrays, e.g. federated.model_update(before, after)."
            )
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{what}: parameter {index} has dtype {array.dtype}, expected real numbers")
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise ValueError(
                f"{what}: parameter {index} contains NaN or inf, so its norm is undefined; "
                f"a client whose training diverged must be fixed or left out of the round"
            )
        checked.append(array)
    return checked, single


def _check_clip_norm(clip_norm) -> float:
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, Real):
        raise TypeError(f"clip_norm must be a real number, got {type(clip_norm).__name__}")
    clip_norm = float(clip_norm)
    if not math.isfinite(clip_norm) or clip_norm <= 0:
        raise ValueError(
            f"clip_norm is the largest L2 norm a client's update may have and must be a finite "
            f"number > 0, got {clip_norm}. (A zero norm would erase every update; an infinite one "
            f"bounds nothing, and then no amount of noise gives a guarantee.)"
        )
    return clip_norm


# --------------------------------------------------------------------------- clipping and noise


def _global_norm(arrays) -> float:
    """L2 norm of arrays taken together, scaled first so that huge finite entries cannot overflow
    to inf (which would clip the update to zero instead of to the bound)."""
    largest = max((float(np.max(np.abs(array))) for array in arrays if array.size), default=0.0)
    if largest == 0.0:
        return 0.0
    return largest * math.sqrt(sum(float(np.sum((array / largest) ** 2)) for array in arrays))


def update_norm(update) -> float:
    """The L2 norm of a whole update: all of its parameters taken together as one long vector.

    ``update`` is one numpy array or a list of them (one per model parameter). The norm is global,
    not per parameter, because the privacy guarantee is about everything one client sends.

    Taught in notebook 07, §2.
    """
    arrays, _ = _as_parameter_list(update, "update")
    return _global_norm(arrays)


def clip_update(update, clip_norm: float):
    """Scale ``update`` down so that its global L2 norm is at most ``clip_norm``; returns a copy.

    An update already within the bound is returned unchanged (as a copy); a larger one keeps its
    direction and is shrunk to norm ``clip_norm`` exactly: ``update · min(1, S / ‖update‖)``.
    Clipping is what bounds one client's influence on the sum — the sensitivity — to ``S``. It
    accepts, and returns, one array or a list of arrays, whichever it was given.

    Taught in notebook 07, §2.
    """
    clip_norm = _check_clip_norm(clip_norm)
    arrays, single = _as_parameter_list(update, "update")
    norm = _global_norm(arrays)
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    clipped = [array * scale for array in arrays]
    return clipped[0] if single else clipped


def dp_fedavg_noise_std(clip_norm: float, noise_multiplier: float, expected_clients: float) -> float:
    """Standard deviation ``z·S/m`` of the Gaussian noise DP-FedAvg adds to each coordinate.

    Taught in notebook 07, §2.
    """
    clip_norm = _check_clip_norm(clip_norm)
    noise_multiplier = _check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
    expected_clients = _check_positive_finite("expected_clients", expected_clients)
    return noise_multiplier * clip_norm / expected_clients


def dp_fedavg_aggregate(updates, *, clip_norm: float, noise_multiplier: float,
                        expected_clients: float, rng: np.random.Generator | None = None):
    """One DP-FedAvg server step: clip each update, sum, divide by ``m``, add N(0, (z·S/m)²) noise.

    ``updates``: the updates of the clients sampled this round, each one numpy array or a list of
    arrays (one per model parameter); all must have the same shapes. Each is clipped to global L2
    norm ``clip_norm`` (S) here, on the server, so the guarantee cannot be lost by a client that
    forgot to clip. Every client weighs the same: weighting by data size, as plain FedAvg does,
    would let a big client move the sum by more than S.

    ``expected_clients`` (m) is the *expected* number of clients per round, ``q·N`` with Poisson
    sampling (or N when everyone takes part). DP-FedAvg divides by this fixed m, not by the number
    of updates that arrived: this is McMahan et al.'s fixed-denominator estimator f̃_f. It is
    unbiased, and its sensitivity is exactly S/m — adding or removing Bob changes the sum by at most
    S and leaves the denominator alone. Dividing by the actual count would make the denominator
    itself depend on whether Bob took part.

    ``noise_multiplier`` (z) sets the noise relative to the sensitivity: its standard deviation is
    ``z·S/m`` on every coordinate. With ``rng=None`` (the default) the noise comes from the
    operating system's cryptographically secure generator (``secure_gaussian``), as it must in any
    real use: whoever knows a seed can regenerate the noise and subtract it (notebook 07, §2 shows
    it). Pass a seeded ``np.random.Generator`` only to make a lesson reproducible. z = 0
    gives clipping without noise (no privacy; useful as a baseline). The accountant turns z, q and
    the number of rounds into (ε, δ): ``dp_fedavg_epsilon``.

    Returns the noisy average update, shaped like each input update.

    Taught in notebook 07, §2.
    """
    clip_norm = _check_clip_norm(clip_norm)
    noise_std = dp_fedavg_noise_std(clip_norm, noise_multiplier, expected_clients)
    expected_clients = float(expected_clients)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be None (secret noise from the operating system, for real use) or a numpy "
            f"Generator such as np.random.default_rng(0) (reproducible noise, for lessons only); "
            f"got {type(rng).__name__}"
        )
    if isinstance(updates, np.ndarray) or not isinstance(updates, (list, tuple)):
        raise TypeError("updates must be a list with one update per sampled client")
    if len(updates) == 0:
        raise ValueError(
            "no updates to aggregate: no client was sampled this round. With Poisson sampling this "
            "can happen; skip the round (that reveals nothing about any client)"
        )

    total, single = None, None
    for client, update in enumerate(updates):
        arrays, is_single = _as_parameter_list(update, f"update of client {client}")
        if total is None:
            total, single = [np.zeros_like(array) for array in arrays], is_single
        if is_single != single:
            kinds = {True: "one bare array", False: "a list of arrays"}
            raise ValueError(
                f"update of client {client} is {kinds[is_single]} but client 0's is {kinds[single]}: "
                f"every client must send its update in the same form"
            )
        shapes = [array.shape for array in arrays]
        expected_shapes = [array.shape for array in total]
        if shapes != expected_shapes:
            raise ValueError(
                f"update of client {client} has parameter shapes {shapes}, but client 0's are "
                f"{expected_shapes}: every client must send an update of the same model"
            )
        for running, clipped in zip(total, clip_update(arrays, clip_norm)):
            running += clipped

    draw = (lambda shape: secure_gaussian(shape, noise_std)) if rng is None else \
        (lambda shape: rng.normal(0.0, noise_std, size=shape))
    noisy = [running / expected_clients + draw(running.shape) for running in total]
    return noisy[0] if single else noisy


def secure_gaussian(shape, std: float) -> np.ndarray:
    """Gaussian noise N(0, std²) drawn from the operating system's cryptographically secure random
    source (``os.urandom``), by the Box–Muller transform. Taught in notebook 07, §2.

    numpy's generators are fast and reproducible, which is what a lesson needs and exactly what DP
    noise must not be: anyone who knows or guesses the seed regenerates the noise and subtracts it.
    This is the course's default whenever no ``rng`` is passed. It is not everything a production
    library does: floating-point noise can leak through its low-order bits (Mironov, CCS 2012), which
    is why libraries such as Google's differential-privacy library or OpenDP sample discrete or
    carefully rounded noise; the course does not attempt that.
    """
    std = _check_positive_finite("std", std, allow_zero=True)
    shape = tuple(int(size) for size in shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    n = int(np.prod(shape))
    if std == 0.0 or n == 0:
        return np.zeros(shape)
    pairs = (n + 1) // 2
    words = np.frombuffer(os.urandom(16 * pairs), dtype=np.uint64).reshape(2, pairs)
    # 53 random bits -> a uniform number in (0, 1]: never 0, so the logarithm is finite
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0 ** 53
    radius = np.sqrt(-2.0 * np.log(uniform[0]))
    angle = 2.0 * np.pi * uniform[1]
    normal = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
    return std * normal.reshape(shape)


def format_epsilon(epsilon: float) -> str:
    """ε as the course prints it: no false precision on a loose bound. Taught in notebook 07, §4.

    ``inf`` for no privacy; one significant digit from 10,000 up (``1e+10``: at that size even the
    whole number is false precision); whole numbers from 10 up (an ε of 400.57 is a bound so loose
    that its decimals mean nothing); one decimal from 1 to 10; two below 1. Notebook 10, §2 prints
    the ε of one round of tiny noise with it.
    """
    epsilon = float(epsilon)
    if math.isnan(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if math.isinf(epsilon):
        return "inf"
    if epsilon >= 10_000:
        return f"{epsilon:.0e}"
    if epsilon >= 10:
        return f"{epsilon:.0f}"
    return f"{epsilon:.1f}" if epsilon >= 1 else f"{epsilon:.2f}"


# --------------------------------------------------------------------------- the strategy


class DPFedAvg(Strategy):
    """DP-FedAvg as a strategy of the round loop (``federated.run_rounds``). Taught in notebook 07.

    The clients train as in FedAvg and send their updates; the server runs ``dp_fedavg_aggregate``
    on them (clip each to ``clip_norm``, sum, divide by ``expected_clients``, add Gaussian noise of
    std ``noise_multiplier·clip_norm/expected_clients`` drawn from the loop's seeded generator) and
    adds the result to the global model. Run it with Poisson sampling, as the accountant assumes:
    ``run_rounds(..., strategy=DPFedAvg(S, z, expected_clients=q * N), sampling_rate=q)``.

    The noise is secret by default (``secure_gaussian``). ``reproducible=True`` draws it from the
    round loop's seeded generator instead, so that a lesson prints the same numbers every time; a
    release made that way protects no one from whoever knows the seed (notebook 07, §2).

    Who this protects against: anyone who sees the released models. The server itself adds the
    noise and sees every raw update (central DP); notebook 07 says what protects against it.
    """

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_clients: float, *,
                 reproducible: bool = False):
        self.clip_norm = _check_clip_norm(clip_norm)
        self.noise_multiplier = _check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
        self.expected_clients = _check_positive_finite("expected_clients", expected_clients)
        self.reproducible = bool(reproducible)

    def aggregate(self, global_model, local_models, sizes, rng):
        updates = [model_update(global_model, local) for local in local_models.values()]
        noisy_average = dp_fedavg_aggregate(updates, clip_norm=self.clip_norm,
                                            noise_multiplier=self.noise_multiplier,
                                            expected_clients=self.expected_clients,
                                            rng=rng if self.reproducible else None)
        return apply_update(global_model, noisy_average)

    def __repr__(self):
        return (f"DPFedAvg(clip_norm={self.clip_norm}, noise_multiplier={self.noise_multiplier}, "
                f"expected_clients={self.expected_clients}, reproducible={self.reproducible})")


# --------------------------------------------------------------------------- the accountant


def _check_orders(orders, sampling_rate: float) -> np.ndarray:
    orders = np.asarray(orders, dtype=np.float64).ravel()
    if orders.size == 0:
        raise ValueError("orders is empty: pass at least one Rényi order > 1, e.g. RDP_ORDERS")
    if not np.all(np.isfinite(orders)) or np.any(orders <= 1):
        raise ValueError(f"Rényi orders must be finite numbers > 1, got {orders[(orders <= 1) | ~np.isfinite(orders)][:5]}")
    if 0 < sampling_rate < 1 and np.any(orders != np.round(orders)):
        raise ValueError(
            "with client sampling (0 < sampling_rate < 1) the accountant needs integer Rényi orders "
            "(the closed form of Mironov, Talwar & Zhang 2019 holds for integer α); use RDP_ORDERS"
        )
    return orders


def _log_sum_exp(terms: np.ndarray, axis: int) -> np.ndarray:
    largest = np.max(terms, axis=axis, keepdims=True)
    return np.squeeze(largest, axis=axis) + np.log(np.sum(np.exp(terms - largest), axis=axis))


def rdp_sampled_gaussian(noise_multiplier: float, sampling_rate: float = 1.0,
                         orders=RDP_ORDERS) -> np.ndarray:
    """Rényi DP of ONE round of DP-FedAvg at each order α: the sampled Gaussian mechanism.

    ``noise_multiplier`` z is the noise std divided by the sensitivity (``z·S/m`` over ``S/m``);
    ``sampling_rate`` q is each client's probability of taking part in a round (m/N).

    * q = 0: nobody's data is touched, RDP 0.
    * z = 0 (and q > 0): no noise, RDP infinite.
    * q = 1: the Gaussian mechanism, ``α / (2 z²)`` at any real α > 1.
    * 0 < q < 1: ``log A_α / (α − 1)`` with
      ``A_α = Σ_{k=0..α} C(α,k) (1−q)^(α−k) q^k exp((k² − k) / (2z²))`` for integer α
      (Mironov, Talwar, Zhang 2019, Sec. 3.3). ``A_α`` is the α-th moment of the likelihood ratio
      between "Bob sampled with probability q" and "Bob absent"; expanding the binomial leaves
      Gaussian moments in closed form. The sum runs in log space.

    Returns an array with one RDP value (in nats) per order. Multiply by T for T rounds.

    Taught in notebook 07, §3.
    """
    z = _check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
    q = _check_rate(sampling_rate)
    alphas = _check_orders(orders, q)
    if q == 0:
        return np.zeros_like(alphas)
    if z == 0:
        return np.full_like(alphas, np.inf)
    if q == 1:
        return alphas / (2 * z * z)

    alpha = alphas.astype(np.int64)
    max_order = int(alpha.max())
    # log k! for k = 0 … max_order, so log C(α, k) = log α! − log k! − log (α−k)!
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, max_order + 1)))])
    k = np.arange(max_order + 1)[None, :]
    a = alpha[:, None]
    in_sum = k <= a
    a_minus_k = np.where(in_sum, a - k, 0)
    log_terms = (log_factorial[a] - log_factorial[k] - log_factorial[a_minus_k]
                 + k * math.log(q) + a_minus_k * math.log1p(-q)
                 + (k * k - k) / (2 * z * z))
    log_a = _log_sum_exp(np.where(in_sum, log_terms, -np.inf), axis=1)
    # A_α >= 1 (a moment of a likelihood ratio, by Jensen); clamp rounding below it to 0
    return np.maximum(log_a, 0.0) / (alphas - 1)


def epsilon_from_rdp(rdp, orders=RDP_ORDERS, delta: float = DEFAULT_DELTA,
                     conversion: str = "improved") -> tuple[float, float]:
    """Turn RDP values (one per order) into the smallest ε they certify at ``delta``.

    ``conversion="improved"`` (default): Canonne, Kamath & Steinke 2020, Prop. 12 —
    ``ε = RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1)``.
    ``conversion="classic"``: Mironov 2017, Prop. 3 — ``ε = RDP(α) + log(1/δ)/(α−1)``.
    Both are valid for every order; the best (smallest) is taken, and ε is never below 0 (it is
    exactly 0 when the RDP is so small that the two distributions are within δ in total variation).

    Returns ``(epsilon, best_order)``.

    Taught in notebook 07, §3.
    """
    delta = _check_delta(delta)
    alphas = np.asarray(orders, dtype=np.float64).ravel()
    rdp = np.asarray(rdp, dtype=np.float64).ravel()
    if rdp.shape != alphas.shape:
        raise ValueError(f"rdp has {rdp.size} values but there are {alphas.size} orders: one RDP value per order")
    if alphas.size == 0 or np.any(alphas <= 1) or not np.all(np.isfinite(alphas)):
        raise ValueError("orders must be a non-empty list of finite Rényi orders > 1")
    if np.any(np.isnan(rdp)) or np.any(rdp < 0):
        raise ValueError("RDP values must be >= 0 (or inf), never negative or NaN")
    if conversion == "improved":
        eps = rdp + np.log1p(-1 / alphas) - (math.log(delta) + np.log(alphas)) / (alphas - 1)
    elif conversion == "classic":
        eps = rdp + math.log(1 / delta) / (alphas - 1)
    else:
        raise ValueError(f'conversion must be "improved" or "classic", got {conversion!r}')
    # Both formulas stay slightly above 0 even for RDP = 0 (a round nobody took part in). The
    # total-variation bound TV <= sqrt(1 - exp(-RDP)) (Bretagnolle-Huber; RDP at any order is at
    # least the KL divergence) settles those cases: TV <= delta means (0, delta)-DP.
    eps = np.where(delta * delta + np.expm1(-rdp) >= 0, 0.0, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(alphas[best])


def dp_fedavg_epsilon(noise_multiplier: float, rounds: int, sampling_rate: float = 1.0,
                      delta: float = DEFAULT_DELTA, orders=RDP_ORDERS,
                      conversion: str = "improved") -> float:
    """The ε (at ``delta``) that ``rounds`` rounds of DP-FedAvg guarantee each client.

    ``noise_multiplier`` z: noise std ``z·S/m`` per coordinate of the average (as in
    ``dp_fedavg_aggregate``). ``sampling_rate`` q: each client's chance to take part in a round,
    ``m / N`` with Poisson sampling; 1.0 when every client trains every round (Bob, Alice and Sue).
    Neighbouring federations differ by one whole client (user-level DP); see the module docstring
    for the choice of ``delta``.

    RDP of one round (``rdp_sampled_gaussian``) times ``rounds``, converted with
    ``epsilon_from_rdp``. The result is an upper bound: the true ε of the mechanism may be smaller
    (tighter accountants, e.g. privacy-loss distributions, give somewhat smaller numbers), never
    larger. ``inf`` when z = 0; 0 when rounds = 0 or q = 0.

    Taught in notebook 07, §3.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {rounds!r}")
    if rounds == 0:
        _check_delta(delta)
        return 0.0
    per_round = rdp_sampled_gaussian(noise_multiplier, sampling_rate, orders)
    epsilon, _ = epsilon_from_rdp(per_round * int(rounds), orders, delta, conversion)
    return epsilon


def noise_multiplier_for_epsilon(target_epsilon: float, rounds: int, sampling_rate: float = 1.0,
                                 delta: float = DEFAULT_DELTA, orders=RDP_ORDERS) -> float:
    """The smallest noise multiplier z for which ``rounds`` rounds stay within ``target_epsilon``.

    Found by bisection on ``dp_fedavg_epsilon``, which falls as z grows; the z returned is
    accurate to 0.1% and errs on the safe side (its ε is at most the target).

    Taught in notebook 07, §2.
    """
    target_epsilon = _check_positive_finite("target_epsilon", target_epsilon)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")

    def epsilon(z: float) -> float:
        return dp_fedavg_epsilon(z, rounds, sampling_rate, delta, orders)

    low, high = 0.0, 1.0
    while epsilon(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise ValueError(
                f"no noise multiplier up to 1e6 reaches ε = {target_epsilon} over {rounds} rounds "
                f"at δ = {delta}: ask for a larger ε or fewer rounds"
            )
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        if epsilon(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


def classic_gaussian_noise_multiplier(epsilon: float, delta: float = DEFAULT_DELTA) -> float:
    """Noise multiplier z = σ/Δ of the textbook Gaussian mechanism for ONE release at (ε, δ).

    Dwork & Roth, *The Algorithmic Foundations of Differential Privacy* (2014), Thm. A.1:
    ``σ ≥ sqrt(2 ln(1.25/δ)) · Δ / ε`` gives (ε, δ)-DP, but only for 0 < ε < 1. It is the bound
    most courses start from; the accountant above reproduces it (and does better, and keeps
    working over many rounds and with sampling), which the tests check.

    Taught in notebook 07, §3.
    """
    epsilon = _check_positive_finite("epsilon", epsilon)
    delta = _check_delta(delta)
    if epsilon >= 1:
        raise ValueError(
            f"the classic Gaussian bound holds only for epsilon < 1, got {epsilon}; "
            f"use noise_multiplier_for_epsilon(epsilon, rounds=1) instead"
        )
    return math.sqrt(2 * math.log(1.25 / delta)) / epsilon
