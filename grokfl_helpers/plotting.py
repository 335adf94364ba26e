"""The course's figures: a few functions so that every plot looks alike and says what it shows.

Every function takes a title and axis labels (with units) and draws into ``ax`` if given, or into
a new figure of the course's size otherwise. They return nothing: Jupyter shows the figure at the
end of the cell. For several panels side by side, ``fig, axes = panels(1, 2)`` and pass each
``ax=``.

Values given as fractions can be shown as percentages with ``percent=True``.
"""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter, StrMethodFormatter

__all__ = ["COLORS", "panels", "line_plot", "bar_plot", "grouped_bar_plot", "histogram", "matrix_plot"]

# One color per role, the same in every notebook (colour-blind-safe Okabe–Ito palette).
COLORS = {
    "centralized": "#000000",
    "Bob": "#0072B2",
    "Alice": "#E69F00",
    "Sue": "#009E73",
    "spam": "#D55E00",
    "ham": "#56B4E9",
    "federated": "#0072B2",
    "attack": "#CC79A7",
}
# Series that are not a role (not Bob, Alice, Sue, spam, ham): colours no role uses.
_SERIES = ["#4C72B0", "#C44E52", "#8172B2", "#937860", "#64B5CD", "#8C8C8C"]
_GREYS = ["#333333", "#888888", "#BBBBBB"]  # reference lines: never a data colour
_CYCLE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.prop_cycle": plt.cycler(color=_CYCLE),
}


@contextmanager
def _course_style():
    """Apply STYLE while drawing, then restore exactly those settings.

    (Not ``plt.rc_context``: that restores *every* setting, including the interactive mode that
    Jupyter's inline backend switches on when the first figure is made, after which Jupyter stops
    showing figures.)"""
    saved = {key: plt.rcParams[key] for key in STYLE}
    plt.rcParams.update(STYLE)
    try:
        yield
    finally:
        plt.rcParams.update(saved)


def panels(nrows: int = 1, ncols: int = 1, width: float | None = None, height: float | None = None):
    """A figure with ``nrows x ncols`` axes in the course's style: ``fig, axes = panels(1, 2)``."""
    w = width or STYLE["figure.figsize"][0] * (1 if ncols == 1 else 0.75 * ncols)
    h = height or STYLE["figure.figsize"][1] * nrows
    with _course_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=True)
    fig.set_layout_engine("constrained")
    return fig, axes


def _axes(ax):
    if ax is not None:
        return ax
    return panels()[1]


def _label(ax, title, xlabel, ylabel, percent, legend, value_axis="y", percent_decimals=None):
    with _course_style():
        if not title or not xlabel or not ylabel:
            raise ValueError("every course figure needs a title, an x label and a y label (with units)")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if percent:
            formatter = PercentFormatter(1.0, decimals=percent_decimals)
            (ax.xaxis if value_axis == "x" else ax.yaxis).set_major_formatter(formatter)
        if legend:
            ax.legend()
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(True, alpha=STYLE["grid.alpha"])


def _color(label, i):
    return COLORS.get(label, _CYCLE[i % len(_CYCLE)])


def line_plot(series: dict, title: str, xlabel: str, ylabel: str, *, percent: bool = False,
              hlines: dict | None = None, integer_x: bool = True, logx: bool = False, logy: bool = False,
              xticks=None, ylim=None, colors: dict | None = None, percent_decimals: int | None = None,
              ax=None) -> None:
    """One line per entry of ``series``: ``{label: y}`` (x = 1, 2, …) or ``{label: (x, y)}``.

    ``hlines={label: y}`` draws dashed reference lines (a target, the centralized result);
    ``xticks=[1, 10, 100, 1000]`` puts ticks exactly there, labelled with thousands separators
    (useful with ``logx=True``, which would otherwise label powers of ten). ``colors={label:
    colour}`` overrides the course's colours; ``percent_decimals`` fixes the digits of percent ticks.
    """
    ax = _axes(ax)
    with _course_style():
        for i, (label, values) in enumerate(series.items()):
            if isinstance(values, tuple) and len(values) == 2:
                x, y = values
            else:
                y = values
                x = np.arange(1, len(y) + 1)
            color = (colors or {}).get(label) or _color(label, i)
            ax.plot(x, y, marker="o", markersize=4, linewidth=1.8, label=label, color=color)
        for j, (label, y) in enumerate((hlines or {}).items()):
            color = COLORS.get(label, _GREYS[j % len(_GREYS)])
            ax.axhline(y, linestyle="--", linewidth=1.2, color=color, label=label)
        if logx:
            ax.set_xscale("log")
        elif integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if logy:
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(list(xticks), [f"{v:,}" for v in xticks])
            ax.xaxis.set_minor_locator(plt.NullLocator())
        if ylim is not None:
            ax.set_ylim(*ylim)
    _label(ax, title, xlabel, ylabel, percent, legend=len(series) + len(hlines or {}) > 1,
           percent_decimals=percent_decimals)


