"""The word-leak attack."""

import numpy as np
import pytest

from grokfl_helpers.attacks import changed_rows, leaked_words, recall_precision, words_in
from grokfl_helpers.training import new_spam_model, train


def test_bobs_password_leaks_exactly(corpus):
    """The book's demonstration: one email, and the changed rows spell it."""
    email = ["my", "computer", "password", "is", "pizza"]
    before = new_spam_model(len(corpus.vocab))
    after = train(new_spam_model(len(corpus.vocab)), np.array([[corpus.w2i[w] for w in email]]),
                  np.array([[0.0]]), batch_size=1)
    assert sorted(leaked_words(before, after, corpus.vocab)) == sorted(email)


def test_changed_rows_threshold_and_shapes():
    a, b = new_spam_model(4), new_spam_model(4)
    b.weight.data[1, 0], b.weight.data[3, 0] = 0.5, 1e-9
    assert changed_rows(a, b).tolist() == [1, 3]
    assert changed_rows(a, b, threshold=1e-6).tolist() == [1]
    assert changed_rows(a.weight.data, b.weight).tolist() == [1, 3]
    with pytest.raises(ValueError, match="shapes"):
        changed_rows(a, new_spam_model(5))
    with pytest.raises(ValueError, match="vocabulary"):
        leaked_words(a, b, ["<unk>", "x"])


def test_words_in_and_recall_precision():
    assert words_in(np.array([[3, 1, 0], [1, 0, 0]])) == {1, 3}
    assert recall_precision({1, 2}, {1, 3, 4, 5}) == (0.25, 0.5)
    assert np.isnan(recall_precision(set(), {1})[1])
