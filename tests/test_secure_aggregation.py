"""Tests for grokfl_helpers.secure_aggregation: masks cancel, sums are exact to the fixed-point
step, one masked update looks like noise, dropouts are recovered, bad input is refused."""
import numpy as np
import pytest

from grokfl_helpers import secure_aggregation as sa

NAMES = ["Alice", "Bob", "Sue"]


def make_updates(seed=0, shapes=((40, 1), (7,))):
    rng = np.random.default_rng(seed)
    return {name: [rng.normal(0.0, 0.05, shape) for shape in shapes] for name in NAMES}


def start_round(threshold=2, seed=1, names=NAMES):
    """Clients with exchanged public keys and shares, as before anyone masks an update."""
    rng = np.random.default_rng(seed)
    clients = {name: sa.Client(name, rng) for name in names}
    public_keys = {name: c.public_key for name, c in clients.items()}
    for owner, client in clients.items():
        for recipient, share in client.share_secrets(public_keys, threshold).items():
            clients[recipient].receive_share(owner, share)
    return clients, public_keys


def plain_sum(updates, names):
    return [sum(updates[n][i] for n in names) for i in range(len(updates[names[0]]))]


def precision_bound(num_clients, fractional_bits=sa.FRACTIONAL_BITS):
    """Each encoded value is off by at most half a step; a sum of n by n half-steps (+ float slack)."""
    return num_clients * 2.0 ** -(fractional_bits + 1) * (1 + 1e-6)


# ---------------------------------------------------------------- fixed point
def test_fixed_point_round_trip_within_half_a_step():
    x = np.random.default_rng(0).uniform(-1000, 1000, 10_000)
    assert np.abs(sa.decode_fixed_point(sa.encode_fixed_point(x)) - x).max() <= 2.0 ** -33


def test_negative_values_wrap_into_the_ring_and_back():
    encoded = sa.encode_fixed_point(np.array([-1.0, 0.0, 1.0]))
    assert encoded.dtype == np.uint64
    assert encoded[0] == 2**64 - 2**32 and encoded[2] == 2**32
    np.testing.assert_array_equal(sa.decode_fixed_point(encoded), [-1.0, 0.0, 1.0])


def test_range_shrinks_with_the_number_of_clients():
    assert sa.max_abs_value(1) == 2.0**31
    assert sa.max_abs_value(2) == 2.0**30
    assert sa.max_abs_value(3) == sa.max_abs_value(4) == 2.0**29
    assert sa.max_abs_value(3, fractional_bits=16) == 2.0**45


