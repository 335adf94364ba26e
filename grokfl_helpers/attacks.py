"""What a model update gives away: the words of the emails it was trained on.

An ``Embedding`` row only receives a gradient when its word occurs in a training email, so the
rows that changed between the model the server sent and the model it got back are the words the
client wrote. Notebook 04 runs this attack; notebooks 05–07 run it again against each defense.

Notebook 10 goes further (the functions below the "notebook 10" line): the label of an email from
the sign of its update, a batch's number of spam emails, the batch split back into its emails
(``disaggregate``), membership scores and ROC curves, an empirical lower bound on ε with
Clopper–Pearson intervals (``audit_epsilon``), and the exact inversion of a dense layer.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .data import UNK

__all__ = ["embedding_weights", "changed_rows", "leaked_words", "words_in", "recall_precision",
           # notebook 10
           "label_from_update", "spam_count_from_update", "disaggregate", "per_email_recall_precision",
           "membership_score_from_update", "share_of_words_moved", "roc_curve", "tpr_at_fpr",
           "binomial_cdf", "clopper_pearson", "epsilon_from_rates", "epsilon_lower_bound", "audit_epsilon",
           "invert_dense_layer"]


def embedding_weights(model_or_array) -> np.ndarray:
    """The ``(vocab_size, dim)`` table of a model, a ``Tensor`` or a plain array.

    Taught in notebook 04, §1 (changed_rows uses it).
    """
    if hasattr(model_or_array, "weight"):
        return model_or_array.weight.data
    if hasattr(model_or_array, "data") and isinstance(model_or_array.data, np.ndarray):
        return model_or_array.data
    return np.asarray(model_or_array)


def changed_rows(before, after, threshold: float = 0.0) -> np.ndarray:
    """Indices of the rows whose largest absolute change exceeds ``threshold`` (0: any change).

    Taught in notebook 04, §1.
    """
    a, b = embedding_weights(before), embedding_weights(after)
    if a.shape != b.shape:
        raise ValueError(f"changed_rows: shapes {a.shape} and {b.shape} differ; compare models of one vocabulary")
    delta = np.abs(b - a).reshape(len(a), -1).max(axis=1)
    return np.flatnonzero(delta > threshold)


def leaked_words(before, after, vocab, threshold: float = 0.0) -> list[str]:
    """The words whose embedding rows changed between ``before`` and ``after``, in vocabulary order.

    Taught in notebook 04, §1.
    """
    a = embedding_weights(before)
    if len(vocab) != len(a):
        raise ValueError(f"leaked_words: a vocabulary of {len(vocab)} words for a table of {len(a)} rows")
    return [vocab[i] for i in changed_rows(before, after, threshold)]


def words_in(X) -> set[int]:
    """The word indices present in emails ``X`` (padding excluded): what a client really wrote.

    Taught in notebook 04, §3.
    """
    ids = np.unique(np.asarray(X))
    return set(ids[ids != UNK].tolist())


def recall_precision(recovered, truth) -> tuple[float, float]:
    """Recall (share of ``truth`` recovered) and precision (share of ``recovered`` that is true).

    Taught in notebook 04, §3.
    """
    recovered, truth = set(recovered), set(truth)
    hits = len(recovered & truth)
    recall = hits / len(truth) if truth else float("nan")
    precision = hits / len(recovered) if recovered else float("nan")
    return recall, precision


# --------------------------------------------------------------------------- notebook 10
# More than a list of words: labels, whole emails, membership, an audit of DP, dense layers.
# Everything below is taught in notebook 10, "Reconstruction".


def _update_vector(update) -> np.ndarray:
    """An update of the spam model as one float vector of ``vocab_size`` numbers."""
    table = embedding_weights(update[0] if isinstance(update, (list, tuple)) else update)
    table = np.asarray(table, dtype=np.float64)
    if table.ndim == 2 and table.shape[1] != 1:
        raise ValueError(f"expected an update of Embedding(vocab, 1), got a table of shape {table.shape}")
    if table.ndim > 2:
        raise ValueError(f"expected an update of Embedding(vocab, 1), got shape {table.shape}")
    return table.reshape(-1)


def label_from_update(update) -> int:
    """The label (1 spam, 0 ham) of the one email a spam-model update was trained on. Taught in
    notebook 10, §1.

    For ``Embedding(vocab, 1)`` → sum → sigmoid with squared error, every word of the email gets the
    same gradient ``2 (p − y) p (1 − p)``: negative for spam (y = 1, p < 1), positive for ham. SGD
    moves against it, so the changed rows are all positive for spam and all negative for ham.
    """
    u = _update_vector(update)
    moved = u[u != 0]
    if moved.size == 0:
        raise ValueError("the update changed no row: there is no email in it to read a label from")
    return int(moved.sum() > 0)


def spam_count_from_update(update, batch_size: int, common_row: int, alpha: float = 0.01) -> int:
    """How many of a batch's emails are spam, from one SGD step of the all-zero spam model.
    Taught in notebook 10, §1 (the iDLG idea of Zhao et al. 2020, in closed form for our model).

    From the all-zero model every email has p = 0.5, so each spam email pushes each of its words by
    exactly ``+alpha/4`` and each ham email by ``−alpha/4``. A word that every email contains
    (``common_row``: in Enron, ``Subject:``) therefore moves by ``alpha/4 · (spam − ham)``; with
    ``spam + ham = batch_size`` (the size a FedAvg client reports anyway) the count follows.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (the number of emails in the batch), "
                         f"got {batch_size!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be the positive learning rate of the step, got {alpha!r}")
    u = _update_vector(update)
    difference = u[int(common_row)] / (alpha / 4)         # spam − ham
    spam = (batch_size + difference) / 2
    if not -1e-6 <= spam <= batch_size + 1e-6 or abs(spam - round(spam)) > 1e-6:
        raise ValueError(
            f"the row moved by {u[int(common_row)]:.3g}, which is not alpha/4 times (spam − ham) for a batch of "
            f"{batch_size}: the closed form needs one SGD step from the all-zero model, and a word every email contains"
        )
    return int(round(spam))


