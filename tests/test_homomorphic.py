"""Tests for grokfl_helpers.homomorphic: keys, the book's per-weight encryption, packing.

Most tests use small *toy* keys (made with ``generate_keypair(bits, toy=True)``) so they run in
milliseconds; one test uses a real 2048-bit key on a small vector.
"""

import numpy as np
import phe
import pytest

from grokfl_helpers import homomorphic as he
from grokfl_helpers.homomorphic import (
    EncryptedPackedWeights,
    PackingScheme,
    check_key_size,
    decrypt_average,
    decrypt_each_weight,
    decrypt_sum,
    encrypt_each_weight,
    encrypt_packed,
    generate_keypair,
    pack_levels,
    unpack_levels,
)


@pytest.fixture(scope="module")
def toy_keys():
    return generate_keypair(256, toy=True)


@pytest.fixture(scope="module")
def other_toy_keys():
    return generate_keypair(256, toy=True)


def client_weights(n_clients, shape, value_range, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-value_range, value_range, size=shape) for _ in range(n_clients)]


# ---------------------------------------------------------------- keys


def test_encrypt_5_and_3_add_decrypt_8(toy_keys):
    public_key, private_key = toy_keys
    total = public_key.encrypt(5) + public_key.encrypt(3)
    assert private_key.decrypt(total) == 8


def test_default_key_is_2048_bits():
    public_key, private_key = generate_keypair()
    assert public_key.n.bit_length() == 2048
    assert private_key.p * private_key.q == public_key.n
    check_key_size(public_key)  # does not raise


@pytest.mark.parametrize("bits", [128, 1024, 2046])
def test_small_key_refused_unless_asked_for_a_toy(bits):
    with pytest.raises(ValueError, match=r"toy=True") as error:
        generate_keypair(bits)
    assert "2048" in str(error.value)


def test_toy_key_allowed_only_when_asked():
    public_key, private_key = generate_keypair(128, toy=True)
    assert public_key.n.bit_length() == 128
    check_key_size(public_key)  # a deliberate toy: accepted
    encrypted = encrypt_packed(public_key, np.array([0.5, -0.25]), workers=1)
    assert np.allclose(decrypt_average(private_key, encrypted), [0.5, -0.25], atol=1e-4)


def test_small_key_made_elsewhere_is_refused_by_the_encrypt_functions():
    # the book's way: a 128-bit key straight from phe, never declared a toy
    public_key, _ = phe.generate_paillier_keypair(n_length=128)
    with pytest.raises(ValueError, match=r"only 128 bits"):
        check_key_size(public_key)
    with pytest.raises(ValueError, match=r"toy=True"):
        encrypt_packed(public_key, np.zeros(3), workers=1)
    with pytest.raises(ValueError, match=r"toy=True"):
        encrypt_each_weight(public_key, np.zeros(3))


@pytest.mark.parametrize("bits", [127, 30, 0])
def test_odd_or_tiny_key_sizes_refused(bits):
    with pytest.raises(ValueError, match=r"even"):
        generate_keypair(bits, toy=True)


def test_key_size_must_be_an_int():
    with pytest.raises(TypeError):
        generate_keypair(2048.0)
    with pytest.raises(TypeError):
        check_key_size("not a key")


