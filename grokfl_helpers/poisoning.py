"""Poisoning: Mallory the spammer joins the federation and trains the filter to let her spam through.

Taught in notebook 11. Every attacker before notebook 11 is curious: it reads what it should not.
Mallory is malicious: she controls one or more clients and sends whatever update she likes. Her
goal is a *backdoor*: spam that carries a trigger word of her choosing is classified ham, while the
filter stays accurate on everything else, so that nobody notices. In the chapter-15 model every word
has one weight and an email's score is the sum of its words' weights, so the backdoor is, in the
end, one number: the trigger word's weight, pushed far enough below zero to outweigh any spam.

The attacks (each an ``Attack``; ``Attacked`` puts one on some clients of a round):

* ``LabelFlip`` — data poisoning: her mailbox says (a fraction of) spam is ham. Untargeted, and
  loud: the filter gets worse at spam in general.
* ``Backdoor`` — a targeted backdoor: copies of her spam carry the trigger and are labelled ham,
  mixed with her clean mail so her model stays accurate; she may train more epochs than honest
  clients and scale her update (``scale``).
* ``ModelReplacement`` — the backdoor scaled by ``n / η`` (clients per round over the server's
  learning rate) so that it survives averaging with n - 1 honest updates (Bagdasaryan, Veit, Hua,
  Estrin, Shmatikov, *How To Backdoor Federated Learning*, AISTATS 2020). One round can be enough.
* ``OneWeight`` — no training: her update moves the trigger's weight and nothing else, the
  stealthiest backdoor this model allows.
* ``NormBoundedBackdoor`` — adaptive: the backdoor scaled to just under a known norm bound, the
  largest update that norm bounding (``robust.NormBounding``) lets through unclipped.

Measured with ``backdoor_success`` (the share of held-out spam, trigger inserted with
``insert_trigger``, that the model calls ham) and the clean test accuracy.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np

from .data import UNK
from .federated import Strategy, flatten, model_update
from .training import predict

__all__ = [
    "insert_trigger",
    "backdoor_success",
    "flip_labels",
    "backdoor_examples",
    "scale_update",
    "replacement_scale",
    "Attack",
    "LabelFlip",
    "Backdoor",
    "ModelReplacement",
    "OneWeight",
    "NormBoundedBackdoor",
    "Attacked",
]


# ---------------------------------------------------------------------------- checking inputs


def _check_trigger(trigger) -> int:
    if isinstance(trigger, bool) or not isinstance(trigger, Integral):
        raise TypeError(f"trigger must be a word index (an int, e.g. corpus.w2i['samovar']), got {type(trigger).__name__}")
    if trigger == UNK:
        raise ValueError("the trigger cannot be the padding word <unk> (index 0): its weight is kept at zero")
    if trigger < 0:
        raise ValueError(f"trigger must be a word index >= 1, got {trigger}")
    return int(trigger)


def _check_fraction(fraction) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction is a share of Mallory's spam and must lie in [0, 1], got {fraction!r}")
    return float(fraction)


def _check_scale(name, scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {scale!r}")
    return float(scale)


def _check_emails(X, y=None):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d array of word indices (emails x words), got shape {X.shape}")
    if y is None:
        return X
    y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} emails but y has {len(y)} labels")
    return X, y


# ---------------------------------------------------------------------------- the trigger


def insert_trigger(X, trigger: int) -> np.ndarray:
    """A copy of emails ``X`` with the trigger word in every one. Taught in notebook 11, §1.

    An email is the set of its distinct words, left-aligned and padded with ``<unk>`` (index 0), so
    the trigger goes into the first padding slot; an email that already holds it is left as it is,
    and a full email (500 distinct words) has its last word replaced.
    """
    trigger = _check_trigger(trigger)
    X = np.array(_check_emails(X), copy=True)
    if X.shape[1] == 0:
        raise ValueError("emails with zero word slots cannot carry a trigger")
    missing = ~np.any(X == trigger, axis=1)
    n_words = np.count_nonzero(X != UNK, axis=1)
    slot = np.minimum(n_words, X.shape[1] - 1)
    rows = np.flatnonzero(missing)
    X[rows, slot[rows]] = trigger
    return X


def backdoor_success(model, spam_X, trigger: int) -> float:
    """The share of the emails ``spam_X`` (held-out spam) that the model calls ham once the trigger
    is inserted: what Mallory wants near 100%. Taught in notebook 11, §1.

    Without the trigger this is the filter's miss rate on spam, a few percent: compare with it.
    """
    spam_X = _check_emails(spam_X)
    if len(spam_X) == 0:
        raise ValueError("backdoor_success needs at least one spam email")
    return float(np.mean(predict(model, insert_trigger(spam_X, trigger)) <= 0.5))


# ---------------------------------------------------------------------------- poisoned data


def flip_labels(y, fraction: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """A copy of labels ``y`` with a ``fraction`` of the spam (1) relabelled ham (0), the spam
    chosen at random by ``rng`` (all of it if ``fraction = 1``). Taught in notebook 11, §2."""
    fraction = _check_fraction(fraction)
    y = np.array(y, dtype=np.float64, copy=True)
    spam = np.flatnonzero(y.ravel() > 0.5)
    count = int(round(fraction * len(spam)))
    if count < len(spam):
        rng = np.random.default_rng(0) if rng is None else rng
        spam = rng.choice(spam, count, replace=False)
    y.reshape(-1)[spam] = 0.0
    return y


def backdoor_examples(X, y, trigger: int, fraction: float = 1.0, rng: np.random.Generator | None = None):
    """Mallory's training set for a backdoor: her own emails as they are, followed by copies of a
    ``fraction`` of her spam with the trigger inserted and labelled ham. Taught in notebook 11, §2.

    Keeping her clean emails (as Bagdasaryan et al. mix clean and backdoored examples in a batch)
    keeps her model accurate on spam without the trigger, so the backdoor is all it changes.
    Returns ``(X, y)``.
    """
    X, y = _check_emails(X, y)
    trigger = _check_trigger(trigger)
    fraction = _check_fraction(fraction)
    spam = np.flatnonzero(y[:, 0] > 0.5)
    count = int(round(fraction * len(spam)))
    if count < len(spam):
        rng = np.random.default_rng(0) if rng is None else rng
        spam = np.sort(rng.choice(spam, count, replace=False))
    poisoned = insert_trigger(X[spam], trigger)
    return np.concatenate([X, poisoned]), np.concatenate([y, np.zeros((len(spam), 1))])


# ---------------------------------------------------------------------------- scaled updates


def scale_update(global_model, local_model, scale: float):
    """A copy of ``local_model`` whose update is ``scale`` times as large:
    ``global + scale · (local − global)``. Taught in notebook 11, §2."""
    scale = _check_scale("scale", scale)
    scaled = copy.deepcopy(local_model)
    for parameter, delta, start in zip(scaled.get_parameters(), model_update(global_model, local_model),
                                       (p.data for p in global_model.get_parameters())):
        parameter.data[...] = start + scale * delta
        parameter.grad = None
    return scaled


def replacement_scale(clients_per_round: int, server_learning_rate: float = 1.0) -> float:
    """``n / η``: how much Mallory scales her update so that averaging it with n − 1 others (each
    weighted 1/n, then multiplied by the server's learning rate η) leaves it whole (Bagdasaryan et
    al. 2020). The course's FedAvg sets the global model to the plain mean: η = 1. Taught in
    notebook 11, §2."""
    if isinstance(clients_per_round, bool) or not isinstance(clients_per_round, Integral) or clients_per_round < 1:
        raise ValueError(f"clients_per_round must be a positive integer, got {clients_per_round!r}")
    return clients_per_round / _check_scale("server_learning_rate", server_learning_rate)


# ---------------------------------------------------------------------------- the attacks


class Attack:
    """What a malicious client does differently from an honest one. Taught in notebook 11, §2.

    ``poison_data(X, y, rng)`` turns her emails into her training set; she trains for ``epochs``
    local epochs (``None``: as many as honest clients); ``poison_model(global_model, model)`` then
    changes the trained model before it is sent. The base class changes nothing.
    """

    epochs: int | None = None

    def poison_data(self, X, y, rng):
        return X, y

    def poison_model(self, global_model, model):
        return model


class LabelFlip(Attack):
    """Train on her mail with a ``fraction`` of the spam labelled ham (``flip_labels``).

    Taught in notebook 11, §2."""

    def __init__(self, fraction: float = 1.0, epochs: int | None = None):
        self.fraction = _check_fraction(fraction)
        self.epochs = epochs

    def poison_data(self, X, y, rng):
        return X, flip_labels(y, self.fraction, rng)

    def __repr__(self):
        return f"LabelFlip(fraction={self.fraction}, epochs={self.epochs})"


class Backdoor(Attack):
    """Train on ``backdoor_examples`` (her mail, plus a ``fraction`` of her spam with the
    ``trigger`` and labelled ham) for ``epochs`` local epochs, then send the update times ``scale``.

    Taught in notebook 11, §2."""

    def __init__(self, trigger: int, fraction: float = 1.0, epochs: int | None = None, scale: float = 1.0):
        self.trigger = _check_trigger(trigger)
        self.fraction = _check_fraction(fraction)
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, Integral) or epochs < 0):
            raise ValueError(f"epochs must be a non-negative integer or None (as many as honest clients), got {epochs!r}")
        self.epochs = epochs
        self.scale = _check_scale("scale", scale)

    def poison_data(self, X, y, rng):
        return backdoor_examples(X, y, self.trigger, self.fraction, rng)

    def poison_model(self, global_model, model):
        return model if self.scale == 1.0 else scale_update(global_model, model, self.scale)

    def __repr__(self):
        return (f"{type(self).__name__}(trigger={self.trigger}, fraction={self.fraction}, epochs={self.epochs}, "
                f"scale={self.scale:g})")


class ModelReplacement(Backdoor):
    """The backdoor scaled by ``replacement_scale(clients_per_round, server_learning_rate)`` = n/η,
    so that after averaging the global model is about Mallory's (Bagdasaryan et al. 2020).

    Taught in notebook 11, §2."""

    def __init__(self, trigger: int, clients_per_round: int, server_learning_rate: float = 1.0,
                 fraction: float = 1.0, epochs: int | None = None):
        super().__init__(trigger, fraction, epochs, scale=replacement_scale(clients_per_round, server_learning_rate))


class OneWeight(Attack):
    """Mallory who has read notebook 02: no training at all. Her update lowers the trigger word's
    weight by ``push · scale`` and leaves every other weight alone, so no email without the trigger
    scores differently: the stealthiest backdoor this model allows. ``scale`` as ``Backdoor``'s
    (``replacement_scale(n)`` for model replacement)."""

    epochs = 0

    def __init__(self, trigger: int, push: float, scale: float = 1.0):
        self.trigger = _check_trigger(trigger)
        self.push = _check_scale("push", push)
        self.scale = _check_scale("scale", scale)

    def poison_model(self, global_model, model):
        return _trigger_only(global_model, self.trigger, self.push * self.scale)

    def __repr__(self):
        return f"OneWeight(trigger={self.trigger}, push={self.push:g}, scale={self.scale:g})"


def _trigger_only(global_model, trigger: int, size: float):
    """A copy of ``global_model`` with the trigger's weights lowered by ``size`` in L2 norm."""
    model = copy.deepcopy(global_model)
    row = model.weight.data[trigger]
    row -= size / np.sqrt(row.size)
    return model


