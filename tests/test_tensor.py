"""The tensor framework: every gradient rule against finite differences, the book's bugs fixed,
and clear errors for bad input."""

import copy

import numpy as np
import pytest

from grokfl_helpers.gradcheck import autograd_gradients, gradient_check, numerical_gradients
from grokfl_helpers.tensor import (
    SGD,
    CrossEntropyLoss,
    Embedding,
    Linear,
    MSELoss,
    Relu,
    Sequential,
    Sigmoid,
    Tanh,
    Tensor,
)

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 4))
B = rng.standard_normal((3, 4))
M = rng.standard_normal((4, 2))
AWAY_FROM_ZERO = A + np.sign(A) * 0.1  # relu's kink at 0 has no derivative
IDS = np.array([[0, 2, 2], [1, 0, 4]])  # index 2 and 0 used twice: gradients must add up
LABELS = np.array([1, 0, 3])

# Each op alone, and each op applied to a tensor that is used several times.
CASES = {
    "add": (lambda a, b: a + b, [A, B]),
    "sub": (lambda a, b: a - b, [A, B]),
    "neg": (lambda a: -a, [A]),
    "mul": (lambda a, b: a * b, [A, B]),
    "sum0": (lambda a: a.sum(0), [A]),
    "sum1": (lambda a: a.sum(1), [A]),
    "expand0": (lambda a: a.expand(0, 3), [A]),
    "expand2": (lambda a: a.expand(2, 5), [A]),
    "transpose": (lambda a: a.transpose(), [A]),
    "mm": (lambda a, m: a.mm(m), [A, M]),
    "sigmoid": (lambda a: a.sigmoid(), [A]),
    "tanh": (lambda a: a.tanh(), [A]),
    "relu": (lambda a: a.relu(), [AWAY_FROM_ZERO]),
    "index_select": (lambda w: w.index_select(IDS), [rng.standard_normal((5, 3))]),
    "softmax": (lambda a: a.softmax(), [A]),
    "cross_entropy": (lambda a: a.cross_entropy(LABELS), [A[:, :4]]),
    "mse_loss": (lambda p, t: MSELoss().forward(p, t), [A, B]),
    # one tensor feeding several ops: the book double-counts all but add/sub/mul
    "x*x": (lambda a: a * a, [A]),
    "sigmoid+tanh of x": (lambda a: a.sigmoid() + a.tanh(), [A]),
    "sigmoid+tanh of h = x*x (the book double-counts here)": (lambda a: (a * a).sigmoid() + (a * a).tanh(), [A]),
    "one h = x*x feeding sigmoid and tanh": (lambda a: (lambda h: h.sigmoid() + h.tanh())(a * a), [A]),
    "x.mm(x.T)": (lambda a: a.mm(a.transpose()), [A]),
    "relu(x)*sigmoid(x)-x": (lambda a: a.relu() * a.sigmoid() - a, [AWAY_FROM_ZERO]),
    "softmax(x)*x summed twice": (lambda a: (a.softmax() * a).sum(1) + a.sum(1), [A]),
    "embedding row used by two lookups": (
        lambda w: (w.index_select(IDS).sum(1) * w.index_select(IDS[:, ::-1]).sum(1)).sigmoid(),
        [rng.standard_normal((5, 3))],
    ),
    "deep chain": (lambda a: a.tanh().sigmoid().tanh().mm(Tensor(M)).relu(), [A]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_finite_differences(name):
    f, inputs = CASES[name]
    assert gradient_check(f, *inputs) < 1e-6


def test_gradient_check_catches_a_wrong_rule():
    """The check itself can fail: a deliberately wrong gradient is reported."""
    def wrong_sigmoid(a):
        out = a.sigmoid()
        s = out.data

        def _backward():
            a._accumulate(out.grad.data * s)  # missing the (1 - s) factor

        out._backward = _backward
        return out

    assert gradient_check(wrong_sigmoid, A) > 1e-2


def test_tensor_used_by_two_nonlinear_ops_gets_exact_gradient():
    """The book's bug: an intermediate h feeding sigmoid and tanh forwards its first share twice.
    Here w receives exactly (sigmoid'(h) + tanh'(h)) * dh/dw."""
    w = Tensor(np.array([0.3, -1.2]), autograd=True)
    h = w * w
    (h.sigmoid() + h.tanh()).backward()
    s, t = 1 / (1 + np.exp(-h.data)), np.tanh(h.data)
    np.testing.assert_allclose(w.grad.data, (s * (1 - s) + (1 - t * t)) * 2 * w.data, rtol=1e-12)


def test_leaf_gradients_accumulate_over_backward_calls_and_intermediates_do_not():
    x = Tensor(np.array([1.0, 2.0]), autograd=True)
    y = x * x
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad.data, 2 * (2 * x.data))  # two passes, each 2x
    np.testing.assert_allclose(y.grad.data, [1.0, 1.0])  # intermediate: recomputed, not summed


def test_many_tensors_never_confuse_each_other():
    """The book keys children by ids from randint(0, 100000): ~370 tensors make a collision likely.
    Here thousands of tensors in one graph still give the exact gradient."""
    x = Tensor(np.ones(3), autograd=True)
    total = x
    for _ in range(3000):
        total = total + x * Tensor(np.full(3, 0.001))
    total.sum(0).backward()
    np.testing.assert_allclose(x.grad.data, np.full(3, 1 + 3000 * 0.001))


def test_index_select_backward_scatters_repeated_indices():
    w = Tensor(np.zeros((4, 2)), autograd=True)
    out = w.index_select(np.array([[1, 1, 3]]))
    out.backward(np.ones((1, 3, 2)))
    np.testing.assert_array_equal(w.grad.data, [[0, 0], [2, 2], [0, 0], [1, 1]])


def test_cross_entropy_gradient_is_that_of_the_mean():
    logits = Tensor(np.zeros((4, 2)), autograd=True)
    logits.cross_entropy(np.array([0, 0, 1, 1])).backward()
    np.testing.assert_allclose(logits.grad.data, np.array([[-0.5, 0.5]] * 2 + [[0.5, -0.5]] * 2) / 4)


def test_numerical_and_autograd_gradients_have_input_shapes():
    grads = numerical_gradients(lambda a, m: a.mm(m), [A, M])
    assert [g.shape for g in grads] == [A.shape, M.shape]
    grads = autograd_gradients(lambda a, m: a.mm(m), [A, M])
    assert [g.shape for g in grads] == [A.shape, M.shape]


def test_sigmoid_does_not_overflow():
    out = Tensor(np.array([-1000.0, 0.0, 1000.0])).sigmoid().data
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "op, a, b",
    [
        ("+", (2, 3), (3, 2)),
        ("-", (2, 3), (2,)),
        ("*", (2, 3), (1, 3)),
        ("mm", (2, 3), (2, 3)),
    ],
)
def test_mismatched_shapes_raise_value_error_naming_both(op, a, b):
    x, y = Tensor(np.ones(a), autograd=True), Tensor(np.ones(b))
    with pytest.raises(ValueError) as info:
        {"+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "mm": lambda: x.mm(y)}[op]()
    assert str(a) in str(info.value) and str(b) in str(info.value)


def test_backward_without_autograd_explains_what_to_do():
    with pytest.raises(RuntimeError, match="autograd=True"):
        (Tensor(np.ones(2)) * Tensor(np.ones(2))).backward()


def test_index_outside_embedding_names_index_and_vocabulary_size():
    emb = Embedding(vocab_size=10, dim=2, rng=0)
    with pytest.raises(IndexError) as info:
        emb.forward(np.array([[1, 12]]))
    assert "12" in str(info.value) and "10" in str(info.value)
    with pytest.raises(IndexError, match="-1"):
        emb.forward(np.array([-1]))


def test_float_indices_are_refused():
    with pytest.raises(TypeError, match="integers"):
        Embedding(5, 1, rng=0).forward(np.array([0.5]))


# ---------------------------------------------------------------------------- layers


def test_deepcopy_of_a_model_shares_no_array():
    model = Sequential([Embedding(6, 3, rng=1), Tanh()])
    model.forward(np.array([[0, 1]])).sum(1).sum(0).backward(np.ones(3))
    twin = copy.deepcopy(model)
    for p, q in zip(model.get_parameters(), twin.get_parameters()):
        assert not np.shares_memory(p.data, q.data)
        assert not np.shares_memory(p.grad.data, q.grad.data)
        np.testing.assert_array_equal(p.data, q.data)
    twin.get_parameters()[0].data += 1
    assert not np.allclose(model.get_parameters()[0].data, twin.get_parameters()[0].data)


def test_deepcopy_keeps_parameter_lists_pointing_at_the_layer_weights():
    emb = Embedding(4, 2, rng=0)
    twin = copy.deepcopy(emb)
    assert twin.get_parameters()[0] is twin.weight


def test_sgd_trains_a_small_network_and_zeroes_gradients():
    """XOR-like data: a Linear-Tanh-Linear-Sigmoid network fits it with the book's loop."""
    x = Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float))
    y = Tensor(np.array([[0], [1], [1], [0]], dtype=float))
    model = Sequential([Linear(2, 8, rng=2), Tanh(), Linear(8, 1, rng=3), Sigmoid()])
    optim = SGD(model.get_parameters(), alpha=1.0)
    loss_fn = MSELoss()
    losses = []
    for _ in range(400):
        loss = loss_fn.forward(model.forward(x), y)
        loss.backward()
        optim.step()
        losses.append(float(loss.data[0]))
    assert losses[-1] < 0.05 < losses[0]
    assert all(np.all(p.grad.data == 0) for p in model.get_parameters())


def test_cross_entropy_loss_layer_and_relu_layer():
    x = Tensor(rng.standard_normal((5, 3)))
    model = Sequential([Linear(3, 4, rng=4), Relu(), Linear(4, 3, rng=5)])
    optim = SGD(model.get_parameters(), alpha=0.5)
    targets = np.array([0, 1, 2, 1, 0])
    first = None
    for _ in range(200):
        loss = CrossEntropyLoss().forward(model.forward(x), targets)
        first = float(loss.data) if first is None else first
        loss.backward()
        optim.step()
    assert float(loss.data) < 0.1 * first


def test_linear_and_embedding_are_seeded():
    np.testing.assert_array_equal(Linear(3, 2, rng=7).weight.data, Linear(3, 2, rng=7).weight.data)
    np.testing.assert_array_equal(Embedding(9, 2, rng=7).weight.data, Embedding(9, 2, rng=7).weight.data)
