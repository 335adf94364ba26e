"""Tests for grokfl_helpers.privacy: clipping, the DP-FedAvg server step and rounds, the accountant.

The accountant is checked three independent ways: against numbers published by TensorFlow
Privacy / Google's dp_accounting for the same formulas, against a direct high-precision sum
(Python's decimal module, no log-space tricks), and against the exact privacy curve of the
Gaussian mechanism (Balle & Wang 2018), which any valid (ε, δ) must respect.
"""

import copy
import math
from decimal import Decimal, getcontext

import numpy as np
import pytest

from grokfl_helpers import privacy
from grokfl_helpers.data import UNK
from grokfl_helpers.federated import fedavg, run_round, run_rounds
from grokfl_helpers.privacy import (
    DEFAULT_DELTA,
    DPFedAvg,
    RDP_ORDERS,
    classic_gaussian_noise_multiplier,
    clip_update,
    dp_fedavg_aggregate,
    dp_fedavg_epsilon,
    dp_fedavg_noise_std,
    epsilon_from_rdp,
    noise_multiplier_for_epsilon,
    poisson_sample_clients,
    rdp_sampled_gaussian,
    update_norm,
)
from grokfl_helpers.training import new_spam_model, train


def _random_update(rng, shapes=((50, 1), (3,))):
    return [rng.normal(size=shape) for shape in shapes]


# --------------------------------------------------------------------------- clipping


def test_update_norm_is_global_over_all_parameters():
    update = [np.array([3.0, 0.0]), np.array([[4.0]])]
    assert update_norm(update) == pytest.approx(5.0)
    assert update_norm(np.array([3.0, 4.0])) == pytest.approx(5.0)


def test_clipping_brings_a_large_update_to_norm_s_and_keeps_its_direction():
    rng = np.random.default_rng(0)
    update = [10 * array for array in _random_update(rng)]
    assert update_norm(update) > 5
    clipped = clip_update(update, 2.5)
    assert update_norm(clipped) == pytest.approx(2.5, rel=1e-12)
    scale = clipped[0].flat[0] / update[0].flat[0]
    for before, after in zip(update, clipped):
        np.testing.assert_allclose(after, scale * before, rtol=1e-12)


def test_clipping_leaves_a_small_update_unchanged_and_never_touches_the_input():
    rng = np.random.default_rng(1)
    update = _random_update(rng)
    original = [array.copy() for array in update]
    clipped = clip_update(update, 100.0)
    for before, after in zip(original, clipped):
        np.testing.assert_array_equal(after, before)
    big = clip_update(update, 0.1)
    for before, untouched, after in zip(original, update, big):
        np.testing.assert_array_equal(untouched, before)
        assert after is not untouched


def test_clipping_a_flat_array_returns_a_flat_array_and_a_zero_update_stays_zero():
    clipped = clip_update(np.array([6.0, 8.0]), 1.0)
    assert isinstance(clipped, np.ndarray)
    np.testing.assert_allclose(clipped, [0.6, 0.8])
    np.testing.assert_array_equal(clip_update(np.zeros(4), 1.0), np.zeros(4))


