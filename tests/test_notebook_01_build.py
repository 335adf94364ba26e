"""Notebook 01 builds a Tensor cell by cell (the cells tagged "build"); this proves that what it
builds gives the same values and gradients as the package's grokfl_helpers.tensor."""

import numpy as np
import pytest

from grokfl_helpers import notebook_cells, tensor


@pytest.fixture(scope="module")
def built():
    # The same loader solution 01 uses to continue from these cells.
    assert len(notebook_cells.build_cells("01")) >= 5, "notebook 01 should tag the cells that build its Tensor with 'build'"
    return notebook_cells.run_build_cells("01")["Tensor"]


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


def test_the_loader_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one notebook 99_"):
        notebook_cells.run_build_cells("99")
    with pytest.raises(TypeError, match="a number such as '01'"):
        notebook_cells.run_build_cells(1.0)
    empty = tmp_path / "empty.ipynb"
    empty.write_text('{"cells": [{"cell_type": "code", "metadata": {}, "source": "x = 1"}]}')
    with pytest.raises(ValueError, match="no code cells tagged 'build'"):
        notebook_cells.run_build_cells(empty)
    namespace = {}
    empty.write_text('{"cells": [{"cell_type": "code", "metadata": {"tags": ["build"]}, "source": ["x = ", "1"]}]}')
    assert notebook_cells.run_build_cells(empty, namespace) is namespace and namespace["x"] == 1
