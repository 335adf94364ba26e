"""An autograd tensor in numpy: the framework of chapter 13 of *Grokking Deep Learning*, rebuilt.

The names are the book's — ``Tensor(data, autograd=True)``, ``creators``, ``creation_op``,
``index_select``, ``Embedding``, ``SGD`` — so the two can be read side by side. The structure is
micrograd's: every operation computes its output and, right beside it, a small ``_backward``
closure that adds the operation's local gradient into its inputs. ``backward()`` orders the graph
topologically once and calls those closures from the output back to the leaves.

That structure fixes four bugs of the book's version (notebook 01 shows each one):

* The book names tensors with ``np.random.randint(0, 100000)`` and counts children by that id;
  two tensors that draw the same id corrupt each other's counts. Here a tensor is known by the
  Python object itself: no ids at all.
* In the book, only ``+``, ``-`` and ``*`` pass on where a gradient came from; a tensor feeding two
  other operations (``x.sigmoid() + x.tanh()``) forwards its gradient too early and part of it
  twice. Here each tensor's gradient is complete before its own rule runs, because the rules are
  called in reverse topological order.
* The book's ``index_select`` backward is a Python loop over every index (250,000 of them for a
  batch of 500 emails of 500 words). Here it is one ``np.bincount`` per embedding dimension.
* The book's ``cross_entropy`` takes the *mean* loss forward but sends back the gradient of the
  *sum*; here forward and backward agree.

``copy.deepcopy`` of a tensor or a model copies the numbers and drops the graph: the copy shares
no array with the original, which is what a client receiving the global model needs.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Tensor",
    "Layer",
    "Linear",
    "Embedding",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Relu",
    "RNNCell",
    "LSTMCell",
    "MSELoss",
    "CrossEntropyLoss",
    "SGD",
]


def _as_array(value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.data
    return np.asarray(value)


def _check_same_shape(op: str, a: Tensor, b: Tensor) -> None:
    if a.data.shape != b.data.shape:
        raise ValueError(
            f"{op}: shapes {a.data.shape} and {b.data.shape} differ. Like the book's framework, "
            f"this Tensor does not broadcast: use .expand(dim, copies) to repeat a tensor first."
        )


class Tensor:
    """An n-dimensional array that remembers how it was made, so that it can send gradients back.

    ``Tensor(data, autograd=True)`` is a leaf whose gradient ``.grad`` (a ``Tensor``) is filled in by
    ``backward()``. Every operation on tensors returns a new tensor whose ``creators`` are its
    inputs and whose ``creation_op`` names the operation, as in the book.

    Taught in notebook 01, §2 (built there cell by cell) and §4 (this, the package's, checked operation by operation).
    """

    def __init__(self, data, autograd: bool = False, creators=None, creation_op: str | None = None):
        self.data = np.array(data) if not isinstance(data, np.ndarray) else data
        self.autograd = bool(autograd)
        self.creators = tuple(creators) if creators else ()
        self.creation_op = creation_op
        self.grad: Tensor | None = None
        self._backward = None  # set by the operation that made this tensor

    # ------------------------------------------------------------------ plumbing

    @property
    def shape(self) -> tuple:
        return self.data.shape

    def __repr__(self) -> str:
        flag = ", autograd=True" if self.autograd else ""
        return f"Tensor({self.data!r}{flag})"

    def __str__(self) -> str:
        return str(self.data)

    def __deepcopy__(self, memo):
        """Copy the numbers (and the gradient), not the graph: the copy shares no array."""
        clone = Tensor(self.data.copy(), autograd=self.autograd)
        if self.grad is not None:
            clone.grad = Tensor(self.grad.data.copy())
        memo[id(self)] = clone
        return clone

    def _make(self, data, creators, op: str) -> Tensor:
        """A new tensor made by ``op`` from ``creators``; it tracks gradients if any creator does."""
        autograd = any(c.autograd for c in creators)
        return Tensor(data, autograd=autograd, creators=creators if autograd else None,
                      creation_op=op if autograd else None)

    def _accumulate(self, grad: np.ndarray) -> None:
        """Add ``grad`` into this tensor's gradient: a tensor used twice receives both shares."""
        if not self.autograd:
            return
        if self.grad is None:
            self.grad = Tensor(np.array(grad, dtype=np.float64, copy=True))
        else:
            self.grad.data += grad

    def backward(self, grad=None) -> None:
        """Fill in ``.grad`` of every tensor this one was computed from.

        ``grad`` is the gradient of the final quantity with respect to this tensor; it defaults to
        ones (this tensor *is* the quantity, e.g. a loss). Leaf tensors accumulate gradients over
        calls, as in the book (``SGD.step`` zeroes them); intermediate tensors are recomputed on
        every call.
        """
        if not self.autograd:
            raise RuntimeError(
                "backward() was called on a tensor that does not track gradients. "
                "Create the tensors you want gradients for with Tensor(data, autograd=True)."
            )
        grad = np.ones_like(self.data, dtype=np.float64) if grad is None else _as_array(grad)
        if grad.shape != self.data.shape:
            raise ValueError(f"backward: gradient of shape {grad.shape} for a tensor of shape {self.data.shape}")

        order = self._topological_order()
        for node in order:
            if node.creators:  # intermediate results start from zero on every backward pass
                node.grad = None
        self._accumulate(grad)
        for node in reversed(order):
            if node._backward is not None and node.grad is not None:
                node._backward()

    def _topological_order(self) -> list[Tensor]:
        """Every tensor this one depends on, each after all of its creators (iterative DFS)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for creator in node.creators:
                if creator.autograd and id(creator) not in visited:
                    stack.append((creator, False))
        return order

    # ------------------------------------------------------------------ elementwise

    def __add__(self, other: Tensor) -> Tensor:
        _check_same_shape("+", self, other)
        out = self._make(self.data + other.data, (self, other), "add")

        def _backward():
            self._accumulate(out.grad.data)
            other._accumulate(out.grad.data)

        out._backward = _backward
        return out

    def __neg__(self) -> Tensor:
        out = self._make(-self.data, (self,), "neg")

        def _backward():
            self._accumulate(-out.grad.data)

        out._backward = _backward
        return out

    def __sub__(self, other: Tensor) -> Tensor:
        _check_same_shape("-", self, other)
        out = self._make(self.data - other.data, (self, other), "sub")

        def _backward():
            self._accumulate(out.grad.data)
            other._accumulate(-out.grad.data)

        out._backward = _backward
        return out

    def __mul__(self, other: Tensor) -> Tensor:
        _check_same_shape("*", self, other)
        out = self._make(self.data * other.data, (self, other), "mul")

        def _backward():
            self._accumulate(out.grad.data * other.data)
            other._accumulate(out.grad.data * self.data)

        out._backward = _backward
        return out

    def sigmoid(self) -> Tensor:
        s = 0.5 * (1.0 + np.tanh(0.5 * self.data))  # = 1 / (1 + e^-x), without overflow
        out = self._make(s, (self,), "sigmoid")

        def _backward():
            self._accumulate(out.grad.data * s * (1.0 - s))

        out._backward = _backward
        return out

    def tanh(self) -> Tensor:
        t = np.tanh(self.data)
        out = self._make(t, (self,), "tanh")

        def _backward():
            self._accumulate(out.grad.data * (1.0 - t * t))

        out._backward = _backward
        return out

    def relu(self) -> Tensor:
        positive = self.data > 0
        out = self._make(self.data * positive, (self,), "relu")

        def _backward():
            self._accumulate(out.grad.data * positive)

        out._backward = _backward
        return out

    # ------------------------------------------------------------------ shapes

    def sum(self, dim: int) -> Tensor:
        """Sum over dimension ``dim`` (the book's ``sum_dim``)."""
        out = self._make(self.data.sum(dim), (self,), f"sum_{dim}")

        def _backward():
            self._accumulate(np.broadcast_to(np.expand_dims(out.grad.data, dim), self.data.shape))

        out._backward = _backward
        return out

    def expand(self, dim: int, copies: int) -> Tensor:
        """Repeat this tensor ``copies`` times along a new dimension inserted at ``dim``."""
        data = np.repeat(np.expand_dims(self.data, dim), copies, axis=dim)
        out = self._make(data, (self,), f"expand_{dim}")

        def _backward():
            self._accumulate(out.grad.data.sum(dim))

        out._backward = _backward
        return out

    def transpose(self) -> Tensor:
        out = self._make(self.data.transpose(), (self,), "transpose")

        def _backward():
            self._accumulate(out.grad.data.transpose())

        out._backward = _backward
        return out

    def mm(self, other: Tensor) -> Tensor:
        """Matrix product of two 2-d tensors."""
        if self.data.ndim != 2 or other.data.ndim != 2 or self.data.shape[1] != other.data.shape[0]:
            raise ValueError(
                f"mm: cannot multiply shapes {self.data.shape} and {other.data.shape}; "
                f"mm needs (n, k) and (k, m)"
            )
        out = self._make(self.data @ other.data, (self, other), "mm")

        def _backward():
            self._accumulate(out.grad.data @ other.data.T)
            other._accumulate(self.data.T @ out.grad.data)

        out._backward = _backward
        return out

    # ------------------------------------------------------------------ lookups and losses

    def index_select(self, indices) -> Tensor:
        """Rows of this 2-d tensor picked by an integer array (or Tensor) of any shape.

        ``weight.index_select(ids)`` has shape ``ids.shape + (dim,)``: the embedding lookup.
        Backward adds each output row's gradient into the row it came from — one vectorized
        ``np.bincount`` per column instead of the book's Python loop over every index.
        """
        idx = np.asarray(_as_array(indices))
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"index_select: indices must be integers, got dtype {idx.dtype}")
        if self.data.ndim != 2:
            raise ValueError(f"index_select: needs a 2-d tensor (rows to pick), got shape {self.data.shape}")
        n_rows = self.data.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise IndexError(f"index_select: index {bad} is outside the vocabulary of size {n_rows} "
                             f"(valid indices are 0 … {n_rows - 1})")
        out = self._make(self.data[idx], (self,), "index_select")

        def _backward():
            flat_idx = idx.reshape(-1)
            flat_grad = out.grad.data.reshape(flat_idx.size, -1)
            grad = np.empty(self.data.shape, dtype=np.float64)
            for column in range(self.data.shape[1]):
                grad[:, column] = np.bincount(flat_idx, weights=flat_grad[:, column], minlength=n_rows)
            self._accumulate(grad)

        out._backward = _backward
        return out

    def softmax(self) -> Tensor:
        """Softmax over the last dimension."""
        shifted = self.data - self.data.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        s = e / e.sum(axis=-1, keepdims=True)
        out = self._make(s, (self,), "softmax")

        def _backward():
            g = out.grad.data
            self._accumulate(s * (g - (g * s).sum(axis=-1, keepdims=True)))

        out._backward = _backward
        return out

    def cross_entropy(self, target_indices) -> Tensor:
        """Mean cross-entropy between softmax(self) over the last dimension and integer targets.

        Returns a 0-d tensor. Its gradient is the gradient of the *mean* (the book's backward sends
        the gradient of the sum, N times too large for a batch of N).
        """
        targets = np.asarray(_as_array(target_indices)).reshape(-1)
        logits = self.data.reshape(-1, self.data.shape[-1])
        if targets.size != logits.shape[0]:
            raise ValueError(f"cross_entropy: {targets.size} targets for {logits.shape[0]} rows of logits "
                             f"(shape {self.data.shape})")
        if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
            raise IndexError(f"cross_entropy: target classes must be in 0 … {logits.shape[1] - 1}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = np.arange(targets.size)
        out = self._make(np.array(-log_probs[rows, targets].mean()), (self,), "cross_entropy")

        def _backward():
            dlogits = np.exp(log_probs)
            dlogits[rows, targets] -= 1.0
            self._accumulate((dlogits * (out.grad.data / targets.size)).reshape(self.data.shape))

        out._backward = _backward
        return out


# ---------------------------------------------------------------------- layers


def _rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


class Layer:
    """A piece of a model: ``forward(input)`` and the list of tensors to train.

    Taught in notebook 01, §5.
    """

    def __init__(self):
        self.parameters: list[Tensor] = []

    def get_parameters(self) -> list[Tensor]:
        return self.parameters

    def __call__(self, input: Tensor) -> Tensor:
        return self.forward(input)


class Linear(Layer):
    """``input.mm(weight) + bias``, with He initialisation as in the book.

    Taught in notebook 01, §5.
    """

    def __init__(self, n_inputs: int, n_outputs: int, bias: bool = True, rng=None):
        super().__init__()
        rng = _rng(rng)
        self.weight = Tensor(rng.standard_normal((n_inputs, n_outputs)) * np.sqrt(2.0 / n_inputs), autograd=True)
        self.parameters.append(self.weight)
        self.bias = Tensor(np.zeros(n_outputs), autograd=True) if bias else None
        if bias:
            self.parameters.append(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        out = input.mm(self.weight)
        if self.bias is not None:
            out = out + self.bias.expand(0, len(input.data))
        return out


class Embedding(Layer):
    """A table of ``vocab_size`` rows of ``dim`` numbers; ``forward(ids)`` looks rows up.

    Taught in notebook 01, §3 (its gradient) and §5.
    """

    def __init__(self, vocab_size: int, dim: int, rng=None):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.weight = Tensor((_rng(rng).random((vocab_size, dim)) - 0.5) / dim, autograd=True)
        self.parameters.append(self.weight)

    def forward(self, input) -> Tensor:
        return self.weight.index_select(input)


class Sequential(Layer):
    """Layers applied one after the other.

    Taught in notebook 01, §5.
    """

    def __init__(self, layers=None):
        super().__init__()
        self.layers = list(layers or [])

    def add(self, layer: Layer) -> None:
        self.layers.append(layer)

    def forward(self, input: Tensor) -> Tensor:
        for layer in self.layers:
            input = layer.forward(input)
        return input

    def get_parameters(self) -> list[Tensor]:
        return [p for layer in self.layers for p in layer.get_parameters()]


class Sigmoid(Layer):
    """The logistic function, 1 / (1 + e^-x), as a layer: ``forward(input)`` is ``input.sigmoid()``. Taught in notebook 01, §5."""

    def forward(self, input: Tensor) -> Tensor:
        return input.sigmoid()


class Tanh(Layer):
    """The hyperbolic tangent as a layer: ``forward(input)`` is ``input.tanh()``. Taught in notebook 01, §5."""

    def forward(self, input: Tensor) -> Tensor:
        return input.tanh()


class Relu(Layer):
    """max(0, x) as a layer: ``forward(input)`` is ``input.relu()``. Taught in notebook 01, §5."""

    def forward(self, input: Tensor) -> Tensor:
        return input.relu()


class RNNCell(Layer):
    """The book's chapter-14 recurrent cell: ``hidden = act(w_ih(input) + w_hh(hidden))``, and an
    output read from the new hidden state. Taught in notebook 12, §1.

    ``forward(input, hidden) -> (output, new_hidden)`` for a batch: ``input`` is (batch, n_inputs),
    ``hidden`` (batch, n_hidden), ``output`` (batch, n_output). ``init_hidden(batch_size)`` is the
    all-zero state a sequence starts from.
    """

    def __init__(self, n_inputs: int, n_hidden: int, n_output: int, activation: str = "sigmoid", rng=None):
        super().__init__()
        if activation not in ("sigmoid", "tanh"):
            raise ValueError(f"RNNCell: activation must be 'sigmoid' or 'tanh', got {activation!r}")
        rng = _rng(rng)
        self.n_inputs, self.n_hidden, self.n_output = n_inputs, n_hidden, n_output
        self.activation = Sigmoid() if activation == "sigmoid" else Tanh()
        self.w_ih = Linear(n_inputs, n_hidden, rng=rng)
        self.w_hh = Linear(n_hidden, n_hidden, rng=rng)
        self.w_ho = Linear(n_hidden, n_output, rng=rng)
        self.parameters = self.w_ih.parameters + self.w_hh.parameters + self.w_ho.parameters

    def forward(self, input: Tensor, hidden: Tensor):
        new_hidden = self.activation.forward(self.w_ih.forward(input) + self.w_hh.forward(hidden))
        return self.w_ho.forward(new_hidden), new_hidden

    def init_hidden(self, batch_size: int = 1) -> Tensor:
        return Tensor(np.zeros((batch_size, self.n_hidden)), autograd=True)


class LSTMCell(Layer):
    """The book's chapter-14 long short-term memory cell. Taught in notebook 12, §1.

    Four gates read the input and the previous hidden state: forget ``f``, input ``i`` and output
    ``o`` (sigmoids, between 0 and 1) and the candidate ``g`` (tanh). The cell state keeps what the
    forget gate lets through and adds what the input gate lets in, ``c = f * c_prev + i * g``; the
    hidden state shows what the output gate lets out, ``h = o * tanh(c)``; the output is
    ``w_ho(h)`` (logits over ``n_output`` words). Because ``c`` is carried by a sum, not squashed
    through a matrix at every step, its gradient survives many steps, where the plain ``RNNCell``'s
    vanishes or explodes.

    The book's names: ``LSTMCell(n_inputs, n_hidden, n_output)``, ``forward(input, hidden) ->
    (output, (h, c))``, ``init_hidden(batch_size)``, and one ``Linear`` per gate and source
    (``xf``, ``hf``, …; the hidden-side ones without a bias), all vectorized over the batch. Two
    changes: ``init_hidden`` is all zeros (the book sets the first unit of both states to 1, which
    nothing needs), and ``w_ho`` has a bias, so the model can learn how common each word is.
    """

    def __init__(self, n_inputs: int, n_hidden: int, n_output: int, rng=None):
        super().__init__()
        rng = _rng(rng)
        self.n_inputs, self.n_hidden, self.n_output = n_inputs, n_hidden, n_output
        self.xf, self.xi, self.xo, self.xc = (Linear(n_inputs, n_hidden, rng=rng) for _ in range(4))
        self.hf, self.hi, self.ho, self.hc = (Linear(n_hidden, n_hidden, bias=False, rng=rng) for _ in range(4))
        self.w_ho = Linear(n_hidden, n_output, rng=rng)
        for layer in (self.xf, self.xi, self.xo, self.xc, self.hf, self.hi, self.ho, self.hc, self.w_ho):
            self.parameters += layer.get_parameters()

    def forward(self, input: Tensor, hidden):
        prev_hidden, prev_cell = hidden
        f = (self.xf.forward(input) + self.hf.forward(prev_hidden)).sigmoid()
        i = (self.xi.forward(input) + self.hi.forward(prev_hidden)).sigmoid()
        o = (self.xo.forward(input) + self.ho.forward(prev_hidden)).sigmoid()
        g = (self.xc.forward(input) + self.hc.forward(prev_hidden)).tanh()
        c = (f * prev_cell) + (i * g)
        h = o * c.tanh()
        output = self.w_ho.forward(h)
        return output, (h, c)

    def init_hidden(self, batch_size: int = 1):
        """The state ``(h, c)`` a sequence starts from: zeros of shape (batch_size, n_hidden)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"init_hidden: batch_size must be a positive integer, got {batch_size!r}")
        zeros = np.zeros((batch_size, self.n_hidden))
        return Tensor(zeros, autograd=True), Tensor(zeros.copy(), autograd=True)


class MSELoss(Layer):
    """The book's squared error, summed over the batch: ``((pred - target) * (pred - target)).sum(0)``.

    Taught in notebook 01, §5.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        diff = pred - target
        return (diff * diff).sum(0)


class CrossEntropyLoss(Layer):
    """Mean cross-entropy of logits against integer class targets.

    Taught in notebook 01, §5.
    """

    def forward(self, input: Tensor, target) -> Tensor:
        return input.cross_entropy(target)


class SGD:
    """Plain stochastic gradient descent: ``p.data -= alpha * p.grad.data`` for every parameter.

    Taught in notebook 01, §5.
    """

    def __init__(self, parameters, alpha: float = 0.1):
        self.parameters = list(parameters)
        self.alpha = alpha

    def zero(self) -> None:
        for p in self.parameters:
            if p.grad is not None:
                p.grad.data[...] = 0.0

    def step(self, zero: bool = True) -> None:
        for p in self.parameters:
            if p.grad is None:  # not used in this forward pass
                continue
            p.data -= self.alpha * p.grad.data
            if zero:
                p.grad.data[...] = 0.0