@pytest.mark.parametrize("bad", [-1.0, 0, 0.0, float("nan"), float("inf"), -float("inf")])
def test_a_negative_zero_or_non_finite_clip_norm_is_refused(bad):
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update(np.ones(3), bad)
    with pytest.raises(ValueError, match="clip_norm"):
        dp_fedavg_aggregate([np.ones(3)], clip_norm=bad, noise_multiplier=1.0,
                            expected_clients=1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("bad", ["1.0", None, True])
def test_a_clip_norm_that_is_not_a_number_is_refused(bad):
    with pytest.raises(TypeError, match="clip_norm"):
        clip_update(np.ones(3), bad)


def test_updates_that_are_not_arrays_or_not_finite_are_refused():
    with pytest.raises(TypeError, match="numpy array"):
        clip_update([[1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match="numpy array"):
        clip_update({"w": np.ones(2)}, 1.0)
    with pytest.raises(ValueError, match="empty"):
        clip_update([], 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        clip_update([np.array([1.0, np.nan])], 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        update_norm(np.array([np.inf]))


# --------------------------------------------------------------------------- the server step


def test_without_noise_the_server_step_is_the_sum_of_clipped_updates_over_m():
    rng = np.random.default_rng(2)
    updates = [[5 * array for array in _random_update(rng)] for _ in range(4)]
    result = dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=0.0,
                                 expected_clients=10, rng=np.random.default_rng(0))
    clipped = [clip_update(update, 1.0) for update in updates]
    for index, array in enumerate(result):
        # fixed denominator: divided by the expected 10 clients, not by the 4 that arrived
        np.testing.assert_allclose(array, sum(c[index] for c in clipped) / 10, rtol=1e-12)
    assert update_norm(result) <= 4 * 1.0 / 10 + 1e-12


def test_noise_standard_deviation_is_z_s_over_m():
    assert dp_fedavg_noise_std(clip_norm=2.0, noise_multiplier=1.5, expected_clients=10) == pytest.approx(0.3)
    zeros = [np.zeros((200, 100)), np.zeros(1000)]
    clip_norm, z, m = 3.0, 2.0, 10
    noisy = dp_fedavg_aggregate([zeros] * 5, clip_norm=clip_norm, noise_multiplier=z,
                                expected_clients=m, rng=np.random.default_rng(3))
    values = np.concatenate([array.ravel() for array in noisy])
    assert values.size == 21_000
    assert abs(values.mean()) < 0.02
    # the sample std of 21,000 normals is within 1% of the truth with overwhelming probability
    assert values.std() == pytest.approx(z * clip_norm / m, rel=0.02)


def test_the_server_step_is_reproducible_and_keeps_the_shapes():
    rng = np.random.default_rng(4)
    updates = [_random_update(rng) for _ in range(3)]
    first = dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=1.0,
                                expected_clients=3, rng=np.random.default_rng(7))
    second = dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=1.0,
                                 expected_clients=3, rng=np.random.default_rng(7))
    assert [a.shape for a in first] == [(50, 1), (3,)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    flat = dp_fedavg_aggregate([np.ones(5), np.ones(5)], clip_norm=1.0, noise_multiplier=0.0,
                               expected_clients=2, rng=np.random.default_rng(0))
    assert isinstance(flat, np.ndarray) and flat.shape == (5,)


def test_the_server_step_refuses_bad_input():
    rng = np.random.default_rng(0)
    good = dict(clip_norm=1.0, noise_multiplier=1.0, expected_clients=2, rng=rng)
    with pytest.raises(ValueError, match="shapes"):
        dp_fedavg_aggregate([[np.ones(3)], [np.ones(4)]], **good)
    with pytest.raises(ValueError, match="shapes"):
        dp_fedavg_aggregate([[np.ones(3)], [np.ones(3), np.ones(1)]], **good)
    with pytest.raises(ValueError, match="same form"):
        dp_fedavg_aggregate([np.ones(3), [np.ones(3)]], **good)
    with pytest.raises(ValueError, match="no client"):
        dp_fedavg_aggregate([], **good)
    with pytest.raises(TypeError, match="one update per sampled client"):
        dp_fedavg_aggregate(np.ones((2, 3)), **good)
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_fedavg_aggregate([np.ones(3)], **{**good, "noise_multiplier": -1.0})
    with pytest.raises(ValueError, match="expected_clients"):
        dp_fedavg_aggregate([np.ones(3)], **{**good, "expected_clients": 0})
    with pytest.raises(TypeError, match="Generator"):
        dp_fedavg_aggregate([np.ones(3)], **{**good, "rng": 0})
    with pytest.raises(ValueError, match="NaN or inf"):
        dp_fedavg_aggregate([np.ones(3), np.array([0.0, np.nan, 1.0])], **good)


def test_poisson_sampling_takes_each_client_with_probability_q():
    rng = np.random.default_rng(5)
    counts = [len(poisson_sample_clients(100, 0.1, rng)) for _ in range(2000)]
    assert np.mean(counts) == pytest.approx(10, rel=0.03)
    assert np.std(counts) == pytest.approx(math.sqrt(100 * 0.1 * 0.9), rel=0.1)
    picked = poisson_sample_clients(100, 0.1, np.random.default_rng(9))
    np.testing.assert_array_equal(picked, poisson_sample_clients(100, 0.1, np.random.default_rng(9)))
    assert np.all(np.diff(picked) > 0) and picked.min() >= 0 and picked.max() < 100
    assert len(poisson_sample_clients(5, 1.0, rng)) == 5
    assert len(poisson_sample_clients(5, 0.0, rng)) == 0
    with pytest.raises(ValueError, match="sampling_rate"):
        poisson_sample_clients(10, 1.5, rng)
    with pytest.raises(ValueError, match="num_clients"):
        poisson_sample_clients(0, 0.5, rng)


# --------------------------------------------------------------------------- rounds


def dp_fedavg_round(global_model, clients, participants, *, clip_norm, noise_multiplier, expected_clients, rng):
    return run_round(global_model, clients, participants, rng=rng,
                     strategy=DPFedAvg(clip_norm, noise_multiplier, expected_clients, reproducible=True))


def run_dp_fedavg(model, clients, test, rounds, *, sampling_rate, clip_norm, noise_multiplier, seed=0):
    return run_rounds(model, clients, test, rounds, sampling_rate=sampling_rate, seed=seed,
                      strategy=DPFedAvg(clip_norm, noise_multiplier, sampling_rate * len(clients),
                                        reproducible=True))


def _toy_federation(n_clients=4, vocab_size=30, emails=20, seed=0):
    rng = np.random.default_rng(seed)
    clients = {}
    for i in range(n_clients):
        X = rng.integers(1, vocab_size, size=(emails, 6))
        X[:, -2:] = UNK                      # some padding, as in the real rows
        clients[f"client {i}"] = (X, rng.integers(0, 2, size=(emails, 1)).astype(float))
    test = (rng.integers(1, vocab_size, size=(50, 6)), rng.integers(0, 2, size=(50, 1)).astype(float))
    return clients, test


def test_a_round_without_noise_or_clipping_is_the_plain_mean_of_fedavg():
    clients, _ = _toy_federation()
    start = new_spam_model(30)
    start.weight.data[:, 0] = np.random.default_rng(1).normal(size=30) * 0.1
    start.weight.data[UNK] = 0.0
    names = list(clients)[:3]
    dp_model = dp_fedavg_round(start, clients, names, clip_norm=1e6, noise_multiplier=0.0,
                               expected_clients=3, rng=np.random.default_rng(0))
    plain = fedavg([train(copy.deepcopy(start), *clients[name]) for name in names])
    np.testing.assert_allclose(dp_model.weight.data, plain.weight.data, atol=1e-12)
    assert dp_model is not start and start.weight.data[1, 0] != dp_model.weight.data[1, 0]


def test_a_noisy_round_keeps_the_padding_row_at_zero_and_moves_every_other_row():
    clients, _ = _toy_federation()
    start = new_spam_model(30)
    noisy = dp_fedavg_round(start, clients, list(clients), clip_norm=0.1, noise_multiplier=1.0,
                            expected_clients=4, rng=np.random.default_rng(0))
    assert noisy.weight.data[UNK, 0] == 0.0
    assert np.count_nonzero(noisy.weight.data[1:]) == 29
    assert np.all(start.weight.data == 0)
    nobody = dp_fedavg_round(start, clients, [], clip_norm=0.1, noise_multiplier=1.0,
                             expected_clients=4, rng=np.random.default_rng(0))
    assert nobody is not start and np.all(nobody.weight.data == 0)
    with pytest.raises(ValueError, match="not among the clients"):
        dp_fedavg_round(start, clients, ["Mallory"], clip_norm=0.1, noise_multiplier=1.0,
                        expected_clients=4, rng=np.random.default_rng(0))
    # The same client three times would move the model three times as far as the clip allows,
    # and the accountant's epsilon would not cover it: refused.
    bob = list(clients)[0]
    with pytest.raises(ValueError, match="more than once"):
        dp_fedavg_round(start, clients, [bob, bob, bob], clip_norm=0.1, noise_multiplier=1.0,
                        expected_clients=4, rng=np.random.default_rng(0))


def test_clipping_a_huge_but_finite_update_clips_it_instead_of_zeroing_it():
    update = [np.array([1e200, -1e200, 3e199])]
    assert update_norm(update) == pytest.approx(np.sqrt(2.09) * 1e200, rel=1e-12)
    clipped = clip_update(update, 1.0)
    assert update_norm(clipped) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(clipped[0] / clipped[0][0], [1.0, -1.0, 0.3])


def test_run_dp_fedavg_is_repeatable_and_samples_about_q_n_clients_a_round():
    clients, test = _toy_federation(n_clients=20)
    kwargs = dict(sampling_rate=0.25, clip_norm=0.5, noise_multiplier=0.5, seed=3)
    first = run_dp_fedavg(new_spam_model(30), clients, test, 40, **kwargs)
    second = run_dp_fedavg(new_spam_model(30), clients, test, 40, **kwargs)
    assert first.accuracy == second.accuracy and first.clients == second.clients
    np.testing.assert_array_equal(first.model.weight.data, second.model.weight.data)
    assert len(first.accuracy) == len(first.loss) == len(first.clients) == 40
    assert np.mean([len(chosen) for chosen in first.clients]) == pytest.approx(5, rel=0.25)
    everyone = run_dp_fedavg(new_spam_model(30), clients, test, 2, sampling_rate=1.0, clip_norm=0.5,
                             noise_multiplier=0.0)
    assert everyone.clients == [list(clients)] * 2
    with pytest.raises(ValueError, match="sampling_rate"):
        run_rounds(new_spam_model(30), clients, test, 2, sampling_rate=0.0, strategy=DPFedAvg(0.5, 1.0, 5))
    with pytest.raises(ValueError, match="rounds"):
        run_dp_fedavg(new_spam_model(30), clients, test, 0, sampling_rate=0.5, clip_norm=0.5, noise_multiplier=1.0)


# --------------------------------------------------------------------------- the accountant


def _a_alpha_decimal(q, z, alpha):
    """A_α = Σ_k C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2z²)), summed directly with 60 digits."""
    getcontext().prec = 60
    q, z = Decimal(repr(q)), Decimal(repr(z))
    total = Decimal(0)
    for k in range(alpha + 1):
        total += (Decimal(math.comb(alpha, k)) * (1 - q) ** (alpha - k) * q ** k
                  * (Decimal(k * k - k) / (2 * z * z)).exp())
    return total


@pytest.mark.parametrize("q, z, alpha", [(0.1, 2.0, 5), (0.01, 2.5, 50), (0.3, 0.7, 12),
                                         (1e-4, 1.0, 200), (0.9, 5.0, 512), (0.01, 0.5, 100)])
def test_sampled_gaussian_rdp_matches_a_direct_high_precision_sum(q, z, alpha):
    expected = float(_a_alpha_decimal(q, z, alpha).ln()) / (alpha - 1)
    got = rdp_sampled_gaussian(z, q, [alpha])[0]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_sampled_gaussian_rdp_matches_tensorflow_privacy_published_values():
    # tensorflow_privacy rdp_accountant_test.py: compute_rdp(q, z, steps, orders)
    assert 10 * rdp_sampled_gaussian(2.0, 0.1, [5])[0] == pytest.approx(0.07737, abs=1e-5)
    np.testing.assert_allclose(50 * rdp_sampled_gaussian(2.5, 0.01, [5, 50, 100]),
                               [0.00218075, 0.023846, 167.416307], atol=1e-5)


def test_dp_sgd_epsilons_published_by_tensorflow_privacy_are_reproduced():
    # compute_dp_sgd_privacy_test.py: (n, batch, z, epochs, delta) -> eps at order 19 / 13
    for n, batch, z, epochs, delta, eps, order in [(60_000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19),
                                                   (100_000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 13)]:
        steps = math.ceil(epochs * n / batch)
        rdp = steps * rdp_sampled_gaussian(z, batch / n)
        got, best_order = epsilon_from_rdp(rdp, RDP_ORDERS, delta)
        assert got == pytest.approx(eps, rel=1e-9)
        assert best_order == order


def test_the_dp_sgd_paper_example_is_reproduced_with_the_classic_conversion():
    # Abadi et al. 2016, Sec. 3.1: q = 0.01, σ = 4, T = 10,000, δ = 1e-5 gives ε ≈ 1.26
    rdp = 10_000 * rdp_sampled_gaussian(4.0, 0.01, range(2, 33))
    eps, _ = epsilon_from_rdp(rdp, range(2, 33), 1e-5, conversion="classic")
    assert round(eps, 2) == 1.26
    improved = dp_fedavg_epsilon(4.0, 10_000, 0.01, 1e-5)
    assert improved < eps


def test_the_improved_conversion_of_constant_rdp_matches_dp_accounting():
    # dp_accounting rdp_privacy_accountant_test.py: constant RDP 1.1 on orders 2..32, δ = 1e-5
    eps, order = epsilon_from_rdp([1.1] * 31, range(2, 33), 1e-5)
    assert eps == pytest.approx(1.32783806176, abs=1e-9)
    assert order == 32


def test_full_participation_is_the_gaussian_closed_form():
    orders = np.array([1.5, 2, 7.25, 64])
    for z in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(rdp_sampled_gaussian(z, 1.0, orders), orders / (2 * z * z))
    # classic conversion, minimised over a fine grid of real orders, approaches the textbook
    # minimum over all α > 1:  ε = T/(2z²) + sqrt(2 T log(1/δ)) / z
    fine = 1 + np.arange(1, 200_000) / 1000
    for z, rounds in [(1.0, 3), (4.0, 20), (10.0, 1)]:
        closed_form = rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1 / DEFAULT_DELTA)) / z
        eps = dp_fedavg_epsilon(z, rounds, 1.0, orders=fine, conversion="classic")
        assert eps == pytest.approx(closed_form, rel=1e-5)
        assert dp_fedavg_epsilon(z, rounds, 1.0, orders=fine) < eps
    # dp_accounting: z = 4.530877117 is exactly (1, 1e-6)-DP for one release
    assert dp_fedavg_epsilon(4.530877117, 1, 1.0, 1e-6, orders=fine) == pytest.approx(1.0, abs=1e-6)


def _exact_gaussian_delta(epsilon, noise_multiplier, rounds):
    """Balle & Wang 2018, Thm. 8: the exact δ(ε) of T Gaussian releases with multiplier z.

    T releases at z are one release at z/√T; with μ = √T / z,
    δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ).
    """
    mu = math.sqrt(rounds) / noise_multiplier
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))
    return phi(mu / 2 - epsilon / mu) - math.exp(epsilon) * phi(-mu / 2 - epsilon / mu)