def _groups(values: np.ndarray, tolerance: float):
    """Sort ``values`` and cut them into groups wherever two neighbours differ by more than ``tolerance``.
    Returns (order, starts): ``order`` sorts the values, group g is ``order[starts[g]:starts[g + 1]]``."""
    order = np.argsort(values, kind="stable")
    cuts = np.flatnonzero(np.diff(values[order]) > tolerance) + 1
    return order, np.concatenate([[0], cuts, [len(values)]])


def _near(sorted_values: np.ndarray, targets: np.ndarray, tolerance: float) -> np.ndarray:
    """How many of ``sorted_values`` lie within ``tolerance`` of each target."""
    return (np.searchsorted(sorted_values, targets + tolerance, side="right")
            - np.searchsorted(sorted_values, targets - tolerance, side="left"))


def disaggregate(update, *, n_emails: int | None = None, tolerance: float | None = None,
                 zero_threshold: float = 0.0, exhaustive_up_to: int = 12, candidates: int = 2000) -> list:
    """Split a spam-model update back into the emails it was trained on (batch disaggregation).
    Taught in notebook 10, §2.

    However many local steps a client takes, every step moves every word of an email e by the same
    scalar, so the update is ``Σ_e c_e · [words of e]``: a word in one email only moves by that
    email's ``c_e``, a word in several by the sum of theirs. So:

    1. rows that moved by more than ``zero_threshold`` are grouped by value (neighbours within
       ``tolerance``; by default ``1e-12`` × the largest move, and at least ``2e-14``, about a
       hundred times the rounding of weights of size about 1);
    2. the *atoms* — the ``c_e`` — are the groups, among the ``candidates`` largest, whose value is
       not the sum of two other groups' values (nor, for up to 64 of them, of several other
       atoms); with ``n_emails`` given (a FedAvg client reports its number of examples) at most
       that many, the largest;
    3. every group is decoded as a subset sum of atoms: all subsets when there are at most
       ``exhaustive_up_to`` atoms, else up to three atoms (two beyond 100), all of them, or all
       but up to three (two). A group whose value matches no subset, or more than one, is left out
       (it costs recall; a wrong match, rare, costs precision). An email whose ``c_e`` is within
       ``5 × tolerance`` of zero (the model was already sure of it) keeps only the words no other
       email has: next to it, its share of a word's move cannot be told from rounding.

    Returns a list of ``(c_e, word_ids)``, one per recovered email: ``c_e > 0`` for spam (as
    ``label_from_update``), ``word_ids`` sorted. Emails with identical word sets, or two emails
    whose ``c_e`` coincide (every spam email in one step from the all-zero model), come out as one.
    """
    u = _update_vector(update)
    if n_emails is not None and (isinstance(n_emails, bool) or not isinstance(n_emails, (int, np.integer))
                                 or n_emails < 1):
        raise ValueError(f"n_emails must be a positive integer (the client's number of emails) or None, "
                         f"got {n_emails!r}")
    if not zero_threshold >= 0:
        raise ValueError(f"zero_threshold must be >= 0, got {zero_threshold!r}")
    rows = np.flatnonzero(np.abs(u) > zero_threshold)
    if rows.size == 0:
        return []
    values = u[rows]
    if tolerance is None:
        tolerance = max(1e-12 * float(np.abs(values).max()), 2e-14)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    order, starts = _groups(values, tolerance)
    members = [rows[order[a:b]] for a, b in zip(starts[:-1], starts[1:])]
    means = np.array([values[order[a:b]].mean() for a, b in zip(starts[:-1], starts[1:])])
    sizes = np.diff(starts)

    # 2. atoms: among the largest groups, the values that are not the sum of two others
    by_size = np.argsort(-sizes, kind="stable")[:candidates]
    match_tol = 3 * tolerance
    negligible = 5 * tolerance                           # a + (something this small) looks like a
    pool = np.sort(means[by_size][np.abs(means[by_size]) > negligible])
    is_sum = np.zeros(len(by_size), dtype=bool)
    for k, g in enumerate(by_size):                      # (pool holds nothing near 0: v = v + 0 never counts)
        is_sum[k] = _near(pool, means[g] - pool, match_tol).sum() > 0
    atoms = _drop_sums_of_three_or_more(by_size[~is_sum], means, match_tol)
    if n_emails is not None:
        atoms = atoms[:n_emails]
    atom_values = means[atoms]
    n_atoms = len(atoms)

    # 3. decode every group as a subset sum of atoms
    resolvable = np.flatnonzero(np.abs(atom_values) > negligible)   # tiny atoms only keep their own words
    sums, subset_of = _subset_sums(atom_values[resolvable], exhaustive_up_to)
    order_s = np.argsort(sums, kind="stable")
    sorted_sums = sums[order_s]
    lo = np.searchsorted(sorted_sums, means - match_tol, side="left")
    hi = np.searchsorted(sorted_sums, means + match_tol, side="right")
    words = [[members[g]] for g in atoms]               # an atom's own words are its email's
    decodable = hi - lo == 1                             # none, or ambiguous: left out
    decodable[atoms] = False
    for g in np.flatnonzero(decodable):
        for j in subset_of(order_s[lo[g]]):
            words[resolvable[j]].append(members[g])
    return [(float(atom_values[j]), np.sort(np.concatenate(words[j]))) for j in range(n_atoms)]


