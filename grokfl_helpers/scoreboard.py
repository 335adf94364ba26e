"""The scoreboard: every attack of the course against every defense, on one federation. Notebook 13.

One federation, built once (``build_federation``): the filter in service (the spam model trained on
the first 5,000 training emails), Bob with 8 emails and 9 clients with 300 emails each, all drawn
from emails the filter has not seen. Every defense runs **one round** of it from the filter in
service (``run_defenses``), and every attack reads what its attacker sees of that round:

* **the server reading updates** — the word leak of notebook 04 (recall and precision of Bob's
  words) and the batch disaggregation of notebook 10 (Bob's 8 emails split back out of his update);
* **anyone who sees the released model** — membership of notebook 10 (was this email in the round?
  true positives at 1% false positives, from the change between the model before and after);
* **Mallory the malicious client**, in one of the 9 seats — the backdoor and label flipping of
  notebook 11 (``poisoning_cells``);
* **anyone who sees the released language model** — the canary of notebook 12 (``canary_cells``),
  on a tiny configuration of its own.

Each function returns *cells*: plain dicts ``{"attack", "defense", "value", "status", "note"}``, one
per row and column of the grid. ``status`` is ``"measured"``, ``"equivalent"`` (the value of the
round it was checked equal to, said in the note), ``"cannot run"`` (the attacker has nothing to run
the attack on; the note says why), ``"not applicable"`` (the row means nothing for the column: no ε
without noise, no poisoning of a view) or ``"not measured here"`` (it exists but costs too much for
this notebook).
``write_csv`` / ``read_csv`` store them; ``plotting.scoreboard_heatmap`` draws them.
"""

from __future__ import annotations

import copy
import csv
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from . import attacks, ckks, heterogeneity, language_model, poisoning, privacy, robust, secure_aggregation
from .federated import (FedAvg, Strategy, apply_update, largest_difference, model_bytes, model_update, run_round,
                        run_rounds)
from .training import accuracy, new_spam_model, train

__all__ = [
    "DEFENSES",
    "ATTACKS",
    "COST_ROWS",
    "ATTACKERS",
    "SHORT_NAMES",
    "Z_DP",
    "Federation",
    "build_federation",
    "defense_strategy",
    "Round",
    "run_defenses",
    "homomorphic_round",
    "word_leak_cells",
    "disaggregation_cells",
    "release_membership_score",
    "membership_tpr",
    "membership_cells",
    "poisoning_cells",
    "canary_cells",
    "cost_cells",
    "scoreboard",
    "cell_table",
    "write_csv",
    "read_csv",
    "row_label",
    "draw_scoreboard",
]

Z_DP = (0.3, 1.0, 3.0)
"""The three noise multipliers of the DP-FedAvg columns."""

DEFENSES = ["none (FedAvg)", "average of 10", "secure aggregation", "homomorphic encryption", "clipping only",
            *[f"DP-FedAvg z={z:g}" for z in Z_DP], "coordinate median", "trimmed mean", "Krum", "FedProx",
            "top-k 1%"]
"""The columns of the grid, in order."""

ATTACKS = ["word leak: recall", "word leak: precision", "disaggregation: per-email recall",
           "membership: TPR at 1% FPR", "backdoor success", "label flipping: accuracy loss",
           "canary exposure (bits)"]
"""The attack rows of the grid, in order."""

COST_ROWS = ["clean test accuracy", "ε (δ = 1e-5)", "seconds per round", "MB per round"]
"""What each defense costs, one row each below the attacks."""

SHORT_NAMES = {"none (FedAvg)": "FedAvg", "secure aggregation": "secure agg.", "homomorphic encryption": "HE",
               "coordinate median": "median", "average of 10": "avg of 10"}
"""Shorter names of some columns, for figure labels."""

ATTACKERS = {
    "word leak: recall": "the server reading Bob's update",
    "word leak: precision": "the server reading Bob's update",
    "disaggregation: per-email recall": "the server reading Bob's update",
    "membership: TPR at 1% FPR": "anyone who sees the released model",
    "backdoor success": "Mallory, 1 malicious client of 10",
    "label flipping: accuracy loss": "Mallory, 1 malicious client of 10",
    "canary exposure (bits)": "anyone who sees the released language model",
}
"""Who runs each attack."""

ROUNDS = 1          # one round from the filter in service: the attacks read that round
BATCH_SIZE = 100    # Bob's 8 emails: one SGD step; a 300-email client: three
TRIGGER_WORD = "samovar"  # notebook 11's trigger
PUSH = 10.0         # notebook 11's one-weight backdoor, scaled by n for model replacement
MALLORY_EPOCHS = 5  # label flipping: Mallory trains 5 epochs on her flipped mail (notebook 11)
FEDPROX_MU = 1.0
TOP_K = 0.01
FPR = 0.01
MOVE_THRESHOLD = 1e-5
"""A weight "moved" in the membership test if it changed by more than this: above float and CKKS
rounding (about 1e-7 here), far below a trained word's move (about 1e-3)."""
STATUSES = ("measured", "equivalent", "cannot run", "not applicable", "not measured here")
"""What a cell's ``status`` can be."""