@pytest.mark.parametrize("z, rounds, delta", [(1.0, 3, 1e-5), (4.0, 20, 1e-5), (0.8, 1, 1e-3),
                                              (10.0, 50, 1e-6), (2.0, 100, 1e-5)])
def test_epsilon_is_a_valid_and_reasonably_tight_bound_on_the_exact_gaussian_curve(z, rounds, delta):
    eps = dp_fedavg_epsilon(z, rounds, 1.0, delta)
    # valid: at the ε we report, the mechanism's true δ is no larger than the δ we claim
    assert _exact_gaussian_delta(eps, z, rounds) <= delta
    # not absurdly loose: 80% of our ε would already break δ
    assert _exact_gaussian_delta(0.8 * eps, z, rounds) > delta


@pytest.mark.parametrize("epsilon", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_the_accountant_agrees_with_the_classic_gaussian_bound_where_it_applies(epsilon, delta):
    z = classic_gaussian_noise_multiplier(epsilon, delta)
    assert z == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / epsilon)
    # one release at the textbook z: the accountant certifies at least as much privacy ...
    eps = dp_fedavg_epsilon(z, 1, 1.0, delta)
    assert 0.4 * epsilon < eps <= epsilon
    # ... and the classic RDP conversion lands within 2% of the textbook bound
    assert dp_fedavg_epsilon(z, 1, 1.0, delta, conversion="classic") == pytest.approx(epsilon, rel=0.02)


