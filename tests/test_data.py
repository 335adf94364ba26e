"""Tests of grokfl_helpers.data: the real Enron-Spam archives, tiny fake archives for the cache and
the corner cases, and the download path against a local HTTP server.

Nothing here writes next to the archives ($GROKFL_DATA) or into the repository's data/ folder:
every cache and download goes to pytest's tmp_path.
"""

import contextlib
import http.server
import io
import os
import re
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from grokfl_helpers import data
from grokfl_helpers.data import MAILBOXES, UNK, DataError, SummaryMismatch, load_enron

REPO = Path(__file__).resolve().parent.parent


def _real_archive_dir():
    """The folder of the six real archives ($GROKFL_DATA, else data/), or None: never downloads."""
    archives = data.find_archives()
    return None if archives is None or len({path.parent for path in archives}) != 1 else archives[0].parent


REAL_DIR = _real_archive_dir()
NO_ARCHIVES = (
    "the six Enron-Spam archives are not here: set GROKFL_DATA to a folder that holds enron1.tar.gz "
    "... enron6.tar.gz (or put them in data/) to run the tests on the real corpus"
)
needs_real = pytest.mark.skipif(REAL_DIR is None, reason=NO_ARCHIVES)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(autouse=True, scope="module")
def repo_data_dir_untouched():
    """No test may write into the repository's data/ folder."""
    before = _listing(data.DATA_DIR)
    yield
    assert _listing(data.DATA_DIR) == before


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test says itself where archives are: no $GROKFL_DATA or $GROKFL_DATA_URL leaks in."""
    monkeypatch.delenv("GROKFL_DATA", raising=False)
    monkeypatch.delenv("GROKFL_DATA_URL", raising=False)
    for variable in ("no_proxy", "NO_PROXY"):  # the local test server is never behind a proxy
        monkeypatch.setenv(variable, "127.0.0.1,localhost")


# --- the real archives ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The corpus prepared once from the real archives into a temporary cache folder."""
    if REAL_DIR is None:
        pytest.skip(NO_ARCHIVES)
    cache_dir = tmp_path_factory.mktemp("enron-cache")
    archives_before = _listing(REAL_DIR)
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("GROKFL_DATA", str(REAL_DIR))
        corpus = load_enron(cache_dir)
    assert _listing(REAL_DIR) == archives_before, "something was written next to the archives"
    return {"corpus": corpus, "printed": printed.getvalue(), "cache_dir": cache_dir}


@pytest.fixture
def real_archives(monkeypatch):
    monkeypatch.setenv("GROKFL_DATA", str(REAL_DIR))


@needs_real
def test_counts_match_the_archives(real):
    corpus = real["corpus"]
    assert corpus.n_emails == 33_715
    assert (corpus.email_label == 0).sum() == 16_545
    assert (corpus.email_label == 1).sum() == 17_170
    per_mailbox = np.bincount(corpus.email_mailbox * 2 + corpus.email_label, minlength=12).reshape(6, 2)
    assert per_mailbox.tolist() == [
        [3672, 1500], [4361, 1496], [4012, 1500], [1500, 4499], [1500, 3675], [1500, 4500],
    ]
    for email_id in (0, 20_000, 33_714):  # the file path agrees with the metadata
        mailbox, label, _ = corpus.email_file[email_id].split("/")
        assert mailbox == MAILBOXES[corpus.email_mailbox[email_id]][0]
        assert label == ("spam" if corpus.email_label[email_id] else "ham")


@needs_real
def test_enron4_mismatch_recorded_and_said_once(real, real_archives, capsys):
    assert real["corpus"].summary_mismatches == (SummaryMismatch("enron4", "spam", 4500, 4499),)
    assert "4,500" in str(real["corpus"].summary_mismatches[0])
    assert real["printed"].count("enron4/spam holds 4,499") == 1
    again = load_enron(real["cache_dir"])  # warm: the cache remembers, nothing is printed
    assert again.summary_mismatches == real["corpus"].summary_mismatches
    assert capsys.readouterr() == ("", "")