# ---------------------------------------------------------------------------- the federation


@dataclass
class Federation:
    """Who holds what: the filter in service, the 10 clients, the held-out sets. Notebook 13, §1."""

    corpus: object
    in_service: object                       # the global model the round starts from
    clients: dict                            # name -> (X, y); "Bob" first
    outsiders: tuple                         # (X, y): emails in no client's mailbox (membership's negatives)
    test: tuple                              # (X, y): the test set
    held_out_spam: np.ndarray                # test spam, for backdoor success
    trigger: int
    clip_norm: float                         # S of the clipping and DP columns
    bob: str = "Bob"
    mallory: str = ""                        # the seat Mallory takes in the poisoning rows
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> list:
        return list(self.clients)


def build_federation(corpus, *, bob_emails: int = 8, n_others: int = 9, emails_per_client: int = 300,
                     n_outsiders: int = 2000, in_service_emails: int = 5000, seed: int = 13) -> Federation:
    """The scoreboard's federation. Taught in notebook 13, §1.

    The filter in service is the spam model trained (one pass) on the first ``in_service_emails``
    training emails. Every client's emails, and the outsiders, are distinct emails drawn (seeded)
    from the rest: Bob gets ``bob_emails``, ``n_others`` clients ``emails_per_client`` each.

    The clip norm S is fixed before the round, from data the server already holds and not from the
    clients' updates (a norm read from the round would itself leak, and is not covered by ε): the
    median norm of the updates the filter in service makes on slices of its own training emails, of
    the clients' sizes (notebook 07's rule of thumb, applied to public data), rounded to 2 decimals.
    """
    # Rows whose email the filter never saw: the book's interleaving repeats some emails of its first
    # rows near the end of the training set, so the rows after in_service_emails are not enough.
    rows = np.flatnonzero(~np.isin(corpus.train_email, corpus.train_email[:in_service_emails]))
    _, first = np.unique(corpus.train_email[rows], return_index=True)   # each such email once
    pool = np.random.default_rng(seed).permutation(rows[np.sort(first)])
    need = bob_emails + n_others * emails_per_client + n_outsiders
    if need > len(pool):
        raise ValueError(f"the federation needs {need:,} distinct emails, only {len(pool):,} are left")
    sizes = [bob_emails] + [emails_per_client] * n_others
    ends = np.cumsum(sizes)
    names = ["Bob"] + [f"client {i}" for i in range(1, n_others + 1)]
    clients = {name: (corpus.train_x[np.sort(pool[end - size:end])], corpus.train_y[np.sort(pool[end - size:end])])
               for name, size, end in zip(names, sizes, ends)}
    outside = np.sort(pool[ends[-1]:ends[-1] + n_outsiders])
    in_service = train(new_spam_model(len(corpus.vocab)), corpus.train_x[:in_service_emails],
                       corpus.train_y[:in_service_emails])
    public_ends = np.cumsum(sizes)
    if public_ends[-1] > in_service_emails:
        raise ValueError(f"the clip norm is set on {public_ends[-1]:,} of the filter's own training emails; "
                         f"in_service_emails={in_service_emails:,} is too few")
    norms = [privacy.update_norm(model_update(in_service, train(copy.deepcopy(in_service), corpus.train_x[end - size:end],
                                                                corpus.train_y[end - size:end],
                                                                batch_size=BATCH_SIZE)))
             for size, end in zip(sizes, public_ends)]
    return Federation(corpus=corpus, in_service=in_service, clients=clients,
                      outsiders=(corpus.train_x[outside], corpus.train_y[outside]),
                      test=(corpus.test_x, corpus.test_y),
                      held_out_spam=corpus.test_x[corpus.test_y[:, 0] == 1],
                      trigger=corpus.w2i[TRIGGER_WORD], clip_norm=float(np.round(np.median(norms), 2)),
                      mallory=names[-1])


# ---------------------------------------------------------------------------- the defenses


