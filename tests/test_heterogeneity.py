"""Notebook 09's package: drift, the Dirichlet split, FedProx, SCAFFOLD, personalization, compression."""

import copy

import numpy as np
import pytest

from grokfl_helpers import federated, heterogeneity as het, training
from grokfl_helpers.gradcheck import gradient_check
from grokfl_helpers.tensor import Tensor

VOCAB = 60


def _clients(sizes=(300, 450, 200), seed=0):
    """Small synthetic clients of the spam model: emails of 8 word ids (some padding), skewed labels."""
    rng = np.random.default_rng(seed)
    clients = {}
    for i, n in enumerate(sizes):
        X = rng.integers(0, VOCAB, size=(n, 8))
        y = (rng.random((n, 1)) < (0.2 + 0.3 * i)).astype(np.float64)
        clients[f"c{i}"] = (X, y)
    return clients


def _test_set():
    rng = np.random.default_rng(99)
    return rng.integers(0, VOCAB, size=(100, 8)), (rng.random((100, 1)) < 0.5).astype(np.float64)


def _weights(model):
    return model.weight.data.tobytes()


# ---------------------------------------------------------------------------- the training hook


def test_train_with_a_zero_correction_is_train_without_one():
    X, y = _clients()["c1"]
    plain = training.train(training.new_spam_model(VOCAB), X, y, batch_size=100, epochs=2)
    hooked = training.train(training.new_spam_model(VOCAB), X, y, batch_size=100, epochs=2,
                            gradient_correction=lambda parameters: None)
    assert _weights(plain) == _weights(hooked)


# ---------------------------------------------------------------------------- FedProx


def test_proximal_term_gradient_check():
    rng = np.random.default_rng(1)
    w, w_global = rng.standard_normal((7, 2)), rng.standard_normal((7, 2))
    assert gradient_check(lambda t: het.proximal_term(t, w_global, 0.7), w) < 1e-6
    t = Tensor(w.copy(), autograd=True)
    het.proximal_term(t, w_global, 0.7).backward()
    np.testing.assert_allclose(t.grad.data, het.proximal_gradient(w, w_global, 0.7), rtol=1e-12)
    assert float(het.proximal_term(Tensor(w), w_global, 0.7).data) == pytest.approx(0.35 * ((w - w_global) ** 2).sum())


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit():
    clients, test, start = _clients(), _test_set(), training.new_spam_model(VOCAB)
    fedavg = federated.run_rounds(start, clients, test, rounds=3, strategy=federated.FedAvg(weighted=True),
                                  epochs=2, batch_size=100)
    fedprox = federated.run_rounds(start, clients, test, rounds=3, strategy=het.FedProx(0.0, weighted=True),
                                   epochs=2, batch_size=100)
    assert _weights(fedavg.model) == _weights(fedprox.model)
    assert fedavg.accuracy == fedprox.accuracy and fedavg.bytes_sent == fedprox.bytes_sent


def test_fedprox_pulls_local_models_towards_the_global_one():
    clients, start = _clients(), training.new_spam_model(VOCAB)
    X, y = clients["c0"]
    moved = {mu: federated.largest_difference(start, het.FedProx(mu).train_client("c0", start, X, y, epochs=5,
                                                                                  batch_size=50))
             for mu in (0.0, 1.0, 10.0)}
    assert moved[0.0] > moved[1.0] > moved[10.0] > 0


def test_our_fedprox_round_matches_flowers_fedprox_strategy():
    pytest.importorskip("flwr")
    clients, start = _clients(), training.new_spam_model(VOCAB)
    start = training.train(start, *clients["c2"])            # a non-trivial global model
    flower, received = het.flower_fedprox_round(start, clients, 0.3, epochs=2, batch_size=100)
    ours = federated.run_round(start, clients, list(clients), strategy=het.FedProx(0.3, weighted=True), epochs=2,
                               batch_size=100)
    assert received == {name: 0.3 for name in clients}      # Flower sends μ to every client
    assert federated.largest_difference(flower, ours) < 1e-12


# ---------------------------------------------------------------------------- SCAFFOLD