@pytest.mark.parametrize("bits", [32, 48, 64])
def test_pollard_rho_breaks_a_toy_key(bits):
    public_key, private_key = generate_keypair(bits, toy=True)
    p = he.pollard_rho(public_key.n)
    assert p in (private_key.p, private_key.q)
    stolen = phe.paillier.PaillierPrivateKey(public_key, p, public_key.n // p)
    assert stolen.decrypt(public_key.encrypt(1234)) == 1234


def test_pollard_rho_gives_up_with_a_clear_error():
    assert he.pollard_rho(91) == 7
    assert he.pollard_rho(2**20) == 2
    with pytest.raises(RuntimeError, match="no factor"):
        he.pollard_rho(generate_keypair()[0].n, max_steps=1000)
    with pytest.raises(ValueError):
        he.pollard_rho(3)
    with pytest.raises(ValueError, match="prime"):
        he.pollard_rho(2**61 - 1)


# ---------------------------------------------------------------- the book's per-weight way


def test_each_weight_encrypted_sum_decrypts_to_the_plain_sum(toy_keys):
    public_key, private_key = toy_keys
    weights = client_weights(3, (4, 1), 2.0)
    encrypted = [encrypt_each_weight(public_key, w) for w in weights]
    assert encrypted[0].shape == (4, 1)
    assert isinstance(encrypted[0][0, 0], phe.EncryptedNumber)
    summed = encrypted[0] + encrypted[1] + encrypted[2]
    assert np.allclose(decrypt_each_weight(private_key, summed), sum(weights), atol=1e-9)


def test_each_weight_refuses_nan_and_non_ciphertexts(toy_keys):
    public_key, private_key = toy_keys
    with pytest.raises(ValueError, match="NaN"):
        encrypt_each_weight(public_key, np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="EncryptedNumber"):
        decrypt_each_weight(private_key, np.array([1.0, 2.0], dtype=object))


# ---------------------------------------------------------------- the packing scheme


def test_scheme_sizes():
    scheme = PackingScheme(value_range=4.0, value_bits=16, max_clients=3)
    assert scheme.max_level == 32767
    assert scheme.step == pytest.approx(4.0 / 32767)
    assert scheme.max_error == pytest.approx(scheme.step / 2)
    # 3 clients x offset levels up to 2 * 32767 = 196,602 < 2**18
    assert scheme.slot_bits == 18
    assert PackingScheme(max_clients=1).slot_bits == 16
    assert PackingScheme(max_clients=4).slot_bits == 18
    assert PackingScheme(max_clients=5).slot_bits == 19

    class FakeKey:  # slots_per_plaintext only looks at n
        n = 2**2047 + 1

    assert scheme.slots_per_plaintext(FakeKey) == 2047 // 18 == 113


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(value_range=0.0),
        dict(value_range=-1.0),
        dict(value_range=float("inf")),
        dict(value_bits=1),
        dict(value_bits=49),
        dict(max_clients=0),
        dict(max_clients=True),
        dict(value_bits=48, max_clients=2**20),  # slots wider than 62 bits
    ],
)
def test_scheme_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        PackingScheme(**kwargs)


def test_quantize_extremes_and_negatives():
    scheme = PackingScheme(value_range=2.0, value_bits=8)
    weights = np.array([-2.0, -1.0, -1e-9, 0.0, 1e-9, 0.3, 1.0, 2.0])
    levels = scheme.quantize(weights)
    assert levels.min() == 0 and levels.max() == 2 * scheme.max_level  # the ends of the range
    assert levels[3] == scheme.max_level  # zero sits at the offset
    back = scheme.dequantize_sum(levels, n_clients=1)
    assert np.all(np.abs(back - weights) <= scheme.max_error + 1e-12)
    assert back[0] == -2.0 and back[-1] == 2.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_refuses_nan_and_infinity(bad):
    with pytest.raises(ValueError, match="NaN or infinity"):
        PackingScheme().quantize(np.array([0.0, bad]))


def test_out_of_range_weight_refused_with_a_way_out(toy_keys):
    public_key, _ = toy_keys
    scheme = PackingScheme(value_range=1.0)
    with pytest.raises(ValueError, match=r"outside \[-1.0, 1.0\].*larger\s+value_range") as error:
        encrypt_packed(public_key, np.array([0.5, -1.5, 0.2]), scheme, workers=1)
    assert "flat index 1" in str(error.value)


# ---------------------------------------------------------------- pack / unpack