def defense_strategy(defense: str, fed: Federation) -> Strategy | None:
    """A fresh strategy for a column of the grid (``None`` for the columns that are a view of the
    FedAvg round rather than a rule: the average of 10 and homomorphic encryption). Notebook 13, §2."""
    if defense not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; the columns are {DEFENSES}")
    n = len(fed.clients)
    if defense == "none (FedAvg)":
        return FedAvg()
    if defense == "secure aggregation":
        return secure_aggregation.SecureFedAvg(weighted=False, rng=np.random.default_rng(5))
    if defense == "clipping only":
        return privacy.DPFedAvg(fed.clip_norm, 0.0, n, reproducible=True)
    if defense.startswith("DP-FedAvg z="):
        return privacy.DPFedAvg(fed.clip_norm, float(defense.split("=")[1]), n, reproducible=True)
    if defense == "coordinate median":
        return robust.Median()
    if defense == "trimmed mean":
        return robust.TrimmedMean(0.2)
    if defense == "Krum":
        return robust.Krum(num_malicious=1)
    if defense == "FedProx":
        return heterogeneity.FedProx(FEDPROX_MU)
    if defense == "top-k 1%":
        return heterogeneity.TopKFedAvg(TOP_K)
    return None  # "average of 10" and "homomorphic encryption": views of the FedAvg round


class _Recorded(Strategy):
    """A strategy that keeps the local models of its last round (what the server received)."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.local_models: dict = {}

    def train_client(self, name, global_model, X, y, **kwargs):
        return self.strategy.train_client(name, global_model, X, y, **kwargs)

    def aggregate(self, global_model, local_models, sizes, rng):
        self.local_models = dict(local_models)
        return self.strategy.aggregate(global_model, local_models, sizes, rng)

    def bytes_per_client(self, global_model):
        return self.strategy.bytes_per_client(global_model)


@dataclass
class Round:
    """One column's round: the released model, each client's update as sent, seconds and bytes.
    Taught in notebook 13, §2."""

    defense: str
    model: object
    updates: dict                 # name -> the update the client sent (as the server received it)
    seconds: float
    bytes: int
    strategy: object = None
    note: str = ""
    check: dict = field(default_factory=dict)


def _one_round(fed: Federation, strategy: Strategy, seed: int = 0):
    recorded = _Recorded(strategy)
    start = time.perf_counter()
    model = run_round(fed.in_service, fed.clients, fed.names, strategy=recorded, rng=np.random.default_rng(seed),
                      batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - start
    updates = {name: model_update(fed.in_service, local)[0] for name, local in recorded.local_models.items()}
    return model, updates, seconds


def homomorphic_round(fed: Federation, fedavg_round: Round) -> Round:
    """The homomorphic-encryption column, run on the real model. Taught in notebook 13, §2.

    Each client CKKS-encrypts the update it made in the FedAvg round (notebook 06, TenSEAL) with the
    key holder's public key; the server adds the ten ciphertexts; the key holder decrypts only the
    average (``ckks.decrypt_average``), and the released model is the filter in service plus that
    decrypted average. ``check`` holds the largest difference between the decrypted average and the
    plain average of the updates (CKKS is approximate: a tiny error on every weight), and the
    largest difference from FedAvg's model. Seconds: the FedAvg round's (training) plus the ten
    encryptions, timed one after another on this machine (on a real federation each client
    encrypts its own, in parallel), the sum and the decryption; ``check`` also gives one client's
    encryption. Bytes: the float64 model down and the ciphertexts up.
    """
    context = ckks.make_context()
    public = ckks.public_context(context)
    n = len(fed.clients)
    updates = [fedavg_round.updates[name] for name in fed.clients]
    start = time.perf_counter()
    encrypted = [ckks.encrypt(public, [update], max_clients=n) for update in updates]
    encrypt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    total = sum(encrypted)
    sum_seconds = time.perf_counter() - start
    start = time.perf_counter()
    average = ckks.decrypt_average(context, total)[0]
    decrypt_seconds = time.perf_counter() - start
    model = apply_update(fed.in_service, [average])
    error = float(np.abs(average - np.mean(updates, axis=0)).max())
    up = max(e.n_bytes for e in encrypted)
    seconds = fedavg_round.seconds + encrypt_seconds + sum_seconds + decrypt_seconds
    check = {"largest error of the decrypted average": error,
             "largest difference from FedAvg's model": largest_difference(model, fedavg_round.model),
             "ciphertext bytes per client": up, "seconds to encrypt one update": encrypt_seconds / n}
    note = f"CKKS: the decrypted average is the plain one within {error:.0e} on every weight"
    return Round("homomorphic encryption", model, {}, seconds, n * (model_bytes(fed.in_service) + up),
                 note=note, check=check)


def run_defenses(fed: Federation, *, defenses=None) -> dict:
    """One round of every defense from the filter in service: ``{defense: Round}``. Notebook 13, §2.

    The average of 10 is the FedAvg round seen through its release; homomorphic encryption is
    ``homomorphic_round``. Secure aggregation's round is checked against FedAvg's: the largest
    difference of any weight is kept in ``rounds["secure aggregation"].note``.
    """
    defenses = DEFENSES if defenses is None else defenses
    rounds = {}
    for defense in DEFENSES:
        if defense not in defenses and defense != "none (FedAvg)":
            continue
        strategy = defense_strategy(defense, fed)
        if strategy is None:
            continue
        model, updates, seconds = _one_round(fed, strategy)
        rounds[defense] = Round(defense, model, updates, seconds,
                                len(fed.clients) * strategy.bytes_per_client(fed.in_service), strategy)
    fedavg_round = rounds["none (FedAvg)"]
    if "average of 10" in defenses:
        rounds["average of 10"] = Round("average of 10", fedavg_round.model, fedavg_round.updates,
                                        fedavg_round.seconds, fedavg_round.bytes,
                                        note="the FedAvg round, seen through its average")
    if "secure aggregation" in rounds:
        gap = largest_difference(rounds["secure aggregation"].model, fedavg_round.model)
        rounds["secure aggregation"].note = f"largest difference from FedAvg's model: {gap:.0e}"
    if "homomorphic encryption" in defenses:
        rounds["homomorphic encryption"] = homomorphic_round(fed, fedavg_round)
    return {d: rounds[d] for d in DEFENSES if d in rounds}


# ---------------------------------------------------------------------------- the cells


def _cell(attack, defense, value=None, status="measured", note=""):
    return {"attack": attack, "defense": defense, "value": None if value is None else float(value),
            "status": status, "note": note}


_CENTRAL = "central DP: the server clips and adds noise after reading each raw update"
_IN_THE_CLEAR = "a robust rule reads every update in the clear"


def _server_view(fed: Federation, rounds: dict, defense: str):
    """What the server holds of Bob's update under ``defense``: (array or None, status, note)."""
    fedavg = rounds["none (FedAvg)"]
    if defense == "average of 10":
        return model_update(fed.in_service, fedavg.model)[0], "measured", "the average of the 10 updates"
    if defense == "secure aggregation":
        masked = rounds[defense].strategy.masked[fed.bob]
        return secure_aggregation.decode_fixed_point(masked)[0], "measured", \
            "Bob's masked update (the sum it also learns is 'average of 10' times 10)"
    if defense == "homomorphic encryption":
        return None, "cannot run", "ciphertexts only; the key holder decrypts the sum ('average of 10')"
    note = {"clipping only": _CENTRAL, "coordinate median": _IN_THE_CLEAR, "trimmed mean": _IN_THE_CLEAR,
            "Krum": _IN_THE_CLEAR, "top-k 1%": "Bob's top 1% entries, as he sends them"}.get(defense, "")
    if defense.startswith("DP-FedAvg"):
        note = _CENTRAL
    return rounds[defense].updates[fed.bob], "measured", note


