"""The course tested as a learner uses it: notebook 03 run in JupyterLab, in headless Chromium.

JupyterLab is started on 127.0.0.1 with a token and autosave off, serving a copy of the notebook
whose stored outputs are removed; Chromium opens it, runs every cell through the menu, waits for
the kernel, and the test checks that no cell shows an error or a warning and that the accuracy
plot is on the page. The screenshot is saved in artifacts/browser/ (git-ignored).

The other tests prove that this check can fail: a notebook that raises, and one that prints a
warning, must each be reported.

Needs Chromium (Debian: `apt-get install -y chromium`); never run `playwright install`. Without
a Chromium the tests are skipped, unless GROKFL_REQUIRE_BROWSER=1 (set in CI) makes that an error.
"""

import os
import time
from pathlib import Path

import nbformat
import pytest

from browser_support import (
    CHROMIUM_NAMES,
    CHROMIUM_PATH,
    Chromium,
    JupyterLab,
    ProcessId,
    copy_without_outputs,
    find_chromium,
    run_in_browser,
)

REPOSITORY = Path(__file__).resolve().parent.parent
NOTEBOOK = REPOSITORY / "notebooks" / "03_federated_rounds.ipynb"
# Text in the source of the cell that draws the lesson's accuracy-per-round plot (its title).
ACCURACY_FIGURE = "Test accuracy per round: federated vs centralized"
SCREENSHOTS = REPOSITORY / "artifacts" / "browser"


@pytest.fixture(scope="module")
def chromium_path():
    path = find_chromium()
    if path is None:
        message = (f"no Chromium found (not at {CHROMIUM_PATH}, none of {', '.join(CHROMIUM_NAMES)} "
                   f"on PATH); install it with `apt-get install -y chromium` to run the browser "
                   f"tests (never `playwright install`)")
        if os.environ.get("GROKFL_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; GROKFL_REQUIRE_BROWSER=1 says this machine must have one")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory):
    """The directory JupyterLab serves: copies of notebooks, never the repository itself."""
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def lab(chromium_path, served_dir, tmp_path_factory):
    # Depends on chromium_path so that no server starts when the tests are skipped.
    with JupyterLab(served_dir, tmp_path_factory.mktemp("jupyter")) as server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium_path, tmp_path_factory):
    with Chromium(chromium_path, tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


def write_notebook(directory: Path, name: str, sources: list[str]) -> Path:
    """A small notebook of code cells, for proving that the check notices a broken one."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path = directory / name
    nbformat.write(notebook, path)
    return path


def stored_figure_count(path: Path) -> int:
    """How many figures the notebook's stored (nbval-checked) outputs hold."""
    notebook = nbformat.read(path, as_version=4)
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)


def test_notebook_03_runs_cleanly_in_jupyterlab(lab, browser, served_dir):
    served = copy_without_outputs(NOTEBOOK, served_dir)
    assert all(not cell.get("outputs") for cell in nbformat.read(served, as_version=4).cells)

    screenshot = SCREENSHOTS / f"{NOTEBOOK.stem}.png"
    run = run_in_browser(lab, browser, served.name, screenshot, ACCURACY_FIGURE)
    print(f"\n{NOTEBOOK.name}: ran in {run.seconds:.0f} s in the browser; "
          f"{len(run.code_cells)} code cells, {run.image_count} figures; screenshot: {screenshot}")

    problems = run.problems(figure_cells_containing=(ACCURACY_FIGURE,))
    assert not problems, (f"{NOTEBOOK.name} in JupyterLab (screenshot: {screenshot}):\n\n"
                          + "\n\n".join(problems))
    stored = stored_figure_count(NOTEBOOK)
    assert stored == 0 or run.image_count == stored, (
        f"the browser shows {run.image_count} figures, the stored {NOTEBOOK.name} has {stored}")
    assert screenshot.stat().st_size > 10_000, "the screenshot looks empty"


def test_a_cell_that_raises_is_reported(lab, browser, served_dir):
    notebook = write_notebook(served_dir, "raises.ipynb", [
        "print('the model is ready')",
        "raise ValueError('the model exploded')",
        "print('never printed')",
    ])
    run = run_in_browser(lab, browser, notebook.name)

    problems = run.problems()
    report = "\n\n".join(problems)
    assert len(problems) == 2, report  # the error, and the cell that never ran after it
    assert "cell 1 " in problems[0] and "raise ValueError('the model exploded')" in problems[0]
    assert "ValueError: the model exploded" in problems[0]
    assert "1 of 3 code cells have no execution count" in problems[1]
    assert "print('never printed')" in problems[1]
    assert [cell.execution_count for cell in run.code_cells] == [1, 2, None]


def test_a_warning_on_stderr_is_reported(lab, browser, served_dir):
    notebook = write_notebook(served_dir, "warns.ipynb", [
        "import warnings\nwarnings.warn('the learning rate looks too high')",
        "print('still running')",
    ])
    run = run_in_browser(lab, browser, notebook.name)

    problems = run.problems()
    assert len(problems) == 1, "\n\n".join(problems)
    assert "cell 0 " in problems[0]
    assert "UserWarning: the learning rate looks too high" in problems[0]
    assert [cell.execution_count for cell in run.code_cells] == [1, 2]


def test_a_missing_figure_is_reported(lab, browser, served_dir):
    notebook = write_notebook(served_dir, "plots.ipynb", [
        "import grokfl_helpers\nimport matplotlib.pyplot as plt",
        "figure, axes = plt.subplots()\naxes.plot([1, 2, 3], [0.1, 0.05, 0.02])\n"
        "axes.set_title('Training loss per epoch')\nplt.show()",
    ])
    run = run_in_browser(lab, browser, notebook.name)

    assert run.image_count == 1
    assert run.problems(figure_cells_containing=("loss per epoch",)) == []
    problems = run.problems(figure_cells_containing=("accuracy per round",))
    assert problems == ["no cell whose source contains 'accuracy per round' shows a figure "
                        "(1 figures in the whole notebook)"]


def test_jupyterlab_and_chromium_are_stopped_when_a_run_fails(chromium_path, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    with pytest.raises(RuntimeError, match="interrupted on purpose"):
        with JupyterLab(served, tmp_path) as server, Chromium(chromium_path, tmp_path) as chromium:
            processes = [ProcessId.of(server.process.pid), *chromium.processes]
            assert len(processes) >= 3 and all(process.is_alive() for process in processes)
            raise RuntimeError("interrupted on purpose")
    deadline = time.monotonic() + 10
    while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [process for process in processes if process.is_alive()] == []
