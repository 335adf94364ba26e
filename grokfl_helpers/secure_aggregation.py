"""Secure aggregation: the server learns the sum of the clients' updates and nothing else.

A small, readable version of Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017), for notebook 05.

1. Fixed-point encoding. Masks must cancel *exactly*, so updates leave floating point: each
   float x becomes the integer round(x * 2**FRACTIONAL_BITS) in the ring of integers mod 2**64
   (numpy uint64, whose wrap-around addition is exactly that ring's addition).
2. Key agreement. Each pair of clients (u, v) runs Diffie-Hellman (RFC 3526 group 14, Python
   integers) and hashes the shared secret into a seed that only u and v know.
3. Masks. A seed is stretched into a vector of uniformly random ring elements by SHAKE-256, a
   cryptographic extendable-output hash. For the pair u < v, u adds the mask and v subtracts
   it, so in the server's sum every pairwise mask meets its negative. Each client also adds a
   self-mask from a seed of its own (why: see `Client.reveal_shares`).
4. Dropouts. Each client Shamir-shares (t of n) its DH secret key and its self-mask seed among
   all clients. If a client's masked update never arrives, t survivors hand the server shares of
   its secret key, and the server recomputes the pairwise masks the others added for it. For
   every client whose update did arrive, they hand over shares of its self-mask seed instead.

Simplified on purpose: a real system encrypts the shares it routes through the server, signs
messages, uses separate keys for that, and checks that every client saw the same survivors.

Threat model (notebook 05): this version protects each update against an honest-but-curious
server, even one working with fewer than `threshold` clients. An active server breaks it: it can
swap the public keys it relays (the fix: keys signed under a PKI), or, with one colluding client,
tell clients different stories about who dropped out (the fix: a signed consistency check and a
larger threshold). Both are shown in notebook 05, sections 3 and 7.
"""
import hashlib
import secrets

import numpy as np

from .federated import Strategy, apply_update, flatten, model_update, unflatten

RING_BITS = 64                 # the ring is the integers mod 2**64, stored as numpy uint64
FRACTIONAL_BITS = 32           # default scale: 2**32, one step = 2**-32 ≈ 2.3e-10
# RFC 3526 group 14: the 2048-bit safe prime 2**2048 - 2**1984 - 1 + 2**64 * (floor(2**1918 * pi) + 124476)
DH_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E34"
    "04DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6"
    "F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A6916"
    "3FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C"
    "32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA95"
    "6AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
DH_GENERATOR = 2
SECRET_BITS = 256              # DH exponents and self-mask seeds (RFC 3526 advises 220-320 bits here)
SHAMIR_PRIME = 2**521 - 1      # a Mersenne prime larger than every secret we share


# ---------------------------------------------------------------- fixed-point encoding
def max_abs_value(num_clients=1, fractional_bits=FRACTIONAL_BITS):
    """The exclusive bound on |x| that `encode_fixed_point` accepts.

    A ring element is read back as a signed 64-bit integer, so the *sum* of num_clients encoded
    values must stay inside (-2**63, 2**63). We keep ceil(log2(num_clients)) bits of headroom.

    Taught in notebook 05, section 2.
    """
    if int(num_clients) != num_clients or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if int(fractional_bits) != fractional_bits or not 0 <= fractional_bits < RING_BITS - 1:
        raise ValueError(f"fractional_bits must be an integer in [0, {RING_BITS - 2}], got {fractional_bits!r}")
    headroom_bits = (int(num_clients) - 1).bit_length()
    return 2.0 ** (RING_BITS - 1 - fractional_bits - headroom_bits)


def encode_fixed_point(update, num_clients=1, fractional_bits=FRACTIONAL_BITS):
    """Floats -> ring elements: round(x * 2**fractional_bits) mod 2**64, as numpy uint64.
    Taught in notebook 05, section 2.

    `update` is one array or a list of arrays (one per model parameter); the result has the
    same structure. Rounding moves each value by at most 2**-(fractional_bits + 1). A value
    whose magnitude reaches max_abs_value(num_clients, fractional_bits), or that is not finite,
    raises ValueError instead of wrapping around silently.
    """
    vector, shapes = flatten(update)
    limit = max_abs_value(num_clients, fractional_bits) * 2.0 ** fractional_bits
    with np.errstate(over="ignore", invalid="ignore"):   # huge values are reported below
        scaled = np.rint(vector.astype(np.float64) * 2.0 ** fractional_bits)
    outside = ~(np.abs(scaled) < limit)                  # also true for nan and inf
    if outside.any():
        first = int(np.argmax(outside))
        ends = np.cumsum([int(np.prod(shape)) for shape in shapes])
        i = int(np.searchsorted(ends, first, side="right"))          # which parameter
        start = int(ends[i - 1]) if i else 0
        position = tuple(int(k) for k in np.unravel_index(first - start, shapes[i]))
        bound = max_abs_value(num_clients, fractional_bits)
        raise ValueError(
            f"value {float(vector[first])!r} at position {position} of parameter {i} "
            f"is outside the representable range (-{bound:.6g}, {bound:.6g}) for {num_clients} "
            f"client(s) with {fractional_bits} fractional bits; scale the update down or use "
            f"fewer fractional bits")
    encoded = unflatten(scaled.astype(np.int64).view(np.uint64), shapes)
    return encoded if isinstance(update, (list, tuple)) else encoded[0]


