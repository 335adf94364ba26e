"""Notebook 10's attacks: the label from the sign, batch disaggregation, membership, the empirical
lower bound on ε (Clopper–Pearson) and the dense-layer inversion."""

import copy
import math
from statistics import NormalDist

import numpy as np
import pytest

from grokfl_helpers import attacks, federated, training
from grokfl_helpers.tensor import Linear, MSELoss, Tensor


def one_step_update(model, X, y, steps=1):
    trained = training.train(copy.deepcopy(model), X, y, batch_size=len(X), epochs=steps)
    return federated.model_update(model, trained)[0]


def toy_batch(rng, n_emails, vocab_size=60, max_words=12):
    """Distinct emails over a small vocabulary, each with a word of its own, padded with <unk>."""
    rows = []
    for e in range(n_emails):
        own = 1 + e                                        # word e + 1 is in email e only
        shared = rng.choice(np.arange(n_emails + 1, vocab_size), size=rng.integers(2, max_words - 1), replace=False)
        words = np.concatenate([[own], shared])
        rows.append(np.concatenate([words, np.zeros(max_words - len(words), dtype=int)]))
    return np.array(rows), rng.integers(0, 2, size=(n_emails, 1)).astype(float)


def toy_model(vocab_size=60, seed=0):
    model = training.new_spam_model(vocab_size)
    model.weight.data[1:] = np.random.default_rng(seed).normal(0, 0.3, size=(vocab_size - 1, 1))
    return model


# ------------------------------------------------------------------ the label from the sign


def test_label_from_sign_of_every_single_email_update(corpus):
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:2000], corpus.train_y[:2000])
    X, y = corpus.train_x[3000:3060], corpus.train_y[3000:3060]
    labels = [attacks.label_from_update(one_step_update(model, X[i:i + 1], y[i:i + 1])) for i in range(len(X))]
    assert labels == y[:, 0].astype(int).tolist()


def test_spam_count_in_closed_form_from_the_all_zero_model(corpus):
    zero = training.new_spam_model(len(corpus.vocab))
    subject = corpus.w2i["Subject:"]
    for start, size in [(0, 1), (10, 7), (100, 64), (1000, 500)]:
        X, y = corpus.train_x[start:start + size], corpus.train_y[start:start + size]
        assert attacks.spam_count_from_update(one_step_update(zero, X, y), size, subject) == int(y.sum())


def test_spam_count_refuses_an_update_that_is_not_one_step_from_zero():
    model = toy_model()
    X, y = toy_batch(np.random.default_rng(1), 4)
    with pytest.raises(ValueError, match="all-zero model"):
        attacks.spam_count_from_update(one_step_update(model, X, y), 4, common_row=int(X[0, 1]))


# ------------------------------------------------------------------ batch disaggregation


@pytest.mark.parametrize("n_emails", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("steps", [1, 5])
def test_disaggregation_recovers_every_email_of_a_small_distinct_batch(n_emails, steps):
    rng = np.random.default_rng(n_emails)
    model = toy_model(seed=n_emails)
    for _ in range(3):
        X, y = toy_batch(rng, n_emails)
        recovered = attacks.disaggregate(one_step_update(model, X, y, steps), n_emails=n_emails)
        scores = attacks.per_email_recall_precision(recovered, X)
        assert (scores == 1.0).all()
        for c_e, words in recovered:                    # and each email's label, from the sign
            e = next(i for i in range(n_emails) if set(words.tolist()) == attacks.words_in(X[i]))
            assert int(c_e > 0) == int(y[e, 0])


def test_disaggregation_on_real_emails_batches_of_up_to_8(corpus):
    """One SGD step on B <= 8 distinct real emails: every email back. The model has taken one step on
    500 emails, so that no email's push is lost in float rounding (a model already certain of an
    email, p within 1e-14 of y, moves its words by less than that; notebook 10 shows the case)."""
    model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:500], corpus.train_y[:500])
    start = 5000
    for n_emails in [1, 2, 4, 8]:
        for _ in range(3):
            X, y = corpus.train_x[start:start + n_emails], corpus.train_y[start:start + n_emails]
            start += n_emails
            assert len({frozenset(attacks.words_in(row)) for row in X}) == n_emails   # distinct emails
            recovered = attacks.disaggregate(one_step_update(model, X, y), n_emails=n_emails)
            assert (attacks.per_email_recall_precision(recovered, X) == 1.0).all()