@needs_real
def test_shapes_types_and_book_interleaving(real):
    corpus = real["corpus"]
    assert corpus.train_x.shape == (2 * (17_170 - 1000), 500) and corpus.train_x.dtype == np.int32
    assert corpus.train_y.shape == (corpus.train_x.shape[0], 1) and corpus.train_y.dtype == np.float64
    assert corpus.test_x.shape == (2000, 500) and corpus.test_y.shape == (2000, 1)
    for y in (corpus.train_y, corpus.test_y):
        assert (y[0::2] == 1).all() and (y[1::2] == 0).all()
    assert (corpus.email_label[corpus.train_email] == corpus.train_y[:, 0]).all()
    assert (corpus.train_mailbox == corpus.email_mailbox[corpus.train_email]).all()
    assert (corpus.test_mailbox == corpus.email_mailbox[corpus.test_email]).all()
    test_ids, train_ids = set(corpus.test_email.tolist()), set(corpus.train_email.tolist())
    assert len(test_ids) == 2000 and not test_ids & train_ids
    assert len(train_ids) == corpus.n_emails - 2000  # every other email is used for training
    # spam is the larger class: each training spam appears once, the first 625 hams twice
    assert len(set(corpus.train_email[0::2].tolist())) == 16_170
    assert len(set(corpus.train_email[1::2].tolist())) == 15_545


@needs_real
def test_vocabulary(real):
    corpus = real["corpus"]
    assert UNK == 0 and corpus.vocab[0] == "<unk>"
    assert len(corpus.vocab) == 159_213
    assert corpus.vocab[1:] == sorted(corpus.vocab[1:]) and len(set(corpus.vocab)) == len(corpus.vocab)
    assert all(corpus.w2i[corpus.vocab[i]] == i for i in range(0, len(corpus.vocab), 997))
    assert {"Subject:", "enron", "viagra"} <= corpus.w2i.keys()


@needs_real
def test_rows_are_distinct_words_in_order_truncated_or_padded(real):
    corpus = real["corpus"]
    lengths = corpus.email_n_distinct_words
    assert corpus.n_truncated == (lengths > 500).sum() == 820
    assert (lengths == 500).sum() == 4  # the book's code drops these too; they lose nothing here
    long_row = int(np.flatnonzero(lengths[corpus.test_email] > 500)[0])
    short_row = int(np.flatnonzero(lengths[corpus.test_email] < 100)[0])
    for row in (long_row, short_row):
        text = corpus.email_text(corpus.test_email[row])
        words = list(dict.fromkeys(re.split(r"[ \t\n\r\x0b\x0c]+", text.strip())))
        assert len(words) == lengths[corpus.test_email[row]]
        expected = [corpus.w2i[word] for word in words[:500]]
        expected += [UNK] * (500 - len(expected))
        assert corpus.test_x[row].tolist() == expected
    assert corpus.decode(corpus.test_x[short_row]) == words[:500]


@needs_real
def test_split_is_deterministic_and_seeded(real, real_archives, capsys):
    corpus = real["corpus"]
    same = load_enron(real["cache_dir"])
    for name in ("train_x", "train_y", "train_email", "test_x", "test_email", "test_mailbox"):
        assert np.array_equal(getattr(same, name), getattr(corpus, name)), name
    other = load_enron(real["cache_dir"], seed=1)
    assert not np.array_equal(other.test_email, corpus.test_email)
    assert other.vocab == corpus.vocab
    assert capsys.readouterr().out == ""


@needs_real
def test_parameters_cut_rows_from_the_same_cache(real, real_archives, capsys):
    cache_files = list(real["cache_dir"].glob("enron-cache-*.npz"))
    assert len(cache_files) == 1
    stamp = cache_files[0].stat().st_mtime_ns
    short = load_enron(real["cache_dir"], max_words=100, n_test_per_class=500)
    assert short.train_x.shape == (2 * (17_170 - 500), 100) and short.test_x.shape == (1000, 100)
    assert short.n_truncated == (short.email_n_distinct_words > 100).sum() > real["corpus"].n_truncated
    full = load_enron(real["cache_dir"], n_test_per_class=500)
    assert np.array_equal(short.train_x, full.train_x[:, :100])
    assert capsys.readouterr().out == ""  # nothing was prepared again
    assert cache_files[0].stat().st_mtime_ns == stamp