def _drop_sums_of_three_or_more(candidates: np.ndarray, means: np.ndarray, tolerance: float) -> np.ndarray:
    """Remove the candidate atoms whose value is the sum of several other candidates (a word in
    three or more emails, none of whose pairs has a word of its own). Every subset is tried for up
    to 16 candidates, sums of three for up to 64; beyond that the candidates are kept as they are."""
    keep = list(candidates)
    if len(keep) > 64:
        return candidates
    for g in list(candidates[::-1]):                     # smallest groups first
        others = np.array([means[h] for h in keep if h != g])
        if len(others) < 2:
            continue
        if len(others) <= 15:
            masks = np.arange(1, 2 ** len(others))
            bits = (masks[:, None] >> np.arange(len(others))) & 1
            sums = (bits @ others)[bits.sum(axis=1) >= 2]
        else:
            i, j = np.triu_indices(len(others), k=1)
            k = np.arange(len(others))
            distinct = (k[None, :] > j[:, None])            # each triple once: i < j < k
            sums = ((others[i] + others[j])[:, None] + others[None, :])[distinct]
        if (np.abs(sums - means[g]) <= tolerance).any():
            keep.remove(g)
    return np.array(keep, dtype=candidates.dtype)


def _combinations(n: int, k: int) -> np.ndarray:
    """All k-element subsets of range(n), one per row, as an int array (k = 1, 2 or 3)."""
    if k == 1:
        return np.arange(n)[:, None]
    i, j = np.triu_indices(n, k=1)
    if k == 2:
        return np.stack([i, j], axis=1)
    third = np.arange(n)
    keep = third[None, :] > j[:, None]
    rows, cols = np.nonzero(keep)
    return np.stack([i[rows], j[rows], third[cols]], axis=1)


