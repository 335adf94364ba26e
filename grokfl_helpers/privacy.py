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

``dp_fedavg_aggregate`` is that server step; ``dp_fedavg_round`` runs one whole round (local
training, then the server step) and ``run_dp_fedavg`` many, with Poisson sampling of clients. The
accountant (``dp_fedavg_epsilon``) then says how well one client is hidden after ``T`` rounds: the
run is (ε, δ)-differentially private.

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

Everything is plain numpy and the standard library; noise comes from a ``np.random.Generator``
the caller seeds, so a run can be repeated exactly.
"""

from __future__ import annotations

import copy
import math
from numbers import Real

import numpy as np

from .data import UNK
from .federated import History, model_bytes, model_update
from .tensor import Embedding
from .training import accuracy, mean_squared_error, train

__all__ = [
    "DEFAULT_DELTA",
    "RDP_ORDERS",
    "update_norm",
    "clip_update",
    "dp_fedavg_noise_std",
    "dp_fedavg_aggregate",
    "poisson_sample_clients",
    "dp_fedavg_round",
    "run_dp_fedavg",
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


def update_norm(update) -> float:
    """The L2 norm of a whole update: all of its parameters taken together as one long vector.

    ``update`` is one numpy array or a list of them (one per model parameter). The norm is global,
    not per parameter, because the privacy guarantee is about everything one client sends.
    """
    arrays, _ = _as_parameter_list(update, "update")
    return float(math.sqrt(sum(float(np.sum(array * array)) for array in arrays)))


def clip_update(update, clip_norm: float):
    """Scale ``update`` down so that its global L2 norm is at most ``clip_norm``; returns a copy.

    An update already within the bound is returned unchanged (as a copy); a larger one keeps its
    direction and is shrunk to norm ``clip_norm`` exactly: ``update · min(1, S / ‖update‖)``.
    Clipping is what bounds one client's influence on the sum — the sensitivity — to ``S``. It
    accepts, and returns, one array or a list of arrays, whichever it was given.
    """
    clip_norm = _check_clip_norm(clip_norm)
    arrays, single = _as_parameter_list(update, "update")
    norm = math.sqrt(sum(float(np.sum(array * array)) for array in arrays))
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    clipped = [array * scale for array in arrays]
    return clipped[0] if single else clipped


def dp_fedavg_noise_std(clip_norm: float, noise_multiplier: float, expected_clients: float) -> float:
    """Standard deviation ``z·S/m`` of the Gaussian noise DP-FedAvg adds to each coordinate."""
    clip_norm = _check_clip_norm(clip_norm)
    noise_multiplier = _check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
    expected_clients = _check_positive_finite("expected_clients", expected_clients)
    return noise_multiplier * clip_norm / expected_clients


def dp_fedavg_aggregate(updates, *, clip_norm: float, noise_multiplier: float,
                        expected_clients: float, rng: np.random.Generator):
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
    ``z·S/m`` on every coordinate, drawn from ``rng`` (a seeded ``np.random.Generator``). z = 0
    gives clipping without noise (no privacy; useful as a baseline). The accountant turns z, q and
    the number of rounds into (ε, δ): ``dp_fedavg_epsilon``.

    Returns the noisy average update, shaped like each input update.
    """
    clip_norm = _check_clip_norm(clip_norm)
    noise_std = dp_fedavg_noise_std(clip_norm, noise_multiplier, expected_clients)
    expected_clients = float(expected_clients)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator, e.g. np.random.default_rng(0), so the noise can be "
            f"reproduced; got {type(rng).__name__}"
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

    noisy = [running / expected_clients + rng.normal(0.0, noise_std, size=running.shape)
             for running in total]
    return noisy[0] if single else noisy