def decode_fixed_point(encoded, fractional_bits=FRACTIONAL_BITS):
    """Ring elements -> floats: read as signed 64-bit integers and divide by 2**fractional_bits.
    Taught in notebook 05, section 2."""
    parts = encoded if isinstance(encoded, (list, tuple)) else [encoded]
    for i, part in enumerate(parts):
        if np.asarray(part).dtype != np.uint64:
            raise ValueError(f"parameter {i} has dtype {np.asarray(part).dtype}; ring elements are uint64 "
                             f"(use encode_fixed_point to make them)")
    vector, shapes = flatten(encoded)
    decoded = unflatten(vector.view(np.int64).astype(np.float64) / 2.0 ** fractional_bits, shapes)
    return decoded if isinstance(encoded, (list, tuple)) else decoded[0]


def ring_sum(vectors):
    """The element-wise sum mod 2**64 of several equally shaped uint64 arrays.

    Taught in notebook 05, section 2.
    """
    if not vectors:
        raise ValueError("ring_sum needs at least one array")
    total = np.zeros(np.shape(vectors[0]), dtype=np.uint64)
    for i, vector in enumerate(vectors):
        if vector.dtype != np.uint64 or vector.shape != total.shape:
            raise ValueError(f"array {i} is {vector.dtype} of shape {vector.shape}; ring_sum adds uint64 "
                             f"arrays of one shape, {total.shape} (encode floats with encode_fixed_point)")
        total += vector                            # uint64 arithmetic wraps: addition mod 2**64
    return total


# ---------------------------------------------------------------- key agreement and masks
def dh_keypair(rng=None):
    """A Diffie-Hellman (secret key, public key) pair: public = DH_GENERATOR**secret mod DH_PRIME.

    Taught in notebook 05, section 3.
    """
    secret_key = 2 + _random_int(SECRET_BITS, rng)
    return secret_key, pow(DH_GENERATOR, secret_key, DH_PRIME)


def dh_shared_seed(my_secret_key, their_public_key):
    """The 32-byte seed two clients share: SHA-256 of (their public key)**(my secret) mod p.

    Both clients of a pair compute the same value, g**(a*b); the server, which sees only g**a
    and g**b, cannot (that is the Diffie-Hellman assumption).

    Taught in notebook 05, section 3.
    """
    if not 2 <= their_public_key <= DH_PRIME - 2:
        raise ValueError("a public key must lie in [2, DH_PRIME - 2]; 0, 1 and p - 1 give a guessable secret")
    shared_secret = pow(their_public_key, my_secret_key, DH_PRIME)
    return hashlib.sha256(shared_secret.to_bytes(256, "big")).digest()


def expand_mask(seed, size):
    """`size` uniformly random ring elements from a seed (bytes), with SHAKE-256 as the PRG.

    The same seed always gives the same mask, which is how two clients produce masks that
    cancel without ever sending them. (Production systems use e.g. AES in counter mode.)

    Taught in notebook 05, section 3.
    """
    stream = hashlib.shake_256(seed).digest(8 * int(size))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


# ---------------------------------------------------------------- Shamir secret sharing
def shamir_share(secret, num_shares, threshold, rng=None):
    """Split an integer into shares (x, f(x)), x = 1..num_shares, of a random polynomial f of
    degree threshold - 1 over the integers mod SHAMIR_PRIME with f(0) = secret.

    Any `threshold` shares determine f and so the secret; fewer say nothing about it.

    Taught in notebook 05, section 2 (by hand) and 4.
    """
    if not 1 <= threshold <= num_shares:
        raise ValueError(f"need 1 <= threshold <= num_shares, got threshold={threshold}, num_shares={num_shares}")
    if not 0 <= secret < SHAMIR_PRIME:
        raise ValueError("the secret must be an integer in [0, SHAMIR_PRIME)")
    coefficients = [secret] + [_random_int(SHAMIR_PRIME.bit_length() + 64, rng) % SHAMIR_PRIME
                               for _ in range(threshold - 1)]
    return [(x, sum(c * pow(x, k, SHAMIR_PRIME) for k, c in enumerate(coefficients)) % SHAMIR_PRIME)
            for x in range(1, num_shares + 1)]