def _subset_sums(atoms: np.ndarray, exhaustive_up_to: int):
    """Candidate subset sums of ``atoms`` and a function from a candidate's index to its subset.

    Every non-empty subset when there are at most ``exhaustive_up_to`` atoms; otherwise the subsets
    of up to three atoms (two beyond 100 atoms), all of them, and all but up to three (two): the
    words of a few emails, and the words nearly every email contains."""
    n = len(atoms)
    if n <= exhaustive_up_to:
        masks = np.arange(1, 2 ** n)
        bits = (masks[:, None] >> np.arange(n)) & 1
        return bits @ atoms, lambda k: np.flatnonzero(bits[k]).tolist()
    largest = 3 if n <= 100 else 2
    blocks = [_combinations(n, k) for k in range(1, largest + 1) if k <= n]
    total = atoms.sum()
    parts = [atoms[block].sum(axis=1) for block in blocks]
    sums = np.concatenate(parts + [[total]] + [total - part for part in parts])
    ends = np.cumsum([len(block) for block in blocks])
    n_small = int(ends[-1])

    def subset_of(k):
        if k == n_small:
            return list(range(n))
        complement = k > n_small
        k = k - n_small - 1 if complement else k
        b = int(np.searchsorted(ends, k, side="right"))
        chosen = blocks[b][k - (int(ends[b - 1]) if b else 0)].tolist()
        return sorted(set(range(n)) - set(chosen)) if complement else chosen

    return sums, subset_of


def per_email_recall_precision(recovered, emails) -> np.ndarray:
    """Score a disaggregation email by email: ``(n_emails, 2)`` array of recall and precision.

    ``recovered``: what ``disaggregate`` returns (or a list of word-id collections); ``emails``: the
    true emails, each a row of word ids (padding ignored) or a collection of word ids. Each true
    email is scored against the recovered email that shares the most words with it (0 and 0 if
    none does): recall = shared / its words, precision = shared / the recovered email's words.
    Taught in notebook 10, §2.
    """
    bags = [set(np.asarray(b[1] if isinstance(b, tuple) else b).tolist()) for b in recovered]
    bags_of_word = {}                                    # word -> the recovered emails that hold it
    for k, bag in enumerate(bags):
        for word in bag:
            bags_of_word.setdefault(word, []).append(k)
    scores = []
    for email in emails:
        truth = words_in(np.asarray(list(email) if isinstance(email, (set, frozenset)) else email))
        if not truth:
            raise ValueError("an email with no words (only padding) cannot be scored")
        shared_with = np.bincount([k for word in truth for k in bags_of_word.get(word, [])], minlength=len(bags))
        if len(bags) == 0 or shared_with.max() == 0:
            scores.append((0.0, 0.0))
            continue
        best = int(np.argmax(shared_with))               # the first of the best, as max() would
        shared = int(shared_with[best])
        scores.append((shared / len(truth), shared / len(bags[best])))
    return np.array(scores, dtype=np.float64).reshape(-1, 2)


def membership_score_from_update(update, X, y) -> np.ndarray:
    """How strongly a spam-model update points at each candidate email: the server's membership
    test. Taught in notebook 10, §3.

    A trained email moves all of its words the same way (up for spam, down for ham), so the score
    of a candidate is the sum of its words' moves, signed by its label, divided by √(its words):
    under Gaussian noise of std σ and no overlap with the trained emails it is N(0, σ²).
    """
    u = _update_vector(update)
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (emails, words) with one label per email; got {X.shape} and {len(y)} labels")
    present = X != UNK
    n_words = present.sum(axis=1)
    if (n_words == 0).any():
        raise ValueError("a candidate email has no words (only padding)")
    moved = np.where(present, u[X], 0.0).sum(axis=1)
    return np.where(y > 0.5, 1.0, -1.0) * moved / np.sqrt(n_words)


def share_of_words_moved(update, X, threshold: float = 0.0) -> np.ndarray:
    """For each candidate email (a row of ``X``), the share of its words whose rows moved by more
    than ``threshold``: 1.0 for every email the update was trained on. Taught in notebook 10, §3."""
    u = _update_vector(update)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-d array of word indices (emails x words), got shape {X.shape}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    present = X != UNK
    n_words = present.sum(axis=1)
    if (n_words == 0).any():
        raise ValueError("a candidate email has no words (only padding)")
    return (present & (np.abs(u[X]) > threshold)).sum(axis=1) / n_words


