"""Every course figure has a title, axis labels and, with several lines, a legend."""

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


def _only_axes():
    (ax,) = plt.gcf().get_axes()
    return ax


def test_line_plot_labels_legend_and_reference_line():
    plotting.line_plot({"federated": [0.9, 0.95], "Bob": ([1, 2], [0.5, 0.6])}, "Accuracy per round",
                       "round", "test accuracy (%)", percent=True, hlines={"centralized": 0.98})
    ax = _only_axes()
    assert ax.get_title() == "Accuracy per round" and ax.get_xlabel() == "round"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["federated", "Bob", "centralized"]
    assert ax.lines[0].get_color() == plotting.COLORS["federated"]


def test_single_line_has_no_legend():
    plotting.line_plot({"loss": [3, 2, 1]}, "Loss", "step", "loss (squared error)")
    assert _only_axes().get_legend() is None


def test_every_figure_needs_title_and_labels():
    with pytest.raises(ValueError, match="title"):
        plotting.line_plot({"a": [1]}, "", "x", "y")
    with pytest.raises(ValueError, match="label"):
        plotting.bar_plot(["a"], [1], "t", "x", "")


def test_bars_histograms_matrices_and_panels_draw_into_given_axes():
    fig, axes = plotting.panels(1, 3)
    plotting.grouped_bar_plot(["enron1", "enron2"], {"ham": [3, 4], "spam": [1, 1]}, "Emails per mailbox",
                              "mailbox", "emails", ax=axes[0])
    plotting.histogram({"ham": np.arange(10), "spam": np.arange(5)}, "Words", "distinct words per email",
                       "emails", bins=5, vlines={"cut at 500": 4}, ax=axes[1])
    plotting.matrix_plot([[990, 10], [5, 995]], ["ham", "spam"], ["ham", "spam"], "Confusion matrix",
                         "predicted", "true", ax=axes[2])
    assert len(fig.get_axes()) == 3
    assert len(axes[0].patches) == 4
    assert [t.get_text() for t in axes[2].texts] == ["990", "10", "5", "995"]
    plotting.bar_plot(["free", "enron"], [0.2, -0.3], "Spammy words", "weight", "word", horizontal=True)
    assert len(plt.get_fignums()) == 2


def test_horizontal_percent_bars_keep_their_category_labels():
    plotting.bar_plot(["a", "b"], [0.5, 0.25], "Shares", "share of emails (%)", "word", horizontal=True,
                      percent=True)
    ax = _only_axes()
    plt.gcf().canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.xaxis.get_major_formatter().__class__.__name__ == "PercentFormatter"


def test_figures_keep_showing_after_the_first(monkeypatch):
    """Drawing must not reset matplotlib's interactive mode (Jupyter would stop showing figures)."""
    before = plt.isinteractive()
    plt.ion()
    try:
        plotting.line_plot({"a": [1, 2]}, "One", "x", "y")
        assert plt.isinteractive()
    finally:
        plt.interactive(before)


def test_xticks_on_a_log_axis_are_the_given_values():
    plotting.line_plot({"recall": ([1, 10, 100, 1000], [1, 0.9, 0.9, 1])}, "Recall", "emails", "recall (%)",
                       logx=True, xticks=[1, 10, 100, 1000], percent=True)
    ax = _only_axes()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "10", "100", "1,000"]


def test_histogram_log_axis_and_grey_reference_lines():
    plotting.histogram({"ham": [1, 10, 100], "spam": [5, 50, 500]}, "Words", "distinct words (log scale)",
                       "emails", bins=10, logx=True, xticks=[1, 10, 100, 1000], vlines={"cut at 500": 500})
    ax = _only_axes()
    assert ax.get_xscale() == "log"
    cut = [line for line in ax.lines if line.get_label() == "cut at 500"][0]
    assert cut.get_color() not in (plotting.COLORS["ham"], plotting.COLORS["spam"])
    with pytest.raises(ValueError, match="positive"):
        plotting.histogram([0, 0], "t", "x", "y", logx=True)


def test_grouped_bar_legend_location():
    plotting.grouped_bar_plot(["a", "b"], {"ham": [1, 2], "spam": [2, 1]}, "T", "x", "y", legend_loc="lower center")
    assert _only_axes().get_legend() is not None


def test_bar_reference_lines_and_series_colours():
    plotting.bar_plot(["a", "b"], [7.0, 9.0], "Digits", "digits", "op", horizontal=True, lines={"the bar: 6": 6})
    ax = _only_axes()
    assert [t.get_text() for t in ax.texts] == ["the bar: 6"] and ax.get_legend() is None
    plt.close("all")
    plotting.grouped_bar_plot(["Bob", "Alice"], {"emails": [1, 2], "traffic": [3, 4]}, "T", "client", "MB")
    colours = {patch.get_facecolor()[:3] for patch in _only_axes().patches}
    role_colours = {matplotlib.colors.to_rgb(plotting.COLORS[r]) for r in ("Bob", "Alice", "Sue")}
    assert not colours & role_colours


# plotting.dot_plot (notebooks 03 and 04): dots on a zoomed axis, the legend off the data, and
# whole-percent ticks that say what they mark.
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