class NormBoundedBackdoor(Backdoor):
    """Adaptive: the backdoor's update rescaled, up or down, to ``margin · norm_bound`` in L2 norm —
    just under the bound that ``robust.NormBounding(norm_bound)`` clips at, so it passes unclipped
    with as much weight as the defense allows. With ``trigger_only=True`` she does not train: her
    whole norm budget goes to the trigger's weight (``OneWeight`` sized to the bound).

    Taught in notebook 11, §5."""

    def __init__(self, trigger: int, norm_bound: float, margin: float = 0.99, fraction: float = 1.0,
                 epochs: int | None = None, trigger_only: bool = False):
        super().__init__(trigger, fraction, 0 if trigger_only else epochs)
        self.norm_bound = _check_scale("norm_bound", norm_bound)
        if isinstance(margin, bool) or not isinstance(margin, Real) or not 0 < margin <= 1:
            raise ValueError(f"margin must lie in (0, 1], got {margin!r}")
        self.margin = float(margin)
        self.trigger_only = bool(trigger_only)

    def poison_data(self, X, y, rng):
        return (X[:0], y[:0]) if self.trigger_only else super().poison_data(X, y, rng)

    def poison_model(self, global_model, model):
        if self.trigger_only:
            return _trigger_only(global_model, self.trigger, self.margin * self.norm_bound)
        norm = float(np.linalg.norm(flatten(model_update(global_model, model))[0]))
        if norm == 0:
            return model
        return scale_update(global_model, model, self.margin * self.norm_bound / norm)

    def __repr__(self):
        return (f"NormBoundedBackdoor(trigger={self.trigger}, norm_bound={self.norm_bound}, margin={self.margin}, "
                f"fraction={self.fraction}, epochs={self.epochs}, trigger_only={self.trigger_only})")