def shamir_reconstruct(shares, threshold):
    """The secret f(0) from at least `threshold` shares (x, y), by Lagrange interpolation at 0.

    Taught in notebook 05, section 2 (by hand) and 7.
    """
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise ValueError(f"shares must come from distinct points x, got {sorted(xs)}")
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} share(s) cannot reconstruct a secret shared with threshold {threshold}")
    secret = 0
    for j, (x_j, y_j) in enumerate(shares[:threshold]):
        numerator, denominator = 1, 1
        for m, (x_m, _) in enumerate(shares[:threshold]):
            if m != j:
                numerator = numerator * -x_m % SHAMIR_PRIME
                denominator = denominator * (x_j - x_m) % SHAMIR_PRIME
        secret += y_j * numerator * pow(denominator, -1, SHAMIR_PRIME)
    return secret % SHAMIR_PRIME


def check_threshold(threshold, num_clients):
    """Require num_clients/2 < threshold <= num_clients.

    A majority threshold means two disjoint groups of clients can never both reach it, so a
    server cannot get a client's secret key from one group and its self-mask seed from another,
    as long as no client works with the server. With n_c colluding clients the threshold must
    exceed (n + n_c) / 2, and the clients must check, with signatures, that all were told the
    same survivors (Bonawitz et al.); notebook 05, section 7, shows the attack without that.

    Taught in notebook 05, section 7.
    """
    if int(threshold) != threshold or not num_clients / 2 < threshold <= num_clients:
        raise ValueError(f"threshold must be an integer with {num_clients}/2 < threshold <= {num_clients}, "
                         f"got {threshold!r}")


# ---------------------------------------------------------------- the protocol
class Client:
    """One client of a secure-aggregation round: its keys, its masks, the shares it holds.

    rng: a numpy Generator for reproducible demos; None draws from the operating system's
    cryptographic source (`secrets`), which is what real keys need.

    Taught in notebook 05, section 3 and 4.
    """

    def __init__(self, name, rng=None):
        self.name = name
        self.rng = rng
        self.secret_key, self.public_key = dh_keypair(rng)
        self.self_mask_seed = _random_int(SECRET_BITS, rng)
        self.shares_held = {}                      # owner's name -> (x, key share y, seed share y)
        self.has_masked = False
        self.has_revealed = False

    def share_secrets(self, public_keys, threshold):
        """Shares of this client's secret key and self-mask seed, one per client: {name: (x, key_y, seed_y)}."""
        roster = _roster(public_keys, self.name)
        check_threshold(threshold, len(roster))
        key_shares = shamir_share(self.secret_key, len(roster), threshold, self.rng)
        seed_shares = shamir_share(self.self_mask_seed, len(roster), threshold, self.rng)
        return {name: (x, key_y, seed_y) for name, (x, key_y), (_, seed_y) in zip(roster, key_shares, seed_shares)}

    def receive_share(self, owner, share):
        self.shares_held[owner] = share

    def mask_update(self, update, public_keys, fractional_bits=FRACTIONAL_BITS):
        """Encode the update and add the self-mask and every pairwise mask (add if my name sorts
        first, subtract otherwise). Returns a list of uint64 arrays shaped like the update.

        Only once per client: the same masks on two updates would cancel in their difference.
        """
        if self.has_masked:
            raise RuntimeError(f"{self.name} already masked an update with these keys; reusing masks "
                               f"reveals the difference of two updates. Make a new Client for each round")
        roster = _roster(public_keys, self.name)
        parameters = unflatten(*flatten(update))   # one array, a list of arrays, or a model: a list
        masked, shapes = flatten(encode_fixed_point(parameters, len(roster), fractional_bits))
        masked += expand_mask(_seed_bytes(self.self_mask_seed), masked.size)
        for other in roster:
            if other != self.name:
                mask = expand_mask(dh_shared_seed(self.secret_key, public_keys[other]), masked.size)
                if self.name < other:
                    masked += mask
                else:
                    masked -= mask
        self.has_masked = True
        return unflatten(masked, shapes)

    def reveal_shares(self, arrived):
        """Answer the server once: for each client whose masked update arrived, my share of its
        self-mask seed; for each one whose update did not, my share of its secret key.

        Never both for one client: with its secret key the server can remove its pairwise masks,
        with its seed its self-mask, and with both it would read its update in the clear.
        """
        if self.has_revealed:
            raise RuntimeError(f"{self.name} already revealed its shares for this round; a second "
                               f"answer could give the server both secrets of one client")
        if self.name not in arrived:
            raise ValueError(f"{self.name}'s own masked update did not arrive; only clients in the sum take part")
        self.has_revealed = True
        return {owner: ("self_mask_seed", (x, seed_y)) if owner in arrived else ("secret_key", (x, key_y))
                for owner, (x, key_y, seed_y) in self.shares_held.items()}


