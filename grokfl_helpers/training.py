"""The spam filter of chapter 15: one number per word, summed over an email, squashed by a sigmoid.

``Embedding(vocab_size, 1)`` gives every word a single weight. An email is the set of its distinct
words (padded with ``<unk>`` to 500), so its score is the sum of its words' weights and
``sigmoid(score)`` is the model's probability that it is spam. Training is the book's: squared
error, plain SGD with alpha = 0.01, batches of 500, weights starting at zero.

Two changes from the book's ``train``, both said where notebook 02 teaches it:

* the book's loop reads a global ``bs`` instead of its own ``batch_size`` argument; this one uses
  its arguments;
* the book drops a last batch smaller than ``batch_size``; this one trains on it, so a client with
  300 emails (or Bob with one) still learns.

The ``<unk>`` row (index ``data.UNK``) is padding: it is kept at zero after every step, as the book
does before every batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .data import UNK
from .tensor import SGD, Embedding, MSELoss, Tensor

__all__ = ["new_spam_model", "predict", "train", "accuracy", "mean_squared_error", "keep_padding_zero",
           "Task", "SPAM_TASK"]

_EVAL_BATCH = 4000  # emails per forward pass when only predicting (bounds memory)


def new_spam_model(vocab_size: int) -> Embedding:
    """The book's starting point: ``Embedding(vocab_size, 1)`` with every weight at zero.

    Taught in notebook 02, §3.
    """
    model = Embedding(vocab_size=vocab_size, dim=1, rng=0)
    model.weight.data[...] = 0.0
    return model


def _check_inputs(model: Embedding, X, y=None):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d array of word indices (emails x words), got shape {X.shape}")
    if y is not None:
        y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} emails but y has {len(y)} labels")
    return X, y


def _score(model: Embedding, X: np.ndarray) -> Tensor:
    """Forward pass: look up each word's weight, sum over the email, sigmoid."""
    return model.forward(Tensor(X)).sum(1).sigmoid()


def predict(model: Embedding, X) -> np.ndarray:
    """Spam probability of every email in ``X`` (shape ``(n_emails,)``).

    Taught in notebook 02, §3.
    """
    X, _ = _check_inputs(model, X)
    parts = [_score(model, X[i:i + _EVAL_BATCH]).data[:, 0] for i in range(0, len(X), _EVAL_BATCH)]
    return np.concatenate(parts) if parts else np.zeros(0)


def accuracy(model: Embedding, X, y) -> float:
    """Fraction of emails whose predicted label (spam if p > 0.5) matches ``y``.

    Taught in notebook 02, §3.
    """
    X, y = _check_inputs(model, X, y)
    if len(X) == 0:
        raise ValueError("accuracy of an empty set of emails is undefined")
    return float(((predict(model, X) > 0.5) == (y[:, 0] > 0.5)).mean())


def mean_squared_error(model: Embedding, X, y) -> float:
    """The training loss, averaged per email.

    Taught in notebook 02, §3 (the loss train minimizes).
    """
    X, y = _check_inputs(model, X, y)
    return float(((predict(model, X) - y[:, 0]) ** 2).mean())


def train(model: Embedding, X, y, batch_size: int = 500, epochs: int = 1, alpha: float = 0.01,
          gradient_correction: Callable | None = None) -> Embedding:
    """Train ``model`` in place on emails ``X`` with labels ``y`` (1 = spam) and return it.

    One epoch is one pass over ``X`` in order, in batches of ``batch_size``: forward, squared error
    summed over the batch, backward, ``SGD`` step, ``<unk>`` row back to zero.

    ``gradient_correction(parameters)``, if given, is called after every backward pass and before
    the SGD step, with the model's parameters; it may add to their ``grad.data`` in place. FedProx's
    proximal gradient and SCAFFOLD's control variates are such corrections (notebook 09). Without
    one, training is exactly as before.

    Taught in notebook 02, §3.
    """
    X, y = _check_inputs(model, X, y)
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"batch_size must be >= 1 and epochs >= 0 (got {batch_size}, {epochs})")
    criterion = MSELoss()
    optim = SGD(parameters=model.get_parameters(), alpha=alpha)
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            pred = _score(model, X[start:start + batch_size])
            loss = criterion.forward(pred, Tensor(y[start:start + batch_size]))
            loss.backward()
            if gradient_correction is not None:
                gradient_correction(optim.parameters)
            optim.step()
            keep_padding_zero(model)
    return model


def keep_padding_zero(model) -> None:
    """Set the ``<unk>`` padding row of the spam model back to 0, in place. Taught in notebook 02.

    Every email is padded with ``<unk>`` to 500 slots, so a weight left in that row would be added
    to an email's score once per padding slot. ``train`` calls this after every SGD step (as the
    book does before every batch); the round loop calls it after every aggregation, where DP's noise
    (notebook 07) would otherwise land there. Zeroing a row everyone knows is padding uses no
    private data. Any model that is not an ``Embedding`` is left alone.
    """
    if isinstance(model, Embedding):
        model.weight.data[UNK] = 0.0


@dataclass(frozen=True)
class Task:
    """What the round loop (``federated.run_rounds``) needs to know about a model, as the ``task.py``
    of a Flower app: how a client trains it, how it is scored, and what stays fixed after the server
    changes it. Taught in notebook 03, §3; notebook 12 makes one for its language model.
    """

    train: Callable  # train(model, X, y, *, batch_size, epochs, alpha) -> the model, trained in place
    accuracy: Callable  # accuracy(model, X, y) -> float
    loss: Callable  # loss(model, X, y) -> float
    fix: Callable = lambda model: None  # fix(model): in place, after every aggregation


SPAM_TASK = Task(train=train, accuracy=accuracy, loss=mean_squared_error, fix=keep_padding_zero)
"""The chapter-15 spam filter as the round loop sees it."""
