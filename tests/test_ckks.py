"""Tests for grokfl_helpers.ckks: CKKS (TenSEAL) encryption of model weights, summed by a server."""

import numpy as np
import pytest

from grokfl_helpers import ckks


@pytest.fixture(scope="module")
def key_holder():
    return ckks.make_context()


@pytest.fixture(scope="module")
def public(key_holder):
    return ckks.public_context(key_holder)


def test_default_parameters_are_128_bit_under_the_he_standard(key_holder):
    assert ckks.slots_per_ciphertext(key_holder) == 4096
    assert sum((60, 40, 40, 60)) <= ckks.HE_STANDARD_MAX_COEFF_BITS[8192]


def test_round_trip_keeps_shapes_and_structure(key_holder, public):
    rng = np.random.default_rng(0)
    weights = [rng.uniform(-2, 2, size=(5000, 1)), rng.uniform(-2, 2, size=3)]   # 5,003 numbers
    encrypted = ckks.encrypt(public, weights)
    assert len(encrypted.vectors) == 2               # 4,096 numbers per ciphertext
    decrypted = ckks.decrypt_sum(key_holder, encrypted)
    assert isinstance(decrypted, list) and [d.shape for d in decrypted] == [(5000, 1), (3,)]
    assert max(np.abs(d - w).max() for d, w in zip(decrypted, weights)) < 1e-6
    single = ckks.decrypt_sum(key_holder, ckks.encrypt(public, weights[1]))
    assert isinstance(single, np.ndarray) and single.shape == (3,)


def test_encrypted_sum_is_the_sum_within_the_error_bound(key_holder, public):
    rng = np.random.default_rng(1)
    models = [rng.uniform(-4, 4, size=9000) for _ in range(3)]
    total = sum(ckks.encrypt(public, m, max_clients=3) for m in models)   # the server, public key only
    assert total.n_clients == 3
    assert np.abs(ckks.decrypt_sum(key_holder, total) - sum(models)).max() < 1e-6
    assert np.abs(ckks.decrypt_average(key_holder, total) - np.mean(models, axis=0)).max() < 1e-6


def test_ciphertexts_are_randomized_and_sized(public):
    a, b = ckks.encrypt(public, np.ones(10)), ckks.encrypt(public, np.ones(10))
    assert a.vectors[0].serialize() != b.vectors[0].serialize()
    assert 100_000 < a.n_bytes < 1_000_000          # one ciphertext of degree 8192: about 0.33 MB


def test_public_context_cannot_decrypt(key_holder, public):
    assert key_holder.has_secret_key() and not public.has_secret_key()
    with pytest.raises(ValueError, match="no secret key"):
        ckks.decrypt_sum(public, ckks.encrypt(public, np.ones(4)))


def test_wrong_key_or_mismatched_vectors_refused(key_holder, public):
    other = ckks.make_context()
    mine, theirs = ckks.encrypt(public, np.ones(4)), ckks.encrypt(other, np.ones(4))
    with pytest.raises(ValueError, match="different public keys"):
        mine + theirs
    with pytest.raises(ValueError, match="does not belong"):
        ckks.decrypt_sum(other, mine)
    with pytest.raises(ValueError, match="different shapes"):
        mine + ckks.encrypt(public, np.ones(5))
    with pytest.raises(TypeError, match="EncryptedCKKSWeights"):
        ckks.decrypt_sum(key_holder, [1.0, 2.0])
    with pytest.raises(TypeError, match="TenSEAL context"):
        ckks.encrypt("a key", np.ones(4))


def test_bad_weights_refused(public):
    with pytest.raises(ValueError, match="NaN"):
        ckks.encrypt(public, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        ckks.encrypt(public, np.zeros(0))
    too_big = ckks.max_abs_value(public, 3)
    ckks.encrypt(public, np.array([0.99 * too_big]), max_clients=3)
    with pytest.raises(ValueError, match="too large"):
        ckks.encrypt(public, np.array([too_big]), max_clients=3)
    with pytest.raises(ValueError, match="positive int"):
        ckks.max_abs_value(public, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 40, 40, 60)), "128-bit security"),
        (dict(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60, 60, 60)), "128-bit security"),
        (dict(poly_modulus_degree=1000), "poly_modulus_degree"),
        (dict(coeff_mod_bit_sizes=(60,)), "at least two primes"),
        (dict(scale_bits=60), "scale_bits"),
    ],
)
def test_parameters_below_128_bit_security_or_unusable_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ckks.make_context(**kwargs)