def test_disaggregation_of_nothing_and_bad_input():
    assert attacks.disaggregate(np.zeros((10, 1))) == []
    with pytest.raises(ValueError, match="n_emails"):
        attacks.disaggregate(np.ones((10, 1)), n_emails=0)
    with pytest.raises(ValueError, match="Embedding"):
        attacks.disaggregate(np.ones((10, 3)))
    with pytest.raises(ValueError, match="batch_size"):
        attacks.spam_count_from_update(np.ones((10, 1)), 0, common_row=1)


def test_per_email_recall_precision_by_hand():
    emails = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    recovered = [(0.1, np.array([1, 2])), (0.2, np.array([4, 5, 6, 7]))]
    assert attacks.per_email_recall_precision(recovered, emails).tolist() == [[2 / 3, 1.0], [1.0, 0.5]]
    assert attacks.per_email_recall_precision([], emails).tolist() == [[0.0, 0.0], [0.0, 0.0]]


# ------------------------------------------------------------------ membership


def test_every_member_has_all_of_its_words_moved():
    model = toy_model()
    X, y = toy_batch(np.random.default_rng(3), 6)
    update = one_step_update(model, X, y)
    assert (attacks.share_of_words_moved(update, X) == 1.0).all()
    outsider = np.array([[59, 58, 57, 0]])
    if not set(outsider[0, :3].tolist()) <= set(np.unique(X).tolist()):
        assert attacks.share_of_words_moved(update, outsider)[0] < 1.0


def test_notebook_tie_break_never_ranks_a_partial_email_above_a_whole_one(corpus):
    # Notebook 10 §3 scores "share of words moved + 1e-3 x signed projection": the projection only
    # breaks ties. On real updates (one client of 100 emails, and the average of 10 such clients,
    # from the notebook's global model) the tie break stays below 1e-3, and an email has at most
    # 500 words, so a share below 1 is at most 1 - 1/500: the tie break never lifts an email with a
    # word that did not move above one whose words all moved.
    global_model = training.train(training.new_spam_model(len(corpus.vocab)), corpus.train_x[:5000],
                                  corpus.train_y[:5000])
    clients = [(corpus.train_x[5000 + 100 * i:5100 + 100 * i], corpus.train_y[5000 + 100 * i:5100 + 100 * i])
               for i in range(10)]
    one = one_step_update(global_model, *clients[0])
    average = sum(one_step_update(global_model, X, y) for X, y in clients) / 10
    X, y = corpus.train_x[5000:8000], corpus.train_y[5000:8000]
    assert ((X != 0).sum(axis=1) <= 500).all()
    for update in [one, average]:
        share = attacks.share_of_words_moved(update, X)
        tie_break = 1e-3 * attacks.membership_score_from_update(update, X, y)
        assert np.abs(tie_break).max() < 1e-3, "the tie break is smaller than 1e-3"
        score = share + tie_break
        assert (share == 1.0).any() and (share < 1.0).any()
        assert score[share == 1.0].min() > score[share < 1.0].max()


def test_roc_and_tpr_at_fpr_by_hand():
    members, others = [3.0, 2.0, 0.5], [1.0, 0.0, -1.0, -2.0]
    fpr, tpr = attacks.roc_curve(members, others)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert attacks.tpr_at_fpr(members, others, 0.0) == pytest.approx(2 / 3)
    assert attacks.tpr_at_fpr(members, others, 0.25) == 1.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        attacks.tpr_at_fpr(members, others, 1.5)
    with pytest.raises(ValueError, match="empty"):
        attacks.roc_curve([], others)


# ------------------------------------------------------------------ the lower bound on ε


def test_binomial_cdf_against_a_direct_sum():
    for n, p in [(1, 0.3), (10, 0.5), (37, 0.01), (200, 0.9)]:
        for k in range(n + 1):
            direct = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
            assert attacks.binomial_cdf(k, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-15)


def test_clopper_pearson_known_values():
    assert attacks.clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert attacks.clopper_pearson(9, 10) == pytest.approx((0.554984, 0.997471), abs=1e-6)
    for n in [1, 10, 1000]:
        assert attacks.clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
        assert attacks.clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), rel=1e-9)
    low, high = attacks.clopper_pearson(3, 40, confidence=0.9)
    assert (1 - high, 1 - low) == pytest.approx(attacks.clopper_pearson(37, 40, confidence=0.9))