def test_scaffold_with_zero_controls_and_one_local_step_is_fedavg():
    clients, start = _clients(), training.new_spam_model(VOCAB)   # every client < 500 emails: one step
    scaffold = het.Scaffold(num_clients=3, weighted=True, total_examples=sum(len(X) for X, _ in clients.values()))
    a = federated.run_round(start, clients, list(clients), strategy=scaffold)
    b = federated.run_round(start, clients, list(clients), strategy=federated.FedAvg(weighted=True))
    assert _weights(a) == _weights(b)
    # after the round the controls are no longer zero, and the next round differs from FedAvg
    assert any(np.abs(c).max() > 0 for c in scaffold.server_control)
    assert federated.largest_difference(
        federated.run_round(a, clients, list(clients), strategy=scaffold),
        federated.run_round(a, clients, list(clients), strategy=federated.FedAvg(weighted=True))) > 0


def test_scaffold_update_rules():
    x, y = [np.array([1.0, 2.0])], [np.array([0.5, 2.5])]
    c, ci = [np.array([0.1, 0.0])], [np.array([0.0, 0.2])]
    new, delta = het.scaffold_client_update(x, y, c, ci, steps=5, alpha=0.1)
    np.testing.assert_allclose(new[0], ci[0] - c[0] + (x[0] - y[0]) / 0.5)
    np.testing.assert_allclose(delta[0], new[0] - ci[0])
    server = het.scaffold_server_update(c, [delta, delta], num_clients=4)
    np.testing.assert_allclose(server[0], c[0] + 2 * delta[0] / 4)


def test_weighted_scaffold_keeps_c_the_data_weighted_average_of_the_client_controls():
    # sizes 1000x apart, as at alpha = 0.1: c must be sum_i (n_i / n) c_i, the weighted objective's
    # correction, not (1/N) sum_i c_i (the old rule, which failed this test)
    clients = _clients(sizes=(5, 450, 1200))
    sizes = {name: len(X) for name, (X, _) in clients.items()}
    n = sum(sizes.values())
    scaffold = het.Scaffold(num_clients=3, weighted=True, total_examples=n)
    model = training.new_spam_model(VOCAB)
    for participants in (list(clients), ["c0", "c2"]):           # all three, then a sampled round
        model = federated.run_round(model, clients, participants, strategy=scaffold)
        expected = [sum(sizes[i] / n * scaffold.client_controls[i][k] for i in clients)
                    for k in range(len(scaffold.server_control))]
        for got, want in zip(scaffold.server_control, expected):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        unweighted = [sum(scaffold.client_controls[i][k] for i in clients) / 3 for k in range(len(expected))]
        assert max(np.abs(u - w).max() for u, w in zip(unweighted, expected)) > 1e-3   # the two rules differ


def test_unweighted_scaffold_keeps_c_the_plain_average_of_the_client_controls():
    clients = _clients(sizes=(5, 450, 1200))
    scaffold = het.Scaffold(num_clients=3)
    federated.run_round(training.new_spam_model(VOCAB), clients, list(clients), strategy=scaffold)
    for k, got in enumerate(scaffold.server_control):
        np.testing.assert_allclose(got, sum(scaffold.client_controls[i][k] for i in clients) / 3, rtol=1e-10,
                                   atol=1e-14)


def test_weighted_scaffold_server_rule():
    c, d1, d2 = [np.array([0.1, 0.0])], [np.array([1.0, 2.0])], [np.array([-3.0, 0.5])]
    server = het.scaffold_server_update(c, [d1, d2], num_clients=3, sizes=[10, 30], total_examples=100)
    np.testing.assert_allclose(server[0], c[0] + 0.1 * d1[0] + 0.3 * d2[0])


def test_scaffold_sends_twice_fedavgs_bytes():
    model = training.new_spam_model(VOCAB)
    assert het.Scaffold(3).bytes_per_client(model) == 2 * federated.FedAvg().bytes_per_client(model)


# ---------------------------------------------------------------------------- compression


def test_quantizer_is_unbiased():
    rng = np.random.default_rng(3)
    v = rng.standard_normal(40)
    draws = np.array([het.dequantize(*het.stochastic_quantize(v, 8, rng), 8) for _ in range(4000)])
    standard_error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - v) <= 4 * standard_error + 1e-12)
    q, scale = het.stochastic_quantize(v, 8, rng)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127 and scale == np.abs(v).max()
    assert np.abs(het.dequantize(q, scale) - v).max() <= scale / 127 + 1e-12    # one level at most