def bar_plot(labels, values, title: str, xlabel: str, ylabel: str, *, horizontal: bool = False,
             percent: bool = False, color=None, annotate: str | None = None, lines: dict | None = None,
             log: bool = False, ax=None) -> None:
    """One bar per label. ``annotate`` is a format such as ``"{:.1%}"`` written on each bar;
    ``lines={label: value}`` draws dashed reference lines across the bars (a bar to clear);
    ``log=True`` puts the values on a logarithmic scale."""
    ax = _axes(ax)
    labels = [str(label) for label in labels]
    with _course_style():
        colors = color or [_color(label, 0) if label in COLORS else _CYCLE[0] for label in labels]
        if horizontal:
            bars = ax.barh(labels, values, color=colors)
            ax.invert_yaxis()
            ax.grid(False, axis="y")
        else:
            bars = ax.bar(labels, values, color=colors)
            ax.grid(False, axis="x")
        if annotate:
            ax.bar_label(bars, labels=[annotate.format(v) for v in values], padding=2, fontsize=8)
        if not percent and np.max(np.abs(values)) >= 1000:
            (ax.xaxis if horizontal else ax.yaxis).set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        if log:
            (ax.set_xscale if horizontal else ax.set_yscale)("log")
        for j, (name, value) in enumerate((lines or {}).items()):
            grey = _GREYS[j % len(_GREYS)]
            if horizontal:  # labelled where the line leaves the plot, so no legend hides the bars
                ax.axvline(value, linestyle="--", linewidth=1.4, color=grey)
                ax.annotate(name, xy=(value, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                            textcoords="offset points", fontsize=8, color=grey, ha="left", va="bottom",
                            backgroundcolor="white")
            else:
                ax.axhline(value, linestyle="--", linewidth=1.4, color=grey)
                ax.annotate(name, xy=(1, value), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                            textcoords="offset points", fontsize=8, color=grey, ha="right", va="bottom",
                            backgroundcolor="white")
    _label(ax, title, xlabel, ylabel, percent, legend=False, value_axis="x" if horizontal else "y")


def grouped_bar_plot(groups, series: dict, title: str, xlabel: str, ylabel: str, *, percent: bool = False,
                     stacked: bool = False, annotate: str | None = None, legend_loc: str = "best",
                     colors: dict | None = None, ax=None) -> None:
    """Bars for several series per group: ``series={"ham": [...], "spam": [...]}`` over ``groups``.
    ``legend_loc`` is matplotlib's legend location (e.g. ``"lower center"``) if bars hide the legend;
    ``colors={label: colour}`` overrides the course's colours (series that are not Bob, Alice, Sue,
    spam or ham take neutral colours by default, so they are not mistaken for them)."""
    ax = _axes(ax)
    groups = [str(g) for g in groups]
    x = np.arange(len(groups))
    n = len(series)
    width = 0.8 if stacked else 0.8 / n
    bottom = np.zeros(len(groups))
    with _course_style():
        for i, (label, values) in enumerate(series.items()):
            values = np.asarray(values, dtype=float)
            offset = 0 if stacked else (i - (n - 1) / 2) * width
            color = (colors or {}).get(label) or COLORS.get(label) or _SERIES[i % len(_SERIES)]
            bars = ax.bar(x + offset, values, width, bottom=bottom if stacked else None,
                          label=label, color=color)
            if annotate:
                ax.bar_label(bars, labels=[annotate.format(v) for v in values], padding=2, fontsize=8,
                             label_type="center" if stacked else "edge")
            if stacked:
                bottom = bottom + values
        ax.set_xticks(x, groups)
        ax.grid(False, axis="x")
        if not percent and (bottom.max() if stacked else max(np.max(v) for v in series.values())) >= 1000:
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    _label(ax, title, xlabel, ylabel, percent, legend=False)
    if n > 1:
        with _course_style():
            ax.legend(loc=legend_loc, frameon=legend_loc != "best", framealpha=1)


def histogram(values, title: str, xlabel: str, ylabel: str, *, bins=50, logx: bool = False, logy: bool = False,
              xticks=None, vlines: dict | None = None, label: str | None = None, color=None, ax=None,
              **hist_kwargs) -> None:
    """A histogram of ``values``, or of several sets given as ``{label: values}``.

    ``vlines={label: x}`` marks positions (a threshold, a limit) with dashed lines in shades of grey,
    so they never look like one of the data sets. ``logx=True`` spaces the bins logarithmically
    (give ``bins`` as a number); ``xticks`` as in ``line_plot``."""
    ax = _axes(ax)
    sets = values if isinstance(values, dict) else {label or "": values}
    if logx and np.isscalar(bins):
        everything = np.concatenate([np.ravel(v) for v in sets.values()])
        positive = everything[everything > 0]
        if positive.size == 0:
            raise ValueError("histogram(logx=True) needs positive values")
        bins = np.geomspace(positive.min(), positive.max(), int(bins) + 1)
    with _course_style():
        for i, (name, v) in enumerate(sets.items()):
            c = color if (color and len(sets) == 1) else _color(name, i)
            ax.hist(np.ravel(v), bins=bins, alpha=0.75 if len(sets) > 1 else 1.0, label=name or None,
                    color=c, **hist_kwargs)
        for j, (name, x) in enumerate((vlines or {}).items()):
            ax.axvline(x, linestyle="--", linewidth=1.4, color=_GREYS[j % len(_GREYS)], label=name)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(list(xticks), [f"{v:,}" for v in xticks])
            ax.xaxis.set_minor_locator(plt.NullLocator())
        if not logy and ax.get_ylim()[1] >= 1000:
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    _label(ax, title, xlabel, ylabel, percent=False, legend=len(sets) > 1 or bool(vlines))


def matrix_plot(matrix, row_labels, col_labels, title: str, xlabel: str, ylabel: str, *,
                fmt: str = "{:,.0f}", cmap: str = "Blues", ax=None) -> None:
    """A small matrix (a confusion matrix) as coloured cells with their numbers written in."""
    ax = _axes(ax)
    matrix = np.asarray(matrix)
    with _course_style():
        ax.imshow(matrix, cmap=cmap)
        ax.set_xticks(range(len(col_labels)), col_labels)
        ax.set_yticks(range(len(row_labels)), row_labels)
        ax.grid(False)
        threshold = matrix.max() / 2
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, fmt.format(v), ha="center", va="center",
                    color="white" if v > threshold else "black", fontsize=11)
    _label(ax, title, xlabel, ylabel, percent=False, legend=False)
    ax.grid(False)
