"""Paillier homomorphic encryption for federated averaging: the book's way, done right and fast.

Paillier encryption (python-paillier, ``phe``, as the book uses it) is *additively homomorphic*:
multiplying two ciphertexts gives a ciphertext of the sum of their plaintexts. Federated averaging
only needs a sum (the server divides by the number of clients afterwards), so the server can add
the clients' encrypted models without being able to read any of them.

Chapter 15 of *Grokking Deep Learning* shows the idea with two flaws, fixed here:

* It makes 128-bit keys. A 128-bit modulus is factored in seconds on a laptop, and whoever
  factors it decrypts everything. :func:`generate_keypair` defaults to 2048 bits and refuses less
  unless the caller asks for a toy key by name (``toy=True``), e.g. for a quick classroom demo.
* It decrypts Sue's encrypted model instead of the encrypted sum, so the accuracy it prints after
  its first encrypted round (98.75% in the book's repository notebook, 99.15% in the printed
  chapter) is the accuracy of Sue's model alone. Here only the sum is ever decrypted (:func:`decrypt_average`).

And it is slow: one Paillier ciphertext per weight (:func:`encrypt_each_weight`, kept for the
comparison) costs one ``r ** n mod n**2`` with a 2048-bit ``n`` -- about 9 ms with ``gmpy2``,
about 75 ms without -- so a 159,213-weight model for 3 clients takes over an hour per round.
The fix is *packing*, the idea of BatchCrypt (Zhang et al., USENIX ATC 2020):

1. Quantize each weight ``w`` in ``[-value_range, value_range]`` to an integer level
   ``q = round(w / step)`` in ``[-L, L]``, ``L = 2**(value_bits - 1) - 1``,
   ``step = value_range / L``.
2. Make it non-negative by adding the *offset* ``L``: every slot holds ``q + L`` in ``[0, 2L]``.
   The server sums ``k`` clients, so each slot of the sum holds ``sum(q) + k * L``, and whoever
   decrypts subtracts ``k * L``. We chose this offset over two's complement because with an
   offset every slot stays a non-negative number at every step: a slot never borrows from or
   carries into its neighbour, and the decrypted slot is a plain count we can range-check.
3. Give each slot ``value_bits + headroom`` bits, the headroom being enough for the sum of
   ``max_clients`` slots (``k * 2L`` must fit), so summing never carries into the next slot.
4. Concatenate as many slots as fit below ``n`` (113 slots of 18 bits in a 2048-bit key for
   16-bit values and 3 clients) into one integer: one Paillier plaintext for 113 weights.

A ciphertext then costs the same ``r ** n mod n**2`` but carries 113 weights instead of one,
and the ``workers`` of :func:`encrypt_packed` spread the ciphertexts over the CPU cores.

Error bound: rounding moves each weight by at most ``step / 2``; the average of the rounded
weights is therefore within ``step / 2`` of the true average (:attr:`PackingScheme.max_error`),
give or take float64 rounding (about 1e-16 of the weights' size). The integer levels themselves
are summed exactly.

Overflow is never silent for honest clients: a weight outside ``[-value_range, value_range]``
(or NaN) is refused before it is packed, adding more than ``max_clients`` encrypted vectors is
refused before it can carry, and every decrypted slot is checked against the largest value the
sum can reach. (The server cannot look inside a ciphertext, so a *malicious* client could pack a
slot so large that it carries into its neighbour, which no check on the sum can see; stopping
that takes a zero-knowledge range proof from every client, beyond this course.)

On obfuscation: a Paillier ciphertext is ``(1 + n*m) * r**n mod n**2`` with a fresh random
``r``; the ``r**n`` factor (the *obfuscator*) is what makes two encryptions of the same ``m``
look unrelated, and it is the expensive part. We encrypt with ``public_key.raw_encrypt(m)``,
which draws ``r`` from ``random.SystemRandom`` (the OS's cryptographic randomness) and
multiplies it in, so every packed ciphertext leaves a client already obfuscated. We keep them as
plain integers rather than wrapping them in ``phe.EncryptedNumber``: that class does not know
they are obfuscated and would obfuscate them again (a second ``r**n``) whenever one is sent.
The server's sum is a product of obfuscated ciphertexts, so it is obfuscated too.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import phe
from phe.paillier import PaillierPrivateKey, PaillierPublicKey
from tqdm import tqdm

from .federated import flatten, unflatten

try:  # phe uses gmpy2 for its big-integer arithmetic when it is installed: about 8x faster
    import gmpy2
except ImportError:  # pragma: no cover - everything still works, only slower
    gmpy2 = None

__all__ = [
    "MIN_SECURE_KEY_BITS",
    "generate_keypair",
    "check_key_size",
    "pollard_rho",
    "encrypt_each_weight",
    "decrypt_each_weight",
    "PackingScheme",
    "pack_levels",
    "unpack_levels",
    "EncryptedPackedWeights",
    "encrypt_packed",
    "decrypt_sum",
    "decrypt_average",
]

# NIST SP 800-57 Part 1 (rev. 5), table 2: a 2048-bit factoring modulus gives about 112 bits of
# security, the smallest it accepts for protecting data today. Paillier's security rests on
# factoring n, so the same sizes apply. (phe's own default is 3072 bits, about 128-bit security.)
MIN_SECURE_KEY_BITS = 2048

# Moduli of the keys made with generate_keypair(toy=True): the only small keys we encrypt with.
_TOY_MODULI: set[int] = set()


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def generate_keypair(
    bits: int = MIN_SECURE_KEY_BITS, *, toy: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A new Paillier key pair with a ``bits``-bit modulus: ``(public_key, private_key)``.

    Keys below 2048 bits are refused, because the book's 128-bit keys (and anything up to a few
    hundred bits) can be factored on a laptop in seconds to minutes, and factoring ``n`` is
    all it takes to decrypt every ciphertext. For a quick classroom demo pass ``toy=True``: the
    key is then allowed, and the encrypt functions of this module accept it too (they refuse
    small keys made any other way).

    Taught in notebook 06, section 3.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int (the key size in bits), got {bits!r}")
    bits = int(bits)
    if bits < 32 or bits % 2:
        raise ValueError(
            f"bits={bits}: a Paillier modulus is the product of two primes of bits/2 bits each, "
            f"so bits must be even, and at least 32 even for a toy key."
        )
    if bits < MIN_SECURE_KEY_BITS and not toy:
        raise ValueError(
            f"a {bits}-bit Paillier key is not safe: whoever factors n decrypts everything, and "
            f"the book's 128-bit keys are factored in seconds on a laptop. Use at least "
            f"{MIN_SECURE_KEY_BITS} bits (about 112-bit security, NIST SP 800-57), the default. "
            f"For a demo that must be fast and need not be secret, ask for a toy key explicitly: "
            f"generate_keypair({bits}, toy=True)."
        )
    public_key, private_key = phe.generate_paillier_keypair(n_length=bits)
    if bits < MIN_SECURE_KEY_BITS:
        _TOY_MODULI.add(public_key.n)
    return public_key, private_key


def check_key_size(public_key: PaillierPublicKey) -> None:
    """Raise ``ValueError`` unless ``public_key`` has at least 2048 bits or is a deliberate toy key.

    The encrypt functions call this, so a small key made directly with
    ``phe.generate_paillier_keypair(n_length=128)`` (as the book does) is refused too.

    Taught in notebook 06, section 3.
    """
    if not isinstance(public_key, PaillierPublicKey):
        raise TypeError(f"expected a phe PaillierPublicKey, got {type(public_key).__name__}")
    bits = public_key.n.bit_length()
    if bits < MIN_SECURE_KEY_BITS and public_key.n not in _TOY_MODULI:
        raise ValueError(
            f"this public key has only {bits} bits; refusing to encrypt with it (it can be "
            f"factored, and then every ciphertext decrypted). Make keys with generate_keypair(): "
            f"{MIN_SECURE_KEY_BITS} bits by default, or generate_keypair({bits}, toy=True) if a "
            f"small key is really what you want for a demo."
        )


def pollard_rho(n: int, max_steps: int = 10**8) -> int:
    """A factor of ``n`` (1 < factor < n) by Pollard's rho method, Brent's variant.

    This is how toy keys are broken: for a Paillier modulus ``n = p * q`` the factor is ``p`` or
    ``q``.

    The sequence ``x -> x*x + c mod n`` repeats modulo the unknown factor ``p`` after about
    ``sqrt(p)`` steps (the birthday paradox), long before it repeats modulo ``n``; then
    ``gcd(x - y, n)`` reveals ``p``. So a ``b``-bit key falls in about ``2**(b/4)`` steps: a
    64-bit key in a fraction of a second, a 2048-bit one never. (Real attacks on 128-bit keys use
    the quadratic sieve, which factors them in about a second.) Knowing ``p`` and ``q = n // p``
    is knowing the private key: ``PaillierPrivateKey(public_key, p, q)``.

    Raises ``RuntimeError`` if no factor turns up within ``max_steps`` steps per attempt.

    Taught in notebook 06, section 3.
    """
    n = int(n)
    if n < 4:
        raise ValueError(f"n must be a composite number >= 4, got {n}")
    if n % 2 == 0:
        return 2
    if gmpy2 is not None and gmpy2.is_prime(n):
        raise ValueError(f"{n} is prime: it has no factor to find")
    big_n = _mpz(n)

    def step(x, y, power, cycle, c):
        if cycle == power:  # Brent: y is x's value at the last power of two
            y, power, cycle = x, 2 * power, 0
        return (x * x + c) % big_n, y, power, cycle + 1

    for c in range(1, 10):  # a new constant if a cycle closes modulo p and n at once
        state, steps = (_mpz(2), _mpz(2), 1, 0), 0
        while steps < max_steps:
            checkpoint, product = state, _mpz(1)
            for _ in range(128):  # one gcd per 128 steps, not per step
                state = step(*state, c)
                product = product * abs(state[0] - state[1]) % big_n
            steps += 128
            factor = math.gcd(int(product), n)
            if factor == n:  # several steps at once overshot: replay them one by one
                state = checkpoint
                for _ in range(128):
                    state = step(*state, c)
                    factor = math.gcd(int(abs(state[0] - state[1])), n)
                    if factor > 1:
                        break
            if 1 < factor < n:
                return min(factor, n // factor)
            if factor == n:
                break  # the cycle closed modulo every factor at once: try the next constant
        else:
            raise RuntimeError(
                f"no factor of this {n.bit_length()}-bit number in {max_steps:,} steps: "
                f"Pollard's rho needs about 2**{n.bit_length() // 4} steps for it"
            )
    raise RuntimeError(f"Pollard's rho found no factor of {n} (is it prime?)")


def _mpz(value: int):
    """gmpy2's fast integer if it is installed, Python's int otherwise."""
    return int(value) if gmpy2 is None else gmpy2.mpz(value)


# --------------------------------------------------------------------------------------------
# The book's way: one ciphertext per weight
# --------------------------------------------------------------------------------------------


def encrypt_each_weight(public_key: PaillierPublicKey, weights) -> np.ndarray:
    """Encrypt every weight separately with ``public_key.encrypt(float)``, as the book does.

    Returns an object array of ``phe.EncryptedNumber`` with the shape of ``weights``; numpy adds
    two such arrays element by element, so the server's sum is just ``bob + alice + sue``.
    Each weight costs a full Paillier encryption (about 10 ms at 2048 bits with gmpy2): kept
    here to measure what packing saves, not for whole models.

    Taught in notebook 06, section 4.
    """
    check_key_size(public_key)
    weights = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights contain NaN or infinity; they cannot be encrypted")
    encrypted = np.empty(weights.shape, dtype=object)
    for index, weight in np.ndenumerate(weights):
        encrypted[index] = public_key.encrypt(float(weight))
    return encrypted


def decrypt_each_weight(private_key: PaillierPrivateKey, encrypted: np.ndarray) -> np.ndarray:
    """Decrypt an array made by :func:`encrypt_each_weight` (or a sum of them) into floats.

    Taught in notebook 06, section 4.
    """
    encrypted = np.asarray(encrypted, dtype=object)
    decrypted = np.empty(encrypted.shape, dtype=np.float64)
    for index, number in np.ndenumerate(encrypted):
        if not isinstance(number, phe.EncryptedNumber):
            raise TypeError(
                f"element {index} is a {type(number).__name__}, not a phe.EncryptedNumber"
            )
        decrypted[index] = private_key.decrypt(number)
    return decrypted


# --------------------------------------------------------------------------------------------
# Packing: many fixed-point weights in one plaintext
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackingScheme:
    """How weights become slots of a packed plaintext; every client and the decryptor share it.

    ``value_range``: the largest absolute weight a client may send (larger ones are refused).
    ``value_bits``: bits per quantized weight; ``2**value_bits - 1`` levels span the range.
    ``max_clients``: how many clients' vectors may be summed; sets the headroom bits per slot.

    Taught in notebook 06, section 5.
    """

    value_range: float = 4.0
    value_bits: int = 16
    max_clients: int = 3

    def __post_init__(self):
        if not (np.isfinite(self.value_range) and self.value_range > 0):
            raise ValueError(f"value_range must be a positive number, got {self.value_range!r}")
        if not isinstance(self.value_bits, (int, np.integer)) or not 2 <= self.value_bits <= 48:
            raise ValueError(
                f"value_bits must be an int from 2 to 48 (16 is BatchCrypt's choice), "
                f"got {self.value_bits!r}"
            )
        if (
            isinstance(self.max_clients, bool)
            or not isinstance(self.max_clients, (int, np.integer))
            or self.max_clients < 1
        ):
            raise ValueError(f"max_clients must be a positive int, got {self.max_clients!r}")
        if self.slot_bits > 62:
            raise ValueError(
                f"value_bits={self.value_bits} with headroom for {self.max_clients} clients needs "
                f"{self.slot_bits}-bit slots; at most 62 are supported. Use fewer value bits."
            )

    @property
    def max_level(self) -> int:
        """``L``: a weight of ``+value_range`` becomes level ``+L``, ``-value_range`` level ``-L``."""
        return 2 ** (self.value_bits - 1) - 1

    @property
    def step(self) -> float:
        """The quantization step: the weight that one level stands for."""
        return self.value_range / self.max_level

    @property
    def max_error(self) -> float:
        """Bound on |decrypted average - true average| per weight: half a step (rounding)."""
        return self.step / 2

    @property
    def slot_bits(self) -> int:
        """Bits per slot: enough for ``max_clients`` offset levels of at most ``2L`` each."""
        return (self.max_clients * 2 * self.max_level).bit_length()

    def slots_per_plaintext(self, public_key: PaillierPublicKey) -> int:
        """How many slots fit in one plaintext: the sum of all slots must stay below ``n``."""
        usable_bits = public_key.n.bit_length() - 1  # 2**usable_bits < n
        slots = usable_bits // self.slot_bits
        if slots < 1:
            raise ValueError(
                f"a {public_key.n.bit_length()}-bit key has no room for one {self.slot_bits}-bit "
                f"slot; use a bigger key or fewer value_bits"
            )
        return slots

    def quantize(self, weights) -> np.ndarray:
        """Float weights -> offset levels ``q + L`` in ``[0, 2L]`` (int64). Refuses out-of-range."""
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if not np.all(np.isfinite(weights)):
            raise ValueError("weights contain NaN or infinity; they cannot be quantized")
        outside = np.abs(weights) > self.value_range
        if outside.any():
            first = int(np.argmax(outside))
            raise ValueError(
                f"{int(outside.sum())} weight(s) lie outside [-{self.value_range}, "
                f"{self.value_range}] (the first at flat index {first}: {float(weights[first])!r}); "
                f"packing them would overflow their slot. Make a PackingScheme with a larger "
                f"value_range (max |weight| here is {np.abs(weights).max():.4g}; a larger range "
                f"costs precision: step = value_range / {self.max_level}), or clip the weights."
            )
        levels = np.rint(weights / self.step).astype(np.int64)
        # Rounding 'value_range / step' can land one level past L in floating point: clamp it.
        np.clip(levels, -self.max_level, self.max_level, out=levels)
        return levels + self.max_level

    def dequantize_sum(self, summed_levels: np.ndarray, n_clients: int) -> np.ndarray:
        """Summed offset levels of ``n_clients`` clients -> the float sum of their weights."""
        signed = np.asarray(summed_levels, dtype=np.int64) - n_clients * self.max_level
        return signed.astype(np.float64) * self.step


def pack_levels(levels, slot_bits: int, slots_per_plaintext: int) -> list[int]:
    """Non-negative integer levels -> Python ints of ``slots_per_plaintext`` slots each.

    Slot ``i`` of a plaintext occupies bits ``[i * slot_bits, (i+1) * slot_bits)``; the last
    plaintext is padded with zero slots. Each level must fit in its slot: a level that does not
    would spill into its neighbour, so it raises ``ValueError``.

    Taught in notebook 06, section 5.
    """
    levels = np.asarray(levels).ravel()
    if levels.size and (levels.min() < 0 or int(levels.max()) >= 2**slot_bits):
        raise ValueError(
            f"levels must lie in [0, 2**{slot_bits}) to fit a {slot_bits}-bit slot; got "
            f"[{levels.min()}, {levels.max()}]"
        )
    values = levels.tolist()  # Python ints: arbitrary precision, no int64 wrap-around
    plaintexts = []
    for start in range(0, len(values), slots_per_plaintext):
        plaintext = 0
        for level in reversed(values[start : start + slots_per_plaintext]):
            plaintext = (plaintext << slot_bits) | level
        plaintexts.append(plaintext)
    return plaintexts


def unpack_levels(
    plaintexts: list[int], slot_bits: int, slots_per_plaintext: int, n_values: int,
    max_slot_value: int | None = None,
) -> np.ndarray:
    """The inverse of :func:`pack_levels`: the first ``n_values`` slots, as an int64 array.

    With ``max_slot_value`` every slot is checked against it, and a plaintext with bits above
    its last slot is refused: either means some slot overflowed, and the values are corrupt.

    Taught in notebook 06, section 5.
    """
    if n_values > len(plaintexts) * slots_per_plaintext:
        raise ValueError(
            f"{len(plaintexts)} plaintexts of {slots_per_plaintext} slots cannot hold "
            f"{n_values} values"
        )
    mask = (1 << slot_bits) - 1
    levels = []
    for index, plaintext in enumerate(plaintexts):
        if plaintext < 0 or plaintext.bit_length() > slots_per_plaintext * slot_bits:
            raise OverflowError(
                f"plaintext {index} has {plaintext.bit_length()} bits, more than its "
                f"{slots_per_plaintext} slots of {slot_bits} bits: a slot overflowed"
            )
        for _ in range(slots_per_plaintext):
            levels.append(plaintext & mask)
            plaintext >>= slot_bits
    levels = np.array(levels[:n_values], dtype=np.int64)
    if max_slot_value is not None and levels.size and levels.max() > max_slot_value:
        first = int(np.argmax(levels > max_slot_value))
        raise OverflowError(
            f"slot {first} holds {levels[first]}, more than the {max_slot_value} the sum can "
            f"reach: a slot overflowed (a client sent out-of-range values, or more vectors were "
            f"summed than the scheme has headroom for). The result would be corrupt."
        )
    return levels


# --------------------------------------------------------------------------------------------
# Encrypting, adding and decrypting packed weights
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedPackedWeights:
    """The packed, encrypted weights of one client, or the server's sum of several.

    ``ciphertexts`` are Paillier ciphertexts as Python ints (see the module docstring on why not
    ``EncryptedNumber``); ``n_clients`` counts how many clients' weights are summed in them.
    ``a + b`` multiplies the ciphertexts pairwise modulo ``n**2``: the encrypted sum.

    Taught in notebook 06, section 7.
    """

    public_key: PaillierPublicKey
    scheme: PackingScheme
    shapes: tuple  # the shape of each array packed, in order
    as_list: bool  # were the weights a list of arrays (or one array)? decrypting restores it
    ciphertexts: tuple
    n_clients: int = 1

    @property
    def n_values(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def n_bytes(self) -> int:
        """Bytes to send: each ciphertext is a number below ``n**2``."""
        return len(self.ciphertexts) * ((self.public_key.nsquare.bit_length() + 7) // 8)

    def __add__(self, other: "EncryptedPackedWeights") -> "EncryptedPackedWeights":
        if not isinstance(other, EncryptedPackedWeights):
            return NotImplemented
        if other.public_key != self.public_key:
            raise ValueError("cannot add ciphertexts made with different public keys")
        if other.scheme != self.scheme:
            raise ValueError(
                f"cannot add weights packed with different schemes: {self.scheme} and "
                f"{other.scheme}; every client must use the same PackingScheme"
            )
        if (other.shapes, other.as_list) != (self.shapes, self.as_list):
            raise ValueError(
                f"cannot add weights of different shapes: {self.shapes} and {other.shapes}"
            )
        n_clients = self.n_clients + other.n_clients
        if n_clients > self.scheme.max_clients:
            raise OverflowError(
                f"summing {n_clients} clients, but the slots have headroom for "
                f"{self.scheme.max_clients}: the slots could carry into each other and corrupt "
                f"the sum. Make the PackingScheme with max_clients={n_clients} or more "
                f"({self._slot_growth(n_clients)})."
            )
        nsquare = self.public_key.nsquare
        summed = tuple(a * b % nsquare for a, b in zip(self.ciphertexts, other.ciphertexts))
        return EncryptedPackedWeights(
            self.public_key, self.scheme, self.shapes, self.as_list, summed, n_clients
        )

    def __radd__(self, other):
        # lets the built-in sum() start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def __repr__(self) -> str:
        return (
            f"<EncryptedPackedWeights: {self.n_values:,} weights of {self.n_clients} client(s) "
            f"in {len(self.ciphertexts):,} ciphertexts, {self.n_bytes:,} bytes>"
        )

    def _slot_growth(self, n_clients: int) -> str:
        old_bits = self.scheme.slot_bits
        new_bits = PackingScheme(self.scheme.value_range, self.scheme.value_bits, n_clients).slot_bits
        if new_bits == old_bits:
            return f"its slots stay {old_bits} bits wide"
        return f"slots of {new_bits} bits instead of {old_bits}"


def encrypt_packed(
    public_key: PaillierPublicKey,
    weights,
    scheme: PackingScheme = PackingScheme(),
    *,
    workers: int | None = None,
    progress: str | None = None,
) -> EncryptedPackedWeights:
    """Quantize, pack and Paillier-encrypt one client's weights.

    ``weights`` is one array or a list of arrays (e.g. a model's parameters); decrypting gives
    back the same structure. ``workers`` processes share the encryption (default: one per CPU
    core; 1 = in this process). ``progress``, e.g. ``"Bob"``, shows a tqdm progress bar on stdout:
    redrawn while someone watches, one final line in a log or an executed notebook (``PROGRESS``).
    Taught in notebook 06, section 7.
    """
    check_key_size(public_key)
    flat, shapes, as_list = _flat_weights(weights)
    levels = scheme.quantize(flat)
    slots = scheme.slots_per_plaintext(public_key)
    plaintexts = pack_levels(levels, scheme.slot_bits, slots)
    ciphertexts = _map_in_chunks(
        _encrypt_chunk, (public_key.n,), plaintexts, workers, progress, "encrypting"
    )
    return EncryptedPackedWeights(public_key, scheme, shapes, as_list, tuple(ciphertexts))


def decrypt_sum(
    private_key: PaillierPrivateKey,
    encrypted: EncryptedPackedWeights,
    *,
    workers: int | None = None,
    progress: str | None = None,
):
    """Decrypt, unpack and dequantize the encrypted sum: the float sum of the clients' weights.

    Raises ``OverflowError`` if a slot holds more than ``n_clients`` weights can sum to.

    Taught in notebook 06, section 7.
    """
    if not isinstance(encrypted, EncryptedPackedWeights):
        raise TypeError(f"expected EncryptedPackedWeights, got {type(encrypted).__name__}")
    if private_key.public_key != encrypted.public_key:
        raise ValueError("this private key does not belong to the key the weights were encrypted with")
    scheme = encrypted.scheme
    p, q = private_key.p, private_key.q
    plaintexts = _map_in_chunks(
        _decrypt_chunk, (p, q), list(encrypted.ciphertexts), workers, progress, "decrypting"
    )
    levels = unpack_levels(
        plaintexts,
        scheme.slot_bits,
        scheme.slots_per_plaintext(encrypted.public_key),
        encrypted.n_values,
        max_slot_value=encrypted.n_clients * 2 * scheme.max_level,
    )
    summed = unflatten(scheme.dequantize_sum(levels, encrypted.n_clients), encrypted.shapes)
    return summed if encrypted.as_list else summed[0]


def decrypt_average(
    private_key: PaillierPrivateKey,
    encrypted: EncryptedPackedWeights,
    *,
    workers: int | None = None,
    progress: str | None = None,
):
    """The decrypted sum divided by the number of clients in it: federated averaging's result.

    Within ``encrypted.scheme.max_error`` of the plain average of the clients' weights.

    Taught in notebook 06, section 7.
    """
    summed = decrypt_sum(private_key, encrypted, workers=workers, progress=progress)
    if isinstance(summed, list):
        return [array / encrypted.n_clients for array in summed]
    return summed / encrypted.n_clients


def _flat_weights(weights):
    """One array or a list of arrays -> (one flat float64 vector, their shapes, was it a list)."""
    if isinstance(weights, (list, tuple)) and len(weights) == 0:
        raise ValueError("nothing to encrypt: got an empty list of weights")
    vector, shapes = flatten(weights)
    if any(math.prod(shape) == 0 for shape in shapes):
        raise ValueError(f"nothing to encrypt: got empty weights (shapes {shapes})")
    return vector.astype(np.float64), shapes, isinstance(weights, (list, tuple))


# --------------------------------------------------------------------------------------------
# Spreading the work over CPU cores
# --------------------------------------------------------------------------------------------


def _encrypt_chunk(n: int, plaintexts: list[int]) -> list[int]:
    """Worker: encrypt with a fresh cryptographically random obfuscator ``r**n`` each."""
    public_key = PaillierPublicKey(n)
    return [public_key.raw_encrypt(plaintext) for plaintext in plaintexts]


def _decrypt_chunk(p: int, q: int, ciphertexts: list[int]) -> list[int]:
    """Worker: decrypt (with the Chinese-remainder speed-up phe uses when it knows p and q)."""
    private_key = PaillierPrivateKey(PaillierPublicKey(p * q), p, q)
    return [private_key.raw_decrypt(ciphertext) for ciphertext in ciphertexts]


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# Below this many ciphertexts (about 0.2 s of work at 2048 bits) worker processes are not worth it.
_MIN_ITEMS_FOR_PROCESSES = 16


# How worker processes start: None picks "forkserver" where the platform has it (Linux, macOS)
# and "spawn" elsewhere (Windows). Set it to "spawn" to run as on Windows or on macOS's default.
START_METHOD: str | None = None


def _process_context():
    """How to start worker processes: the same from a script, from pytest and from Jupyter.

    Not "fork": forking a Jupyter kernel copies its running threads' locks (Python 3.12+ warns
    about it), and macOS and Windows do not fork. "forkserver" starts one clean server process
    that imports this module once and forks each worker from it, so workers start in a fraction
    of a second; "spawn" (a fresh interpreter per worker, about a second each) works everywhere.
    Everything a worker runs is a module-level function of this module, with arguments that are
    plain integers, so both start methods can send it to a worker.
    """
    method = START_METHOD
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"START_METHOD must be None, 'forkserver' or 'spawn', got {method!r}")
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    return context


def _map_in_chunks(function, fixed_args, items, workers, label, verb):
    """``function(*fixed_args, chunk)`` over chunks of ``items``, in worker processes if useful.

    Small jobs stay in this process (starting workers costs more than they would save). If the
    pool cannot start or breaks, the remaining chunks run here too: slower, same result.
    """
    if workers is None:
        workers = _available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int (or None for one per core), got {workers!r}")
    chunk_size = max(1, min(32, math.ceil(len(items) / (4 * workers))))
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    progress = _progress_bar(label, verb, len(items)) if label else None
    results: list = [None] * len(chunks)
    if workers > 1 and len(chunks) > 1 and len(items) >= _MIN_ITEMS_FOR_PROCESSES:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=_process_context())
            try:
                futures = [pool.submit(function, *fixed_args, chunk) for chunk in chunks]
                for index, future in enumerate(futures):
                    results[index] = future.result()
                    if progress is not None:
                        progress.update(len(chunks[index]))
            finally:  # also on an interrupt (Ctrl-C, Jupyter's stop button): drop what is queued
                pool.shutdown(wait=True, cancel_futures=True)
        except (OSError, BrokenProcessPool, NotImplementedError):
            pass  # no usable process pool here: finish below, in this process
    for index, chunk in enumerate(chunks):
        if results[index] is None:
            results[index] = function(*fixed_args, chunk)
            if progress is not None:
                progress.update(len(chunk))
    if progress is not None:
        progress.close()
    return [item for chunk_result in results for item in chunk_result]


# How progress bars are drawn: None decides by where the output goes (see _live_progress),
# "live" redraws the bar as the job runs, "final" prints one line, the bar's final state, at the end.
PROGRESS: str | None = None


def _live_progress() -> bool:
    """Is someone watching? A terminal, or a Jupyter frontend that runs the cell (and would accept
    ``input()``), is; a log file, a pipe, or a notebook executed by nbclient/nbval, which run cells
    without stdin, is not: there a redrawn bar would only store every intermediate state."""
    method = PROGRESS
    if method is not None:
        if method not in ("live", "final"):
            raise ValueError(f"homomorphic.PROGRESS must be None, 'live' or 'final', got {method!r}")
        return method == "live"
    try:
        if sys.stdout.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return False
    request = kernel.get_parent("shell") or {}  # the execute request of the running cell (ipykernel >= 6)
    return bool(request.get("content", {}).get("allow_stdin", False))


class _FinalStateBar(tqdm):
    """A tqdm bar that draws nothing while it runs and prints its final state, one line, on close."""

    def close(self):
        if self.disable:
            return
        line = str(self)
        super().close()
        print(line, file=sys.stdout, flush=True)


def _progress_bar(label: str, verb: str, total: int):
    """One progress bar per job, drawn by tqdm on stdout (as ``data``'s download bar is).

    stdout, not tqdm's default stderr: in JupyterLab text on stderr looks like an error, and the
    course's browser test counts it as one. Watched live, it is redrawn at most once a second; in a
    log or a notebook executed without a frontend, only its final line is printed (``PROGRESS``).
    """
    options = dict(total=total, desc=f"{label}: {verb}", unit="ciphertext", ascii=True, ncols=90)
    if _live_progress():
        return tqdm(file=sys.stdout, mininterval=1.0, miniters=max(1, total // 10), **options)
    return _FinalStateBar(file=io.StringIO(), **options)