@pytest.mark.parametrize("bad", [2.0**31, -2.0**31, 1e300, np.inf, np.nan])
def test_out_of_range_value_raises_and_names_where(bad):
    x = np.zeros((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"position \(2, 1\) of parameter 0.*representable range"):
        sa.encode_fixed_point(x)


def test_headroom_refuses_values_whose_sum_could_wrap():
    value = 0.75 * 2.0**30                   # fits for 1 client; 3 of them would pass 2**31
    sa.encode_fixed_point(np.array([value]), num_clients=1)
    with pytest.raises(ValueError, match="for 3 client"):
        sa.encode_fixed_point(np.array([value]), num_clients=3)


def test_largest_allowed_values_of_n_clients_sum_without_wrapping():
    n = 3
    value = np.nextafter(sa.max_abs_value(n), 0)
    total = sa.ring_sum([sa.encode_fixed_point(np.array([-value]), num_clients=n)] * n)
    assert sa.decode_fixed_point(total)[0] == pytest.approx(-n * value)


@pytest.mark.parametrize("kwargs", [{"num_clients": 0}, {"num_clients": 1.5}, {"fractional_bits": 63}])
def test_bad_encoding_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        sa.encode_fixed_point(np.ones(3), **kwargs)


def test_ring_sum_refuses_floats_and_mismatched_shapes():
    ok = sa.encode_fixed_point(np.ones(3))
    with pytest.raises(ValueError, match="uint64"):
        sa.ring_sum([ok, np.ones(3)])
    with pytest.raises(ValueError, match="one shape"):
        sa.ring_sum([ok, sa.encode_fixed_point(np.ones(4))])
    with pytest.raises(ValueError, match="at least one"):
        sa.ring_sum([])


def test_decoding_floats_is_refused():
    with pytest.raises(ValueError, match="uint64"):
        sa.decode_fixed_point(np.ones(3))


# ---------------------------------------------------------------- keys, PRG, Shamir
def test_group_14_prime_is_a_safe_prime_with_the_rfc_3526_shape():
    p = sa.DH_PRIME
    assert p.bit_length() == 2048 and p >> 1984 == 2**64 - 1 and p % 2**64 == 2**64 - 1
    for candidate in (p, (p - 1) // 2):          # Fermat tests: a composite would fail them
        for base in (2, 3, 5, 7):
            assert pow(base, candidate - 1, candidate) == 1


def test_both_clients_of_a_pair_derive_the_same_seed_and_others_do_not():
    rng = np.random.default_rng(0)
    (a, pub_a), (b, pub_b), (c, pub_c) = (sa.dh_keypair(rng) for _ in range(3))
    assert sa.dh_shared_seed(a, pub_b) == sa.dh_shared_seed(b, pub_a)
    assert sa.dh_shared_seed(a, pub_b) != sa.dh_shared_seed(a, pub_c)


@pytest.mark.parametrize("public_key", [0, 1, sa.DH_PRIME - 1])
def test_trivial_public_keys_are_refused(public_key):
    with pytest.raises(ValueError, match="public key"):
        sa.dh_shared_seed(12345, public_key)


def test_expand_mask_is_deterministic_and_seed_dependent():
    m1, m2 = sa.expand_mask(b"seed one", 1000), sa.expand_mask(b"seed two", 1000)
    assert m1.dtype == np.uint64 and m1.shape == (1000,)
    np.testing.assert_array_equal(m1, sa.expand_mask(b"seed one", 1000))
    assert (m1 != m2).mean() > 0.99


def test_shamir_round_trip_from_any_threshold_subset():
    rng = np.random.default_rng(3)
    secret = 2**255 + 12345
    shares = sa.shamir_share(secret, num_shares=5, threshold=3, rng=rng)
    assert [x for x, _ in shares] == [1, 2, 3, 4, 5]
    for subset in ([0, 1, 2], [4, 2, 0], [1, 3, 4], [0, 1, 2, 3, 4]):
        assert sa.shamir_reconstruct([shares[i] for i in subset], threshold=3) == secret


def test_shamir_too_few_or_repeated_shares_raise():
    shares = sa.shamir_share(42, num_shares=3, threshold=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="1 share"):
        sa.shamir_reconstruct(shares[:1], threshold=2)
    with pytest.raises(ValueError, match="distinct"):
        sa.shamir_reconstruct([shares[0], shares[0]], threshold=2)
    # below the threshold the wrong polynomial is interpolated: not the secret
    assert sa.shamir_reconstruct(shares[:1], threshold=1) != 42


@pytest.mark.parametrize("threshold, num_shares", [(0, 3), (4, 3)])
def test_shamir_bad_threshold_raises(threshold, num_shares):
    with pytest.raises(ValueError, match="threshold"):
        sa.shamir_share(1, num_shares, threshold)


@pytest.mark.parametrize("threshold", [0, 1, 4, 2.5])
def test_protocol_threshold_must_be_a_majority_of_clients(threshold):
    with pytest.raises(ValueError, match="threshold"):
        sa.check_threshold(threshold, 3)


# ---------------------------------------------------------------- masking and unmasking
def test_pairwise_and_self_masks_cancel_exactly_in_the_ring():
    clients, public_keys = start_round()
    updates = make_updates()
    encoded = {n: np.concatenate([e.ravel() for e in sa.encode_fixed_point(updates[n], 3)]) for n in NAMES}
    masked = {n: np.concatenate([m.ravel() for m in clients[n].mask_update(updates[n], public_keys)])
              for n in NAMES}
    self_masks = [sa.expand_mask(clients[n].self_mask_seed.to_bytes(32, "big"), encoded["Bob"].size) for n in NAMES]
    # pairwise masks cancel bit for bit: the masked sum minus the self-masks is the encoded sum
    np.testing.assert_array_equal(sa.ring_sum(list(masked.values())) - sa.ring_sum(self_masks),
                                  sa.ring_sum(list(encoded.values())))


def test_unmasked_sum_equals_float_sum_within_the_fixed_point_bound():
    clients, public_keys = start_round()
    updates = make_updates()
    masked = {n: clients[n].mask_update(updates[n], public_keys) for n in NAMES}
    revealed = [clients[n].reveal_shares(set(masked)) for n in NAMES]
    total = sa.unmask_sum(masked, public_keys, revealed, threshold=2)
    for got, want in zip(total, plain_sum(updates, NAMES)):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= precision_bound(3)


def test_a_masked_update_looks_uniform_and_uncorrelated_with_the_update():
    clients, public_keys = start_round()
    update = np.random.default_rng(5).normal(0.0, 1.0, 200_000)
    update[:100_000] = 0.0                               # half the entries are exactly zero
    masked = clients["Bob"].mask_update(update, public_keys)[0]
    top_bits = (masked >> np.uint64(60)).astype(int)     # 16 equally likely buckets if uniform
    counts = np.bincount(top_bits, minlength=16)
    chi_square = ((counts - masked.size / 16) ** 2 / (masked.size / 16)).sum()
    assert chi_square < 45                               # 15 degrees of freedom: p < 1e-4 above 45
    as_float = masked.view(np.int64).astype(float)
    assert abs(np.corrcoef(update, as_float)[0, 1]) < 0.02
    assert (masked == 0).mean() < 1e-4                   # the zero entries are hidden too
    assert np.unique(masked[:100_000]).size == 100_000


def test_same_inputs_different_keys_give_different_masked_updates():
    update = make_updates()["Bob"]
    masked = []
    for seed in (1, 2):
        clients, public_keys = start_round(seed=seed)
        masked.append(clients["Bob"].mask_update(update, public_keys)[0])
    assert (masked[0] != masked[1]).all()


def test_dropout_before_sending_is_recovered_from_threshold_survivors():
    clients, public_keys = start_round(threshold=2)
    updates = make_updates()
    survivors = ["Alice", "Bob"]                         # Sue goes offline before her update arrives
    masked = {n: clients[n].mask_update(updates[n], public_keys) for n in survivors}
    revealed = [clients[n].reveal_shares(set(masked)) for n in survivors]
    assert revealed[0]["Sue"][0] == "secret_key" and revealed[0]["Bob"][0] == "self_mask_seed"
    total = sa.unmask_sum(masked, public_keys, revealed, threshold=2)
    for got, want in zip(total, plain_sum(updates, survivors)):
        assert np.abs(got - want).max() <= precision_bound(2)


def test_without_recovery_the_survivors_sum_is_noise():
    clients, public_keys = start_round(threshold=2)
    updates = make_updates()
    masked = [np.concatenate([m.ravel() for m in clients[n].mask_update(updates[n], public_keys)])
              for n in ("Alice", "Bob")]
    assert np.abs(sa.decode_fixed_point(sa.ring_sum(masked))).mean() > 1e6


def test_dropout_after_sending_keeps_the_update_and_removes_its_self_mask():
    clients, public_keys = start_round(threshold=2)
    updates = make_updates()
    masked = {n: clients[n].mask_update(updates[n], public_keys) for n in NAMES}
    revealed = [clients[n].reveal_shares(set(masked)) for n in ("Alice", "Bob")]   # Sue sent, then left
    total = sa.unmask_sum(masked, public_keys, revealed, threshold=2)
    assert np.abs(total[0] - plain_sum(updates, NAMES)[0]).max() <= precision_bound(3)


def test_fewer_survivors_than_the_threshold_fail_clearly():
    names = ["Ann", "Ben", "Cat", "Dan", "Eve"]
    clients, public_keys = start_round(threshold=3, names=names)
    updates = {n: [np.full(5, 0.1)] for n in names}
    masked = {n: clients[n].mask_update(updates[n], public_keys) for n in names[:3]}
    revealed = [clients[n].reveal_shares(set(masked)) for n in names[:2]]       # Cat sent, then left
    with pytest.raises(ValueError, match=r"only 2 survivor\(s\) revealed a share of Ann's self_mask_seed; "
                                         r"the threshold is 3"):
        sa.unmask_sum(masked, public_keys, revealed, threshold=3)
    revealed.append(clients["Cat"].reveal_shares(set(masked)))
    total = sa.unmask_sum(masked, public_keys, revealed, threshold=3)
    assert np.abs(total[0] - 0.3).max() <= precision_bound(3)


def test_too_few_arrived_updates_fail_clearly():
    clients, public_keys = start_round(threshold=2)
    masked = {"Bob": clients["Bob"].mask_update(np.ones(3), public_keys)}
    with pytest.raises(ValueError, match="only 1 masked update"):
        sa.unmask_sum(masked, public_keys, [], threshold=2)


def test_a_client_reveals_once_and_never_both_secrets_of_one_client():
    clients, public_keys = start_round()
    answer = clients["Bob"].reveal_shares({"Alice", "Bob"})
    assert {owner: kind for owner, (kind, _) in answer.items()} == {
        "Alice": "self_mask_seed", "Bob": "self_mask_seed", "Sue": "secret_key"}
    with pytest.raises(RuntimeError, match="already revealed"):
        clients["Bob"].reveal_shares({"Alice", "Bob", "Sue"})
    with pytest.raises(ValueError, match="own masked update did not arrive"):
        clients["Alice"].reveal_shares({"Bob", "Sue"})


def test_a_client_masks_only_once():
    clients, public_keys = start_round()
    clients["Bob"].mask_update(np.ones(3), public_keys)
    with pytest.raises(RuntimeError, match="already masked"):
        clients["Bob"].mask_update(np.zeros(3), public_keys)


def test_mismatched_shapes_raise():
    clients, public_keys = start_round()
    masked = {"Alice": clients["Alice"].mask_update([np.zeros((4, 1))], public_keys),
              "Bob": clients["Bob"].mask_update([np.zeros((5, 1))], public_keys)}
    with pytest.raises(ValueError, match="shapes"):
        sa.unmask_sum(masked, public_keys, [], threshold=2)


def test_unknown_client_names_raise():
    clients, public_keys = start_round()
    with pytest.raises(ValueError, match="not among the round's public keys"):
        sa.Client("Mallory").mask_update(np.zeros(3), public_keys)
    masked = {"Mallory": [np.zeros(3, dtype=np.uint64)], "Bob": [np.zeros(3, dtype=np.uint64)]}
    with pytest.raises(ValueError, match="not in the round"):
        sa.unmask_sum(masked, public_keys, [], threshold=2)


def test_secure_sum_runs_a_whole_round_with_and_without_dropout():
    updates = make_updates(seed=7, shapes=((159, 1),))
    total, masked = sa.secure_sum(updates, rng=np.random.default_rng(0))
    assert sorted(masked) == NAMES
    assert np.abs(total[0] - plain_sum(updates, NAMES)[0]).max() <= precision_bound(3)
    total, masked = sa.secure_sum(updates, drop_out={"Alice"}, rng=np.random.default_rng(0))
    assert sorted(masked) == ["Bob", "Sue"]
    assert np.abs(total[0] - plain_sum(updates, ["Bob", "Sue"])[0]).max() <= precision_bound(2)


def test_secure_sum_refuses_unknown_or_too_many_dropouts():
    updates = make_updates(shapes=((3,),))
    with pytest.raises(ValueError, match="Mallory"):
        sa.secure_sum(updates, drop_out={"Mallory"})
    with pytest.raises(ValueError, match="only 1 masked update"):
        sa.secure_sum(updates, drop_out={"Alice", "Bob"})


def test_fedavg_through_a_secure_sum_equals_fedavg():
    """weighted_contribution + secure_sum + fedavg_from_sums is FedAvg, within fixed-point precision."""
    from grokfl_helpers import federated
    from grokfl_helpers.training import new_spam_model

    rng = np.random.default_rng(5)
    start = new_spam_model(50)
    models = {}
    for name in ("Alice", "Bob", "Sue"):
        models[name] = new_spam_model(50)
        models[name].weight.data[:, 0] = rng.normal(0, 0.1, 50)
    counts = {"Alice": 1000, "Bob": 1000, "Sue": 30340}
    contributions = {name: sa.weighted_contribution(federated.model_update(start, m), counts[name])
                     for name, m in models.items()}
    total, _ = sa.secure_sum(contributions, rng=np.random.default_rng(1))
    secure = sa.fedavg_from_sums(start, total)
    plain = federated.fedavg(list(models.values()), weights=list(counts.values()))
    bound = 3 * 2.0 ** -(sa.FRACTIONAL_BITS + 1) / sum(counts.values())
    assert np.abs(secure.weight.data - plain.weight.data).max() <= bound + 1e-16
    assert not start.weight.data.any()  # the model sent out is left alone
    with pytest.raises(ValueError, match="total count"):
        sa.fedavg_from_sums(start, total[:-1] + [np.array([0.0])])
    with pytest.raises(ValueError, match="non-negative"):
        sa.weighted_contribution([np.zeros(3)], -1)


def test_secure_sum_given_a_list_says_it_wants_a_dict():
    with pytest.raises(TypeError, match=r"dict \{client name: update\}"):
        sa.secure_sum([np.ones(3), np.ones(3), np.ones(3)])
    with pytest.raises(TypeError, match="drop_out=\\['Bob'\\]"):
        sa.secure_sum({"Alice": np.ones(3), "Bob": np.ones(3), "Sue": np.ones(3)}, drop_out="Bob")


def test_a_model_or_a_list_of_arrays_is_masked_through_federated_flatten():
    rng = np.random.default_rng(5)
    updates = {name: [rng.normal(size=(4, 2)), rng.normal(size=3)] for name in ("A", "B", "C")}
    total, masked = sa.secure_sum(updates, rng=np.random.default_rng(6))
    assert [part.shape for part in masked["A"]] == [(4, 2), (3,)]
    for k in range(2):
        assert np.abs(total[k] - sum(u[k] for u in updates.values())).max() <= 3 * 2.0 ** -33


def test_shamir_by_hand_as_notebook_05_writes_it_agrees_with_the_package():
    # Notebook 05, section 2: a secret rebuilt from two shares with the line's slope.
    shares = sa.shamir_share(42, num_shares=3, threshold=2, rng=np.random.default_rng(5))
    for (x1, y1), (x2, y2) in [(shares[0], shares[1]), (shares[0], shares[2]), (shares[1], shares[2])]:
        slope = (y2 - y1) * pow(x2 - x1, -1, sa.SHAMIR_PRIME) % sa.SHAMIR_PRIME
        assert (y1 - slope * x1) % sa.SHAMIR_PRIME == 42 == sa.shamir_reconstruct([(x1, y1), (x2, y2)], 2)


def test_two_sums_that_differ_by_one_client_give_away_its_encoded_update():
    # Notebook 05, section 8: the others put the same numbers into both rounds, so the first sum
    # minus the second is the missing client's update, off only by its own fixed-point rounding.
    rng = np.random.default_rng(8)
    updates = {name: [rng.normal(size=(5, 1)) * 1000, np.array([1000.0])] for name in ("Alice", "Bob", "Sue")}
    with_alice, _ = sa.secure_sum(updates, rng=np.random.default_rng(9))
    without_alice, _ = sa.secure_sum(updates, drop_out={"Alice"}, rng=np.random.default_rng(10))
    for first, second, hers in zip(with_alice, without_alice, updates["Alice"]):
        assert np.abs((first - second) - hers).max() <= 2.0 ** -33


def test_the_protocol_sequence_diagram_draws_every_message():
    import matplotlib

    matplotlib.use("Agg")
    from grokfl_helpers import plotting

    fig, ax = plotting.panels(width=8, height=4)
    messages = [(["Alice", "Bob"], "server", "public keys"), ("server", ["Alice", "Bob"], "all keys"),
                ("Alice", "Alice", "masks"), ("server", "server", "sum")]
    plotting.sequence_diagram(["Alice", "Bob", "server"], messages, "a round", steps={0: "1. keys"}, ax=ax)
    arrows = [child for child in ax.texts if getattr(child, "arrow_patch", None) is not None]
    assert len(arrows) == 4                                  # 2 senders x 1 + 1 sender x 2 receivers
    assert ax.get_title() == "a round"
    assert {"public keys", "all keys", "masks", "sum"} <= {text.get_text() for text in ax.texts}
    matplotlib.pyplot.close(fig)


def test_secure_fedavg_strategy_equals_fedavg_up_to_fixed_point():
    from grokfl_helpers import federated
    from grokfl_helpers.secure_aggregation import SecureFedAvg
    from grokfl_helpers.training import new_spam_model

    rng = np.random.default_rng(0)
    start = new_spam_model(40)
    locals_ = {}
    for name in ["Bob", "Alice", "Sue"]:
        model = new_spam_model(40)
        model.weight.data[1:] = rng.normal(size=(39, 1)) * 0.1
        locals_[name] = model
    sizes = {"Bob": 1000, "Alice": 1000, "Sue": 30000}
    for weighted in (False, True):
        strategy = SecureFedAvg(weighted=weighted, rng=np.random.default_rng(1))
        secure = strategy.aggregate(start, locals_, sizes, rng=None)
        plain = federated.FedAvg(weighted=weighted).aggregate(start, locals_, sizes, rng=None)
        assert federated.largest_difference(secure, plain) < 3 * 2.0 ** -32
        assert set(strategy.masked) == set(locals_)