@needs_real
def test_default_rows_are_memory_mapped_and_identical(real, real_archives):
    """The default split's rows come from data/enron-rows-*.npy, mapped copy-on-write: plain
    writable arrays, equal to rows built in memory, and a write never reaches the file."""
    (rows_file,) = real["cache_dir"].glob("enron-rows-*.npy")
    mapped = load_enron(real["cache_dir"])
    archives = data.find_archives()
    tokens = data._read_cache(*real["cache_dir"].glob("enron-cache-*.npz"), data._cache_key(archives))
    built = data._split(tokens, archives, *data.DEFAULT_SPLIT)  # no rows_path: built in memory
    for name in ("train_x", "test_x", "train_y", "test_y", "train_mailbox", "test_mailbox", "train_email", "test_email"):
        a, b = getattr(mapped, name), getattr(built, name)
        assert type(a) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b), name
    assert mapped.train_x.flags.writeable and repr(mapped.train_x[:1, :2]).startswith("array(")
    before = rows_file.read_bytes()
    mapped.train_x[0, 0] += 1
    assert rows_file.read_bytes() == before
    assert load_enron(real["cache_dir"]).train_x[0, 0] == built.train_x[0, 0]


@needs_real
def test_warm_load_does_not_read_the_archives(real, real_archives, monkeypatch):
    def forbidden(*args):
        raise AssertionError("a warm load read an archive")

    monkeypatch.setattr(data, "_read_archive", forbidden)
    assert load_enron(real["cache_dir"]).n_emails == 33_715


@needs_real
def test_bad_parameters(real, real_archives):
    for bad in ({"max_words": 0}, {"max_words": True}, {"max_words": 2.5}, {"seed": -1}, {"n_test_per_class": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_enron(real["cache_dir"], **bad)
    with pytest.raises(ValueError, match="leaves no training emails"):
        load_enron(real["cache_dir"], n_test_per_class=16_545)


def test_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data.DATA_DIR == Path(data.__file__).resolve().parent.parent / "data" == REPO / "data"
    assert data._resolve_data_dir(None) == REPO / "data"


@needs_real
def test_relative_grokfl_data_is_found_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as a notebook kernel started in notebooks/ would be elsewhere
    monkeypatch.setenv("GROKFL_DATA", os.path.relpath(REAL_DIR, REPO))
    paths = data.ensure_archives(tmp_path / "data", verbose=False)
    assert paths == tuple(REAL_DIR / name for name in data.ARCHIVE_NAMES)
    assert not (tmp_path / "data").exists()


def test_grokfl_data_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GROKFL_DATA", str(tmp_path / "no-such-folder"))
    with pytest.raises(DataError, match="GROKFL_DATA is set to .*no-such-folder.* not a folder"):
        load_enron(tmp_path)


def test_find_archives_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda *args: pytest.fail("find_archives downloaded"))
    assert data.find_archives(tmp_path) is None
    folder = fake_archives(tmp_path / "data")
    assert data.find_archives(folder) == tuple(folder / name for name in data.ARCHIVE_NAMES)


# --- tiny fake archives: tokenizing, the cache, corrupt files -------------------------------------

FAKE_HAM = [b"Subject: meeting\nthe meeting is at noon noon", b"Subject: lunch\nlunch at noon ?", b"b a b c a"]
FAKE_SPAM = [b"Subject: cheap pills\ncheap cheap pills", b"caf\xe9 <unk> deal deal", b"win win win big"]


def write_fake_archive(path, index, ham=FAKE_HAM, spam=FAKE_SPAM, summary_counts=None, owner=None):
    """An archive laid out like the official one, with Summary.txt, from a few short emails."""
    mailbox, real_owner = MAILBOXES[index]
    n_ham, n_spam = summary_counts or (len(ham), len(spam))
    summary = (
        f"Legitimate\n----------\n- Owner: {owner or real_owner}\n- Total number: {n_ham} emails\n\n\n"
        f"Spam\n----\n- Owner: GP\n- Total number: {n_spam} emails\n\nSpam:Legitimate rate = 1:1\n"
    )
    files = [(f"{mailbox}/Summary.txt", summary.encode())]
    files += [(f"{mailbox}/ham/{i:04d}.{mailbox}.ham.txt", text) for i, text in enumerate(ham)]
    files += [(f"{mailbox}/spam/{i:04d}.{mailbox}.spam.txt", text) for i, text in enumerate(spam)]
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in files:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def fake_archives(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(data.ARCHIVE_NAMES):
        write_fake_archive(folder / name, index)
    return folder


def truncate(path, keep=0.5):
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep)])


