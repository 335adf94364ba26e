"""Seconds per training epoch of the chapter-15 spam model, framework vs plain numpy.

    python benchmarks/bench_training.py

One epoch = the full training set (about 32,000 emails of 500 word slots) in batches of 500:
Embedding(len(vocab), 1) -> sum -> sigmoid -> squared error -> SGD (alpha = 0.01), as the book.
The same epoch written directly in numpy, with the gradient worked out by hand, shows what this
machine allows; the ratio is the cost of autograd. Bars (issue 2): <= 0.5 s per epoch and within
3x of plain numpy. For scale, the book's own framework needs about 20 s per epoch.

It also times the embedding's backward on one batch of 500 emails x 500 word slots, as notebook 01,
§3.3 does: the book's Python loop over every index against the package's vectorized rule (one
np.bincount per column), and prints the ratio that the notebook quotes as "about a hundred times".
"""

import time

import numpy as np

from grokfl_helpers.data import UNK, load_enron
from grokfl_helpers.tensor import Tensor
from grokfl_helpers.training import accuracy, new_spam_model, train

BATCH, ALPHA, REPEATS = 500, 0.01, 5


def numpy_epoch(W, X, y):
    """One epoch with no framework: forward, hand-written gradient, update."""
    for start in range(0, len(X), BATCH):
        xb, yb = X[start:start + BATCH], y[start:start + BATCH, 0]
        p = 0.5 * (1.0 + np.tanh(0.5 * W[xb, 0].sum(1)))
        dscore = 2.0 * (p - yb) * p * (1.0 - p)  # d(sum of squared errors)/d(score)
        grad = np.bincount(xb.ravel(), weights=np.repeat(dscore, xb.shape[1]), minlength=len(W))
        W[:, 0] -= ALPHA * grad
        W[UNK] = 0.0
    return W


def best_of(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def embedding_backward_loop_vs_vectorized(repeats=3):
    """Notebook 01, §3.3: the book's loop over every looked-up index against the vectorized rule."""
    rng = np.random.default_rng(0)
    vocab_size = 159_213
    ids = rng.integers(0, vocab_size, size=(500, 500))
    grad_rows = rng.standard_normal((500, 500, 1))

    def loop_backward():  # the book's way: one Python step per index
        new_grad = np.zeros((vocab_size, 1))
        flat_ids, flat_grad = ids.reshape(-1), grad_rows.reshape(ids.size, -1)
        for i in range(len(flat_ids)):
            new_grad[flat_ids[i]] += flat_grad[i]
        return new_grad

    def vectorized_backward():
        weight = Tensor(np.zeros((vocab_size, 1)), autograd=True)
        weight.index_select(ids).backward(grad_rows)
        return weight.grad.data

    assert np.allclose(loop_backward(), vectorized_backward())
    loop_best, _ = best_of(loop_backward, repeats)
    vec_best, _ = best_of(vectorized_backward, repeats)
    print(f"embedding backward, one batch of 500 x 500 (notebook 01, §3.3): Python loop {loop_best * 1000:.0f} ms, "
          f"vectorized {vec_best * 1000:.1f} ms (best of {repeats}): about {loop_best / vec_best:.0f}x faster")


def main():
    embedding_backward_loop_vs_vectorized()
    corpus = load_enron(verbose=False)
    X, y = corpus.train_x, corpus.train_y
    print(f"training set: {len(X):,} emails x {X.shape[1]} word slots, vocabulary {len(corpus.vocab):,}")

    framework_model = new_spam_model(len(corpus.vocab))
    fw_best, fw_median = best_of(lambda: train(framework_model, X, y))
    W = np.zeros((len(corpus.vocab), 1))
    np_best, np_median = best_of(lambda: numpy_epoch(W, X, y))

    # Same numbers? (After the same number of epochs from zero, both must agree.)
    a, b = new_spam_model(len(corpus.vocab)), np.zeros((len(corpus.vocab), 1))
    train(a, X, y)
    numpy_epoch(b, X, y)
    max_diff = float(np.abs(a.weight.data - b).max())

    ratio = fw_best / np_best
    print(f"grokfl_helpers.tensor: {fw_best:.3f} s per epoch (best of {REPEATS}; median {fw_median:.3f} s)")
    print(f"plain numpy:           {np_best:.3f} s per epoch (best of {REPEATS}; median {np_median:.3f} s)")
    print(f"ratio framework / numpy: {ratio:.2f}x")
    print(f"max |weight difference| after one epoch: {max_diff:.1e}")
    print(f"test accuracy after {REPEATS} epochs: {accuracy(framework_model, corpus.test_x, corpus.test_y):.2%}")
    ok = fw_best <= 0.5 and ratio <= 3.0
    print(f"bars (<= 0.5 s per epoch, <= 3x numpy): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