TRIVIAL = "every row flagged"
"""How a word-leak recall of 100% that is no success (every row moved, so every word is found) is noted."""


def word_leak_cells(fed: Federation, rounds: dict) -> list:
    """Notebook 04's attack on what the server holds of Bob: the rows that moved are the words he
    wrote. Recall: the share of his words found; precision: the share of rows found that are his.
    Taught in notebook 13, §3."""
    truth = attacks.words_in(fed.clients[fed.bob][0])
    cells = []
    for defense in rounds:
        view, status, note = _server_view(fed, rounds, defense)
        if view is None:
            cells += [_cell("word leak: recall", defense, None, status, note),
                      _cell("word leak: precision", defense, None, status, note)]
            continue
        found = attacks.changed_rows(np.zeros_like(view), view)
        recall, precision = attacks.recall_precision(found, truth)
        recall_note = note
        if len(found) == len(view):
            recall_note = f"{TRIVIAL}: no success (read precision); {note}"
        cells += [_cell("word leak: recall", defense, recall, status, recall_note),
                  _cell("word leak: precision", defense, precision, status, note)]
    return cells


def disaggregation_cells(fed: Federation, rounds: dict) -> list:
    """Notebook 10's batch disaggregation on what the server holds of Bob: his emails split back
    out, scored by per-email recall (the mean over his emails). Taught in notebook 13, §3."""
    X = fed.clients[fed.bob][0]
    n_total = sum(len(x) for x, _ in fed.clients.values())
    cells, cache = [], {}
    for defense in rounds:
        view, status, note = _server_view(fed, rounds, defense)
        if view is None:
            cells.append(_cell("disaggregation: per-email recall", defense, None, status, note))
            continue
        key = view.tobytes()
        if key not in cache:
            n_emails = n_total if defense == "average of 10" else len(X)
            found = attacks.disaggregate(view, n_emails=n_emails)
            cache[key] = attacks.per_email_recall_precision(found, X)[:, 0].mean()
        cells.append(_cell("disaggregation: per-email recall", defense, cache[key], status, note))
    return cells