def test_epsilon_falls_with_noise_and_grows_with_rounds_and_sampling_rate():
    zs = [0.5, 0.8, 1.0, 2.0, 4.0, 8.0, 16.0]
    for q in (0.03, 0.1, 1.0):
        eps = [dp_fedavg_epsilon(z, 20, q) for z in zs]
        assert all(a > b for a, b in zip(eps, eps[1:])), (q, eps)
    eps = [dp_fedavg_epsilon(2.0, rounds, 0.1) for rounds in (1, 5, 20, 100, 1000)]
    assert all(a < b for a, b in zip(eps, eps[1:])), eps
    eps = [dp_fedavg_epsilon(2.0, 50, q) for q in (0.001, 0.01, 0.1, 0.5, 0.9, 1.0)]
    assert all(a < b for a, b in zip(eps, eps[1:])), eps


def test_sampling_buys_privacy_and_more_noise_than_three_clients_can_afford():
    # three clients, all of them every round: a useful noise level leaves ε far above 1
    assert dp_fedavg_epsilon(1.0, 3, 1.0) > 5
    # 100 clients, 10 per round: the same z and 30 rounds give a single-digit ε
    assert dp_fedavg_epsilon(1.0, 30, 0.1) < dp_fedavg_epsilon(1.0, 30, 1.0) / 4