def test_tokenizing_as_the_book_deterministically(tmp_path, capsys):
    corpus = load_enron(fake_archives(tmp_path), n_test_per_class=2, max_words=4)
    assert corpus.vocab[0] == "<unk>" and corpus.vocab[1:] == sorted(corpus.vocab[1:])
    assert "café" in corpus.w2i  # latin-1: every byte kept
    assert corpus.vocab.count("<unk>") == 1  # a literal "<unk>" in an email is not a second word
    assert corpus.email_n_distinct_words[corpus.email_file.index("enron1/spam/0001.enron1.spam.txt")] == 2
    email = corpus.email_file.index("enron1/ham/0002.enron1.ham.txt")  # "b a b c a"
    row = np.flatnonzero(corpus.train_email == email)[0]
    assert corpus.decode(corpus.train_x[row]) == ["b", "a", "c"]
    assert corpus.train_x[row, 3] == UNK
    assert corpus.email_n_distinct_words[email] == 3
    first_ham = corpus.email_file.index("enron1/ham/0000.enron1.ham.txt")  # 6 distinct words, cut to 4
    assert corpus.email_n_distinct_words[first_ham] == 6
    assert corpus.decode(corpus.train_x[np.flatnonzero(corpus.train_email == first_ham)[0]]) == ["Subject:", "meeting", "the", "is"]
    assert corpus.n_truncated == 6 * 2  # that ham and the "Subject: lunch ..." one, in each mailbox
    assert corpus.email_text(first_ham).startswith("Subject: meeting")
    assert corpus.email_n_bytes[first_ham] == len(corpus.email_text(first_ham).encode("latin-1"))
    assert "Preparing the Enron-Spam corpus" in capsys.readouterr().out
    assert corpus.summary_mismatches == ()