def unmask_sum(masked_updates, public_keys, revealed, threshold, fractional_bits=FRACTIONAL_BITS):
    """The server's last step: sum the masked updates that arrived and remove every mask left.

    masked_updates: {name: list of uint64 arrays} (from Client.mask_update), public_keys: {name: int}
    for everyone who started the round, revealed: list of Client.reveal_shares answers.
    Returns the decoded float sum of the arrived updates, as a list of arrays.

    Taught in notebook 05, section 4.
    """
    roster, arrived = _roster(public_keys), set(masked_updates)
    check_threshold(threshold, len(roster))
    if not arrived <= set(roster):
        raise ValueError(f"masked updates from clients not in the round: {sorted(arrived - set(roster))}")
    if len(arrived) < threshold:
        raise ValueError(f"only {len(arrived)} masked update(s) arrived; the round needs at least {threshold}")
    first = masked_updates[min(arrived)]
    for name in sorted(arrived):
        if [a.shape for a in masked_updates[name]] != [a.shape for a in first]:
            raise ValueError(f"{name}'s update has shapes {[a.shape for a in masked_updates[name]]}, "
                             f"{min(arrived)}'s has {[a.shape for a in first]}; all must match")
    total = ring_sum([flatten(masked_updates[name])[0] for name in sorted(arrived)])
    for owner in roster:
        kind = "self_mask_seed" if owner in arrived else "secret_key"
        shares = [answer[owner][1] for answer in revealed if owner in answer and answer[owner][0] == kind]
        if len(shares) < threshold:
            raise ValueError(f"only {len(shares)} survivor(s) revealed a share of {owner}'s {kind}; "
                             f"the threshold is {threshold}, so the masks cannot be removed")
        secret = shamir_reconstruct(shares, threshold)
        if owner in arrived:
            total -= expand_mask(_seed_bytes(secret), total.size)
        else:                                      # undo what each survivor added or subtracted for owner
            for other in sorted(arrived):
                mask = expand_mask(dh_shared_seed(secret, public_keys[other]), total.size)
                if other < owner:
                    total -= mask
                else:
                    total += mask
    return decode_fixed_point(unflatten(total, [a.shape for a in first]), fractional_bits)


def secure_sum(updates, threshold=None, drop_out=(), rng=None, fractional_bits=FRACTIONAL_BITS):
    """One whole round in one call: {name: update} -> (sum of the updates that arrived, masked updates).

    Clients named in drop_out go offline after the keys and shares are exchanged, before their
    masked update reaches the server. threshold defaults to a bare majority of the clients.

    Taught in notebook 05, section 6.
    """
    if not isinstance(updates, dict):
        raise TypeError(f"secure_sum takes a dict {{client name: update}}, got a {type(updates).__name__}; "
                        f"name each client's update, e.g. secure_sum({{'Bob': bobs_update, 'Alice': alices_update}})")
    if isinstance(drop_out, str):
        raise TypeError(f"drop_out is a collection of client names, got the string {drop_out!r}; "
                        f"write drop_out=[{drop_out!r}]")
    names = sorted(updates)
    if not set(drop_out) <= set(names):
        raise ValueError(f"drop_out names clients not in the round: {sorted(set(drop_out) - set(names))}")
    threshold = len(names) // 2 + 1 if threshold is None else threshold
    clients = {name: Client(name, rng) for name in names}
    public_keys = {name: client.public_key for name, client in clients.items()}
    for owner, client in clients.items():
        for recipient, share in client.share_secrets(public_keys, threshold).items():
            clients[recipient].receive_share(owner, share)
    masked = {name: clients[name].mask_update(updates[name], public_keys, fractional_bits)
              for name in names if name not in drop_out}
    revealed = [clients[name].reveal_shares(set(masked)) for name in masked]
    return unmask_sum(masked, public_keys, revealed, threshold, fractional_bits), masked


