"""Notebook 12's pieces: the book's recurrent cells against finite differences, the language model's
tokenizing, training and scoring, exposure, the canary, and clear errors for bad input."""

import numpy as np
import pytest

from grokfl_helpers import federated, language_model as L
from grokfl_helpers.gradcheck import gradient_check
from grokfl_helpers.secure_aggregation import SecureFedAvg
from grokfl_helpers.tensor import LSTMCell, RNNCell, Tensor

rng = np.random.default_rng(0)
N_IN, N_HID, N_OUT, BATCH = 3, 4, 5, 2


def _slots(cell, layers):
    """(layer, "weight"/"bias") for every parameter, in the order of cell.get_parameters()."""
    slots = [(layer, name) for layer in layers for name in ("weight", "bias") if getattr(layer, name) is not None]
    assert [getattr(layer, name) for layer, name in slots] == cell.get_parameters()
    return slots


def _run_with(cell, slots, weights, x, hidden, steps, which):
    for (layer, name), w in zip(slots, weights):  # the cell computes with the tensors handed in
        setattr(layer, name, w)
    outputs = []
    for _ in range(steps):
        out, hidden = cell.forward(x, hidden)
        outputs.append(out)
    if which == "output":
        return outputs[0] + outputs[-1]
    return hidden[0] if which == "h" else hidden[1]


@pytest.mark.parametrize("which", ["output", "h", "c"])
def test_lstm_cell_gradients_match_finite_differences(which):
    """Every weight, the input and both states, through two steps of the book's LSTMCell."""
    cell = LSTMCell(N_IN, N_HID, N_OUT, rng=1)
    slots = _slots(cell, [cell.xf, cell.xi, cell.xo, cell.xc, cell.hf, cell.hi, cell.ho, cell.hc, cell.w_ho])
    weights = [p.data.copy() for p in cell.get_parameters()]
    x = rng.standard_normal((BATCH, N_IN))
    h0, c0 = rng.standard_normal((BATCH, N_HID)), rng.standard_normal((BATCH, N_HID))

    def f(x, h0, c0, *w):
        return _run_with(cell, slots, w, x, (h0, c0), steps=2, which=which)

    assert gradient_check(f, x, h0, c0, *weights) < 1e-6


def test_rnn_cell_gradients_match_finite_differences():
    cell = RNNCell(N_IN, N_HID, N_OUT, activation="tanh", rng=2)
    slots = _slots(cell, [cell.w_ih, cell.w_hh, cell.w_ho])
    x, h0 = rng.standard_normal((BATCH, N_IN)), rng.standard_normal((BATCH, N_HID))

    def f(x, h0, *w):
        for (layer, name), t in zip(slots, w):
            setattr(layer, name, t)
        out1, h = cell.forward(x, h0)
        out2, h = cell.forward(x, h)
        return out1 + out2

    assert gradient_check(f, x, h0, *[p.data.copy() for p in cell.get_parameters()]) < 1e-6


def test_lstm_cell_names_shapes_and_bad_input():
    cell = LSTMCell(N_IN, N_HID, N_OUT, rng=0)
    h, c = cell.init_hidden(BATCH)
    assert h.data.shape == c.data.shape == (BATCH, N_HID) and not h.data.any()
    out, (h, c) = cell.forward(Tensor(np.ones((BATCH, N_IN))), (h, c))
    assert out.data.shape == (BATCH, N_OUT)
    assert len(cell.get_parameters()) == 4 * 2 + 4 + 2  # 4 input Linears (w, b), 4 hidden (w), output (w, b)
    with pytest.raises(ValueError, match="batch_size"):
        cell.init_hidden(0)
    with pytest.raises(ValueError, match="activation"):
        RNNCell(1, 1, 1, activation="relu6")


def _tiny_lm(words=("the", "cat", "sat", "on", "mat", "my", "computer", "password", "is", "pizza")):
    vocab = [L.UNK_WORD] + list(words)
    w2i = {w: i for i, w in enumerate(vocab)}
    ids = lambda text: np.array([w2i[w] for w in text.split()], dtype=np.int32)  # noqa: E731
    emails = [ids("the cat sat on the mat"), ids("the cat sat on my computer")] * 10
    return L.LMData(vocab=vocab, w2i=w2i, train_emails={"a": emails[:10], "b": emails[10:]},
                    test_emails=emails[:4])


def test_language_model_training_step_matches_its_gradient_and_learns():
    lm = _tiny_lm()
    X, y = L.stream(lm.train_emails["a"] + lm.train_emails["b"])
    model = L.LanguageModel(len(lm.vocab), embed_dim=4, hidden=8, seed=0)
    before = L.evaluate(model, X, y)
    L.train(model, X, y, epochs=20, batch_size=4)
    after = L.evaluate(model, X, y)
    assert after["loss"] < before["loss"] - 0.5
    assert after["top3"] >= after["top1"]
    assert L.complete(model, lm, "the cat", k=1) == ["sat"]


def test_tokenize_keeps_order_and_repeats_and_drops_numbers():
    assert L.tokenize("Subject: call me at 713 - 853 , call me !") == ["subject", "call", "me", "at", "call", "me"]
    with pytest.raises(TypeError, match="str or bytes"):
        L.tokenize(42)