def release_membership_score(change, X, y, threshold: float = MOVE_THRESHOLD) -> np.ndarray:
    """Notebook 10's first test from two released models: the share of a candidate email's words
    whose weights moved by more than ``threshold`` (``attacks.share_of_words_moved``: 1.0 for every
    email trained on, when nothing else moves the weights), ties broken by its signed projection on
    the change (``attacks.membership_score_from_update``). Taught in notebook 13, §3.

    ``threshold`` (1e-5) sits above numerical error (the CKKS release differs from the plain one by
    about 1e-9 on every weight): with 0, any error on every weight would make every word "move". Two
    different shares differ by at least 1/500² (an email has at most 500 words), so the tie break,
    below 1e-6 in size, never reorders them."""
    projection = attacks.membership_score_from_update(change, X, y)
    return attacks.share_of_words_moved(change, X, threshold) + 1e-6 * np.tanh(projection)


def membership_tpr(change, members, outsiders) -> tuple[float, str]:
    """The attacker's best of notebook 10's two tests on one released change, as notebook 10, §3
    does under DP: ``release_membership_score`` and the signed projection alone
    (``attacks.membership_score_from_update``); returns the better true-positive rate at 1% false
    positives and the name of the test that gave it. Taught in notebook 13, §3."""
    tests = {"words moved": release_membership_score, "projection": attacks.membership_score_from_update}
    rates = {name: attacks.tpr_at_fpr(score(change, *members), score(change, *outsiders), FPR)
             for name, score in tests.items()}
    best = max(rates, key=rates.get)
    return rates[best], best


_SAME_RELEASE = "the same release as FedAvg's: the average of 10 is FedAvg's round"


def membership_cells(fed: Federation, rounds: dict) -> list:
    """Membership run by anyone who sees the model before and after the round: the 2,708 emails of
    the round against 2,000 emails of no one, scored by ``membership_tpr`` (the better of two tests)
    on the change; the cell is the true-positive rate at 1% false positives, and its note names the
    test that gave it. Taught in notebook 13, §3."""
    members = (np.concatenate([X for X, _ in fed.clients.values()]),
               np.concatenate([y for _, y in fed.clients.values()]))
    cells = []
    for defense, rnd in rounds.items():
        change = model_update(fed.in_service, rnd.model)[0]
        tpr, test = membership_tpr(change, members, fed.outsiders)
        status, note = "measured", f"best test: {test}"
        if defense == "homomorphic encryption":
            note += "; on the CKKS-decrypted release"
        elif defense == "average of 10":
            status, note = "equivalent", _SAME_RELEASE
        cells.append(_cell("membership: TPR at 1% FPR", defense, tpr, status, note))
    return cells


_POISON_VIEWS = {
    "average of 10": ("not applicable", "a view of FedAvg's round, not a rule: see 'none'"),
    "homomorphic encryption": ("equivalent", "FedAvg's round with Mallory, not re-run: the server adds "
                                             "ciphertexts blindly, and the clean round's CKKS release was "
                                             "checked equal to FedAvg's within 1e-8"),
}


def poisoning_cells(fed: Federation, rounds: dict) -> list:
    """Notebook 11's Mallory in one of the 9 seats, one round under every rule. Taught in notebook 13, §4.

    * backdoor: ``OneWeight`` — no training, the trigger word's weight pushed down by 10, scaled by
      n = 10 to survive averaging (model replacement); success = held-out spam with the trigger
      called ham;
    * label flipping: she trains 5 epochs on her mail with all spam labelled ham; the cell is the
      clean test accuracy lost against the same defense's round without her.

    Secure aggregation is re-run with Mallory in it (``poisoning.Attacked`` around
    ``secure_aggregation.SecureFedAvg``). Homomorphic encryption is not (ten encryptions per attack):
    its cells are FedAvg's round with Mallory (status ``"equivalent"``), since the server adds the
    ciphertexts blindly and the clean round's CKKS release was checked equal to FedAvg's.
    """
    n = len(fed.clients)
    attacks_ = {"backdoor success": poisoning.OneWeight(fed.trigger, PUSH, scale=poisoning.replacement_scale(n)),
                "label flipping: accuracy loss": poisoning.LabelFlip(epochs=MALLORY_EPOCHS)}
    measured = {}
    cells = []
    for defense, rnd in rounds.items():
        for row, attack in attacks_.items():
            if defense in _POISON_VIEWS:
                status, note = _POISON_VIEWS[defense]
                value = None if status == "not applicable" else measured[row, "none (FedAvg)"]
                cells.append(_cell(row, defense, value, status, note))
                continue
            strategy = poisoning.Attacked(defense_strategy(defense, fed), fed.mallory, attack)
            model = run_round(fed.in_service, fed.clients, fed.names, strategy=strategy, rng=np.random.default_rng(0),
                              batch_size=BATCH_SIZE)
            if row == "backdoor success":
                value = poisoning.backdoor_success(model, fed.held_out_spam, fed.trigger)
                without = poisoning.backdoor_success(rnd.model, fed.held_out_spam, fed.trigger)
                note = f"without Mallory: {without:.1%}"
            else:
                value = accuracy(rnd.model, *fed.test) - accuracy(model, *fed.test)
                note = ""
            measured[row, defense] = value
            cells.append(_cell(row, defense, value, "measured", note))
    return cells