# ---------------------------------------------------------------- FedAvg through a secure sum
def weighted_contribution(update, n_examples):
    """What a client puts into the secure sum for FedAvg: n_k times its update, and n_k itself.

    FedAvg's new model is  global + (sum_k n_k * update_k) / (sum_k n_k):  a sum divided by a sum.
    So each client adds in its weighted update plus its count as one extra number, and the server
    learns both totals without learning any one client's update or count.

    Taught in notebook 05, section 4.
    """
    if not np.isfinite(n_examples) or n_examples < 0:
        raise ValueError(f"n_examples must be a non-negative number, got {n_examples!r}")
    return [n_examples * np.asarray(part, dtype=np.float64) for part in unflatten(*flatten(update))] + [
        np.array([float(n_examples)])
    ]


def fedavg_from_sums(global_model, unmasked_sum):
    """The new global model from the unmasked sum of ``weighted_contribution``s.

    ``unmasked_sum`` is ``[sum of n_k * update_k per parameter..., [sum of n_k]]``; the result is a
    copy of ``global_model`` plus the weighted sum divided by the total count.

    Taught in notebook 05, section 4.
    """
    *weighted_sum, total = unmasked_sum
    parameters = global_model.get_parameters()
    if len(weighted_sum) != len(parameters):
        raise ValueError(f"the sum has {len(weighted_sum)} parameter arrays, the model {len(parameters)}")
    if total.shape != (1,) or not total[0] > 0:
        raise ValueError(f"the last entry of the sum must be the total count (> 0), got {total!r}")
    for part, parameter in zip(weighted_sum, parameters):
        if part.shape != parameter.data.shape:
            raise ValueError(f"a summed update of shape {part.shape} for a parameter of shape {parameter.data.shape}")
    return apply_update(global_model, [part / total[0] for part in weighted_sum])


class SecureFedAvg(Strategy):
    """FedAvg whose server learns the sum only through notebook 05's pairwise masks: a strategy of
    the course's round loop (``federated.run_rounds``). Taught in notebook 05, section 4; notebooks
    12 and 13 run it.

    Each client puts its update into ``secure_sum`` (``weighted=False``: the plain mean, as the
    book), or ``n_k · update_k`` and ``n_k`` (``weighted=True``: FedAvg, ``weighted_contribution``);
    the server unmasks only the totals and divides (``fedavg_from_sums``). The result equals plain
    FedAvg up to fixed-point rounding (2**-fractional_bits per client). ``masked`` holds the last
    round's masked updates: all the server ever holds of any one client. ``rng`` seeds the
    clients' secrets, for a reproducible lesson only.

    Whom it protects against: an honest-but-curious server working with fewer than ``threshold``
    clients (notebook 05's threat model). It changes nothing about the released model.
    """

    def __init__(self, weighted: bool = False, *, fractional_bits: int = FRACTIONAL_BITS, rng=None):
        self.weighted = bool(weighted)
        self.fractional_bits = fractional_bits
        self.rng = rng
        self.masked: dict = {}

    def aggregate(self, global_model, local_models, sizes, rng):
        updates = {name: model_update(global_model, local) for name, local in local_models.items()}
        if self.weighted:
            contributions = {name: weighted_contribution(update, sizes[name]) for name, update in updates.items()}
            total, self.masked = secure_sum(contributions, fractional_bits=self.fractional_bits, rng=self.rng)
            return fedavg_from_sums(global_model, total)
        total, self.masked = secure_sum(updates, fractional_bits=self.fractional_bits, rng=self.rng)
        return apply_update(global_model, [part / len(updates) for part in total])

    def __repr__(self):
        return f"SecureFedAvg(weighted={self.weighted}, fractional_bits={self.fractional_bits})"


# ---------------------------------------------------------------- small helpers
def _roster(public_keys, own_name=None):
    if own_name is not None and own_name not in public_keys:
        raise ValueError(f"{own_name!r} is not among the round's public keys {sorted(public_keys)}")
    return sorted(public_keys)


def _seed_bytes(seed):
    return seed.to_bytes(SECRET_BITS // 8, "big")


def _random_int(bits, rng):
    num_bytes = (bits + 7) // 8
    raw = secrets.token_bytes(num_bytes) if rng is None else rng.bytes(num_bytes)
    return int.from_bytes(raw, "big") >> (8 * num_bytes - bits)