def test_the_edge_cases_of_the_accountant():
    assert dp_fedavg_epsilon(0.0, 10, 0.1) == math.inf
    assert dp_fedavg_epsilon(1.0, 0, 0.1) == 0.0
    assert dp_fedavg_epsilon(1.0, 10, 0.0) == 0.0
    assert np.all(rdp_sampled_gaussian(0.0, 0.0) == 0)
    # enormous noise: essentially no privacy loss, and no overflow at the largest orders
    assert 0 <= dp_fedavg_epsilon(1e4, 10, 0.5) < 1e-2
    # tiny noise: huge but finite RDP at every order, no NaN
    rdp = rdp_sampled_gaussian(0.05, 0.5)
    assert np.all(np.isfinite(rdp)) and np.all(np.diff(rdp) > 0)


def test_noise_multiplier_for_epsilon_inverts_the_accountant():
    for target, rounds, q in [(1.0, 50, 0.1), (8.0, 3, 1.0), (0.5, 200, 0.02)]:
        z = noise_multiplier_for_epsilon(target, rounds, q)
        assert dp_fedavg_epsilon(z, rounds, q) <= target
        assert dp_fedavg_epsilon(0.995 * z, rounds, q) > target


def test_the_accountant_refuses_bad_input():
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_fedavg_epsilon(-1.0, 10)
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_fedavg_epsilon(float("nan"), 10)
    with pytest.raises(ValueError, match="rounds"):
        dp_fedavg_epsilon(1.0, -1)
    with pytest.raises(ValueError, match="rounds"):
        dp_fedavg_epsilon(1.0, 2.5)
    with pytest.raises(ValueError, match="sampling_rate"):
        dp_fedavg_epsilon(1.0, 10, sampling_rate=1.1)
    for bad_delta in (0.0, 1.0, -1e-5):
        with pytest.raises(ValueError, match="delta"):
            dp_fedavg_epsilon(1.0, 10, delta=bad_delta)
    with pytest.raises(ValueError, match="integer"):
        rdp_sampled_gaussian(1.0, 0.1, [2.5])
    with pytest.raises(ValueError, match="> 1"):
        rdp_sampled_gaussian(1.0, 1.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="one RDP value per order"):
        epsilon_from_rdp([0.1, 0.2], [2, 3, 4])
    with pytest.raises(ValueError, match=">= 0"):
        epsilon_from_rdp([-0.1], [2])
    with pytest.raises(ValueError, match="conversion"):
        epsilon_from_rdp([0.1], [2], conversion="best")
    with pytest.raises(ValueError, match="epsilon < 1"):
        classic_gaussian_noise_multiplier(1.5)
    with pytest.raises(ValueError, match="larger"):
        noise_multiplier_for_epsilon(1e-9, 10_000, 1.0)


