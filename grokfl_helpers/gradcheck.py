"""Checking a gradient rule against the definition of a derivative.

For any function ``f`` of some tensors, autograd's gradient must agree with central finite
differences, ``(L(x + eps) - L(x - eps)) / (2 eps)``, one number at a time. With float64 and
``eps = 1e-6`` the two agree to about ten digits when the rule is right, and disagree in the
first digit when it is wrong.

A non-scalar output is reduced to a scalar ``L = sum(f(x) * R)`` with a fixed random ``R``, so
every element of the output takes part in the check.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor

__all__ = ["numerical_gradients", "autograd_gradients", "relative_error", "gradient_check"]


def _projection(f, arrays, seed):
    out = f(*[Tensor(a.copy()) for a in arrays]).data
    return np.random.default_rng(seed).standard_normal(out.shape)


def numerical_gradients(f, arrays, eps: float = 1e-6, seed: int = 0) -> list[np.ndarray]:
    """Central-difference gradient of ``sum(f(*tensors) * R)`` with respect to each input array.

    Taught in notebook 01, §3 (gradient_check uses it).
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    weights = _projection(f, arrays, seed)

    def loss(values):
        return float((f(*[Tensor(v) for v in values]).data * weights).sum())

    grads = []
    for k, array in enumerate(arrays):
        grad = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[k][i] += eps
            minus[k][i] -= eps
            grad[i] = (loss(plus) - loss(minus)) / (2 * eps)
        grads.append(grad)
    return grads


def autograd_gradients(f, arrays, seed: int = 0) -> list[np.ndarray]:
    """The same gradients, from ``backward()``.

    Taught in notebook 01, §3 (gradient_check uses it).
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    weights = _projection(f, arrays, seed)
    tensors = [Tensor(a.copy(), autograd=True) for a in arrays]
    f(*tensors).backward(weights)
    return [t.grad.data if t.grad is not None else np.zeros_like(t.data) for t in tensors]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / max(|a| + |b|, tiny)`` over all elements: 0 when they agree, ~1 when unrelated.

    Taught in notebook 01, §3 (gradient_check uses it).
    """
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def gradient_check(f, *arrays, eps: float = 1e-6, seed: int = 0) -> float:
    """Largest relative error between autograd and finite differences over all inputs of ``f``.

    >>> gradient_check(lambda x: x.sigmoid(), np.array([[0.5, -1.0]])) < 1e-6
    True

    Taught in notebook 01, §3.
    """
    numeric = numerical_gradients(f, arrays, eps=eps, seed=seed)
    analytic = autograd_gradients(f, arrays, seed=seed)
    return max(relative_error(n, a) for n, a in zip(numeric, analytic))