_SECONDS = "the 10 clients' training one after another on this machine"


def cost_cells(fed: Federation, rounds: dict) -> list:
    """What each defense costs: clean test accuracy after the round, ε (one round, every client
    taking part, δ = 1e-5), seconds and megabytes per round. Taught in notebook 13, §5."""
    cells = []
    for defense, rnd in rounds.items():
        status, note = "measured", ""
        if defense == "homomorphic encryption":
            note = "on the CKKS-decrypted release"
        elif defense == "average of 10":
            status, note = "equivalent", _SAME_RELEASE
        cells.append(_cell("clean test accuracy", defense, accuracy(rnd.model, *fed.test), status, note))
        strategy = rnd.strategy
        if isinstance(strategy, privacy.DPFedAvg):
            eps = privacy.dp_fedavg_epsilon(strategy.noise_multiplier, ROUNDS, 1.0)
            note = "no noise: no guarantee (ε = ∞)" if math.isinf(eps) else ""
            cells.append(_cell("ε (δ = 1e-5)", defense, eps, "measured", note))
        else:
            cells.append(_cell("ε (δ = 1e-5)", defense, None, "not applicable", "no DP: no noise, no ε"))
        note = _SECONDS
        if defense == "homomorphic encryption":
            note += (f"; plus 10 encryptions one after another (one client's: "
                     f"{rnd.check['seconds to encrypt one update']:.1f} s), the sum and one decryption")
        cells.append(_cell("seconds per round", defense, rnd.seconds, "measured", note))
        cells.append(_cell("MB per round", defense, rnd.bytes / 1e6, "measured", ""))
    return cells


# ---------------------------------------------------------------------------- the canary


CANARY_SETTINGS = dict(vocab_size=200, train_emails_per_mailbox=10, test_emails_per_mailbox=4,
                       max_words_per_email=40, copies=32, rounds=3, epochs=2, z=1.0, clip_norm=1.0,
                       n_pseudo=30, sampling_rate=0.2, dp_rounds=3, dp_seed=1)


def canary_cells(corpus, settings: dict | None = None) -> list:
    """Notebook 12's canary, "my computer password is pizza" planted ``copies`` times in Bob's
    mailbox, on a tiny language model; its exposure (bits) in the model released after FedAvg,
    secure aggregation and DP-FedAvg. Taught in notebook 13, §4.

    FedAvg: the six mailboxes, ``rounds`` rounds from a fresh model (weighted FedAvg); secure
    aggregation: the same rounds with ``secure_aggregation.SecureFedAvg(weighted=True)`` (the masked
    sum); DP-FedAvg at ``z``: ``n_pseudo`` pseudo-clients of the same mail (the canary in Bob's first
    slice), Poisson sampling at ``sampling_rate``, ``dp_rounds`` rounds, the sampling seeded with
    ``dp_seed``. Which rounds sampled Bob's slice is read from the run's ``History.clients`` and
    written in the cell's note with the run's own ε; a seed with which the slice never takes part is
    refused (the cell would measure a model that never saw the canary). The other columns are not
    measured here (each would train the LSTM again); the average of 10 is FedAvg's release.
    """
    s = dict(CANARY_SETTINGS, **(settings or {}))
    lm = language_model.load_lm_data(corpus, vocab_size=s["vocab_size"],
                                      train_emails_per_mailbox=s["train_emails_per_mailbox"],
                                      test_emails_per_mailbox=s["test_emails_per_mailbox"],
                                      max_words_per_email=s["max_words_per_email"], seed=0)
    V = len(lm.vocab)
    bob = next(iter(lm.train_emails))
    planted = language_model.mailbox_lm_clients(lm, bob, copies=s["copies"], seed=0)
    test = language_model.stream(lm.test_emails)
    monitor = (test[0][:50], test[1][:50])
    options = dict(task=language_model.LM_TASK, batch_size=16, alpha=8.0, epochs=s["epochs"])
    exposures = {}
    for defense, strategy in (("none (FedAvg)", FedAvg(weighted=True)),
                              ("secure aggregation", secure_aggregation.SecureFedAvg(weighted=True,
                                                                                     rng=np.random.default_rng(5)))):
        run = run_rounds(language_model.LanguageModel(V, embed_dim=8, hidden=16, seed=0), planted, monitor,
                         s["rounds"], strategy=strategy, **options)
        exposures[defense] = language_model.canary_exposure(run.model, lm)
    crowd = language_model.pseudo_clients(lm, s["n_pseudo"], canary_copies=s["copies"], seed=0)
    dp = privacy.DPFedAvg(s["clip_norm"], s["z"], s["sampling_rate"] * s["n_pseudo"], reproducible=True)
    run = run_rounds(language_model.LanguageModel(V, embed_dim=8, hidden=16, seed=0), crowd, monitor, s["dp_rounds"],
                     strategy=dp, sampling_rate=s["sampling_rate"], seed=s["dp_seed"], **options)
    bob_slice = next(iter(crowd))
    sampled = [r for r, chosen in enumerate(run.clients, start=1) if bob_slice in chosen]
    if not sampled:
        raise ValueError(f"with dp_seed={s['dp_seed']} Bob's slice ({bob_slice!r}) is sampled in none of the "
                         f"{s['dp_rounds']} rounds: the model never saw the canary; pick another seed")
    exposures[f"DP-FedAvg z={s['z']:g}"] = language_model.canary_exposure(run.model, lm)
    eps = privacy.dp_fedavg_epsilon(s["z"], s["dp_rounds"], s["sampling_rate"])
    cells = []
    for defense in DEFENSES:
        if defense in exposures:
            e = exposures[defense]
            note = f"pizza ranks {e['rank']} of {e['candidates']}"
            if defense.startswith("DP"):
                rounds_ = ", ".join(map(str, sampled))
                note += (f"; its own ε = {privacy.format_epsilon(eps)} ({s['dp_rounds']} rounds, q = {s['sampling_rate']}, "
                         f"{s['n_pseudo']} pseudo-clients), not the column's; Bob's slice sampled in round(s) "
                         f"{rounds_} of {s['dp_rounds']} (dp_seed = {s['dp_seed']})")
            cells.append(_cell("canary exposure (bits)", defense, e["exposure"], "measured", note))
        elif defense == "average of 10":
            e = exposures["none (FedAvg)"]
            cells.append(_cell("canary exposure (bits)", defense, e["exposure"], "equivalent", _SAME_RELEASE))
        else:
            cells.append(_cell("canary exposure (bits)", defense, None, "not measured here",
                               "the LSTM would train again for each: see notebook 12"))
    return cells