def test_the_module_says_which_relation_and_delta_it_uses():
    doc = privacy.__doc__
    assert "one whole client" in doc and "user-level" in doc
    assert DEFAULT_DELTA == 1e-5 and "1e-5" in doc


# --------------------------------------------------------------------------- secret noise


def test_noise_is_secret_unless_a_seed_is_asked_for():
    updates = [[np.zeros((20000, 1))]]
    first = dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=1.0, expected_clients=1)
    second = dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=1.0, expected_clients=1)
    assert not np.array_equal(first[0], second[0])          # drawn afresh from the OS each time
    # mean 0 and std z*S/m = 1, to within what 20,000 draws allow
    assert abs(first[0].mean()) < 5 / np.sqrt(20000)
    assert abs(first[0].std() - 1.0) < 0.03
    seeded = [dp_fedavg_aggregate(updates, clip_norm=1.0, noise_multiplier=1.0, expected_clients=1,
                                  rng=np.random.default_rng(7))[0] for _ in range(2)]
    np.testing.assert_array_equal(*seeded)


def test_secure_gaussian_has_the_right_shape_and_moments():
    sample = privacy.secure_gaussian((300, 7), 2.0)
    assert sample.shape == (300, 7)
    assert privacy.secure_gaussian(5, 0.0).tolist() == [0.0] * 5
    big = privacy.secure_gaussian(100001, 3.0)
    assert big.shape == (100001,) and np.all(np.isfinite(big))
    assert abs(big.std() - 3.0) < 0.05 and abs(big.mean()) < 0.05
    # the tails of a normal: about 4.55% beyond 2 standard deviations
    assert abs(np.mean(np.abs(big) > 6.0) - 0.0455) < 0.004


def test_dp_fedavg_strategy_is_secret_by_default():
    assert not DPFedAvg(1.0, 1.0, 3).reproducible
    assert DPFedAvg(1.0, 1.0, 3, reproducible=True).reproducible


@pytest.mark.parametrize("epsilon, text", [(float("inf"), "inf"), (10_000_000_010.0, "1e+10"), (10_010.0, "1e+04"),
                                           (9_999.4, "9999"), (400.57, "401"), (43.49, "43"),
                                           (6.61, "6.6"), (2.01, "2.0"), (0.831, "0.83")])
def test_format_epsilon_shows_no_false_precision(epsilon, text):
    assert privacy.format_epsilon(epsilon) == text
