"""Next-word prediction on Enron ham with the book's LSTM, and a password as a canary. Notebook 12.

The keyboard story: Gboard trained its next-word model across phones without collecting what people
typed (Hard et al., 2018), and later with user-level DP (Xu et al., 2023). Here the phones are the
six Enron mailboxes, the text is their ham (what people wrote, not spam), and the model is the
book's chapter-14 ``LSTMCell`` (``tensor.LSTMCell``).

* ``ham_tokens`` — every ham email's words *in order* (the spam model keeps a set of words), read
  once from the archives and cached under data/ with a content key.
* ``load_lm_data`` — a seeded sample of ham emails per mailbox, a vocabulary of the most frequent
  words plus ``<unk>``, held-out test emails.
* ``LanguageModel``, ``train`` (truncated backpropagation through time, vectorized over a batch of
  columns), ``evaluate`` (top-1 and top-3 next-word accuracy), ``LM_TASK`` for the round loop.
* ``mailbox_lm_clients``, ``pseudo_clients``, ``plant_canary`` — who holds which text.
* ``canary_exposure`` — Carlini et al.'s exposure of "pizza" after "my computer password is".
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import math
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as _data
from .tensor import SGD, Embedding, Layer, LSTMCell, Tensor
from .training import Task

__all__ = [
    "CANARY",
    "UNK_WORD",
    "HamTokens",
    "ham_tokens",
    "tokenize",
    "LMData",
    "load_lm_data",
    "LanguageModel",
    "train",
    "evaluate",
    "top1_accuracy",
    "mean_loss",
    "LM_TASK",
    "BATCH_SIZE",
    "ALPHA",
    "BPTT",
    "stream",
    "mailbox_lm_clients",
    "pseudo_clients",
    "plant_canary",
    "next_word_scores",
    "complete",
    "exposure",
    "canary_exposure",
    "one_blas_thread",
]

UNK, UNK_WORD = _data.UNK, _data.UNK_WORD  # word 0 is "<unk>", as in the spam model's vocabulary
CANARY = "my computer password is pizza"
"""The book's sentence (chapter 15), planted in Bob's mailbox as Carlini et al.'s canary."""

LM_CACHE_FORMAT = 1  # bump when tokenizing changes: old caches are rebuilt
_WORD = re.compile(rb"[a-z]+")


# ---------------------------------------------------------------------------- words in order


def tokenize(text) -> list[str]:
    """The words of a text in order: lower-cased runs of letters a–z. Taught in notebook 12, §2.

    Punctuation and numbers are dropped (a keyboard suggests words), so "i ' ll call 713 - 853"
    becomes ``["i", "ll", "call"]``. Unlike the spam model, order and repeats are kept.
    """
    if isinstance(text, str):
        text = text.encode("latin-1", errors="replace")
    if not isinstance(text, (bytes, bytearray)):
        raise TypeError(f"tokenize needs a str or bytes, got {type(text).__name__}")
    return [w.decode("ascii") for w in _WORD.findall(bytes(text).lower())]


@dataclass(frozen=True, eq=False, repr=False)
class HamTokens:
    """Every ham email's words in order: email ``j`` (corpus id ``email_id[j]``, mailbox
    ``mailbox[j]``) is ``words[ids[offsets[j]:offsets[j + 1]]]``. Taught in notebook 12, §2."""

    words: list
    ids: np.ndarray
    offsets: np.ndarray
    email_id: np.ndarray
    mailbox: np.ndarray

    def email(self, j: int) -> list[str]:
        return [self.words[i] for i in self.ids[self.offsets[j]:self.offsets[j + 1]]]

    def __repr__(self):
        return f"HamTokens({len(self.email_id):,} ham emails, {len(self.ids):,} words, {len(self.words):,} distinct)"


def _cache_key(corpus) -> str:
    """The tokenizer's version and ``data``'s key of the archives (each one's SHA-256 of its bytes)."""
    archives_key = _data._cache_key([Path(path) for path in corpus.archive_paths])
    return hashlib.sha256(json.dumps([LM_CACHE_FORMAT, archives_key]).encode()).hexdigest()


