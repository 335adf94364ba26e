"""plotting.dot_plot (notebooks 03 and 04): dots on a zoomed axis, the legend off the data, and
whole-percent ticks that say what they mark."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from grokfl_helpers import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_dots_zoomed_with_the_legend_outside_the_axes():
    fig, ax = plotting.panels()
    series = {"trained alone": [0.977, 0.804, 0.979], "federated": [0.954, 0.95, 0.954]}
    plotting.dot_plot(["a", "b", "c"], series, "Own test emails", "client", "test accuracy (%)",
                      percent=True, percent_decimals=0, ylim=(0.78, 1.0), annotate="{:.1%}", ax=ax)
    assert ax.get_ylim() == (0.78, 1.0)
    dots = [line for line in ax.lines if line.get_linestyle() == "None"]
    assert [len(line.get_xdata()) for line in dots] == [3, 3]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)
    fig.canvas.draw()
    legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend_box.x0 >= axes_box.x1 - 1  # to the right of the data, hiding none of it
    assert "80.4%" in [text.get_text() for text in ax.texts]


def test_whole_percent_labels_sit_on_whole_percent_ticks():
    fig, ax = plotting.panels()
    plotting.dot_plot(["a", "b"], {"x": [0.8, 0.99], "y": [0.9, 0.95]}, "T", "x label", "y label (%)",
                      percent=True, percent_decimals=0, ylim=(0.78, 1.0), ax=ax)
    ticks = np.array([t for t in ax.get_yticks() if 0.78 <= t <= 1.0])
    assert np.allclose(ticks * 100, np.round(ticks * 100))  # no 97.5% shown as "98%"


def test_one_series_has_no_legend_and_labels_are_required():
    fig, ax = plotting.panels()
    plotting.dot_plot(["a"], {"only": [0.5]}, "T", "x", "y", ax=ax)
    assert ax.get_legend() is None
    with pytest.raises(ValueError, match="title"):
        plotting.dot_plot(["a"], {"only": [0.5]}, "", "x", "y")
