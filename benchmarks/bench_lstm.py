"""Seconds per epoch of notebook 12's LSTM language model: the course's Tensor against plain numpy.

Both train the same model (embedding, the book's LSTMCell with one weight matrix per gate and
source, a softmax over the vocabulary) with the same truncated backpropagation through time, the
same batch of columns, the same gradient clip and SGD step, on the same stream of word ids. The
plain-numpy version writes the forward and backward passes out by hand, as one would without an
autograd framework; the difference is the framework's overhead (building the graph, sorting it,
one Python closure per operation). The two start from the same weights and must end with the same
weights (checked), so they do the same arithmetic. The bar (issue 14): within 3x of plain numpy.

    python benchmarks/bench_lstm.py            # the notebook's sizes, a synthetic stream
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np

from grokfl_helpers import language_model as L


def _gates(model):
    c = model.cell
    return [(c.xf, c.hf), (c.xi, c.hi), (c.xo, c.ho), (c.xc, c.hc)]


def numpy_train(model, X, y, batch_size=L.BATCH_SIZE, alpha=L.ALPHA, bptt=L.BPTT):
    """One epoch of the same training, forward and backward by hand in numpy; updates ``model``."""
    Xc, yc = L._columns(X, y, batch_size)
    E = model.embedding.weight.data
    (Wxf, Whf), (Wxi, Whi), (Wxo, Who), (Wxc, Whc) = [(x.weight.data, h.weight.data) for x, h in _gates(model)]
    bf, bi, bo, bc = [x.bias.data for x, _ in _gates(model)]
    Wout, bout = model.cell.w_ho.weight.data, model.cell.w_ho.bias.data
    params = [E, Wxf, bf, Wxi, bi, Wxo, bo, Wxc, bc, Whf, Whi, Who, Whc, Wout, bout]
    B, H = Xc.shape[1], model.hidden
    h, c = np.zeros((B, H)), np.zeros((B, H))
    sig = lambda v: 0.5 * (1.0 + np.tanh(0.5 * v))  # noqa: E731
    for start in range(0, len(Xc), bptt):
        steps = range(start, min(start + bptt, len(Xc)))
        cache = []
        for t in steps:
            x = E[Xc[t]]
            f = sig(x @ Wxf + bf + h @ Whf)
            i = sig(x @ Wxi + bi + h @ Whi)
            o = sig(x @ Wxo + bo + h @ Who)
            g = np.tanh(x @ Wxc + bc + h @ Whc)
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            h_new = o * tc
            logits = h_new @ Wout + bout
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            cache.append((x, h, c, f, i, o, g, tc, h_new, p))
            h, c = h_new, c_new
        grads = [np.zeros_like(w) for w in params]
        dE, dWxf, dbf, dWxi, dbi, dWxo, dbo, dWxc, dbc, dWhf, dWhi, dWho, dWhc, dWout, dbout = grads
        dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
        scale = 1.0 / (len(steps) * B)
        for t, (x, h_prev, c_prev, f, i, o, g, tc, h_t, p) in zip(reversed(steps), reversed(cache)):
            dlogits = p.copy()
            dlogits[np.arange(B), yc[t]] -= 1.0
            dlogits *= scale
            dWout += h_t.T @ dlogits
            dbout += dlogits.sum(0)
            dh = dlogits @ Wout.T + dh_next
            do = dh * tc * o * (1 - o)
            dc = dh * o * (1 - tc * tc) + dc_next
            df = dc * c_prev * f * (1 - f)
            di = dc * g * i * (1 - i)
            dg = dc * i * (1 - g * g)
            dx = np.zeros_like(x)
            dh_next = np.zeros_like(h_prev)
            for d, Wx, Wh, dWx, dWh, db in ((df, Wxf, Whf, dWxf, dWhf, dbf), (di, Wxi, Whi, dWxi, dWhi, dbi),
                                            (do, Wxo, Who, dWxo, dWho, dbo), (dg, Wxc, Whc, dWxc, dWhc, dbc)):
                dWx += x.T @ d
                db += d.sum(0)
                dWh += h_prev.T @ d
                dx += d @ Wx.T
                dh_next += d @ Wh.T
            dc_next = dc * f
            for column in range(dx.shape[1]):
                dE[:, column] += np.bincount(Xc[t], weights=dx[:, column], minlength=E.shape[0])
        norm = math.sqrt(sum(float((d ** 2).sum()) for d in grads))
        factor = alpha * (L.CLIP / norm if norm > L.CLIP else 1.0)
        for w, d in zip(params, grads):
            w -= factor * d
    return model


def seconds(fn, repeat):
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=15_000, help="words per epoch (notebook 12: about 15,000)")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    words = rng.zipf(1.3, args.words + 1) % args.vocab  # a word-frequency-like stream
    X, y = words[:-1], words[1:]
    start = L.LanguageModel(args.vocab, seed=0)
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    L.train(a, X, y)
    with L.one_blas_thread():
        numpy_train(b, X, y)
    gap = max(float(np.abs(p.data - q.data).max()) for p, q in zip(a.get_parameters(), b.get_parameters()))
    if gap > 1e-8:
        raise SystemExit(f"the two implementations disagree (largest weight difference {gap:.2e})")

    def course():
        L.train(copy.deepcopy(start), X, y)

    def plain():
        with L.one_blas_thread():
            numpy_train(copy.deepcopy(start), X, y)

    t_course, t_plain = seconds(course, args.repeat), seconds(plain, args.repeat)
    print(f"LSTM language model: {start.n_parameters():,} parameters, vocabulary {args.vocab:,}, "
          f"{args.words:,} words per epoch, batch of {L.BATCH_SIZE} columns, BPTT {L.BPTT}")
    print(f"same weights after one epoch (largest difference {gap:.1e})")
    print(f"course Tensor: {t_course:.2f} s per epoch")
    print(f"plain numpy:   {t_plain:.2f} s per epoch")
    print(f"ratio: {t_course / t_plain:.2f}x (bar: within 3x)")


if __name__ == "__main__":
    main()