def _check_scores(name, scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError(f"{name} is empty: a rate needs at least one score")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds a value that is not finite (nan or inf)")
    return scores


def roc_curve(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of "member if score ≥ t" for every threshold t (a higher
    score means "more likely a member"). Returns ``(fpr, tpr)``, from (0, 0) to (1, 1). Taught in
    notebook 10, §3."""
    members = _check_scores("member_scores", member_scores)
    others = _check_scores("nonmember_scores", nonmember_scores)
    thresholds = np.unique(np.concatenate([members, others]))[::-1]
    tpr = 1.0 - np.searchsorted(np.sort(members), thresholds, side="left") / len(members)
    fpr = 1.0 - np.searchsorted(np.sort(others), thresholds, side="left") / len(others)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``fpr``.
    Taught in notebook 10, §3."""
    fpr = _check_rate("fpr", fpr)
    curve_fpr, curve_tpr = roc_curve(member_scores, nonmember_scores)
    return float(curve_tpr[curve_fpr <= fpr].max())


# ----------------------------------------------------------------- an empirical lower bound on ε


def _check_rate(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number between 0 and 1, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a rate between 0 and 1, got {value!r}")
    return value


def _check_count(successes, trials):
    for name, v in (("successes", successes), ("trials", trials)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer count, got {v!r}")
    if trials < 1:
        raise ValueError(f"trials must be at least 1 (a rate needs a denominator), got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and trials = {trials}, got {successes}")
    return int(successes), int(trials)


@functools.lru_cache(maxsize=64)
def _log_choose(n: int, k: int) -> np.ndarray:
    """log C(n, i) for i = 0..k: the sum over j = 1..i of log((n − j + 1) / j), all at once."""
    i = np.arange(1, k + 1, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log(n - i + 1.0) - np.log(i))])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) ≤ k), summed exactly in log space (numpy only, no scipy). Used by
    ``clopper_pearson`` (notebook 10, §4).

    The smaller tail is summed, so that a tiny probability keeps its digits: below the mean the
    terms up to k, above it 1 − P(Y ≤ n − k − 1) with Y the number of failures, Binomial(n, 1 − p)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer count, got {k!r}")
    _check_count(0, n)
    p = _check_rate("p", p)
    k, n = int(k), int(n)
    if k < 0:
        return 0.0
    if k >= n or p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    if k > n * p:
        return max(0.0, 1.0 - binomial_cdf(n - k - 1, n, 1.0 - p))
    i = np.arange(k + 1)
    log_terms = _log_choose(n, k) + i * math.log(p) + (n - i) * math.log1p(-p)
    top = log_terms.max()
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum()))