def test_cache_hit_miss_and_invalidation(tmp_path, monkeypatch, capsys):
    folder = fake_archives(tmp_path)
    first = load_enron(folder, n_test_per_class=2)
    assert "Preparing" in capsys.readouterr().out  # miss
    caches = list(folder.glob("enron-cache-*.npz"))
    assert len(caches) == 1 and not list(folder.glob(".*tmp"))
    load_enron(folder, n_test_per_class=2, seed=7, max_words=3)
    assert capsys.readouterr().out == ""  # hit, whatever the parameters

    os.utime(folder / "enron3.tar.gz", ns=(10**18, 10**18))  # touched, not changed: still a hit
    load_enron(folder, n_test_per_class=2)
    assert capsys.readouterr().out == ""

    # Replaced by another archive of the same size and modification time: the key is the content.
    stat = (folder / "enron3.tar.gz").stat()
    write_fake_archive(folder / "enron3.tar.gz", 2, ham=[*FAKE_HAM[:2], b"b a b c d"])
    assert (folder / "enron3.tar.gz").stat().st_size == stat.st_size, "the test needs two archives of one size"
    os.utime(folder / "enron3.tar.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replaced = load_enron(folder, n_test_per_class=2)
    assert "Preparing" in capsys.readouterr().out
    assert "d" in replaced.w2i and "d" not in first.w2i
    assert list(folder.glob("enron-cache-*.npz")) != caches and len(list(folder.glob("enron-cache-*.npz"))) == 1
    write_fake_archive(folder / "enron3.tar.gz", 2)  # back to the original emails

    monkeypatch.setattr(data, "CACHE_FORMAT", data.CACHE_FORMAT + 1)  # tokenizing changed
    load_enron(folder, n_test_per_class=2)
    assert "Preparing" in capsys.readouterr().out

    load_enron(folder, n_test_per_class=2)  # warm again
    assert capsys.readouterr().out == ""
    (cache,) = folder.glob("enron-cache-*.npz")
    cache.write_bytes(b"not a zip file")  # a damaged cache is simply rebuilt
    again = load_enron(folder, n_test_per_class=2)
    assert "Preparing" in capsys.readouterr().out
    assert np.array_equal(again.train_x, first.train_x) and again.vocab == first.vocab


def test_rows_cache_of_the_default_split(tmp_path, monkeypatch, capsys):
    plain = load_enron(fake_archives(tmp_path / "plain"), n_test_per_class=2, verbose=False)  # in memory
    assert not list((tmp_path / "plain").glob("enron-rows-*"))
    monkeypatch.setattr(data, "DEFAULT_SPLIT", (500, 12345, 2))  # fake archives hold 3 emails a class
    folder = fake_archives(tmp_path / "mapped")
    first = load_enron(folder, n_test_per_class=2)
    (rows_file,) = folder.glob("enron-rows-*.npy")
    again = load_enron(folder, n_test_per_class=2)  # mapped from the file
    for corpus in (first, again):
        assert np.array_equal(corpus.train_x, plain.train_x) and np.array_equal(corpus.test_x, plain.test_x)
    other = load_enron(folder, n_test_per_class=2, seed=1)  # another split: built in memory, not saved
    assert list(folder.glob("enron-rows-*.npy")) == [rows_file] and not np.array_equal(other.train_email, first.train_email)

    rows_file.write_bytes(b"damaged")  # a damaged rows file is rebuilt
    assert np.array_equal(load_enron(folder, n_test_per_class=2).train_x, plain.train_x)
    assert np.load(rows_file).shape == (len(plain.train_x) + len(plain.test_x), 500)

    write_fake_archive(folder / "enron2.tar.gz", 1, ham=[*FAKE_HAM[:2], b"x y z"])  # other archives
    capsys.readouterr()
    load_enron(folder, n_test_per_class=2)
    assert "Preparing" in capsys.readouterr().out
    assert [path.name for path in folder.glob("enron-rows-*.npy")] != [rows_file.name]  # the old ones removed
    assert len(list(folder.glob("enron-rows-*.npy"))) == 1 and not list(folder.glob(".*tmp"))


def test_summary_mismatch_is_recorded_not_fatal(tmp_path, capsys):
    folder = fake_archives(tmp_path)
    write_fake_archive(folder / "enron4.tar.gz", 3, summary_counts=(3, 4))
    corpus = load_enron(folder, n_test_per_class=2)
    assert corpus.summary_mismatches == (SummaryMismatch("enron4", "spam", 4, 3),)
    assert capsys.readouterr().out.count("enron4/spam holds 3 emails where its Summary.txt says 4") == 1


def test_corrupt_archive_in_data_dir_is_moved_aside(tmp_path):
    folder = fake_archives(tmp_path)
    truncate(folder / "enron2.tar.gz")
    with pytest.raises(DataError, match=r"(?s)enron2\.tar\.gz cannot be read.*moved aside.*enron2\.tar\.gz") as error:
        load_enron(folder, n_test_per_class=2, verbose=False)
    assert data.OFFICIAL_URL + "enron2.tar.gz" in str(error.value)
    assert not (folder / "enron2.tar.gz").exists() and (folder / "enron2.tar.gz.corrupt").exists()
    assert not list(folder.glob("enron-cache-*")), "no cache from a corrupt archive"


def test_corrupt_archive_in_grokfl_data_is_only_reported(tmp_path, monkeypatch):
    shared = fake_archives(tmp_path / "shared")
    truncate(shared / "enron5.tar.gz", keep=0.9)
    before = _listing(shared)
    monkeypatch.setenv("GROKFL_DATA", str(shared))
    with pytest.raises(DataError, match=r"(?s)enron5\.tar\.gz cannot be read.*read-only.*left there"):
        load_enron(tmp_path / "data", n_test_per_class=2, verbose=False)
    assert _listing(shared) == before


def write_bomb(path, unpacked_bytes):
    """A small .tar.gz whose one email unpacks to `unpacked_bytes` zeros (zeros compress 1000:1)."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("enron1/ham/0000.enron1.ham.txt")
        info.size = unpacked_bytes
        archive.addfile(info, io.BytesIO(bytes(unpacked_bytes)))


@pytest.mark.parametrize("where", ["data_dir", "grokfl_data"])
def test_an_archive_that_unpacks_too_large_is_refused_with_little_memory(tmp_path, monkeypatch, where):
    import tracemalloc

    monkeypatch.setattr(data, "MAX_UNPACKED_BYTES", 2_000_000)  # the real cap is 64 MB; same code
    folder = fake_archives(tmp_path / "archives")
    write_bomb(folder / "enron1.tar.gz", 40_000_000)
    assert (folder / "enron1.tar.gz").stat().st_size < 100_000  # 40 MB in a small file
    cache_dir = folder if where == "data_dir" else tmp_path / "cache"
    if where == "grokfl_data":
        monkeypatch.setenv("GROKFL_DATA", str(folder))
    before = _listing(folder)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"enron1\.tar\.gz unpacks to more than 2 MB.*9-18 MB"):
            load_enron(cache_dir, n_test_per_class=2, verbose=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"refusing it took {peak / 1e6:.0f} MB"  # not the 40 MB it unpacks to
    assert not list(cache_dir.glob("enron-cache-*")) and not list(cache_dir.glob(".*tmp")), "nothing half-written"
    if where == "data_dir":  # set aside like any corrupt archive, so it is not used again
        assert (folder / "enron1.tar.gz.corrupt").exists() and not (folder / "enron1.tar.gz").exists()
    else:  # $GROKFL_DATA is read-only
        assert _listing(folder) == before


def test_the_real_cap_is_well_above_the_real_archives():
    assert data.MAX_UNPACKED_BYTES >= 3 * 18_000_000  # the largest official archive unpacks to ~18 MB


@pytest.mark.parametrize(
    "problem, match",
    [("owner", "names the mailbox owner 'someone-else'"), ("summary", "no enron1/Summary.txt"), ("no-spam", "no emails under enron1/spam")],
)
def test_archives_that_are_not_enron_spam(tmp_path, problem, match):
    folder = fake_archives(tmp_path)
    target = folder / "enron1.tar.gz"
    if problem == "owner":
        write_fake_archive(target, 0, owner="someone-else")
    elif problem == "summary":
        with tarfile.open(target, "w:gz") as archive:
            info = tarfile.TarInfo("enron1/ham/0001.txt")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"hi"))
    else:
        write_fake_archive(target, 0, spam=[])
    with pytest.raises(DataError, match=match):
        load_enron(folder, n_test_per_class=2, verbose=False)


# --- downloading, against a local server ----------------------------------------------------------


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves the files of `root`, honouring "Range: bytes=N-", unless told to misbehave:
    mode "die" closes the connection after `cut` bytes, "short" sends only the first `cut` bytes as
    if they were the whole file, "no-range" ignores Range headers."""

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.root, self.mode, self.cut, self.requests = root, "normal", 0, []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/files/"


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        asked_range = self.headers.get("Range")
        server.requests.append((self.path, asked_range))
        path = server.root / Path(self.path).name
        if not self.path.startswith("/files/") or not path.is_file():
            self.send_error(404)
            return
        payload = path.read_bytes()
        start = 0
        if asked_range and server.mode != "no-range":
            start = int(re.fullmatch(r"bytes=(\d+)-", asked_range).group(1))
            if start >= len(payload):
                self.send_error(416)
                return
        if server.mode == "short":
            payload = payload[: server.cut]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        body = payload[start:]
        if server.mode == "die":
            body = body[: server.cut]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    server = ArchiveServer(REAL_DIR)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def missing_enron1(tmp_path, monkeypatch):
    """$GROKFL_DATA holds enron2 ... enron6 (links to the real ones); enron1 must be downloaded."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in data.ARCHIVE_NAMES[1:]:
        (shared / name).symlink_to(REAL_DIR / name)
    monkeypatch.setenv("GROKFL_DATA", str(shared))
    return tmp_path / "data"


def original_enron1():
    return (REAL_DIR / "enron1.tar.gz").read_bytes()


@needs_real
def test_download_complete(server, missing_enron1, monkeypatch, capsys):
    monkeypatch.setenv("GROKFL_DATA_URL", server.url)  # the variable alone redirects downloads
    paths = data.ensure_archives(missing_enron1)
    assert paths[0] == missing_enron1 / "enron1.tar.gz" and paths[0].read_bytes() == original_enron1()
    assert paths[1:] == tuple(missing_enron1.parent / "shared" / name for name in data.ARCHIVE_NAMES[1:])
    assert _listing(missing_enron1) == ["enron1.tar.gz"]
    out = capsys.readouterr()
    # tqdm's text bar, on stdout only (stderr would fail nbval and the browser test)
    assert "downloading enron1.tar.gz: 100%" in out.out and "1.77M/1.77M" in out.out and out.err == ""
    assert server.requests == [("/files/enron1.tar.gz", None)]
    data.ensure_archives(missing_enron1)  # present now: no second download
    assert len(server.requests) == 1


@needs_real
def test_download_dies_midway_then_resumes(server, missing_enron1):
    server.mode, server.cut = "die", 600_000
    with pytest.raises(DataError) as error:
        data.ensure_archives(missing_enron1, base_url=server.url, verbose=False)
    message = str(error.value)
    assert server.url + "enron1.tar.gz" in message and "closed" in message and "resumed next time" in message
    assert str(missing_enron1) in message and "GROKFL_DATA" in message
    part = missing_enron1 / "enron1.tar.gz.part"
    assert not (missing_enron1 / "enron1.tar.gz").exists() and 0 < part.stat().st_size <= 600_000

    server.mode = "normal"
    received = part.stat().st_size
    (path, *_) = data.ensure_archives(missing_enron1, base_url=server.url, verbose=False)
    assert server.requests[-1] == ("/files/enron1.tar.gz", f"bytes={received}-")
    assert path.read_bytes() == original_enron1() and _listing(missing_enron1) == ["enron1.tar.gz"]


@needs_real
@pytest.mark.parametrize("part_bytes", ["prefix", "too-long"])
def test_partial_file_the_server_cannot_resume_is_fetched_again(server, missing_enron1, part_bytes):
    missing_enron1.mkdir()
    part = missing_enron1 / "enron1.tar.gz.part"
    if part_bytes == "prefix":
        server.mode = "no-range"  # answers 200 with the whole file: start over
        part.write_bytes(original_enron1()[:1000])
    else:  # longer than the file: the server answers 416
        part.write_bytes(original_enron1() + b"junk")
    (path, *_) = data.ensure_archives(missing_enron1, base_url=server.url, verbose=False)
    assert path.read_bytes() == original_enron1() and _listing(missing_enron1) == ["enron1.tar.gz"]


@needs_real
def test_truncated_download_is_an_error_and_nothing_is_left(server, missing_enron1):
    server.mode, server.cut = "short", 900_000  # looks complete: Content-Length says 900,000
    with pytest.raises(DataError, match=r"downloaded from .*enron1\.tar\.gz is not a valid archive.*deleted"):
        data.ensure_archives(missing_enron1, base_url=server.url, verbose=False)
    assert _listing(missing_enron1) == []


def test_offline_is_one_clear_error(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port on which nobody listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    shared = fake_archives(tmp_path / "shared")
    for name in ("enron1.tar.gz", "enron2.tar.gz"):
        (shared / name).unlink()
    monkeypatch.setenv("GROKFL_DATA", str(shared))
    base_url = f"http://127.0.0.1:{closed_port}/enron"
    with pytest.raises(DataError) as error:
        load_enron(tmp_path / "data", base_url=base_url, verbose=False)
    message = str(error.value)
    assert f"{base_url}/enron1.tar.gz" in message and f"{base_url}/enron2.tar.gz" in message
    assert "enron3" not in message
    assert str(tmp_path / "data") in message and "GROKFL_DATA" in message
    assert not (tmp_path / "data").exists() or _listing(tmp_path / "data") == []
