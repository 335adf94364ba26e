"""Notebook 01 builds a Tensor cell by cell (the cells tagged "build"); this proves that what it
builds gives the same values and gradients as the package's grokfl_helpers.tensor."""

from pathlib import Path

import nbformat
import numpy as np
import pytest

from grokfl_helpers import tensor

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_tensor_framework.ipynb"


@pytest.fixture(scope="module")
def built():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "build" in c.metadata.get("tags", [])]
    assert len(cells) >= 5, "notebook 01 should tag the cells that build its Tensor with 'build'"
    namespace = {"np": np}
    for source in cells:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace["Tensor"]


rng = np.random.default_rng(3)
A, B = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))

PROGRAMS = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "sigmoid": lambda a, b: a.sigmoid(),
    "sum": lambda a, b: a.sum(1),
    "used twice": lambda a, b: a * a + b,
    "chain": lambda a, b: ((a * b).sigmoid() + a).sum(0),
    "shared intermediate": lambda a, b: ((a * b) * (a * b).sigmoid()).sum(1),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_notebook_tensor_agrees_with_package(built, name):
    program = PROGRAMS[name]
    a1, b1 = built(A.copy(), autograd=True), built(B.copy(), autograd=True)
    out1 = program(a1, b1)
    a2, b2 = tensor.Tensor(A.copy(), autograd=True), tensor.Tensor(B.copy(), autograd=True)
    out2 = program(a2, b2)
    np.testing.assert_allclose(out1.data, out2.data, rtol=1e-12)

    # The notebook's backward() always seeds with ones; do the same for the package.
    out1.backward()
    out2.backward(np.ones_like(out2.data))
    for mine, theirs in ((a1, a2), (b1, b2)):
        if theirs.grad is None:
            assert mine.grad is None or not np.any(mine.grad)
        else:
            np.testing.assert_allclose(mine.grad, theirs.grad.data, rtol=1e-12)