def test_identical_score_distributions_prove_nothing():
    scores = np.random.default_rng(0).normal(size=4000)
    assert attacks.audit_epsilon(scores, scores)["epsilon"] == 0.0
    assert attacks.epsilon_lower_bound(300, 1000, 300, 1000) == 0.0
    assert attacks.epsilon_from_rates(0.3, 0.3) == 0.0


def test_two_gaussians_match_the_closed_form():
    """Scores N(mu, 1) with the canary, N(0, 1) without, threshold t: the bound from counts comes
    close to, and stays below, log((Phi(mu - t) - delta) / (1 - Phi(t)))."""
    mu, t, delta, n = 2.0, 1.5, 1e-5, 400_000
    closed_form = math.log((NormalDist().cdf(mu - t) - delta) / (1 - NormalDist().cdf(t)))
    exact_rates = NormalDist().cdf(mu - t), 1 - NormalDist().cdf(t)
    assert attacks.epsilon_from_rates(*exact_rates, delta) == pytest.approx(closed_form)
    rng = np.random.default_rng(1)
    tp = int((rng.normal(mu, 1, n) >= t).sum())
    fp = int((rng.normal(0, 1, n) >= t).sum())
    bound = attacks.epsilon_lower_bound(tp, n, fp, n, delta)
    assert closed_form - 0.05 < bound < closed_form


def test_audit_stays_below_the_exact_epsilon_of_the_gaussian_mechanism():
    """For N(mu, 1) against N(0, 1) the exact ε at δ (Balle and Wang 2018) bounds every test."""
    mu, delta = 2.0, 1e-5

    def exact_delta(eps):
        return NormalDist().cdf(-eps / mu + mu / 2) - math.exp(eps) * NormalDist().cdf(-eps / mu - mu / 2)

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if exact_delta(mid) > delta else (lo, mid)
    rng = np.random.default_rng(2)
    audited = attacks.audit_epsilon(rng.normal(mu, 1, 100_000), rng.normal(0, 1, 100_000), delta)
    assert 1.0 < audited["epsilon"] < hi


def test_bad_rates_and_counts_raise_clear_errors():
    for tpr, fpr in [(1.2, 0.1), (0.5, -0.1), (float("nan"), 0.1)]:
        with pytest.raises(ValueError, match="between 0 and 1"):
            attacks.epsilon_from_rates(tpr, fpr)
    with pytest.raises(ValueError, match="trials must be at least 1"):
        attacks.clopper_pearson(0, 0)
    with pytest.raises(ValueError, match="between 0 and trials"):
        attacks.clopper_pearson(11, 10)
    with pytest.raises(TypeError, match="integer"):
        attacks.epsilon_lower_bound(1.5, 10, 0, 10)
    with pytest.raises(ValueError, match="at least 2 scores"):
        attacks.audit_epsilon([1.0], [0.0, 1.0])


# ------------------------------------------------------------------ dense layers


def test_dense_inversion_is_exact_to_float_precision():
    rng = np.random.default_rng(4)
    for n_inputs, n_outputs in [(1, 1), (7, 3), (200, 16)]:
        x = rng.standard_normal((1, n_inputs))
        layer = Linear(n_inputs, n_outputs, rng=5)
        loss = MSELoss().forward(layer.forward(Tensor(x)).sigmoid(), Tensor(np.ones((1, n_outputs))))
        loss.backward()
        recovered = attacks.invert_dense_layer(layer.weight.grad.data, layer.bias.grad.data)
        np.testing.assert_allclose(recovered, x[0], rtol=1e-13, atol=0)
        # an SGD update (-alpha times the gradients) gives the same input
        np.testing.assert_allclose(attacks.invert_dense_layer(-0.01 * layer.weight.grad.data,
                                                              -0.01 * layer.bias.grad.data), x[0], rtol=1e-13)


def test_dense_inversion_bad_input():
    with pytest.raises(ValueError, match="bias gradient is zero"):
        attacks.invert_dense_layer(np.ones((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="one bias per output"):
        attacks.invert_dense_layer(np.ones((3, 2)), np.ones(3))
