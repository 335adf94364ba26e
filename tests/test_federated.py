"""Partitions, averaging and rounds."""

import numpy as np
import pytest

from grokfl_helpers.data import MAILBOXES
from grokfl_helpers.federated import (
    book_clients,
    fedavg,
    iid_clients,
    largest_difference,
    train_locally,
    mailbox_clients,
    mailbox_tests,
    model_bytes,
    model_update,
    run_rounds,
)
from grokfl_helpers.tensor import Embedding, Linear, Sequential
from grokfl_helpers.training import accuracy, new_spam_model, train


def _emb(values):
    model = new_spam_model(len(values))
    model.weight.data[:, 0] = values
    return model


def test_fedavg_plain_and_weighted():
    a, b = _emb([0.0, 2.0]), _emb([4.0, 6.0])
    np.testing.assert_allclose(fedavg([a, b]).weight.data[:, 0], [2.0, 4.0])
    np.testing.assert_allclose(fedavg([a, b], weights=[3, 1]).weight.data[:, 0], [1.0, 3.0])
    assert fedavg([a, b]).weight.data is not a.weight.data


def test_fedavg_leaves_untouched_weights_bit_identical():
    """Rows no client changed must not move at all (a naive w1*x + w2*x + w3*x rounds them)."""
    values = np.random.default_rng(0).standard_normal(1000)
    models = [_emb(values) for _ in range(3)]
    models[1].weight.data[7, 0] += 0.5
    avg = fedavg(models, weights=[0.1, 0.7, 0.2])
    changed = np.flatnonzero(avg.weight.data[:, 0] != values)
    assert changed.tolist() == [7]
    np.testing.assert_allclose(avg.weight.data[7, 0], values[7] + 0.7 * 0.5)


def test_fedavg_averages_every_parameter_of_a_deeper_model():
    m1 = Sequential([Linear(3, 2, rng=0)])
    m2 = Sequential([Linear(3, 2, rng=1)])
    avg = fedavg([m1, m2])
    for p, q, r in zip(avg.get_parameters(), m1.get_parameters(), m2.get_parameters()):
        np.testing.assert_allclose(p.data, (q.data + r.data) / 2)


@pytest.mark.parametrize(
    "models, weights, message",
    [
        ([], None, "at least one model"),
        ([Embedding(3, 1, rng=0), Embedding(4, 1, rng=0)], None, "parameter shapes"),
        ([Embedding(3, 1, rng=0)] * 2, [0, 0], "sum to zero"),
        ([Embedding(3, 1, rng=0)] * 2, [1], "2 models"),
        ([Embedding(3, 1, rng=0)] * 2, [1, -1], "non-negative"),
    ],
)
def test_fedavg_refuses_bad_input(models, weights, message):
    with pytest.raises(ValueError, match=message):
        fedavg(models, weights)


def test_model_update_and_bytes():
    a, b = _emb([1.0, 2.0, 3.0]), _emb([1.0, 2.5, 3.0])
    np.testing.assert_allclose(model_update(a, b)[0][:, 0], [0.0, 0.5, 0.0])
    assert model_bytes(a) == 3 * 8
    with pytest.raises(ValueError, match="shapes"):
        model_update(a, _emb([1.0]))


def test_book_clients_split(corpus):
    clients = book_clients(corpus)
    assert list(clients) == ["Bob", "Alice", "Sue"]
    assert [len(x) for x, _ in clients.values()] == [1000, 1000, len(corpus.train_x) - 2000]
    np.testing.assert_array_equal(clients["Alice"][0], corpus.train_x[1000:2000])


def test_mailbox_clients_are_non_iid_and_cover_each_training_email_once(corpus):
    clients = mailbox_clients(corpus)
    assert len(clients) == len(MAILBOXES)
    assert sum(len(x) for x, _ in clients.values()) == len(np.unique(corpus.train_email))
    spam_share = {name: float(y.mean()) for name, (x, y) in clients.items()}
    assert spam_share["farmer-d (enron1)"] < 0.35 and spam_share["lokay-m (enron6)"] > 0.65


def test_iid_clients_partition_the_training_set(corpus):
    clients = iid_clients(corpus, 100, seed=1)
    sizes = [len(x) for x, _ in clients.values()]
    assert len(clients) == 100 and sum(sizes) == len(corpus.train_x) and max(sizes) - min(sizes) <= 1
    assert list(clients)[:2] == ["client 00", "client 01"]
    shares = [float(y.mean()) for _, y in clients.values()]
    assert 0.4 < min(shares) and max(shares) < 0.6
    with pytest.raises(ValueError, match="n_clients"):
        iid_clients(corpus, 0)