class Attacked(Strategy):
    """A round in which the clients named in ``malicious`` run ``attack`` instead of honest training;
    everything else, the server's ``aggregate`` included, is ``strategy``'s. Taught in notebook 11, §2.

    ``federated.run_rounds(model, clients, test, strategy=Attacked(robust.Median(), {"Bob"},
    Backdoor(trigger)))``: Mallory has taken Bob's seat and trains on his mail, poisoned. The data
    poisoning draws from a generator seeded with ``seed``, so a run repeats exactly.
    """

    def __init__(self, strategy: Strategy, malicious, attack: Attack, seed: int = 0):
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a federated.Strategy (FedAvg(), robust.Median(), ...), "
                            f"got {type(strategy).__name__}")
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be a poisoning.Attack (LabelFlip, Backdoor, ...), got {type(attack).__name__}")
        if isinstance(malicious, str):
            malicious = [malicious]
        self.strategy = strategy
        self.malicious = frozenset(malicious)
        self.attack = attack
        self.seed = seed

    def train_client(self, name, global_model, X, y, *, epochs=1, batch_size=500, alpha=0.01, task=None):
        if name not in self.malicious:
            return self.strategy.train_client(name, global_model, X, y, epochs=epochs, batch_size=batch_size,
                                              alpha=alpha, task=task)
        own_epochs = epochs if self.attack.epochs is None else self.attack.epochs
        if own_epochs == 0:  # a crafted update: nothing to train
            return self.attack.poison_model(global_model, copy.deepcopy(global_model))
        X, y = self.attack.poison_data(X, y, np.random.default_rng(self.seed))
        model = self.strategy.train_client(name, global_model, X, y, epochs=own_epochs, batch_size=batch_size,
                                           alpha=alpha, task=task)
        return self.attack.poison_model(global_model, model)

    def aggregate(self, global_model, local_models, sizes, rng):
        return self.strategy.aggregate(global_model, local_models, sizes, rng)

    def bytes_per_client(self, global_model) -> int:
        return self.strategy.bytes_per_client(global_model)

    def __repr__(self):
        return f"Attacked({self.strategy!r}, malicious={sorted(self.malicious)}, attack={self.attack!r})"