def poisson_sample_clients(num_clients: int, sampling_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the clients taking part in a round: each independently with probability q.

    This is the sampling the accountant assumes (the sampled Gaussian mechanism of Mironov et al.
    2019, and McMahan et al. 2018). Picking exactly m clients at random instead is a different
    mechanism, analysed under a different neighbouring relation (replace one client); the numbers
    are close but the guarantee computed here is for Poisson sampling. On average
    ``num_clients · sampling_rate`` clients are returned, sorted; the count varies from round to round
    and may be zero.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    q = _check_rate(sampling_rate)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, e.g. np.random.default_rng(0); got {type(rng).__name__}")
    return np.flatnonzero(rng.random(int(num_clients)) < q)


# --------------------------------------------------------------------------- rounds


def dp_fedavg_round(global_model, clients: dict, participants, *, clip_norm: float,
                    noise_multiplier: float, expected_clients: float, rng: np.random.Generator,
                    epochs: int = 1, batch_size: int = 500, alpha: float = 0.01):
    """One round of DP-FedAvg; returns the new global model (``global_model`` is left unchanged).

    Each of ``participants`` (names in ``clients``, a dict ``{name: (X, y)}`` as
    ``federated.book_clients`` or ``federated.iid_clients`` return) trains a copy of the global
    model on its own emails, as in ``federated.run_rounds``, and sends back its update; the server
    combines the updates with ``dp_fedavg_aggregate`` (clip to ``clip_norm``, sum, divide by
    ``expected_clients``, add noise of std ``noise_multiplier·clip_norm/expected_clients``) and adds
    the result to the global model.

    For the spam model (an ``Embedding``) the ``<unk>`` padding row is then put back to 0, as
    ``training.train`` does after every step: noise left there would be added to an email's score
    once for every padding slot. Zeroing a row everyone knows is padding uses no private data, so
    it costs no privacy. With no participants (Poisson sampling can pick nobody) nothing is
    released and the model is returned unchanged, as a copy.
    """
    participants = list(participants)
    unknown = [name for name in participants if name not in clients]
    if unknown:
        raise ValueError(f"participants {unknown} are not among the clients ({len(clients)} of them)")
    new_model = copy.deepcopy(global_model)
    if not participants:
        return new_model
    updates = [
        model_update(global_model, train(copy.deepcopy(global_model), *clients[name],
                                         batch_size=batch_size, epochs=epochs, alpha=alpha))
        for name in participants
    ]
    noisy_average = dp_fedavg_aggregate(updates, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                                        expected_clients=expected_clients, rng=rng)
    for parameter, change in zip(new_model.get_parameters(), noisy_average):
        parameter.data += change
        parameter.grad = None
    if isinstance(new_model, Embedding):
        new_model.weight.data[UNK] = 0.0
    return new_model


def run_dp_fedavg(model, clients: dict, test: tuple, rounds: int, *, sampling_rate: float,
                  clip_norm: float, noise_multiplier: float, seed: int = 0, epochs: int = 1,
                  batch_size: int = 500, alpha: float = 0.01) -> History:
    """``rounds`` rounds of DP-FedAvg from ``model`` (left unchanged); a ``federated.History``.

    Every round each client takes part with probability ``sampling_rate`` (q; Poisson sampling,
    ``poisson_sample_clients``), the expected number ``m = q·N`` is the fixed denominator, and
    ``dp_fedavg_round`` does the rest. One ``np.random.default_rng(seed)`` draws both who takes
    part and the noise, so a run is repeatable. After each round the global model is evaluated on
    ``test = (X, y)``. The (ε, δ) of the run is ``dp_fedavg_epsilon(noise_multiplier, rounds,
    sampling_rate)``: it covers every global model released along the way, not just the last.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if not clients:
        raise ValueError("run_dp_fedavg needs at least one client")
    q = _check_rate(sampling_rate)
    if q == 0:
        raise ValueError("sampling_rate is 0: no client would ever take part")
    names = list(clients)
    expected_clients = q * len(names)
    rng = np.random.default_rng(seed)
    history = History()
    global_model = copy.deepcopy(model)
    for _ in range(rounds):
        chosen = [names[i] for i in poisson_sample_clients(len(names), q, rng)]
        global_model = dp_fedavg_round(global_model, clients, chosen, clip_norm=clip_norm,
                                       noise_multiplier=noise_multiplier,
                                       expected_clients=expected_clients, rng=rng,
                                       epochs=epochs, batch_size=batch_size, alpha=alpha)
        history.clients.append(chosen)
        history.bytes_sent.append(2 * len(chosen) * model_bytes(global_model))
        history.accuracy.append(accuracy(global_model, *test))
        history.loss.append(mean_squared_error(global_model, *test))
    history.model = global_model
    return history


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
    """
    epsilon = _check_positive_finite("epsilon", epsilon)
    delta = _check_delta(delta)
    if epsilon >= 1:
        raise ValueError(
            f"the classic Gaussian bound holds only for epsilon < 1, got {epsilon}; "
            f"use noise_multiplier_for_epsilon(epsilon, rounds=1) instead"
        )
    return math.sqrt(2 * math.log(1.25 / delta)) / epsilon
