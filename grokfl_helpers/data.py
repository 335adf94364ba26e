"""Enron-Spam, from its official archives to the arrays of chapter 15 of *Grokking Deep Learning*.

    corpus = load_enron()              # about 0.3 s once prepared; the first time about 5-15 s
    corpus.train_x, corpus.train_y     # int32 (N, 500) word indices, float64 (N, 1) 1.0 = spam
    corpus.vocab[corpus.train_x[0, 0]] # the first word of the first training email

Where the data comes from
    The six "preprocessed" archives enron1.tar.gz ... enron6.tar.gz of Metsis, Androutsopoulos and
    Paliouras (2006), one Enron employee's mailbox each (see MAILBOXES), published at OFFICIAL_URL.
    Each archive is looked for first in the folder named by the environment variable GROKFL_DATA
    (treated as read-only: nothing is ever written there), then in the repository's data/ folder
    (DATA_DIR, found from this file's location, never from the working directory, so a notebook
    finds it whether Jupyter was started in the repository or in notebooks/). What is in neither
    place is downloaded into data/: to `enronN.tar.gz.part`, resumed with an HTTP Range request if
    an earlier download was interrupted, and renamed to `enronN.tar.gz` only once it is complete
    and has been checked. GROKFL_DATA_URL (or `base_url=`) points the download at a mirror.

How each archive is checked (the first time it is used)
    It must decompress and untar without error, contain enronN/Summary.txt and text files under
    enronN/ham/ and enronN/spam/, and its Summary.txt must name the mailbox owner we expect. Its
    ham and spam counts are compared with the "Total number: N emails" lines of Summary.txt; where
    they disagree (the public enron4 holds 4,499 spam emails, its summary says 4,500) that is not an
    error: it is recorded in `corpus.summary_mismatches` and mentioned once, when the corpus is
    first prepared. A corrupt archive raises DataError naming the file and what to do; one that sits
    in data/ is moved aside to `enronN.tar.gz.corrupt` so it is not taken for valid next time (one
    in GROKFL_DATA is only reported, that folder is read-only).

How an email becomes a row (as the book does, made deterministic)
    The bytes of the file are split on ASCII whitespace (bytes.split()) and each word is decoded as
    latin-1. Latin-1 maps every byte to exactly one character, so nothing is lost or merged; the book
    decodes UTF-8 with errors="ignore", which silently deletes the bytes that are not valid UTF-8
    (about 1,000 of the 33,715 emails hold such bytes, nearly all spam). Each email becomes its *set*
    of distinct words, as in the book, but kept in order of first appearance (the book's Python set
    changes order from run to run). A row is the first `max_words` (500) of those words as indices
    into `vocab`, padded with UNK (0, the word "<unk>"). The book's text says it truncates to 500
    words; its code instead drops every email with 500 or more distinct words. Here such emails are
    truncated and counted: `corpus.n_truncated` (820 emails have more than 500 distinct words).
    The vocabulary holds every word of every email: vocab[0] == "<unk>", the rest sorted.

How the emails are split (seeded)
    rng = np.random.default_rng(seed) shuffles the spam emails, then (the same rng) the ham emails.
    The last `n_test_per_class` (1,000) of each class are the test set, the rest training, as the
    book's [-1000:]. Rows are interleaved as the book does: for i in range(max(n_spam, n_ham)):
    spam[i % n_spam] (y = 1), then ham[i % n_ham] (y = 0). The smaller class is cycled, so the
    training set is balanced and some of its emails appear twice (`train_email` says which).

The cache
    The expensive part (reading the archives, tokenizing, the vocabulary) does not depend on
    max_words, seed or n_test_per_class, so it is cached once, untruncated, in
    data/enron-cache-<key>.npz; the rows for any choice of those parameters are cut from it in a
    fraction of a second, and changing one never forces a rebuild. The key is a hash of
    CACHE_FORMAT (bumped whenever tokenizing or the cache layout changes) and each archive's name
    and content (SHA-256 of its bytes, about 20 ms for all six): an archive replaced by another,
    even of the same size and modification time, rebuilds the cache; touching one does not. The
    file is written to a temporary name and renamed, so a half-written cache is never read; any
    unreadable cache is simply rebuilt.

    The rows of the default split (DEFAULT_SPLIT: max_words 500, seed 12345, 1,000 test emails per
    class, what every notebook loads) are cached too, in data/enron-rows-<key>.npy, and
    memory-mapped (copy-on-write) rather than read: every process that loads the corpus (a
    notebook's kernel, Flower's simulated clients, a deployment's SuperNodes) shares one copy of
    the 65 MB training matrix in the operating system's page cache instead of building its own.
    The arrays are plain, writable numpy arrays with the same values; a write stays private to the
    process that makes it, and never reaches the file.

Bad archives
    An archive is decompressed in pieces, and one that unpacks to more than MAX_UNPACKED_BYTES
    (64 MB; the official ones unpack to 9-18 MB) is refused with a DataError before it can fill
    memory: a crafted 0.3 MB archive can unpack to gigabytes. Nothing is cached from it.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

OFFICIAL_URL = "http://www2.aueb.gr/users/ion/data/enron-spam/preprocessed/"

# (archive, mailbox owner) in the order of the email ids; train_mailbox etc. index into this.
MAILBOXES = (
    ("enron1", "farmer-d"),
    ("enron2", "kaminski-v"),
    ("enron3", "kitchen-l"),
    ("enron4", "williams-w3"),
    ("enron5", "beck-s"),
    ("enron6", "lokay-m"),
)
ARCHIVE_NAMES = tuple(f"{mailbox}.tar.gz" for mailbox, _ in MAILBOXES)

UNK = 0  # index of "<unk>", the padding word
UNK_WORD = "<unk>"

# The repository's data/ folder, from this file's location (grokfl_helpers/../data).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

DATA_ENV = "GROKFL_DATA"  # a folder holding the archives, never written to
URL_ENV = "GROKFL_DATA_URL"  # where to download from, instead of OFFICIAL_URL
DOWNLOAD_TIMEOUT = 30  # seconds without an answer before a download attempt gives up
MAX_UNPACKED_BYTES = 64_000_000  # an archive that decompresses to more is refused (real ones: 9-18 MB)
DEFAULT_SPLIT = (500, 12345, 1000)  # (max_words, seed, n_test_per_class) whose rows are memory-mapped
CACHE_FORMAT = 2  # bump when tokenizing or the cache's layout changes: old caches are rebuilt


class DataError(Exception):
    """The Enron-Spam archives are missing, unreachable or corrupt; the message says what to do.

    Taught in notebook 02, §1.
    """


class SummaryMismatch(NamedTuple):
    """An archive whose ham or spam count differs from what its own Summary.txt says.

    Taught in notebook 02, §1.
    """

    mailbox: str  # "enron4"
    label: str  # "ham" or "spam"
    summary_says: int
    found: int

    def __str__(self):
        return (
            f"{self.mailbox}/{self.label} holds {self.found:,} emails where its Summary.txt says "
            f"{self.summary_says:,}; the {self.found:,} that are there are used"
        )


@dataclass(frozen=True, eq=False, repr=False)
class EnronSpam:
    """The tokenized corpus, split and interleaved as in the book. Build it with load_enron().

    Rows: `*_x` int32 (N, max_words) word indices into `vocab` (UNK-padded), `*_y` float64 (N, 1)
    with 1.0 = spam, `*_mailbox` (N,) index into MAILBOXES, `*_email` (N,) email id.
    Per-email metadata, indexed by email id (0 ... 33,714; by mailbox, then ham before spam, then
    file name): `email_mailbox`, `email_label` (1 = spam, 0 = ham), `email_n_distinct_words`
    (before truncation), `email_n_bytes` (the size of the email's file), `email_file` (the file's
    path inside its archive).

    Taught in notebook 02, §1 (its rows: §2).
    """

    vocab: list
    w2i: dict
    train_x: np.ndarray
    train_y: np.ndarray
    train_mailbox: np.ndarray
    train_email: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_mailbox: np.ndarray
    test_email: np.ndarray
    email_mailbox: np.ndarray
    email_label: np.ndarray
    email_n_distinct_words: np.ndarray
    email_n_bytes: np.ndarray
    email_file: tuple
    n_truncated: int  # emails with more than max_words distinct words, cut to max_words
    summary_mismatches: tuple  # of SummaryMismatch
    max_words: int
    seed: int
    n_test_per_class: int
    archive_paths: tuple = field(default=())  # where each archive was read from (for email_text)

    @property
    def n_emails(self) -> int:
        return len(self.email_label)

    def decode(self, row) -> list:
        """The words of one row of word indices, padding left out."""
        return [self.vocab[i] for i in np.asarray(row).ravel() if i != UNK]

    def email_text(self, email_id: int) -> str:
        """The raw text of one email (read from its archive, so it takes a fraction of a second)."""
        email_id = int(email_id)
        if not 0 <= email_id < self.n_emails:
            raise IndexError(f"email id {email_id} is outside 0 ... {self.n_emails - 1}")
        path = self.archive_paths[self.email_mailbox[email_id]]
        wanted = self.email_file[email_id]
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                if member.name == wanted:
                    return archive.extractfile(member).read().decode("latin-1")
        raise DataError(f"{wanted} is no longer in {path}: the archive changed; reload the corpus")

    def __repr__(self):
        return (
            f"EnronSpam({self.n_emails:,} emails from {len(MAILBOXES)} mailboxes, "
            f"vocabulary of {len(self.vocab):,} words, train {self.train_x.shape[0]:,} x "
            f"{self.max_words}, test {self.test_x.shape[0]:,} x {self.max_words}, seed {self.seed})"
        )


def load_enron(
    data_dir=None,
    *,
    max_words: int = 500,
    seed: int = 12345,
    n_test_per_class: int = 1000,
    base_url: str | None = None,
    verbose: bool = True,
) -> EnronSpam:
    """The Enron-Spam corpus as the book's arrays: archives found or downloaded, checked, cached.

    data_dir: where archives are downloaded and the cache is kept (default: the repository's data/).
    max_words: words per row (each email's first distinct words; the rest truncated, or padded).
    seed, n_test_per_class: the split (see the module docstring).
    base_url: where to download missing archives (default: $GROKFL_DATA_URL, else OFFICIAL_URL).
    verbose: print download progress and a few lines the first time the corpus is prepared; a load
    from the cache prints nothing.

    Taught in notebook 02, §1.
    """
    _check_int("max_words", max_words, minimum=1)
    _check_int("seed", seed, minimum=0)
    _check_int("n_test_per_class", n_test_per_class, minimum=1)
    data_dir = _resolve_data_dir(data_dir)
    archives = ensure_archives(data_dir, base_url=base_url, verbose=verbose)
    key = _cache_key(archives)
    cache_path = data_dir / f"enron-cache-{key[:16]}.npz"
    tokens = _read_cache(cache_path, key)
    if tokens is None:
        tokens = _prepare(archives, data_dir, verbose)
        _write_cache(tokens, cache_path, key, data_dir, verbose)
    rows_path = None
    if (max_words, seed, n_test_per_class) == DEFAULT_SPLIT:
        rows_path = data_dir / f"enron-rows-{key[:16]}.npy"
    return _split(tokens, archives, max_words, seed, n_test_per_class, rows_path)


def ensure_archives(data_dir=None, *, base_url: str | None = None, verbose: bool = True) -> tuple:
    """The paths of the six archives, downloading into data_dir whatever is not found.

    Looks in $GROKFL_DATA, then data_dir. A download goes to `<name>.part` (resumed if an earlier
    one was interrupted), is checked, and only then renamed. Any failure raises one DataError that
    names every missing archive's address and the folder to put the files in by hand.

    Taught in notebook 02, §1 (load_enron calls it).
    """
    data_dir = _resolve_data_dir(data_dir)
    found = _found_archives(data_dir)
    missing = [name for name in ARCHIVE_NAMES if name not in found]
    base_url = base_url or os.environ.get(URL_ENV) or OFFICIAL_URL
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    for position, name in enumerate(missing):
        try:
            found[name] = _download(base_url + name, data_dir / name, verbose)
        except _DownloadFailed as failure:
            raise DataError(_offline_message(missing[position:], base_url, data_dir, failure)) from None
    return tuple(found[name] for name in ARCHIVE_NAMES)


def find_archives(data_dir=None):
    """The paths of the six archives if all are already here ($GROKFL_DATA, then data_dir), else
    None. Never downloads: the tests use it to skip, with a message, where there are no archives.

    Taught in notebook 02, §1 (with load_enron).
    """
    found = _found_archives(_resolve_data_dir(data_dir))
    return tuple(found[name] for name in ARCHIVE_NAMES) if len(found) == len(ARCHIVE_NAMES) else None


# --- finding and downloading the archives ---------------------------------------------------------


def _found_archives(data_dir: Path) -> dict:
    """{name: path} of the archives found in $GROKFL_DATA, then in data_dir."""
    shared_dir = _shared_dir()
    found = {}
    for name in ARCHIVE_NAMES:
        if shared_dir is not None and (shared_dir / name).is_file():
            found[name] = shared_dir / name
        elif (data_dir / name).is_file():
            found[name] = data_dir / name
    return found


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _resolve_data_dir(data_dir) -> Path:
    return DATA_DIR if data_dir is None else Path(data_dir).expanduser().resolve()


def _shared_dir():
    """$GROKFL_DATA as a folder, or None when unset. A relative path is tried from the working
    directory, then from the repository (notebooks run in notebooks/, tests in the repository)."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, DATA_DIR.parent / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(
        f"{DATA_ENV} is set to {value!r}, which is not a folder (looked for "
        f"{' and '.join(str(c) for c in candidates)}). Point it at the folder that holds "
        f"enron1.tar.gz ... enron6.tar.gz (an absolute path is safest), or unset it to use {DATA_DIR}."
    )


class _DownloadFailed(Exception):
    """A network-side failure; a partial file may be kept for the next attempt to resume."""


def _download(url: str, target: Path, verbose: bool) -> Path:
    """Download url to target via target.part (resuming it if present); check; rename; return."""
    part = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch_to_part(url, part, verbose)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        if isinstance(error, http.client.IncompleteRead):
            reason = f"{url}: the connection closed {error.expected:,} bytes before the end"
        elif isinstance(error, urllib.error.HTTPError):
            reason = f"{url}: {error}"
        else:
            reason = f"{url}: {getattr(error, 'reason', None) or error}"
        if part.is_file() and part.stat().st_size > 0:
            reason += f"; the {part.stat().st_size:,} bytes received are kept in {part.name} and resumed next time"
        raise _DownloadFailed(reason) from error
    try:
        _read_archive(part, ARCHIVE_NAMES.index(target.name))
    except DataError as error:
        part.unlink(missing_ok=True)
        raise DataError(
            f"The file downloaded from {url} is not a valid archive ({error}); it was deleted. "
            f"Run again to download it afresh, or download it by hand into {target.parent}."
        ) from None
    os.replace(part, target)
    return target


def _fetch_to_part(url: str, part: Path, verbose: bool):
    """Append the rest of url to part (HTTP Range) or, if the server ignores that, start over."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "grokfl-course"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # our .part is not a prefix of what the server has
            part.unlink()
            return _fetch_to_part(url, part, verbose)
        raise
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()  # a part of the file other than the one we asked for: start over
            return _fetch_to_part(url, part, verbose)
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done, name = offset, part.name[: -len(".part")]
        # The bar closes (its last state and a new line) even if the connection breaks.
        with _progress_bar(f"{'resuming' if resumed else 'downloading'} {name}", total, offset, verbose) as bar:
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
    if total is not None and done != total:
        raise http.client.IncompleteRead(b"", total - done)


def _progress_bar(description, total, initial, verbose) -> tqdm:
    """tqdm's text bar on stdout. Never stderr: the course's tests (nbval, the browser test) count
    any stderr output as a failure, and JupyterLab shows it as an error. Not tqdm.auto's widget
    either: that needs ipywidgets, and without it tqdm warns on stderr."""
    return tqdm(
        desc=description, total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
        file=sys.stdout, mininterval=0.25, ncols=90, ascii=True, disable=not verbose,
    )


def _offline_message(missing, base_url, data_dir, failure) -> str:
    urls = "\n".join(f"  {base_url}{name}" for name in missing)
    return (
        f"Could not download the Enron-Spam archives ({failure}).\n"
        f"Still missing:\n{urls}\n"
        f"Download them on a machine that is online and put them in\n  {data_dir}\n"
        f"or set the environment variable {DATA_ENV} to a folder that holds all six, then run again."
    )


# --- reading and checking one archive -------------------------------------------------------------


def _read_archive(path: Path, mailbox_index: int):
    """Check one archive and return (emails, mismatches): emails as (label, file, bytes) with label
    1 = spam, ham first, each class sorted by file name. Raises DataError if it is corrupt."""
    mailbox, owner = MAILBOXES[mailbox_index]
    try:
        archive = tarfile.open(fileobj=io.BytesIO(_unpack(path)), mode="r:")
        with archive:
            emails, summary = [], None
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if parts == [mailbox, "Summary.txt"]:
                    summary = archive.extractfile(member).read().decode("latin-1")
                elif len(parts) == 3 and parts[0] == mailbox and parts[1] in ("ham", "spam") and parts[2].endswith(".txt"):
                    emails.append((int(parts[1] == "spam"), member.name, archive.extractfile(member).read()))
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise DataError(f"{path} cannot be read as a .tar.gz archive: {error}") from None
    if summary is None:
        raise DataError(f"{path} has no {mailbox}/Summary.txt: it is not the Enron-Spam archive {mailbox}")
    expected = _parse_summary(summary, path)
    if expected["ham"][0] != owner:
        raise DataError(
            f"{path}: its Summary.txt names the mailbox owner {expected['ham'][0]!r}, but {mailbox} "
            f"is {owner}'s mailbox: the archive is not the official {mailbox}.tar.gz"
        )
    mismatches = []
    for label, label_name in ((0, "ham"), (1, "spam")):
        found = sum(1 for email in emails if email[0] == label)
        if found == 0:
            raise DataError(f"{path} has no emails under {mailbox}/{label_name}/: it is incomplete")
        if found != expected[label_name][1]:
            mismatches.append(SummaryMismatch(mailbox, label_name, expected[label_name][1], found))
    emails.sort(key=lambda email: (email[0], email[1]))
    return emails, mismatches


def _unpack(path: Path, limit: int | None = None) -> bytes:
    """The decompressed bytes of a .gz file, read in pieces so that no more than `limit` (default
    MAX_UNPACKED_BYTES) is ever held: a crafted archive cannot fill memory. Reading the whole
    stream checks its end marker and CRC, which catches a truncated download even where tarfile
    alone would stop early without noticing."""
    limit = MAX_UNPACKED_BYTES if limit is None else limit
    pieces, size = [], 0
    with gzip.open(path, "rb") as stream:
        while piece := stream.read(1 << 20):
            size += len(piece)
            if size > limit:
                raise DataError(
                    f"{path} unpacks to more than {limit / 1e6:.0f} MB, where the official Enron-Spam "
                    f"archives unpack to 9-18 MB: it is not an official archive, and was not unpacked further"
                )
            pieces.append(piece)
    return b"".join(pieces)


def _parse_summary(text: str, path: Path) -> dict:
    """{"ham": (owner, count), "spam": (owner, count)} from a Summary.txt."""
    sections = re.split(r"^\s*(Legitimate|Spam)\s*\n\s*-+\s*$", text.replace("\r", ""), flags=re.M)
    result = {}
    for title, body in zip(sections[1::2], sections[2::2]):
        owner = re.search(r"Owner:\s*(.+)", body)
        count = re.search(r"Total number:\s*(\d+)", body)
        if owner and count:
            result["ham" if title == "Legitimate" else "spam"] = (owner.group(1).strip(), int(count.group(1)))
    if set(result) != {"ham", "spam"}:
        raise DataError(f"{path}: its Summary.txt does not give the owner and count of both ham and spam")
    return result


# --- tokenizing and the cache ---------------------------------------------------------------------


def _prepare(archives, data_dir: Path, verbose: bool) -> dict:
    """Read every archive once: per-email distinct word ids (untruncated) and metadata."""
    if verbose:
        print("Preparing the Enron-Spam corpus (only the first time; it takes a few seconds)...", flush=True)
    word_ids = {}  # word (bytes) -> provisional id, in order of first appearance
    assign = word_ids.setdefault
    unk = UNK_WORD.encode()
    provisional = array.array("i")  # every email's provisional word ids, one after another
    lengths, sizes, mailbox_of, label_of, files, mismatches = [], [], [], [], [], []
    for mailbox_index, path in enumerate(archives):
        try:
            emails, found_mismatches = _read_archive(path, mailbox_index)
        except DataError as error:
            raise DataError(_corrupt_message(path, data_dir, error)) from None
        mismatches += found_mismatches
        for label, file_name, raw in emails:
            distinct = dict.fromkeys(raw.split())
            distinct.pop(unk, None)  # a literal "<unk>" would collide with the padding word
            provisional.extend([assign(word, len(word_ids)) for word in distinct])
            lengths.append(len(distinct))
            sizes.append(len(raw))
            mailbox_of.append(mailbox_index)
            label_of.append(label)
            files.append(file_name)
    words = list(word_ids)
    order = sorted(range(len(words)), key=words.__getitem__)
    final_id = np.empty(len(words), dtype=np.int32)
    final_id[order] = np.arange(1, len(words) + 1, dtype=np.int32)  # 0 is "<unk>"
    tokens = {
        "tokens": final_id[np.frombuffer(provisional, dtype=np.int32)],
        "offsets": np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]),
        "email_mailbox": np.asarray(mailbox_of, dtype=np.int8),
        "email_label": np.asarray(label_of, dtype=np.int8),
        "email_n_bytes": np.asarray(sizes, dtype=np.int64),
        "vocab_blob": np.frombuffer(b"\n".join(words[i] for i in order), dtype=np.uint8),
        "files_blob": np.frombuffer("\n".join(files).encode(), dtype=np.uint8),
        "mismatches": [tuple(m) for m in mismatches],
    }
    if verbose:
        n_spam = int(tokens["email_label"].sum())
        print(
            f"Read {len(files):,} emails ({len(files) - n_spam:,} ham, {n_spam:,} spam) from "
            f"{len(archives)} mailboxes; vocabulary of {len(words) + 1:,} words.",
            flush=True,
        )
        for mismatch in mismatches:
            print(f"Note: {mismatch}.", flush=True)
    return tokens


def _corrupt_message(path: Path, data_dir: Path, error: DataError) -> str:
    url = OFFICIAL_URL + path.name
    if path.parent == data_dir and path.parent != _shared_dir():
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        return (
            f"{error}\nIt was moved aside to {aside.name}, so it will not be used again. Run again to "
            f"download a fresh copy from {url}, or put the official file in {data_dir} by hand."
        )
    return (
        f"{error}\n{path.parent} (${DATA_ENV}) is treated as read-only, so the file was left there: "
        f"replace it with the official file from {url}, or unset {DATA_ENV} to download it into {data_dir}."
    )


def _cache_key(archives) -> str:
    """Hash of the cache format and each archive's name and content (SHA-256 of its bytes): an
    archive replaced by another rebuilds the cache, whatever its size and modification time."""
    described = [CACHE_FORMAT]
    for path in archives:
        with open(path, "rb") as archive:
            described.append([path.name, hashlib.file_digest(archive, "sha256").hexdigest()])
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def _write_cache(tokens: dict, cache_path: Path, key: str, data_dir: Path, verbose: bool):
    """Save atomically (temporary file, then rename) and remove caches of older archives."""
    arrays = {name: value for name, value in tokens.items() if name != "mismatches"}
    meta = {"key": key, "mismatches": tokens["mismatches"]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    temporary = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, cache_path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if verbose:
            print(f"Could not save the prepared corpus in {data_dir} ({error}); it will be prepared again next time.")
        return
    ours = {cache_path.name, f"enron-rows-{key[:16]}.npy"}  # the caches of these archives
    for stale in [*data_dir.glob("enron-cache-*.npz"), *data_dir.glob("enron-rows-*.npy")]:
        if stale.name not in ours:
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # Windows: still mapped by another process; removed next time
                pass


def _read_cache(cache_path: Path, key: str):
    """The cached tokens, or None if there is no cache for exactly these archives (or it is damaged)."""
    try:
        with np.load(cache_path, allow_pickle=False) as saved:
            meta = json.loads(saved["meta"].tobytes())
            if meta["key"] != key:
                return None
            tokens = {name: saved[name] for name in saved.files if name != "meta"}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # none yet, or a damaged or foreign file: prepare again and overwrite it
    tokens["mismatches"] = meta["mismatches"]
    return tokens


# --- cutting the rows for one choice of parameters ------------------------------------------------


def _mapped_rows(rows_path, shape):
    """The rows cached at rows_path, memory-mapped copy-on-write as a plain ndarray, or None if
    there is no such file or it does not hold int32 rows of this shape (then it is rebuilt)."""
    if rows_path is None:
        return None
    try:
        mapped = np.load(rows_path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if mapped.shape != shape or mapped.dtype != np.int32:
        return None
    return np.asarray(mapped)  # a plain ndarray view: prints as `array(...)`, shares the mapping


def _write_rows(rows_path: Path, x: np.ndarray) -> bool:
    """Save the rows atomically (temporary file, then rename); False if that is not possible."""
    temporary = rows_path.with_name(f".{rows_path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            np.save(out, x, allow_pickle=False)
        os.replace(temporary, rows_path)
        return True
    except OSError:
        temporary.unlink(missing_ok=True)
        return False


def _split(tokens: dict, archives, max_words: int, seed: int, n_test_per_class: int, rows_path=None) -> EnronSpam:
    offsets = tokens["offsets"]
    lengths = np.diff(offsets)
    email_label = tokens["email_label"].astype(np.int64)
    spam = np.flatnonzero(email_label == 1)
    ham = np.flatnonzero(email_label == 0)
    if n_test_per_class >= min(len(spam), len(ham)):
        raise ValueError(
            f"n_test_per_class={n_test_per_class} leaves no training emails: there are only "
            f"{len(spam):,} spam and {len(ham):,} ham emails"
        )
    rng = np.random.default_rng(seed)
    spam, ham = rng.permutation(spam), rng.permutation(ham)
    train_email = _interleave(spam[:-n_test_per_class], ham[:-n_test_per_class])
    test_email = _interleave(spam[-n_test_per_class:], ham[-n_test_per_class:])
    email_mailbox = tokens["email_mailbox"].astype(np.int64)

    def rows(emails):
        """Each email's first max_words word ids, left-aligned in a zero (UNK) row."""
        kept = np.minimum(lengths[emails], max_words)
        n_before = np.cumsum(kept) - kept  # kept words of the rows above
        step = np.arange(kept.sum())  # k-th kept word overall
        source = step + np.repeat(offsets[emails] - n_before, kept)
        target = step + np.repeat(np.arange(len(emails)) * max_words - n_before, kept)
        x = np.zeros((len(emails), max_words), dtype=np.int32)
        x.ravel()[target] = tokens["tokens"][source]
        return x

    # The training rows, then the test rows, in one array: from the memory-mapped cache if there is
    # one (rows_path), else built here (and saved there for next time).
    both = np.concatenate([train_email, test_email])
    x = _mapped_rows(rows_path, (len(both), max_words))
    if x is None:
        x = rows(both)
        if rows_path is not None and _write_rows(rows_path, x):
            x = _mapped_rows(rows_path, x.shape)
    train_x, test_x = x[: len(train_email)], x[len(train_email):]
    train_y, test_y = (email_label[e].astype(np.float64)[:, None] for e in (train_email, test_email))
    train_mailbox, test_mailbox = email_mailbox[train_email], email_mailbox[test_email]
    vocab = [UNK_WORD] + tokens["vocab_blob"].tobytes().decode("latin-1").split("\n")
    return EnronSpam(
        vocab=vocab,
        w2i=dict(zip(vocab, range(len(vocab)))),
        train_x=train_x,
        train_y=train_y,
        train_mailbox=train_mailbox,
        train_email=train_email,
        test_x=test_x,
        test_y=test_y,
        test_mailbox=test_mailbox,
        test_email=test_email,
        email_mailbox=email_mailbox,
        email_label=email_label,
        email_n_distinct_words=lengths,
        email_n_bytes=tokens["email_n_bytes"],
        email_file=tuple(tokens["files_blob"].tobytes().decode().split("\n")),
        n_truncated=int((lengths > max_words).sum()),
        summary_mismatches=tuple(SummaryMismatch(*m) for m in tokens["mismatches"]),
        max_words=max_words,
        seed=seed,
        n_test_per_class=n_test_per_class,
        archive_paths=tuple(archives),
    )


def _interleave(spam, ham) -> np.ndarray:
    """Email ids as the book orders them: spam, ham, spam, ham ..., cycling the smaller class."""
    n = max(len(spam), len(ham))
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2] = spam[np.arange(n) % len(spam)]
    order[1::2] = ham[np.arange(n) % len(ham)]
    return order