def test_a_shared_scale_lets_integers_be_summed():
    rng = np.random.default_rng(5)
    updates = [rng.standard_normal(20) * 0.1 for _ in range(3)]
    draws = np.array([het.dequantize(sum(het.stochastic_quantize(u, 8, rng, scale=1.0)[0].astype(np.int64)
                                         for u in updates), 1.0) for _ in range(3000)])
    standard_error = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - sum(updates)) <= 4 * standard_error + 1e-12)
    q, scale = het.stochastic_quantize(np.array([5.0, -0.5]), 8, rng, scale=1.0)    # beyond the scale: clipped
    assert scale == 1.0 and q[0] == 127


def test_top_k_with_k_everything_is_the_identity():
    v = np.random.default_rng(4).standard_normal(30)
    indices, values = het.top_k(v, len(v))
    np.testing.assert_array_equal(indices, np.arange(30))
    np.testing.assert_array_equal(values, v)
    clients, start = _clients(), training.new_spam_model(VOCAB)
    everything = federated.run_round(start, clients, list(clients), strategy=het.TopKFedAvg(1.0, weighted=True))
    plain = federated.run_round(start, clients, list(clients), strategy=federated.FedAvg(weighted=True))
    assert federated.largest_difference(everything, plain) < 1e-15


def test_top_k_keeps_the_largest_and_error_feedback_keeps_the_rest():
    indices, values = het.top_k(np.array([0.1, -3.0, 2.0, 0.0]), 2)
    assert indices.tolist() == [1, 2] and values.tolist() == [-3.0, 2.0]
    strategy = het.TopKFedAvg(0.5)
    sent = strategy.compress("c0", np.array([1.0, -4.0, 0.5, 3.0]))
    assert sent.tolist() == [0.0, -4.0, 0.0, 3.0] and strategy.residuals["c0"].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert strategy.compress("c0", np.zeros(4)).tolist() == [1.0, 0.0, 0.5, 0.0]    # sent a round late


def test_compressed_bytes():
    model = training.new_spam_model(1000)
    assert het.QuantizedFedAvg(8).bytes_per_client(model) == 8000 + 1000 + 8
    assert het.TopKFedAvg(0.01).bytes_per_client(model) == 8000 + 10 * 12


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, message", [
    (lambda: het.FedProx(-0.1), "mu must be >= 0"),
    (lambda: het.proximal_term(Tensor(np.zeros(2)), np.zeros(2), -1), "mu must be >= 0"),
    (lambda: het.proximal_term(Tensor(np.zeros(2)), np.zeros(3), 1), "same parameter"),
    (lambda: het.top_k(np.ones(5), 0), "k must be between 1"),
    (lambda: het.top_k(np.ones(5), -2), "k must be between 1"),
    (lambda: het.TopKFedAvg(0.0), r"must lie in \(0, 1\]"),
    (lambda: het.stochastic_quantize(np.ones(3), 9, np.random.default_rng(0)), "bits must be"),
    (lambda: het.Scaffold(0), "num_clients must be a positive integer"),
    (lambda: het.Scaffold(3, weighted=True), "pass total_examples="),
    (lambda: het.Scaffold(3, total_examples=100), "only by Scaffold\\(weighted=True\\)"),
    (lambda: het.scaffold_server_update([np.zeros(2)], [[np.zeros(2)]], 2, sizes=[5]), "needs both sizes"),
    (lambda: het.scaffold_server_update([np.zeros(2)], [[np.zeros(2)]], 2, sizes=[50], total_examples=10),
     "at least the round's 50 examples"),
    (lambda: het.scaffold_client_update([np.zeros(3)], [np.zeros(3)], [np.zeros(2)], [np.zeros(3)], steps=1,
                                        alpha=0.1), "control variates of shapes"),
    (lambda: het.scaffold_server_update([np.zeros(3)], [[np.zeros(4)]], num_clients=2), "control variates of shapes"),
    (lambda: het.scaffold_client_update([np.zeros(3)], [np.zeros(3)], [np.zeros(3)], [np.zeros(3)], steps=0,
                                        alpha=0.1), "steps must be a positive integer"),
    (lambda: het.dirichlet_split(np.array([0, 1] * 50), 20, 0.0), "alpha must be > 0"),
])
def test_bad_input_gets_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_stochastic_quantize_needs_a_generator():
    with pytest.raises(TypeError, match="rng="):
        het.stochastic_quantize(np.ones(3))