def ham_tokens(corpus, data_dir=None) -> HamTokens:
    """The words of every ham email of ``corpus`` (from ``data.load_enron()``), in order.

    Taught in notebook 12, §2. The first call reads the six archives (a few seconds) and caches the
    result in ``data/enron-lm-cache-<key>.npz``; the key hashes the tokenizer's version and each
    archive's name and content, as ``data``'s cache does, so a changed archive or tokenizer rebuilds it. The
    cache is derived from the data set: it lives in the git-ignored data/ folder, never in git.
    """
    if not getattr(corpus, "archive_paths", None):
        raise ValueError("ham_tokens needs the corpus from data.load_enron() (it reads the emails' archives)")
    data_dir = _data.DATA_DIR if data_dir is None else Path(data_dir)
    key = _cache_key(corpus)
    path = data_dir / f"enron-lm-cache-{key[:16]}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            if saved["key"].tobytes().decode() == key:
                return HamTokens(saved["words"].tobytes().decode().split("\n"), saved["ids"], saved["offsets"],
                                 saved["email_id"], saved["mailbox"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # no cache, or a damaged one: rebuild it
    files = {name: i for i, name in enumerate(corpus.email_file)}
    word_ids: dict[str, int] = {}
    ids, lengths, email_ids, mailboxes = [], [], [], []
    for index, archive in enumerate(corpus.archive_paths):
        emails, _ = _data._read_archive(Path(archive), index)
        for label, name, raw in emails:
            if label != 0:
                continue
            words = tokenize(raw)
            ids.extend(word_ids.setdefault(w, len(word_ids)) for w in words)
            lengths.append(len(words))
            email_ids.append(files[name])
            mailboxes.append(index)
    tokens = HamTokens(list(word_ids), np.asarray(ids, dtype=np.int32),
                       np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                       np.asarray(email_ids, dtype=np.int64), np.asarray(mailboxes, dtype=np.int8))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as out:
            np.savez(out, key=np.frombuffer(key.encode(), dtype=np.uint8),
                     words=np.frombuffer("\n".join(tokens.words).encode(), dtype=np.uint8),
                     ids=tokens.ids, offsets=tokens.offsets, email_id=tokens.email_id, mailbox=tokens.mailbox)
        os.replace(temporary, path)
        for stale in data_dir.glob("enron-lm-cache-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        temporary.unlink(missing_ok=True)
    return tokens


# ---------------------------------------------------------------------------- the data set


@dataclass(frozen=True, eq=False, repr=False)
class LMData:
    """Ham emails as word-id arrays over a small vocabulary (``vocab[0] == "<unk>"``). Notebook 12, §2.

    ``train_emails[mailbox]``: that mailbox's training emails, one int32 array each;
    ``test_emails``: held-out emails of all six mailboxes; ``public_emails``: emails the server
    may read (see ``load_lm_data``).
    """

    vocab: list
    w2i: dict
    train_emails: dict
    test_emails: list
    public_emails: list = ()

    def encode(self, words) -> np.ndarray:
        """Word ids of a list of words (or a text); words outside the vocabulary become ``<unk>``."""
        words = tokenize(words) if isinstance(words, str) else list(words)
        return np.asarray([self.w2i.get(w, UNK) for w in words], dtype=np.int32)

    def decode(self, ids) -> list[str]:
        return [self.vocab[i] for i in np.asarray(ids).ravel()]

    def check_in_vocabulary(self, words) -> np.ndarray:
        """Word ids of ``words``; a ValueError naming every word the vocabulary lacks."""
        words = tokenize(words) if isinstance(words, str) else list(words)
        missing = [w for w in words if w not in self.w2i or w == UNK_WORD]
        if missing:
            raise ValueError(f"{', '.join(repr(w) for w in missing)} is not in the model's vocabulary of "
                             f"{len(self.vocab):,} words, so the model cannot predict it; build the data with "
                             f"load_lm_data(..., must_include={missing!r}), or pick words from .vocab")
        return np.asarray([self.w2i[w] for w in words], dtype=np.int32)

    def __repr__(self):
        n = sum(len(e) for e in self.train_emails.values())
        words = sum(int(sum(len(x) for x in e)) for e in self.train_emails.values())
        public = f", {len(self.public_emails):,} public emails" if len(self.public_emails) else ""
        return (f"LMData(vocabulary {len(self.vocab):,} words, {n:,} training emails ({words:,} words) "
                f"in {len(self.train_emails)} mailboxes, {len(self.test_emails):,} test emails{public})")


def load_lm_data(corpus, *, vocab_size: int = 1000, train_emails_per_mailbox: int = 40,
                 test_emails_per_mailbox: int = 10, public_emails_per_mailbox: int = 0,
                 max_words_per_email: int = 80, must_include=tuple(tokenize(CANARY)), seed: int = 0,
                 data_dir=None) -> LMData:
    """A seeded sample of ham per mailbox, over the ``vocab_size`` most frequent training words.

    Taught in notebook 12, §2. From each of the six mailboxes, ``train_emails_per_mailbox`` ham
    emails for training and ``test_emails_per_mailbox`` others for testing, each cut to its first
    ``max_words_per_email`` words (a few emails are long forwarded threads). The vocabulary is
    ``<unk>`` plus the most frequent words of the *training* emails, and every word of
    ``must_include``: a keyboard's dictionary is public and fixed in advance, and ours contains the
    canary's words (else the model could never complete the password at all).

    With ``public_emails_per_mailbox`` > 0, that many further emails per mailbox form
    ``public_emails``: mail the server may read (the Enron corpus *is* public), used to train a
    starting model centrally. The vocabulary is then counted on them, not on the clients' mail.
    """
    for name, value in (("vocab_size", vocab_size), ("train_emails_per_mailbox", train_emails_per_mailbox),
                        ("test_emails_per_mailbox", test_emails_per_mailbox),
                        ("max_words_per_email", max_words_per_email),
                        ("public_emails_per_mailbox", public_emails_per_mailbox + 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    tokens = ham_tokens(corpus, data_dir)
    rng = np.random.default_rng(seed)
    picked_train, picked_test, picked_public = {}, [], []
    for index, (archive, owner) in enumerate(_data.MAILBOXES):
        mine = rng.permutation(np.flatnonzero(tokens.mailbox == index))
        need = train_emails_per_mailbox + test_emails_per_mailbox
        if need + public_emails_per_mailbox > len(mine):
            raise ValueError(f"{owner} ({archive}) has {len(mine):,} ham emails; "
                             f"{need + public_emails_per_mailbox:,} were asked for")
        picked_train[f"{owner} ({archive})"] = np.sort(mine[:train_emails_per_mailbox])
        picked_test.extend(np.sort(mine[train_emails_per_mailbox:need]))
        picked_public.extend(np.sort(mine[need:need + public_emails_per_mailbox]))

    def words_of(j):
        start = tokens.offsets[j]
        return tokens.ids[start:min(start + max_words_per_email, tokens.offsets[j + 1])]

    counts = Counter()
    for j in (picked_public if picked_public else np.concatenate(list(picked_train.values()))):
        counts.update(words_of(j).tolist())
    must = [w for w in must_include if w != UNK_WORD]
    ranked = [tokens.words[i] for i, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    kept = [w for w in ranked if w not in must][:max(vocab_size - 1 - len(must), 0)]
    vocab = [UNK_WORD] + kept + [w for w in must if w not in kept]
    w2i = {w: i for i, w in enumerate(vocab)}
    table = np.array([w2i.get(w, UNK) for w in tokens.words], dtype=np.int32)
    train = {name: [table[words_of(j)] for j in emails] for name, emails in picked_train.items()}
    test = [table[words_of(j)] for j in picked_test]
    public = [table[words_of(j)] for j in picked_public]
    return LMData(vocab=vocab, w2i=w2i, train_emails=train, test_emails=test, public_emails=public)


def stream(emails) -> tuple[np.ndarray, np.ndarray]:
    """Emails joined into one stream, as ``(X, y)``: each word and the word that follows it.
    Taught in notebook 12, §2."""
    joined = np.concatenate([np.asarray(e, dtype=np.int32) for e in emails]) if len(emails) else np.zeros(0, np.int32)
    return joined[:-1], joined[1:]


def mailbox_lm_clients(lm: LMData, canary_client=None, canary=CANARY, copies: int = 0, seed: int = 0) -> dict:
    """One client per mailbox, holding ``(X, y)`` of its training ham. Taught in notebook 12, §4.

    With ``canary_client`` (a mailbox name) and ``copies`` = k, the canary is planted k times in
    that mailbox first (``plant_canary``).
    """
    emails = dict(lm.train_emails)
    if copies:
        if canary_client not in emails:
            raise ValueError(f"canary_client {canary_client!r} is not one of the mailboxes {list(emails)}")
        emails[canary_client] = plant_canary(lm, emails[canary_client], copies, canary=canary, seed=seed)
    return {name: stream(e) for name, e in emails.items()}


def pseudo_clients(lm: LMData, n_clients: int = 100, canary_copies: int = 0, canary=CANARY, seed: int = 0) -> dict:
    """``n_clients`` pseudo-clients: each mailbox's emails cut into consecutive slices, as many per
    mailbox as its share of the emails. Taught in notebook 12, §6.

    A simulation: six people's mail split into a hundred "users" so that user-level DP has a crowd
    to hide in. With ``canary_copies`` = k, the canary goes k times into the first slice of the
    first mailbox (Bob's), and only there: the unit of privacy, one client, covers all k copies.
    Names look like ``"farmer-d (enron1) #03"``.
    """
    names = list(lm.train_emails)
    sizes = np.array([len(lm.train_emails[n]) for n in names], dtype=float)
    if not len(names) <= n_clients <= sizes.sum():
        raise ValueError(f"n_clients must be between {len(names)} and {int(sizes.sum())}, got {n_clients}")
    share = np.maximum(1, np.floor(sizes / sizes.sum() * n_clients)).astype(int)
    while share.sum() < n_clients:  # hand out the remainder to the largest fractional parts
        share[np.argmax(sizes / sizes.sum() * n_clients - share)] += 1
    clients = {}
    for name, parts in zip(names, share):
        for s, part in enumerate(np.array_split(np.arange(len(lm.train_emails[name])), parts)):
            emails = [lm.train_emails[name][j] for j in part]
            if canary_copies and name == names[0] and s == 0:
                emails = plant_canary(lm, emails, canary_copies, canary=canary, seed=seed)
            clients[f"{name} #{s:02d}"] = stream(emails)
    return clients


def plant_canary(lm: LMData, emails, copies: int, canary=CANARY, seed: int = 0) -> list:
    """``emails`` with the canary sentence added ``copies`` times, each as a short email of its own
    at a random place among them (seeded). Taught in notebook 12, §5."""
    if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 0:
        raise ValueError(f"copies must be a non-negative integer, got {copies!r}")
    ids = lm.check_in_vocabulary(canary)
    emails = list(emails)
    rng = np.random.default_rng(seed)
    for _ in range(int(copies)):
        emails.insert(int(rng.integers(0, len(emails) + 1)), ids.copy())
    return emails


# ---------------------------------------------------------------------------- the model


def _openblas_thread_setter():
    """numpy's bundled OpenBLAS ``(get, set)`` thread-count functions, or None if not found."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(folder, "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


_BLAS = _openblas_thread_setter()


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with one BLAS thread, then restore the previous count. Used by ``train`` and
    ``evaluate`` (notebook 12); measured by benchmarks/bench_lstm.py.

    The LSTM multiplies small matrices (in notebook 12, a batch of 16 by 32 hidden units by 1,000
    words) thousands of times; splitting each across threads costs more than it saves, and on a busy machine a
    thread waiting for a core stalls every multiply (we measured 40x slower). Does nothing where
    numpy's BLAS is not the bundled OpenBLAS.
    """
    if _BLAS is None:
        yield
        return
    get, put = _BLAS
    before = int(get())
    put(1)
    try:
        yield
    finally:
        put(before)


class LanguageModel(Layer):
    """An embedding, the book's ``LSTMCell``, a softmax over the vocabulary. Notebook 12, §1.

    ``forward(ids, hidden)`` reads one word per row of the batch and returns the logits of the
    next word and the new ``(h, c)``.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 16, hidden: int = 32, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.vocab_size, self.embed_dim, self.hidden = vocab_size, embed_dim, hidden
        self.embedding = Embedding(vocab_size, embed_dim, rng=rng)
        self.embedding.weight.data *= embed_dim  # book's init is U(-0.5, 0.5) / dim: too small to start
        self.cell = LSTMCell(embed_dim, hidden, vocab_size, rng=rng)
        for layer in (self.cell.xf, self.cell.xi, self.cell.xo, self.cell.xc, self.cell.hf, self.cell.hi,
                      self.cell.ho, self.cell.hc, self.cell.w_ho):
            layer.weight.data *= 0.5  # He init saturates sigmoids at the start; half of it trains faster
        self.cell.xf.bias.data += 1.0  # forget gate open at first: remember by default
        self.parameters = self.embedding.get_parameters() + self.cell.get_parameters()

    def init_hidden(self, batch_size: int = 1):
        return self.cell.init_hidden(batch_size)

    def forward(self, ids, hidden):
        return self.cell.forward(self.embedding.forward(np.asarray(ids)), hidden)

    def n_parameters(self) -> int:
        return int(sum(p.data.size for p in self.get_parameters()))

    def __repr__(self):
        return (f"LanguageModel(vocabulary {self.vocab_size:,}, embedding {self.embed_dim}, "
                f"LSTM hidden {self.hidden}: {self.n_parameters():,} parameters)")


BPTT = 5  # steps of backpropagation through time
CLIP = 5.0  # gradient-norm clip of each local step (standard for LSTMs, not privacy)
BATCH_SIZE = 16  # columns of the stream read in parallel
ALPHA = 8.0  # SGD learning rate (large, as plain SGD on LSTMs needs; the clip keeps steps bounded)


def _columns(X, y, batch_size: int):
    """The book's batching: the stream cut into ``batch_size`` columns, read top to bottom.
    Returns (steps, batch) arrays; fewer columns when the stream is short."""
    X, y = np.asarray(X), np.asarray(y)
    if X.shape != y.shape or X.ndim != 1:
        raise ValueError(f"X and y must be 1-d streams of word ids of equal length, got {X.shape} and {y.shape}")
    columns = max(1, min(int(batch_size), len(X) // (BPTT + 1)))
    steps = len(X) // columns
    return X[:steps * columns].reshape(columns, steps).T, y[:steps * columns].reshape(columns, steps).T


def _detach(hidden):
    return tuple(Tensor(t.data, autograd=True) for t in hidden)


def train(model: LanguageModel, X, y, *, batch_size: int = BATCH_SIZE, epochs: int = 1, alpha: float = ALPHA,
          bptt: int = BPTT) -> LanguageModel:
    """Train ``model`` in place on a stream (``X`` each word, ``y`` the next) and return it.

    Taught in notebook 12, §3. Truncated backpropagation through time, as the book's chapter 14:
    the stream is cut into ``batch_size`` columns that are read in parallel (one vectorized step per
    word position); every ``bptt`` steps the mean cross-entropy is backpropagated, the gradient's
    norm clipped to ``CLIP``, SGD steps, and the hidden state carried on but cut from the graph.
    """
    if epochs < 0 or batch_size < 1 or bptt < 1:
        raise ValueError(f"epochs >= 0, batch_size >= 1 and bptt >= 1 needed (got {epochs}, {batch_size}, {bptt})")
    Xc, yc = _columns(X, y, batch_size)
    with one_blas_thread():
        _train_columns(model, Xc, yc, epochs, alpha, bptt)
    return model


def _train_columns(model, Xc, yc, epochs, alpha, bptt):
    params = model.get_parameters()
    optim = SGD(params, alpha=alpha)
    for _ in range(epochs):
        hidden = model.init_hidden(Xc.shape[1])
        for start in range(0, len(Xc), bptt):
            stop = min(start + bptt, len(Xc))
            loss = None
            for t in range(start, stop):
                logits, hidden = model.forward(Xc[t], hidden)
                step = logits.cross_entropy(yc[t])
                loss = step if loss is None else loss + step
            loss.backward(np.array(1.0 / (stop - start)))
            norm = math.sqrt(sum(float((p.grad.data ** 2).sum()) for p in params if p.grad is not None))
            if norm > CLIP:
                for p in params:
                    if p.grad is not None:
                        p.grad.data *= CLIP / norm
            optim.step()
            hidden = _detach(hidden)


def _logits(model: LanguageModel, X, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Logits for every position of the stream, forward only; returns (logits, positions)."""
    Xc, _ = _columns(X, X, batch_size)
    hidden = model.init_hidden(Xc.shape[1])
    out = np.empty(Xc.shape + (model.vocab_size,))
    with one_blas_thread():
        for t in range(len(Xc)):
            logits, hidden = model.forward(Xc[t], _detach(hidden))
            out[t] = logits.data
    return out


def evaluate(model: LanguageModel, X, y, ks=(1, 3)) -> dict:
    """Top-k next-word accuracy and mean cross-entropy on a stream. Taught in notebook 12, §3.

    As a keyboard is scored: at each word, does the true next word appear among the model's k best
    suggestions? ``<unk>`` is never suggested, and positions whose true next word is ``<unk>`` are
    not scored (the keyboard could not have typed it). Returns ``{"top1": …, "top3": …, "loss": …}``.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) < 2:
        raise ValueError("evaluate needs a stream of at least two words")
    digest = hashlib.blake2b(digest_size=16)
    for array in [X, y] + [p.data for p in model.get_parameters()]:
        digest.update(np.ascontiguousarray(array).tobytes())
    key = (digest.hexdigest(), tuple(ks))
    if _LAST_EVALUATION.get("key") != key:  # the round loop asks for accuracy and loss of one model
        _LAST_EVALUATION.update(key=key, result=_evaluate(model, X, y, ks))
    return dict(_LAST_EVALUATION["result"])


_LAST_EVALUATION: dict = {}


def _evaluate(model, X, y, ks) -> dict:
    logits = _logits(model, X)
    Xc, yc = _columns(X, y, 64)
    logits, targets = logits.reshape(-1, model.vocab_size), yc.reshape(-1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    result = {"loss": float(-log_probs[np.arange(len(targets)), targets].mean())}
    scored = targets != UNK
    logits = logits[scored].copy()
    logits[:, UNK] = -np.inf
    true = logits[np.arange(len(logits)), targets[scored]]
    rank = (logits > true[:, None]).sum(axis=1)  # words scored strictly higher than the truth
    for k in ks:
        result[f"top{k}"] = float((rank < k).mean())
    return result


def top1_accuracy(model, X, y) -> float:
    """The keyboard's first suggestion is the next word: fraction of scored positions (notebook 12, §4)."""
    return evaluate(model, X, y)["top1"]


def mean_loss(model, X, y) -> float:
    """Mean cross-entropy (nats per word) on a stream (notebook 12, §4)."""
    return evaluate(model, X, y)["loss"]


LM_TASK = Task(train=train, accuracy=top1_accuracy, loss=mean_loss)
"""The language model as the round loop (``federated.run_rounds``) sees it. Notebook 12, §4."""


# ---------------------------------------------------------------------------- completions, exposure


def next_word_scores(model: LanguageModel, prompt_ids) -> np.ndarray:
    """Log-probabilities of every vocabulary word following the prompt (read from a fresh state).
    Taught in notebook 12, §5 (through ``canary_exposure``)."""
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64).ravel()
    if prompt_ids.size == 0:
        raise ValueError("the prompt is empty: give at least one word")
    hidden = model.init_hidden(1)
    for word in prompt_ids:
        logits, hidden = model.forward(np.array([word]), _detach(hidden))
    z = logits.data[0] - logits.data[0].max()
    return z - np.log(np.exp(z).sum())


def complete(model: LanguageModel, lm: LMData, prompt, k: int = 3) -> list[str]:
    """The keyboard's ``k`` suggestions after ``prompt`` (a text or list of words), ``<unk>`` never.
    Taught in notebook 12, §3."""
    scores = next_word_scores(model, lm.encode(prompt))
    scores[UNK] = -np.inf
    return [lm.vocab[i] for i in np.argsort(-scores, kind="stable")[:k]]


def exposure(rank: int, candidates: int) -> float:
    """Carlini et al.'s exposure, in bits: ``log2(candidates) - log2(rank)``. Notebook 12, §5.

    Rank 1 (the secret is the model's favourite) gives the maximum, ``log2(candidates)``; a secret
    ranked in the middle, as a guess would be, gives 1 bit; ranked last, 0.
    """
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= candidates:
        raise ValueError(f"rank must be an integer between 1 and candidates ({candidates}), got {rank!r}")
    return math.log2(candidates) - math.log2(rank)


def canary_exposure(model: LanguageModel, lm: LMData, canary: str = CANARY) -> dict:
    """How exposed the canary's last word is after its prefix. Taught in notebook 12, §5.

    Every vocabulary word but ``<unk>`` is a candidate secret for "my computer password is …";
    they are ranked by the model's probability (rank 1 = most likely; ties counted in the secret's
    favour, i.e. rank = 1 + number of candidates strictly more likely). Returns the rank, the number
    of candidates, the exposure in bits and the model's top-1 completion. A canary word outside the
    vocabulary raises a ValueError naming it.
    """
    ids = lm.check_in_vocabulary(canary)
    if len(ids) < 2:
        raise ValueError(f"the canary {canary!r} needs a prefix and a secret: at least two words")
    scores = next_word_scores(model, ids[:-1])
    scores[UNK] = -np.inf
    candidates = len(lm.vocab) - 1
    rank = int((scores > scores[ids[-1]]).sum()) + 1
    return {"rank": rank, "candidates": candidates, "exposure": exposure(rank, candidates),
            "top1": lm.vocab[int(np.argmax(scores))]}

