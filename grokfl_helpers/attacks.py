"""What a model update gives away: the words of the emails it was trained on.

An ``Embedding`` row only receives a gradient when its word occurs in a training email, so the
rows that changed between the model the server sent and the model it got back are the words the
client wrote. Notebook 04 runs this attack; notebooks 05–07 run it again against each defense.
"""

from __future__ import annotations

import numpy as np

from .data import UNK

__all__ = ["embedding_weights", "changed_rows", "leaked_words", "words_in", "recall_precision"]


def embedding_weights(model_or_array) -> np.ndarray:
    """The ``(vocab_size, dim)`` table of a model, a ``Tensor`` or a plain array."""
    if hasattr(model_or_array, "weight"):
        return model_or_array.weight.data
    if hasattr(model_or_array, "data") and isinstance(model_or_array.data, np.ndarray):
        return model_or_array.data
    return np.asarray(model_or_array)


def changed_rows(before, after, threshold: float = 0.0) -> np.ndarray:
    """Indices of the rows whose largest absolute change exceeds ``threshold`` (0: any change)."""
    a, b = embedding_weights(before), embedding_weights(after)
    if a.shape != b.shape:
        raise ValueError(f"changed_rows: shapes {a.shape} and {b.shape} differ; compare models of one vocabulary")
    delta = np.abs(b - a).reshape(len(a), -1).max(axis=1)
    return np.flatnonzero(delta > threshold)


def leaked_words(before, after, vocab, threshold: float = 0.0) -> list[str]:
    """The words whose embedding rows changed between ``before`` and ``after``, in vocabulary order."""
    a = embedding_weights(before)
    if len(vocab) != len(a):
        raise ValueError(f"leaked_words: a vocabulary of {len(vocab)} words for a table of {len(a)} rows")
    return [vocab[i] for i in changed_rows(before, after, threshold)]


def words_in(X) -> set[int]:
    """The word indices present in emails ``X`` (padding excluded): what a client really wrote."""
    ids = np.unique(np.asarray(X))
    return set(ids[ids != UNK].tolist())


def recall_precision(recovered, truth) -> tuple[float, float]:
    """Recall (share of ``truth`` recovered) and precision (share of ``recovered`` that is true)."""
    recovered, truth = set(recovered), set(truth)
    hits = len(recovered & truth)
    recall = hits / len(truth) if truth else float("nan")
    precision = hits / len(recovered) if recovered else float("nan")
    return recall, precision
