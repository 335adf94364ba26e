"""Tests of grokfl_helpers.robust (the robust aggregators) and grokfl_helpers.poisoning (Mallory).

The aggregators are checked on examples small enough to compute by hand, and against Flower 1.42's
own strategies (flwr.serverapp.strategy, the Message API): the same client models go into Flower's
``aggregate_train`` and into ours, and the results must agree to float rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from grokfl_helpers import federated, poisoning, robust, training
from grokfl_helpers.data import UNK

TOLERANCE = 1e-10


# ---------------------------------------------------------------------------- by hand


def test_median_and_trimmed_mean_on_a_hand_computed_example():
    updates = np.array([[1.0, 10.0, -3.0],
                        [2.0, 20.0, 0.0],
                        [3.0, 30.0, 1.0],
                        [4.0, 40.0, 2.0],
                        [100.0, -1000.0, 3.0]])          # the last client lies
    np.testing.assert_allclose(robust.coordinate_median(updates), [3.0, 20.0, 1.0])
    # beta = 0.2 of 5 clients: int(1.0) = 1 value dropped at each end of every weight
    np.testing.assert_allclose(robust.trimmed_mean(updates, 0.2), [3.0, 20.0, 1.0])
    # four clients: median is the mean of the middle two; beta = 0.25 drops one at each end
    four = updates[:4]
    np.testing.assert_allclose(robust.coordinate_median(four), [2.5, 25.0, 0.5])
    np.testing.assert_allclose(robust.trimmed_mean(four, 0.25), [2.5, 25.0, 0.5])
    # beta = 0.2 of 3 clients trims nobody (int(0.6) = 0): the plain mean, as Flower's FedTrimmedAvg
    np.testing.assert_allclose(robust.trimmed_mean(updates[:3], 0.2), [2.0, 20.0, -2.0 / 3])


def test_median_accepts_updates_as_lists_of_arrays():
    updates = [[np.array([[1.0], [5.0]])], [np.array([[2.0], [6.0]])], [np.array([[9.0], [0.0]])]]
    np.testing.assert_allclose(robust.coordinate_median(updates), [2.0, 5.0])


def test_krum_selects_the_outlier_free_update():
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 0.1, size=(6, 20))
    honest[2] = honest.mean(axis=0)                   # the most central honest update
    liars = 5.0 + rng.normal(0.0, 0.1, size=(2, 20))  # f = 2 colluding liars, close to each other
    updates = np.concatenate([liars, honest])         # n = 8 > 2f + 2 = 6
    scores = robust.krum_scores(updates, num_malicious=2)
    assert np.argmin(scores) == 2 + 2                 # row 4 is honest[2]
    change, chosen = robust.multi_krum(updates, num_malicious=2, num_selected=1)
    np.testing.assert_array_equal(change, honest[2])
    _, chosen = robust.multi_krum(updates, num_malicious=2)   # m = n - f = 6: every honest one, no liar
    assert sorted(chosen) == [2, 3, 4, 5, 6, 7]


def test_krum_score_sums_the_n_minus_f_minus_2_nearest_squared_distances():
    points = np.array([[0.0], [1.0], [3.0], [10.0], [11.0]])   # n = 5, f = 1: 2 nearest neighbours
    scores = robust.krum_scores(points, 1)
    np.testing.assert_allclose(scores, [1 + 9, 1 + 4, 4 + 9, 1 + 49, 1 + 64])


def test_bulyan_on_a_small_case():
    rng = np.random.default_rng(1)
    updates = np.concatenate([rng.normal(0, 1, (6, 4)), [[50.0, -50.0, 50.0, -50.0]]])   # n = 7 = 4f + 3, f = 1
    result = robust.bulyan(updates, 1)
    assert np.all(np.abs(result) < 3)                 # the liar cannot drag any weight out of the honest range


# ---------------------------------------------------------------------------- bad input


def test_trim_fraction_of_one_half_or_more_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        robust.trimmed_mean(np.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="Median"):
        robust.TrimmedMean(0.7)
    with pytest.raises(TypeError):
        robust.TrimmedMean("0.2")


def test_krum_with_too_many_malicious_for_n_is_refused():
    with pytest.raises(ValueError, match=r"n > 2f \+ 2 = 4 .* got n = 3.*f = 0"):
        robust.krum_scores(np.zeros((3, 2)), 1)
    with pytest.raises(ValueError, match="n > 2f"):
        robust.multi_krum(np.zeros((6, 2)), 2)
    with pytest.raises(ValueError, match="4f"):
        robust.bulyan(np.zeros((6, 2)), 1)
    robust.krum_scores(np.zeros((5, 2)), 1)          # n = 5 > 4: fine
    assert robust.largest_tolerated(10) == 3 and robust.largest_tolerated(3) == 0


def test_other_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="no updates"):
        robust.coordinate_median([])
    with pytest.raises(ValueError, match="NaN"):
        robust.coordinate_median(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="different numbers of weights"):
        robust.coordinate_median([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="clip_norm"):
        robust.NormBounding(0.0)
    with pytest.raises(TypeError, match="rng"):
        robust.norm_bounded_mean(np.ones((2, 3)), 1.0, noise_std=0.1)
    with pytest.raises(ValueError, match="padding"):
        poisoning.Backdoor(UNK)
    with pytest.raises(ValueError, match="fraction"):
        poisoning.LabelFlip(1.5)
    with pytest.raises(TypeError, match="Strategy"):
        poisoning.Attacked("FedAvg", ["Bob"], poisoning.LabelFlip())


def test_norm_bounding_clips_then_averages():
    updates = np.array([[3.0, 4.0], [0.3, 0.4]])      # norms 5 and 0.5
    np.testing.assert_allclose(robust.norm_bounded_mean(updates, 1.0), [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2])
    noisy = robust.norm_bounded_mean(updates, 1.0, 0.5, np.random.default_rng(3))
    expected = [0.45, 0.6] + np.random.default_rng(3).normal(0.0, 0.5, size=2)
    np.testing.assert_allclose(noisy, expected)


# ---------------------------------------------------------------------------- equal to Flower


@pytest.fixture(scope="module")
def flower():
    from flwr.serverapp import strategy

    def aggregate(flower_strategy, models, sizes):
        return federated.flatten(robust.flower_aggregate(flower_strategy, models, sizes))[0]

    return strategy, aggregate


def test_flower_aggregate_refuses_bad_input(flower):
    strategy, _ = flower
    with pytest.raises(TypeError, match="Message-API strategies"):
        robust.flower_aggregate(federated.FedAvg(), [[np.zeros(2)]], [1])
    with pytest.raises(ValueError, match="one size per model"):
        robust.flower_aggregate(strategy.FedMedian(), [[np.zeros(2)], [np.ones(2)]], [1])


def _random_round(seed, n):
    """A global model and n clients' models as Flower receives them (two parameters each)."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 1), (7,)]
    global_arrays = [rng.normal(size=s) for s in shapes]
    updates = [[rng.normal(0, 0.1 * (1 + i), size=s) for s in shapes] for i in range(n)]
    models = [[g + u for g, u in zip(global_arrays, update)] for update in updates]
    sizes = rng.integers(10, 1000, size=n)
    return federated.flatten(global_arrays)[0], robust.stack_updates(updates), models, sizes