def test_exposure_is_log2_candidates_at_rank_one_one_bit_at_the_median_and_zero_at_the_last():
    candidates = 1024
    assert L.exposure(1, candidates) == pytest.approx(10.0)  # log2(1024): the most it can be
    assert L.exposure(512, candidates) == pytest.approx(1.0)  # a guess's rank: 1 bit of 10
    assert L.exposure(candidates, candidates) == pytest.approx(0.0)
    assert all(L.exposure(r, candidates) >= L.exposure(r + 1, candidates) for r in range(1, candidates))
    with pytest.raises(ValueError, match="rank"):
        L.exposure(0, candidates)


def test_canary_exposure_reads_the_rank_of_the_secret():
    lm = _tiny_lm()
    model = L.LanguageModel(len(lm.vocab), embed_dim=4, hidden=8, seed=0)
    cw = model.cell.w_ho
    cw.weight.data[...] = 0.0
    cw.bias.data[...] = 0.0
    cw.bias.data[lm.w2i["pizza"]] = 5.0  # pizza is everyone's favourite: rank 1
    result = L.canary_exposure(model, lm)
    assert result["rank"] == 1 and result["top1"] == "pizza"
    assert result["exposure"] == pytest.approx(np.log2(len(lm.vocab) - 1))
    cw.bias.data[lm.w2i["pizza"]] = -5.0  # now the least likely
    assert L.canary_exposure(model, lm)["exposure"] == pytest.approx(0.0)


def test_a_canary_word_outside_the_vocabulary_is_named():
    lm = _tiny_lm(words=("the", "cat", "sat", "on", "mat", "my", "computer", "password", "is"))
    model = L.LanguageModel(len(lm.vocab), embed_dim=4, hidden=8)
    with pytest.raises(ValueError, match="'pizza' is not in the model's vocabulary"):
        L.canary_exposure(model, lm)
    with pytest.raises(ValueError, match="'pizza'"):
        L.plant_canary(lm, lm.train_emails["a"], 4)


def test_plant_canary_and_pseudo_clients_keep_the_canary_in_one_client():
    lm = _tiny_lm()
    planted = L.plant_canary(lm, lm.train_emails["a"], 4, seed=1)
    canary = list(lm.check_in_vocabulary(L.CANARY))
    assert len(planted) == len(lm.train_emails["a"]) + 4
    assert sum(list(e) == canary for e in planted) == 4
    clients = L.pseudo_clients(lm, n_clients=10, canary_copies=3)
    assert len(clients) == 10
    holding = [name for name, (X, y) in clients.items()
               if any(list(X[i:i + 4]) == canary[:4] for i in range(len(X) - 3))]
    assert holding == ["a #00"]
    mailbox = L.mailbox_lm_clients(lm, "b", copies=2)
    assert len(mailbox["b"][0]) == len(L.stream(lm.train_emails["b"])[0]) + 2 * 5
    with pytest.raises(ValueError, match="canary_client"):
        L.mailbox_lm_clients(lm, "nobody", copies=2)


def test_lm_task_runs_in_the_one_round_loop_and_secure_aggregation_equals_fedavg():
    lm = _tiny_lm()
    clients = L.mailbox_lm_clients(lm)
    test = L.stream(lm.test_emails)
    start = L.LanguageModel(len(lm.vocab), embed_dim=4, hidden=8)
    kwargs = dict(task=L.LM_TASK, batch_size=4, alpha=1.0)
    plain = federated.run_rounds(start, clients, test, 2, strategy=federated.FedAvg(weighted=True), **kwargs)
    secure = SecureFedAvg(weighted=True, rng=np.random.default_rng(0))
    masked = federated.run_rounds(start, clients, test, 2, strategy=secure, **kwargs)
    assert sorted(secure.masked) == sorted(clients)       # the server held only masked updates
    assert federated.largest_difference(plain.model, masked.model) < 1e-8
    assert plain.accuracy == masked.accuracy


def test_ham_text_is_read_in_order_and_cached(tmp_path):
    from grokfl_helpers import data
    try:
        corpus = data.load_enron(verbose=False)
    except data.DataError:
        pytest.skip("the Enron-Spam archives are not available")
    tokens = L.ham_tokens(corpus)
    assert (corpus.email_label[tokens.email_id] == 0).all()
    first = tokens.email_id[0]
    assert tokens.email(0) == L.tokenize(corpus.email_text(first))


def test_load_lm_data_keeps_the_canary_words_in_a_fixed_size_vocabulary():
    from grokfl_helpers import data
    try:
        corpus = data.load_enron(verbose=False)
    except data.DataError:
        pytest.skip("the Enron-Spam archives are not available")
    lm = L.load_lm_data(corpus, vocab_size=300, train_emails_per_mailbox=5, test_emails_per_mailbox=2,
                        public_emails_per_mailbox=5, max_words_per_email=30)
    assert len(lm.vocab) == 300 and lm.vocab[0] == L.UNK_WORD
    assert all(word in lm.w2i for word in L.tokenize(L.CANARY))
    assert [len(e) for e in lm.train_emails.values()] == [5] * 6
    assert len(lm.test_emails) == 12 and len(lm.public_emails) == 30
    assert max(len(e) for e in lm.public_emails) <= 30
    with pytest.raises(ValueError, match="ham emails"):
        L.load_lm_data(corpus, train_emails_per_mailbox=10**6)