def test_one_round_equals_the_books_loop(corpus):
    """A round of run_rounds is exactly: train a copy on each client, average plainly."""
    clients = book_clients(corpus)
    start = new_spam_model(len(corpus.vocab))
    history = run_rounds(start, clients, (corpus.test_x, corpus.test_y), rounds=1)
    by_hand = fedavg([train(new_spam_model(len(corpus.vocab)), x, y) for x, y in clients.values()])
    np.testing.assert_array_equal(history.model.weight.data, by_hand.weight.data)
    assert not start.weight.data.any()  # the starting model is left alone
    assert history.accuracy == [accuracy(by_hand, corpus.test_x, corpus.test_y)]
    assert history.bytes_sent == [2 * 3 * len(corpus.vocab) * 8]


def test_federated_reaches_centralized_within_one_point_in_five_rounds(corpus):
    """Issue 3's bar on the book's split (unweighted mean, as the book)."""
    central = new_spam_model(len(corpus.vocab))
    for _ in range(3):
        train(central, corpus.train_x, corpus.train_y)
    central_acc = accuracy(central, corpus.test_x, corpus.test_y)
    history = run_rounds(new_spam_model(len(corpus.vocab)), book_clients(corpus),
                         (corpus.test_x, corpus.test_y), rounds=5)
    assert max(history.accuracy) >= central_acc - 0.01


def test_sampling_clients_per_round_is_seeded(corpus):
    clients = iid_clients(corpus, 20, seed=0)
    kwargs = dict(rounds=2, clients_per_round=3, seed=7)
    h1 = run_rounds(new_spam_model(len(corpus.vocab)), clients, (corpus.test_x, corpus.test_y), **kwargs)
    h2 = run_rounds(new_spam_model(len(corpus.vocab)), clients, (corpus.test_x, corpus.test_y), **kwargs)
    assert h1.clients == h2.clients and all(len(c) == 3 for c in h1.clients)
    assert h1.clients[0] != h1.clients[1]
    np.testing.assert_array_equal(h1.model.weight.data, h2.model.weight.data)
    with pytest.raises(ValueError, match="clients_per_round"):
        run_rounds(new_spam_model(len(corpus.vocab)), clients, (corpus.test_x, corpus.test_y), clients_per_round=21)


def test_train_locally_trains_a_copy_per_client_and_largest_difference():
    X = np.array([[1, 2], [3, 0]])
    start = new_spam_model(4)
    local = train_locally(start, {"a": (X[:1], np.array([[1.0]])), "b": (X[1:], np.array([[0.0]]))}, alpha=1.0)
    assert list(local) == ["a", "b"] and not start.weight.data.any()
    np.testing.assert_allclose(local["a"].weight.data[:, 0], [0, 0.25, 0.25, 0])
    np.testing.assert_allclose(local["b"].weight.data[:, 0], [0, 0, 0, -0.25])
    assert largest_difference(local["a"], local["b"]) == 0.25
    with pytest.raises(ValueError, match="shapes"):
        largest_difference(start, new_spam_model(5))


def test_apply_update_moves_a_copy_and_refuses_the_wrong_shapes():
    from grokfl_helpers.federated import apply_update

    start = _emb([1.0, 2.0, 3.0])
    moved = apply_update(start, [np.array([[0.5], [0.0], [-1.0]])])
    np.testing.assert_allclose(moved.weight.data[:, 0], [1.5, 2.0, 2.0])
    np.testing.assert_allclose(start.weight.data[:, 0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shapes"):
        apply_update(start, [np.zeros((2, 1))])


def test_mailbox_tests_are_the_test_emails_grouped_as_the_clients(corpus):
    tests = mailbox_tests(corpus)
    assert list(tests) == list(mailbox_clients(corpus))
    assert sum(len(X) for X, _ in tests.values()) == len(corpus.test_x)
    for index, (X, y) in enumerate(tests.values()):
        rows = np.flatnonzero(corpus.test_mailbox == index)
        assert np.array_equal(X, corpus.test_x[rows]) and np.array_equal(y, corpus.test_y[rows])