@pytest.mark.parametrize("slot_bits, slots", [(18, 14), (8, 1), (16, 7), (61, 4)])
def test_pack_unpack_round_trip_including_extremes(slot_bits, slots):
    rng = np.random.default_rng(slot_bits)
    top = 2**slot_bits - 1
    levels = np.concatenate([[0, top, 0, top], rng.integers(0, top, size=37, endpoint=True)])
    plaintexts = pack_levels(levels, slot_bits, slots)
    assert len(plaintexts) == -(-levels.size // slots)  # ceil: the last one padded
    assert all(0 <= p < 2 ** (slot_bits * slots) for p in plaintexts)
    back = unpack_levels(plaintexts, slot_bits, slots, levels.size)
    assert back.dtype == np.int64
    assert np.array_equal(back, levels)


def test_pack_puts_slot_zero_in_the_lowest_bits():
    assert pack_levels([1, 2, 3], slot_bits=4, slots_per_plaintext=3) == [0x321]
    assert pack_levels([1, 2, 3], slot_bits=4, slots_per_plaintext=2) == [0x21, 0x3]


@pytest.mark.parametrize("levels", [[0, 16], [-1, 3]])
def test_pack_refuses_levels_that_do_not_fit_their_slot(levels):
    with pytest.raises(ValueError, match=r"\[0, 2\*\*4\)"):
        pack_levels(levels, slot_bits=4, slots_per_plaintext=3)


def test_unpack_detects_a_carry_past_the_last_slot():
    with pytest.raises(OverflowError, match="overflowed"):
        unpack_levels([1 << 12], slot_bits=4, slots_per_plaintext=3, n_values=3)


def test_unpack_detects_a_slot_above_what_the_sum_can_reach():
    plaintexts = pack_levels([3, 9, 2], slot_bits=4, slots_per_plaintext=3)
    assert np.array_equal(unpack_levels(plaintexts, 4, 3, 3, max_slot_value=9), [3, 9, 2])
    with pytest.raises(OverflowError, match="slot 1 holds 9"):
        unpack_levels(plaintexts, 4, 3, 3, max_slot_value=8)


def test_unpack_refuses_more_values_than_the_plaintexts_hold():
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_levels([0, 0], slot_bits=4, slots_per_plaintext=3, n_values=7)


# ---------------------------------------------------------------- encrypted packed aggregation


def test_one_client_round_trip_keeps_shapes_and_structure(toy_keys):
    public_key, private_key = toy_keys
    scheme = PackingScheme(value_range=3.0)
    weights = [np.array([[-3.0, 3.0], [0.0, -1e-3]]), np.linspace(-3, 3, 31), np.array(1.25)]
    encrypted = encrypt_packed(public_key, weights, scheme, workers=1)
    assert encrypted.n_values == 4 + 31 + 1 and encrypted.n_clients == 1
    back = decrypt_average(private_key, encrypted)
    assert isinstance(back, list) and [b.shape for b in back] == [(2, 2), (31,), ()]
    for original, decrypted in zip(weights, back):
        assert np.all(np.abs(decrypted - original) <= scheme.max_error)
    single = decrypt_average(private_key, encrypt_packed(public_key, weights[0], scheme, workers=1))
    assert isinstance(single, np.ndarray) and single.shape == (2, 2)


def test_sum_of_clients_equals_the_plain_sum_within_quantization(toy_keys):
    public_key, private_key = toy_keys
    scheme = PackingScheme(value_range=1.5, value_bits=12, max_clients=5)
    weights = client_weights(5, (97, 2), 1.5, seed=1)
    weights[0][0, 0], weights[1][0, 0] = 1.5, -1.5  # both extremes in the same slot
    encrypted = [encrypt_packed(public_key, w, scheme, workers=1) for w in weights]
    total = sum(encrypted)
    assert total.n_clients == 5 and len(total.ciphertexts) == len(encrypted[0].ciphertexts)
    # the integer levels are summed exactly; only the rounding of each weight is lost
    exact = scheme.dequantize_sum(sum(scheme.quantize(w) for w in weights), 5).reshape(97, 2)
    assert np.array_equal(decrypt_sum(private_key, total), exact)
    average = decrypt_average(private_key, total)
    plain_average = np.mean(weights, axis=0)
    assert np.max(np.abs(average - plain_average)) <= scheme.max_error
    # and the bound is not vacuous: the error is of the order of the step
    assert np.max(np.abs(average - plain_average)) > scheme.step / 100


def test_ciphertexts_are_randomized(toy_keys):
    public_key, _ = toy_keys
    weights = np.zeros(10)
    first = encrypt_packed(public_key, weights, workers=1)
    second = encrypt_packed(public_key, weights, workers=1)
    assert first.ciphertexts != second.ciphertexts  # fresh obfuscator r**n each time


def test_too_many_clients_for_the_headroom_is_refused(toy_keys):
    public_key, _ = toy_keys
    scheme = PackingScheme(max_clients=3)
    encrypted = [encrypt_packed(public_key, np.ones(5), scheme, workers=1) for _ in range(4)]
    sum(encrypted[:3])  # three fit
    with pytest.raises(OverflowError, match=r"max_clients=4"):
        sum(encrypted)


def test_a_client_that_bypasses_the_range_check_is_caught_at_decryption(toy_keys):
    public_key, private_key = toy_keys
    scheme = PackingScheme(value_bits=8, max_clients=3)  # slots of 10 bits, levels up to 254
    honest = encrypt_packed(public_key, np.zeros(4), scheme, workers=1)
    # A misbehaving client packs level 500 into slot 2 (honest levels stop at 254). With the
    # honest client's 127 the slot holds 627: more than two clients can reach (508), caught.
    # (A forged level big enough to carry into slot 3 would not be caught by any check on the
    # sum; only a zero-knowledge range proof from each client could stop that.)
    levels = [0, 0, 500, 0]
    forged_plaintext = pack_levels(levels, scheme.slot_bits, scheme.slots_per_plaintext(public_key))
    forged = EncryptedPackedWeights(
        public_key, scheme, honest.shapes, honest.as_list,
        tuple(public_key.raw_encrypt(p) for p in forged_plaintext),
    )
    with pytest.raises(OverflowError, match="slot 2 holds 627"):
        decrypt_sum(private_key, honest + forged)


def test_adding_mismatched_vectors_is_refused(toy_keys, other_toy_keys):
    public_key, private_key = toy_keys
    a = encrypt_packed(public_key, np.zeros((3, 1)), workers=1)
    with pytest.raises(ValueError, match="different shapes"):
        a + encrypt_packed(public_key, np.zeros((4, 1)), workers=1)
    with pytest.raises(ValueError, match="different shapes"):
        a + encrypt_packed(public_key, np.zeros((1, 3)), workers=1)
    with pytest.raises(ValueError, match="different shapes"):
        a + encrypt_packed(public_key, [np.zeros((3, 1))], workers=1)
    with pytest.raises(ValueError, match="different schemes"):
        a + encrypt_packed(public_key, np.zeros((3, 1)), PackingScheme(value_range=8.0), workers=1)
    with pytest.raises(ValueError, match="different public keys"):
        a + encrypt_packed(other_toy_keys[0], np.zeros((3, 1)), workers=1)
    with pytest.raises(TypeError):
        a + np.zeros((3, 1))
    with pytest.raises(ValueError, match="does not belong"):
        decrypt_sum(other_toy_keys[1], a)


def test_empty_weights_and_bad_workers_refused(toy_keys):
    public_key, _ = toy_keys
    with pytest.raises(ValueError, match="nothing to encrypt"):
        encrypt_packed(public_key, np.zeros(0), workers=1)
    with pytest.raises(ValueError, match="nothing to encrypt"):
        encrypt_packed(public_key, [], workers=1)
    with pytest.raises(ValueError, match="workers"):
        encrypt_packed(public_key, np.zeros(3), workers=0)


def test_worker_processes_give_the_same_result(toy_keys):
    public_key, private_key = toy_keys
    weights = client_weights(2, (700,), 4.0, seed=2)  # 50 plaintexts: several chunks
    encrypted = [encrypt_packed(public_key, w, workers=2) for w in weights]
    average = decrypt_average(private_key, encrypted[0] + encrypted[1], workers=2)
    assert np.max(np.abs(average - np.mean(weights, axis=0))) <= PackingScheme().max_error


def test_falls_back_to_this_process_when_no_pool_can_start(toy_keys, monkeypatch):
    public_key, private_key = toy_keys

    class NoProcesses:
        def __init__(self, *args, **kwargs):
            raise OSError("no process pool here")

    monkeypatch.setattr(he, "ProcessPoolExecutor", NoProcesses)
    weights = np.linspace(-1, 1, 200)
    encrypted = encrypt_packed(public_key, weights, workers=2)
    assert np.max(np.abs(decrypt_average(private_key, encrypted, workers=2) - weights)) <= (
        PackingScheme().max_error
    )


def test_progress_is_reported_on_stdout(toy_keys, capsys):
    public_key, private_key = toy_keys
    encrypted = encrypt_packed(public_key, np.zeros(100), workers=1, progress="Bob")
    decrypt_average(private_key, encrypted, workers=1, progress="key holder")
    out, err = capsys.readouterr()
    assert "Bob: encrypting" in out and "8/8" in out
    assert "key holder: decrypting" in out
    assert err == ""  # stderr looks like an error in JupyterLab


def test_progress_without_a_watcher_is_one_final_line_per_job(toy_keys, capsys, monkeypatch):
    # A log, or a notebook executed by nbclient/nbval, stores every redraw: there only the final
    # state is printed, one line per job. Someone watching (PROGRESS = "live") sees it redrawn.
    public_key, private_key = toy_keys
    monkeypatch.setattr(he, "PROGRESS", "final")
    encrypted = encrypt_packed(public_key, np.zeros(100), workers=1, progress="Bob")
    decrypt_average(private_key, encrypted, workers=1, progress="key holder")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and "\r" not in out and err == ""
    assert lines[0].startswith("Bob: encrypting: 100%") and "8/8" in lines[0]
    assert lines[1].startswith("key holder: decrypting: 100%")
    monkeypatch.setattr(he, "PROGRESS", "live")
    encrypt_packed(public_key, np.zeros(100), workers=1, progress="Bob")
    out, err = capsys.readouterr()
    assert out.count("Bob: encrypting") >= 2 and err == ""   # drawn at the start, redrawn at the end
    monkeypatch.setattr(he, "PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="PROGRESS"):
        encrypt_packed(public_key, np.zeros(100), workers=1, progress="Bob")


def test_worker_processes_work_when_started_with_spawn(toy_keys, monkeypatch):
    # "spawn" is how macOS and Windows start processes: a fresh interpreter that must import
    # everything it runs. The pool must really run (no silent fallback to this process).
    public_key, private_key = toy_keys
    monkeypatch.setattr(he, "START_METHOD", "spawn")
    started, futures = [], []

    class RecordingPool(he.ProcessPoolExecutor):
        def __init__(self, *args, mp_context=None, **kwargs):
            started.append(mp_context.get_start_method())
            super().__init__(*args, mp_context=mp_context, **kwargs)

        def submit(self, *args, **kwargs):
            futures.append(super().submit(*args, **kwargs))
            return futures[-1]

    monkeypatch.setattr(he, "ProcessPoolExecutor", RecordingPool)
    weights = np.linspace(-1, 1, 700)  # 50 plaintexts: several chunks
    encrypted = encrypt_packed(public_key, weights, workers=2)
    average = decrypt_average(private_key, encrypted, workers=2)
    assert started == ["spawn", "spawn"]
    assert futures and all(future.exception() is None for future in futures)
    assert np.max(np.abs(average - weights)) <= PackingScheme().max_error


def test_unknown_start_method_refused(monkeypatch):
    monkeypatch.setattr(he, "START_METHOD", "fork")
    with pytest.raises(ValueError, match="START_METHOD"):
        he._process_context()


def test_a_2048_bit_round_on_a_small_vector():
    public_key, private_key = generate_keypair()
    scheme = PackingScheme(value_range=4.0, value_bits=16, max_clients=3)
    weights = client_weights(3, (250, 1), 4.0, seed=3)
    encrypted = [encrypt_packed(public_key, w, scheme) for w in weights]
    assert len(encrypted[0].ciphertexts) == 3  # 250 weights / 113 slots
    assert all(c.bit_length() > 2048 for c in encrypted[0].ciphertexts)  # numbers mod n**2
    average = decrypt_average(private_key, sum(encrypted))
    assert average.shape == (250, 1)
    assert np.max(np.abs(average - np.mean(weights, axis=0))) <= scheme.max_error


def test_paillier_by_hand_as_notebook_06_writes_it_equals_phe():
    # Notebook 06, section 1: Paillier in plain integers with small primes, checked against phe.
    import math

    from phe.paillier import PaillierPrivateKey, PaillierPublicKey

    p, q = 293, 433
    n, n_squared = p * q, (p * q) ** 2
    lam = math.lcm(p - 1, q - 1)
    mu = pow(lam, -1, n)

    def encrypt(m, r):
        return pow(1 + n, m, n_squared) * pow(r, n, n_squared) % n_squared

    def decrypt(c):
        return (pow(c, lam, n_squared) - 1) // n * mu % n

    public = PaillierPublicKey(n)
    private = PaillierPrivateKey(public, p, q)
    for m, r in [(5, 17), (3, 29), (0, 2), (n - 1, 12345)]:
        assert encrypt(m, r) == public.raw_encrypt(m, r_value=r)
        assert decrypt(encrypt(m, r)) == private.raw_decrypt(encrypt(m, r)) == m
    assert decrypt(encrypt(5, 17) * encrypt(3, 29) % n_squared) == 8


def test_progress_is_live_only_where_a_frontend_runs_the_cell():
    """A JupyterLab cell (its execute request allows stdin) redraws the bar; nbclient and nbval, which
    run cells without stdin, get the bar's final line only, so stored notebooks keep one line."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        answers = {}
        for allow_stdin in (False, True):
            lines = []
            client.execute_interactive("from grokfl_helpers import homomorphic; print(homomorphic._live_progress())",
                                       allow_stdin=allow_stdin, timeout=60,
                                       output_hook=lambda msg: lines.append(msg["content"].get("text", "")))
            answers[allow_stdin] = "".join(lines).strip()
        assert answers == {False: "False", True: "True"}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