# ---------------------------------------------------------------------------- drift, splits, personalization


def test_update_drift():
    start = training.new_spam_model(3)
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    a.weight.data[:, 0] = [0.0, 1.0, 0.0]
    b.weight.data[:, 0] = [0.0, 0.0, 1.0]
    drift = het.update_drift(start, {"a": a, "b": b})
    assert drift["a"].distance == pytest.approx(np.sqrt(0.5)) and drift["a"].cosine == pytest.approx(np.sqrt(0.5))
    same = het.update_drift(start, {"a": a, "b": copy.deepcopy(a)})
    assert same["b"].distance == 0 and same["b"].cosine == pytest.approx(1.0)


def test_measure_drift_changes_nothing():
    clients, test, start = _clients(), _test_set(), training.new_spam_model(VOCAB)
    measured = het.MeasureDrift(federated.FedAvg(weighted=True))
    a = federated.run_rounds(start, clients, test, rounds=2, strategy=measured)
    b = federated.run_rounds(start, clients, test, rounds=2, strategy=federated.FedAvg(weighted=True))
    assert _weights(a.model) == _weights(b.model) and len(measured.rounds) == 2
    assert set(measured.rounds[0]) == set(clients) and len(measured.mean_cosine()) == 2


def test_dirichlet_split_covers_every_row_once_and_skews_with_alpha():
    labels = np.array([1, 0] * 2000)
    for alpha in (100.0, 1.0):
        parts = het.dirichlet_split(labels, 20, alpha)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
        assert min(len(p) for p in parts) >= 10
    spread = {alpha: np.std([labels[p].mean() for p in het.dirichlet_split(labels, 20, alpha)])
              for alpha in (100.0, 1.0)}
    assert spread[100.0] < 0.05 < spread[1.0]
    assert all(np.array_equal(a, b) for a, b in zip(het.dirichlet_split(labels, 20, 1.0),
                                                    het.dirichlet_split(labels, 20, 1.0)))


def test_self_balancing_keeps_sizes_closer():
    labels = np.array([1, 0] * 2000)
    for balanced in (False, True):
        parts = het.dirichlet_split(labels, 20, 1.0, self_balancing=balanced, seed=3)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    spread = {b: np.std([len(p) for p in het.dirichlet_split(labels, 20, 1.0, self_balancing=b, seed=3)])
              for b in (False, True)}
    assert spread[True] < spread[False]


def test_dirichlet_split_gives_up_like_flower_when_partitions_stay_too_small():
    labels = np.array([1, 0] * 2000)
    with pytest.raises(ValueError, match="min_partition_size"):
        het.dirichlet_split(labels, 20, 0.1)
    parts = het.dirichlet_split(labels, 20, 0.1, min_partition_size=0)
    assert sum(len(p) for p in parts) == len(labels)


def test_iid_like_keeps_sizes_and_emails():
    clients = _clients()
    iid = het.iid_like(clients)
    assert [len(X) for X, _ in iid.values()] == [len(X) for X, _ in clients.values()]
    assert sum(y.sum() for _, y in iid.values()) == sum(y.sum() for _, y in clients.values())


def test_personalize_is_local_fine_tuning_kept_by_each_client():
    clients, start = _clients(), training.new_spam_model(VOCAB)
    mine = het.personalize(start, clients, epochs=1)
    for name, (X, y) in clients.items():
        assert _weights(mine[name]) == _weights(training.train(copy.deepcopy(start), X, y))
    assert np.all(start.weight.data == 0)


def test_dirichlet_clients_on_the_corpus(corpus):
    clients = het.dirichlet_clients(corpus, 20, 1.0)
    assert len(clients) == 20
    total = sum(len(X) for X, _ in clients.values())
    assert total == len(np.unique(corpus.train_email))