@pytest.mark.parametrize("seed,n", [(0, 3), (1, 6), (2, 10)])
def test_median_and_trimmed_mean_equal_flowers(flower, seed, n):
    strategy, aggregate = flower
    start, updates, models, sizes = _random_round(seed, n)
    np.testing.assert_allclose(start + robust.coordinate_median(updates),
                               aggregate(strategy.FedMedian(), models, sizes), atol=TOLERANCE)
    for beta in (0.0, 0.1, 0.2, 0.34, 0.49):
        np.testing.assert_allclose(start + robust.trimmed_mean(updates, beta),
                                   aggregate(strategy.FedTrimmedAvg(beta=beta), models, sizes), atol=TOLERANCE)


@pytest.mark.parametrize("seed,n,f", [(3, 5, 1), (4, 10, 3), (5, 10, 1), (6, 12, 2)])
def test_krum_and_multi_krum_equal_flowers(flower, seed, n, f):
    strategy, aggregate = flower
    start, updates, models, sizes = _random_round(seed, n)
    krum, _ = robust.multi_krum(updates, f, 1)
    np.testing.assert_allclose(start + krum, aggregate(strategy.Krum(num_malicious_nodes=f), models, sizes),
                               atol=TOLERANCE)
    for m in (2, n - f):
        # Flower weights the selected models by num-examples; the paper (and our default) averages plainly
        weighted, _ = robust.multi_krum(updates, f, m, weights=sizes)
        flowers = aggregate(strategy.MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m), models, sizes)
        np.testing.assert_allclose(start + weighted, flowers, atol=TOLERANCE)
        plain, _ = robust.multi_krum(updates, f, m)
        equal = aggregate(strategy.MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m), models, [1] * n)
        np.testing.assert_allclose(start + plain, equal, atol=TOLERANCE)


