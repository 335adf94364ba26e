"""Notebook 02 shows the training loop it describes, in a cell tagged "build" (``one_pass``); this
proves that loop is what ``training.train`` runs: the same weights, bit for bit, for any batch size
(a last batch smaller than the others included) and over several passes."""

import numpy as np
import pytest

from grokfl_helpers import data, notebook_cells, training


@pytest.fixture(scope="module")
def one_pass():
    # the notebook's first cell imports np and data; its build cell uses both
    return notebook_cells.run_build_cells("02", {"np": np, "data": data})["one_pass"]


def _emails(seed, n_emails=230, vocab_size=300, slots=12):
    rng = np.random.default_rng(seed)
    X = rng.integers(1, vocab_size, size=(n_emails, slots))
    X[:, -3:] = 0  # padding, as every real row has
    y = rng.integers(0, 2, size=(n_emails, 1)).astype(np.float64)
    return X, y, vocab_size


@pytest.mark.parametrize("batch_size", [1, 7, 50, 230, 500])
def test_one_pass_is_training_train(one_pass, batch_size):
    X, y, vocab_size = _emails(0)
    by_hand = one_pass(training.new_spam_model(vocab_size), X, y, batch_size=batch_size, alpha=0.05)
    by_helper = training.train(training.new_spam_model(vocab_size), X, y, batch_size=batch_size, alpha=0.05)
    assert np.array_equal(by_hand.weight.data, by_helper.weight.data)
    assert by_hand.weight.data.any()


def test_three_passes_by_hand_are_three_epochs(one_pass):
    X, y, vocab_size = _emails(1)
    by_hand = training.new_spam_model(vocab_size)
    for _ in range(3):
        one_pass(by_hand, X, y, batch_size=64)
    by_helper = training.train(training.new_spam_model(vocab_size), X, y, batch_size=64, epochs=3)
    assert np.array_equal(by_hand.weight.data, by_helper.weight.data)
    assert by_hand.weight.data[0, 0] == 0.0  # the padding row stays at zero
