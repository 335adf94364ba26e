"""CKKS lattice encryption for federated averaging, through TenSEAL: what production FL uses.

Taught in notebook 06, section 8, beside the Paillier encryption of ``homomorphic``.

CKKS (Cheon, Kim, Kim, Song, 2017) encrypts a whole vector of real numbers in one ciphertext:
with a polynomial degree of 8,192, one ciphertext holds 4,096 numbers ("slots"). Adding two
ciphertexts adds their vectors slot by slot, so the server can sum the clients' encrypted models,
and only the holder of the secret key can decrypt that sum. NVIDIA FLARE's homomorphic
encryption is CKKS through TenSEAL (Benaissa et al., 2021), the library used here; TenSEAL is a
Python wrapper of Microsoft SEAL.

Three differences from Paillier (``homomorphic``) a learner should hold on to:

* **Approximate.** CKKS works on fixed-point numbers with a scale of ``2**scale_bits`` and adds
  a little noise when it encrypts, so a decrypted sum is off by about 1e-8 here (Paillier's
  integer sum is exact; only its quantization to 16 bits loses precision, about 6e-5).
* **Lattices, not factoring.** Its security rests on the Ring-LWE problem. The
  HomomorphicEncryption.org standard (Albrecht et al., 2018) tabulates the largest total
  coefficient modulus that keeps 128-bit security for each polynomial degree
  (``HE_STANDARD_MAX_COEFF_BITS``); :func:`make_context` refuses anything above it. A 2048-bit
  Paillier modulus gives about 112-bit security (NIST SP 800-57).
* **Fast and big.** Encrypting a model is a few number-theoretic transforms, far faster than
  Paillier's modular exponentiations, but a ciphertext is large: about 0.33 MB for 4,096 numbers,
  about 13 MB for the spam model's 159,213 weights, ten times the plain model.

What the key holder can see is the same as for Paillier: its secret key decrypts any one client's
ciphertext as easily as the sum. The key holder must never receive a single client's ciphertext.
(And CKKS decryptions are noisy in a way that depends on the secret key: a key holder that
publishes exact decrypted values can leak its key, Li and Micciancio, Eurocrypt 2021. Rounding
what is published, as FL does when it uses the average, is the usual mitigation.)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from .federated import flatten, unflatten

__all__ = [
    "HE_STANDARD_MAX_COEFF_BITS",
    "make_context",
    "public_context",
    "slots_per_ciphertext",
    "max_abs_value",
    "EncryptedCKKSWeights",
    "encrypt",
    "decrypt_sum",
    "decrypt_average",
]

# HomomorphicEncryption.org security standard (2018), table 1, 128-bit classical security with a
# ternary secret: the largest log2 of the total coefficient modulus for each polynomial degree.
HE_STANDARD_MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def make_context(
    poly_modulus_degree: int = 8192,
    coeff_mod_bit_sizes=(60, 40, 40, 60),
    scale_bits: int = 40,
) -> ts.Context:
    """The key holder's CKKS context: parameters, public key and secret key. Taught in notebook 06, §8.

    The defaults are TenSEAL's tutorial parameters: degree 8,192 (4,096 numbers per ciphertext),
    a 200-bit coefficient modulus (under the 218 bits the HE standard allows for 128-bit
    security at that degree), and a scale of ``2**40`` (about 12 decimal digits after the point;
    the first prime's 60 bits leave 20 bits for the integer part). Parameters weaker than the
    standard's 128-bit table, or that cannot hold the scale, are refused with a ValueError.
    """
    if poly_modulus_degree not in HE_STANDARD_MAX_COEFF_BITS:
        raise ValueError(
            f"poly_modulus_degree must be one of {sorted(HE_STANDARD_MAX_COEFF_BITS)}, got "
            f"{poly_modulus_degree!r}; 8192 is the usual choice for federated averaging"
        )
    sizes = [int(bits) for bits in coeff_mod_bit_sizes]
    if len(sizes) < 2:
        raise ValueError(
            f"coeff_mod_bit_sizes needs at least two primes (one for the data, one special), got {sizes}"
        )
    total, limit = sum(sizes), HE_STANDARD_MAX_COEFF_BITS[poly_modulus_degree]
    if total > limit:
        raise ValueError(
            f"a {total}-bit coefficient modulus with polynomial degree {poly_modulus_degree} is below "
            f"128-bit security: the HomomorphicEncryption.org standard allows at most {limit} bits at "
            f"that degree. Use fewer or smaller primes, or a larger degree "
            f"(e.g. make_context(16384, ...), at {HE_STANDARD_MAX_COEFF_BITS[16384]} bits)"
        )
    if not 20 <= scale_bits < sizes[0]:
        raise ValueError(
            f"scale_bits={scale_bits!r} must be at least 20 (precision) and below the first prime's "
            f"{sizes[0]} bits (room for the integer part of the values)"
        )
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree,
                         coeff_mod_bit_sizes=sizes)
    context.global_scale = 2.0**scale_bits
    return context


def public_context(context: ts.Context) -> ts.Context:
    """What the key holder sends to the clients and the server: the parameters and the public
    key, without the secret key (nor relinearization keys, which adding does not need).

    Taught in notebook 06, §8."""
    return ts.context_from(_public_bytes(context))


def slots_per_ciphertext(context: ts.Context) -> int:
    """How many numbers one CKKS ciphertext holds: half the polynomial degree.

    Taught in notebook 06, §8."""
    return context.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2


def max_abs_value(context: ts.Context, n_clients: int = 1) -> float:
    """The largest |value| each of ``n_clients`` may encrypt so that their sum still decrypts.

    A slot holds ``value * 2**scale_bits`` below the first prime (``2**first_prime_bits``), with a
    sign; so the sum of ``n_clients`` values must stay below ``2**(first_prime_bits - scale_bits - 1)``.

    Taught in notebook 06, §8.
    """
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ValueError(f"n_clients must be a positive int, got {n_clients!r}")
    # the last level of the modulus chain is the first prime alone: what a value must fit in
    first_prime_bits = context.seal_context().data.last_context_data().total_coeff_modulus_bit_count()
    scale_bits = math.log2(context.global_scale)
    return 2.0 ** (first_prime_bits - scale_bits - 1) / n_clients


@dataclass(frozen=True)
class EncryptedCKKSWeights:
    """One client's CKKS-encrypted weights, or the server's sum of several.

    ``vectors`` are TenSEAL ``CKKSVector`` ciphertexts of up to ``slots_per_ciphertext`` numbers
    each; ``key_id`` names the public key they were made with (a hash of it), so that sums of
    ciphertexts under different keys, or decryption with the wrong key, are refused instead of
    giving noise. ``a + b`` adds the ciphertexts slot by slot.

    Taught in notebook 06, §8.
    """

    key_id: str
    shapes: tuple
    as_list: bool
    vectors: tuple = field(repr=False)
    n_clients: int = 1

    @property
    def n_values(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def n_bytes(self) -> int:
        """Bytes to send: the ciphertexts serialized as TenSEAL sends them (compressed)."""
        return sum(len(vector.serialize()) for vector in self.vectors)

    def __add__(self, other: "EncryptedCKKSWeights") -> "EncryptedCKKSWeights":
        if not isinstance(other, EncryptedCKKSWeights):
            return NotImplemented
        if other.key_id != self.key_id:
            raise ValueError("cannot add ciphertexts made with different public keys: every client must "
                             "encrypt with the key holder's one public context")
        if (other.shapes, other.as_list) != (self.shapes, self.as_list):
            raise ValueError(f"cannot add weights of different shapes: {self.shapes} and {other.shapes}")
        summed = tuple(a + b for a, b in zip(self.vectors, other.vectors))
        return EncryptedCKKSWeights(self.key_id, self.shapes, self.as_list, summed,
                                    self.n_clients + other.n_clients)

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:  # lets the built-in sum() start from 0
            return self
        return NotImplemented

    def __repr__(self) -> str:
        return (f"<EncryptedCKKSWeights: {self.n_values:,} weights of {self.n_clients} client(s) "
                f"in {len(self.vectors):,} CKKS ciphertexts>")


def encrypt(context: ts.Context, weights, *, max_clients: int = 1) -> EncryptedCKKSWeights:
    """CKKS-encrypt one client's weights (one array, a list of arrays, or a model). Taught in notebook 06, §8.

    Works with the public context (a client) or the key holder's. ``max_clients``: how many
    clients' weights will be summed; values too large for that sum to fit are refused.
    """
    _check_context(context)
    vector, shapes = flatten(weights)
    vector = np.asarray(vector, dtype=np.float64)
    if vector.size == 0:
        raise ValueError(f"nothing to encrypt: got empty weights (shapes {shapes})")
    if not np.all(np.isfinite(vector)):
        raise ValueError("weights contain NaN or infinity; they cannot be encrypted")
    limit = max_abs_value(context, max_clients)
    if np.abs(vector).max() >= limit:
        raise ValueError(
            f"a weight of {np.abs(vector).max():.4g} is too large: with these parameters the sum of "
            f"{max_clients} client(s) fits only if every |weight| < {limit:.4g}. Scale the weights "
            f"down, or make the context with a smaller scale_bits"
        )
    slots = slots_per_ciphertext(context)
    vectors = tuple(ts.ckks_vector(context, vector[start : start + slots])
                    for start in range(0, vector.size, slots))
    return EncryptedCKKSWeights(_key_id(context), shapes, isinstance(weights, (list, tuple)), vectors)


def decrypt_sum(context: ts.Context, encrypted: EncryptedCKKSWeights):
    """Decrypt the encrypted sum with the key holder's context: the (approximate) float sum.

    Taught in notebook 06, §8."""
    if not isinstance(encrypted, EncryptedCKKSWeights):
        raise TypeError(f"expected EncryptedCKKSWeights, got {type(encrypted).__name__}")
    _check_context(context)
    if not context.has_secret_key():
        raise ValueError("this context has no secret key: only the key holder's context (from "
                         "make_context) can decrypt; the clients' and the server's are public")
    if _key_id(context) != encrypted.key_id:
        raise ValueError("this secret key does not belong to the public key the weights were encrypted with")
    secret_key = context.secret_key()
    flat = np.concatenate([np.asarray(vector.decrypt(secret_key)) for vector in encrypted.vectors])
    summed = unflatten(flat, encrypted.shapes)
    return summed if encrypted.as_list else summed[0]


def decrypt_average(context: ts.Context, encrypted: EncryptedCKKSWeights):
    """The decrypted sum divided by the number of clients in it: federated averaging's result.

    Taught in notebook 06, §8."""
    summed = decrypt_sum(context, encrypted)
    if isinstance(summed, list):
        return [array / encrypted.n_clients for array in summed]
    return summed / encrypted.n_clients


# --------------------------------------------------------------------------------------------


def _check_context(context):
    if not isinstance(context, ts.Context):
        raise TypeError(f"expected a TenSEAL context (from ckks.make_context or ckks.public_context), "
                        f"got {type(context).__name__}")


def _public_bytes(context) -> bytes:
    _check_context(context)
    return context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                             save_relin_keys=False)


def _key_id(context) -> str:
    return hashlib.sha256(_public_bytes(context)).hexdigest()[:16]