def _bisect(f, lo=0.0, hi=1.0, iterations=60) -> float:
    """The p in [lo, hi] where the decreasing function f crosses zero."""
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) two-sided confidence interval of a binomial rate. Taught in
    notebook 10, §4.

    The lower end is the p at which seeing ``successes`` or more has probability (1 − confidence)/2,
    the upper end the p at which seeing ``successes`` or fewer has. (These are the beta quantiles of
    the usual formula; here found by bisection on exact binomial tail sums, so no scipy is needed.)
    """
    k, n = _check_count(successes, trials)
    confidence = _check_rate("confidence", confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2
    lower = 0.0 if k == 0 else _bisect(lambda p: tail - (1 - binomial_cdf(k - 1, n, p)))
    upper = 1.0 if k == n else _bisect(lambda p: binomial_cdf(k, n, p) - tail)
    return lower, upper


def epsilon_from_rates(tpr: float, fpr: float, delta: float = 1e-5) -> float:
    """The ε that a test with these true- and false-positive rates proves, at ``delta``.

    (ε, δ)-DP forces every test to have TPR ≤ e^ε FPR + δ and, swapping the roles of the two
    neighbours, TNR ≤ e^ε FNR + δ. So ε ≥ log((TPR − δ)/FPR) and ε ≥ log((1 − FPR − δ)/(1 − TPR));
    the larger, and never below 0. Taught in notebook 10, §4.
    """
    tpr, fpr, delta = _check_rate("tpr", tpr), _check_rate("fpr", fpr), _check_rate("delta", delta)
    bounds = [0.0]
    for hit, miss in ((tpr, fpr), (1 - fpr, 1 - tpr)):
        if hit - delta > 0:
            bounds.append(math.inf if miss == 0 else math.log((hit - delta) / miss))
    return max(bounds)


def epsilon_lower_bound(true_positives: int, positives: int, false_positives: int, negatives: int,
                        delta: float = 1e-5, confidence: float = 0.95) -> float:
    """An ε that the mechanism must have, with confidence ``confidence``, from a test's counts.
    Taught in notebook 10, §4.

    The rates are replaced by their pessimistic Clopper–Pearson ends: TPR by the lower end of its
    interval, FPR by the upper end (each end wrong with probability (1 − confidence)/2, so both hold
    together with probability at least ``confidence``), then ``epsilon_from_rates``. 0 when the
    counts prove nothing.
    """
    tp, n_pos = _check_count(true_positives, positives)
    fp, n_neg = _check_count(false_positives, negatives)
    tpr_lo, _ = clopper_pearson(tp, n_pos, confidence)
    _, fpr_hi = clopper_pearson(fp, n_neg, confidence)
    delta = _check_rate("delta", delta)
    bounds = [0.0]
    for hit, miss in ((tpr_lo, fpr_hi), (1 - fpr_hi, 1 - tpr_lo)):   # the test, and the swapped test
        if hit - delta > 0 and miss > 0:
            bounds.append(math.log((hit - delta) / miss))
    return max(bounds)


def audit_epsilon(scores_with, scores_without, delta: float = 1e-5, confidence: float = 0.95) -> dict:
    """An empirical lower bound on ε from the scores of a distinguishing test run on many releases
    with the canary (``scores_with``) and without it (``scores_without``). Taught in notebook 10, §4.

    The threshold is chosen on the first half of each set (the one with the largest point estimate
    of ε), and the counts are taken on the second half, so that the confidence interval is not
    spoiled by choosing the threshold on the data it is computed from. Returns a dict with the
    ``threshold``, the held-out ``tpr`` and ``fpr``, and ``epsilon`` (``epsilon_lower_bound``).
    """
    inside = _check_scores("scores_with", scores_with)
    outside = _check_scores("scores_without", scores_without)
    if len(inside) < 2 or len(outside) < 2:
        raise ValueError("audit_epsilon needs at least 2 scores on each side (half to choose, half to count)")
    choose_in, count_in = inside[: len(inside) // 2], inside[len(inside) // 2:]
    choose_out, count_out = outside[: len(outside) // 2], outside[len(outside) // 2:]
    candidates = np.unique(np.concatenate([choose_in, choose_out]))
    n_in, n_out = len(choose_in), len(choose_out)
    tp = n_in - np.searchsorted(np.sort(choose_in), candidates, side="left")
    fp = n_out - np.searchsorted(np.sort(choose_out), candidates, side="left")
    # the point estimate, with a pseudo-count so that a zero false-positive count is not infinite
    estimate = np.log((tp / n_in - delta).clip(1e-300) / ((fp + 1) / (n_out + 1)))
    threshold = float(candidates[int(np.argmax(estimate))])
    tp = int((count_in >= threshold).sum())
    fp = int((count_out >= threshold).sum())
    return {"threshold": threshold, "tpr": tp / len(count_in), "fpr": fp / len(count_out),
            "epsilon": epsilon_lower_bound(tp, len(count_in), fp, len(count_out), delta, confidence)}


# ----------------------------------------------------------------- dense layers leak too


def invert_dense_layer(grad_weight, grad_bias) -> np.ndarray:
    """The input of a ``Linear`` layer (with bias) trained on one example, from its gradients.
    Taught in notebook 10, §5.

    For ``out = x·W + b`` on one input x, ``∂loss/∂W[:, j] = x · ∂loss/∂out[j]`` and
    ``∂loss/∂b[j] = ∂loss/∂out[j]``, so every column j with a non-zero bias gradient gives
    ``x = grad_W[:, j] / grad_b[j]`` exactly (the course's ``Linear`` keeps W as inputs × outputs;
    PyTorch's as outputs × inputs, where it is row i). An update (−α times the gradients) works the
    same. The column with the largest bias gradient is used.
    """
    grad_weight = np.asarray(grad_weight, dtype=np.float64)
    grad_bias = np.asarray(grad_bias, dtype=np.float64).reshape(-1)
    if grad_weight.ndim != 2 or grad_weight.shape[1] != len(grad_bias):
        raise ValueError(f"grad_weight must be (inputs, outputs) with one bias per output; got "
                         f"{grad_weight.shape} and {len(grad_bias)} biases")
    j = int(np.argmax(np.abs(grad_bias)))
    if grad_bias[j] == 0:
        raise ValueError("every bias gradient is zero: this example did not reach the layer's outputs")
    return grad_weight[:, j] / grad_bias[j]