# ---------------------------------------------------------------------------- the whole grid


def scoreboard(corpus, *, canary: bool = True, fed: Federation | None = None, rounds: dict | None = None) -> list:
    """Every cell of the grid, attack rows then cost rows, as plain dicts. Taught in notebook 13."""
    fed = build_federation(corpus) if fed is None else fed
    rounds = run_defenses(fed) if rounds is None else rounds
    cells = (word_leak_cells(fed, rounds) + disaggregation_cells(fed, rounds) + membership_cells(fed, rounds)
             + poisoning_cells(fed, rounds))
    if canary:
        cells += canary_cells(corpus)
    return cells + cost_cells(fed, rounds)


def cell_table(cells: list) -> tuple[list, list, np.ndarray, np.ndarray]:
    """``(rows, columns, values, notes)``: the grid as a matrix of values (nan where there is none)
    and one of notes, rows in ``ATTACKS + COST_ROWS`` order (those present), columns in ``DEFENSES``
    order. Taught in notebook 13, §6 (``draw_scoreboard`` uses it)."""
    rows = [r for r in ATTACKS + COST_ROWS if any(c["attack"] == r for c in cells)]
    columns = [d for d in DEFENSES if any(c["defense"] == d for c in cells)]
    values = np.full((len(rows), len(columns)), np.nan)
    notes = np.full((len(rows), len(columns)), "", dtype=object)
    status = np.full((len(rows), len(columns)), "", dtype=object)
    for c in cells:
        i, j = rows.index(c["attack"]), columns.index(c["defense"])
        if c["value"] is not None:
            values[i, j] = c["value"]
        notes[i, j] = c["note"]
        status[i, j] = c["status"]
    return rows, columns, values, np.stack([status, notes])


FIELDS = ["attack", "attacker", "defense", "value", "status", "note"]


def write_csv(cells: list, path) -> None:
    """The cells as a CSV file, one line per cell, values rounded to 4 decimals (aggregate numbers
    only: no email text, no weights). Used by ``scripts/scoreboard.py`` (notebook 13, §6)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for c in cells:
            value = "" if c["value"] is None else ("inf" if math.isinf(c["value"]) else f"{c['value']:.4f}")
            writer.writerow({"attack": c["attack"], "attacker": ATTACKERS.get(c["attack"], "(the defense's cost)"),
                             "defense": c["defense"], "value": value, "status": c["status"], "note": c["note"]})


def read_csv(path) -> list:
    """The cells ``write_csv`` stored (tests/test_scoreboard.py compares them with a fresh run).

    Used with notebook 13 (scripts/scoreboard.py writes the CSV; the tests read it)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"attack": row["attack"], "defense": row["defense"],
                 "value": None if row["value"] == "" else float(row["value"]),
                 "status": row["status"], "note": row["note"]} for row in csv.DictReader(handle)]