@pytest.mark.parametrize("seed,n,f", [(7, 7, 1), (8, 11, 2), (9, 10, 1)])
def test_bulyan_equals_flowers_where_its_preconditions_hold(flower, seed, n, f):
    strategy, aggregate = flower
    start, updates, models, sizes = _random_round(seed, n)
    np.testing.assert_allclose(start + robust.bulyan(updates, f),
                               aggregate(strategy.Bulyan(num_malicious_nodes=f), models, sizes), atol=TOLERANCE)


# ---------------------------------------------------------------------------- in the round loop


@pytest.fixture(scope="module")
def small(corpus):
    clients = federated.iid_clients(corpus, 6, seed=1)
    clients = {name: (X[:200], y[:200]) for name, (X, y) in clients.items()}
    return corpus, clients, training.new_spam_model(len(corpus.vocab))


def test_each_strategy_adds_its_rule_to_the_global_model(small):
    corpus, clients, start = small
    local = {name: training.train(copy.deepcopy(start), X, y) for name, (X, y) in clients.items()}
    updates = robust.stack_updates([federated.model_update(start, m) for m in local.values()])
    sizes = {name: len(X) for name, (X, _) in clients.items()}
    rng = np.random.default_rng(0)
    for strategy, rule in [(robust.Median(), robust.coordinate_median(updates)),
                           (robust.TrimmedMean(0.2), robust.trimmed_mean(updates, 0.2)),
                           (robust.Krum(1), robust.multi_krum(updates, 1, 1)[0]),
                           (robust.MultiKrum(1), robust.multi_krum(updates, 1)[0]),
                           (robust.NormBounding(0.5), robust.norm_bounded_mean(updates, 0.5))]:
        new = strategy.aggregate(start, local, sizes, rng)
        np.testing.assert_allclose(federated.flatten(new)[0], federated.flatten(start)[0] + rule, atol=1e-12)
    krum = robust.Krum(1)
    krum.aggregate(start, local, sizes, rng)
    assert len(krum.last_selected) == 1 and krum.last_selected[0] in clients


def test_backdoor_rounds_move_the_trigger_weight_and_median_stops_it(small):
    corpus, clients, start = small
    trigger = corpus.w2i["samovar"]
    test = (corpus.test_x[:200], corpus.test_y[:200])
    mallory = "client 0"
    attack = poisoning.ModelReplacement(trigger, clients_per_round=6, epochs=3)
    plain = federated.run_rounds(start, clients, test, rounds=1, strategy=poisoning.Attacked(federated.FedAvg(), mallory, attack))
    robust_run = federated.run_rounds(start, clients, test, rounds=1, strategy=poisoning.Attacked(robust.Median(), mallory, attack))
    assert plain.model.weight.data[trigger, 0] < -0.1          # FedAvg lets her push through
    assert robust_run.model.weight.data[trigger, 0] == 0.0     # nobody else moved it: the median did not


def test_attacks_on_data_and_models():
    X = np.array([[5, 6, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    y = np.array([[1.0], [0.0], [1.0]])
    triggered = poisoning.insert_trigger(X, 9)
    np.testing.assert_array_equal(triggered, [[5, 6, 9, 0], [7, 9, 0, 0], [1, 2, 3, 9]])
    np.testing.assert_array_equal(poisoning.insert_trigger(triggered, 9), triggered)   # already there
    np.testing.assert_array_equal(poisoning.flip_labels(y), [[0.0], [0.0], [0.0]])
    Xb, yb = poisoning.backdoor_examples(X, y, 9)
    assert len(Xb) == 5 and yb[3:].sum() == 0 and np.all(np.any(Xb[3:] == 9, axis=1))
    assert poisoning.replacement_scale(10) == 10 and poisoning.replacement_scale(10, 0.5) == 20
    start = training.new_spam_model(12)
    pushed = poisoning.OneWeight(9, push=2.0, scale=3.0).poison_model(start, copy.deepcopy(start))
    assert pushed.weight.data[9, 0] == -6.0 and np.count_nonzero(pushed.weight.data) == 1
    bounded = poisoning.NormBoundedBackdoor(9, norm_bound=0.5, trigger_only=True).poison_model(start, start)
    assert bounded.weight.data[9, 0] == pytest.approx(-0.495)