# ---------------------------------------------------------------------------- the picture


SHORT_REASONS = {
    "ciphertexts only": "ciphertexts\nonly",
    "a view of FedAvg's round": "a view,\nnot a rule",
    "no DP": "no DP:\nno ε",
    "the LSTM would train again": "not run\nhere",
}

_ROW_SCALES = {
    "word leak: recall": (0, 1, "Reds", False), "word leak: precision": (0, 1, "Reds", False),
    "disaggregation: per-email recall": (0, 1, "Reds", False), "membership: TPR at 1% FPR": (0, 0.15, "Reds", False),
    "backdoor success": (0, 1, "Reds", False), "label flipping: accuracy loss": (0, 0.03, "Reds", False),
    "canary exposure (bits)": (0, 7.6, "Reds", False), "clean test accuracy": (0.85, 0.96, "Greens", False),
    "ε (δ = 1e-5)": (1, 30, "Blues_r", True), "seconds per round": (0.05, 20, "Greys", True),
    "MB per round": (5, 200, "Greys", True),
}

_RANGES = {"membership: TPR at 1% FPR": "0–15%", "label flipping: accuracy loss": "0–3 pt",
           "canary exposure (bits)": "0–7.6 bits", "clean test accuracy": "85–96%", "ε (δ = 1e-5)": "30–1, log",
           "seconds per round": "0.05–20 s, log", "MB per round": "5–200 MB, log"}


def row_label(row: str) -> str:
    """A row's label in the heatmap: its name, who runs it, and its colour range (each row has its
    own). Taught in notebook 13, §6."""
    scale = _RANGES.get(row, "0–100%")
    who = f"{ATTACKERS[row]}; " if row in ATTACKERS else ""
    if row == "seconds per round":
        who = "10 clients one after another here; "
    return f"{row}\n({who}colour {scale})"


def _text(row, value, status, note=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if row == "ε (δ = 1e-5)":
        text = "∞\n(no noise)" if math.isinf(value) else privacy.format_epsilon(value)
    elif row in ("canary exposure (bits)",):
        text = f"{value:.1f}"
        own = re.search(r"its own ε = ([0-9.e+]+)", note)
        if own:
            text += f"\n(own ε {own.group(1)})"
    elif row == "seconds per round":
        text = f"{value:.1f}" if value >= 0.95 else f"{value:.2f}"
    elif row == "MB per round":
        text = f"{value:.0f}"
    elif row == "clean test accuracy":
        text = f"{value:.1%}"
    elif row == "label flipping: accuracy loss":
        text = f"{100 * value:.1f} pt"
    else:
        text = f"{value:.0%}" if value >= 0.095 or value == 0 else f"{value:.1%}"
    if note.startswith(TRIVIAL):
        text += "\nevery row\nflagged"
    return text + ("*" if status == "equivalent" else "")


def _short(note: str) -> str:
    for start, short in SHORT_REASONS.items():
        if note.startswith(start):
            return short
    return "n/a"


def draw_scoreboard(cells: list, title: str = "Every attack against every defense: one round, Bob + 9 clients",
                    ax=None) -> None:
    """The grid as a heatmap (``plotting.scoreboard_heatmap``): one colour scale per row (its range
    in the row's label), red for the attacker's success, numbers in the cells; grey hatched cells
    have no number and say why; pale unhatched cells have a number that is not on the row's scale
    (ε = ∞, a recall of 100% because every row was flagged). Taught in notebook 13, §6."""
    from . import plotting

    rows, columns, values, (status, notes) = cell_table(cells)
    texts = [[_text(r, None if np.isnan(values[i, j]) else values[i, j], status[i, j], notes[i, j])
              for j in range(len(columns))] for i, r in enumerate(rows)]
    unmeasured = np.isin(status, ["cannot run", "not applicable", "not measured here"])
    neutral = np.isinf(values) | np.array([[str(n).startswith(TRIVIAL) for n in row] for row in notes], bool)
    reasons = [[_short(notes[i, j]) for j in range(len(columns))] for i in range(len(rows))]
    plotting.scoreboard_heatmap(values, texts, [row_label(r) for r in rows], columns, title,
                                row_scales=[_ROW_SCALES[r] for r in rows], unmeasured=unmeasured, neutral=neutral,
                                reasons=reasons, ax=ax,
                                footnote="* FedAvg's release or round, checked equal (see the note); "
                                         "red: the attacker's success, darker is worse for the defender; "
                                         "pale: a number off the row's scale (no success, or no noise)")
