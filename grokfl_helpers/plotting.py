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

__all__ = ["COLORS", "panels", "line_plot", "bar_plot", "grouped_bar_plot", "dot_plot", "histogram",
           "matrix_plot", "sequence_diagram", "scoreboard_heatmap", "scatter_plot"]

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
    """A figure with ``nrows x ncols`` axes in the course's style: ``fig, axes = panels(1, 2)``.

    Taught in notebook 01, §5, where it is first used.
    """
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
            axis = ax.xaxis if value_axis == "x" else ax.yaxis
            axis.set_major_formatter(formatter)
            if percent_decimals == 0 and axis.get_scale() == "linear":
                # whole-percent labels need whole-percent ticks: no 2.5% steps shown rounded ("98%" at 97.5%)
                axis.set_major_locator(MaxNLocator(steps=[1, 2, 5, 10]))
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
              markers: bool = True, linestyles: dict | None = None, ax=None) -> None:
    """One line per entry of ``series``: ``{label: y}`` (x = 1, 2, …) or ``{label: (x, y)}``.

    ``markers=False`` draws smooth curves (a density, a function on a fine grid) without a dot at
    every point.

    ``hlines={label: y}`` draws dashed reference lines (a target, the centralized result);
    ``xticks=[1, 10, 100, 1000]`` puts ticks exactly there, labelled with thousands separators
    (useful with ``logx=True``, which would otherwise label powers of ten). ``colors={label:
    colour}`` overrides the course's colours; ``percent_decimals`` fixes the digits of percent ticks.
    ``linestyles={label: "--"}`` draws those lines dashed (or ``":"``, ``"-."``; solid by default),
    e.g. one colour per method and one line style per setting (notebook 10, §3).

    Taught in notebook 01, §5, where it is first used.
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
            ax.plot(x, y, marker="o" if markers else None, markersize=4, linewidth=1.8, label=label, color=color,
                    linestyle=(linestyles or {}).get(label, "-"))
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
    ``log=True`` puts the values on a logarithmic scale.

    Taught in notebook 01, §4, where it is first used.
    """
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
                     colors: dict | None = None, percent_decimals: int | None = None, ax=None) -> None:
    """Bars for several series per group: ``series={"ham": [...], "spam": [...]}`` over ``groups``.
    ``legend_loc`` is matplotlib's legend location (e.g. ``"lower center"``) if bars hide the legend;
    ``colors={label: colour}`` overrides the course's colours (series that are not Bob, Alice, Sue,
    spam or ham take neutral colours by default, so they are not mistaken for them);
    ``percent_decimals`` fixes the digits of percent ticks.

    Taught in notebook 02, §1, where it is first used.
    """
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
    _label(ax, title, xlabel, ylabel, percent, legend=False, percent_decimals=percent_decimals)
    if n > 1:
        with _course_style():
            ax.legend(loc=legend_loc, frameon=legend_loc != "best", framealpha=1)


def histogram(values, title: str, xlabel: str, ylabel: str, *, bins=50, logx: bool = False, logy: bool = False,
              xticks=None, vlines: dict | None = None, label: str | None = None, color=None, ax=None,
              **hist_kwargs) -> None:
    """A histogram of ``values``, or of several sets given as ``{label: values}``.

    ``vlines={label: x}`` marks positions (a threshold, a limit) with dashed lines in shades of grey,
    so they never look like one of the data sets. ``logx=True`` spaces the bins logarithmically
    (give ``bins`` as a number); ``xticks`` as in ``line_plot``.

    Taught in notebook 02, §2, where it is first used.
    """
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
    """A small matrix (a confusion matrix) as coloured cells with their numbers written in.

    Taught in notebook 02, §4, where it is first used.
    """
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


def dot_plot(groups, series: dict, title: str, xlabel: str, ylabel: str, *, percent: bool = False,
             percent_decimals: int | None = None, ylim=None, log: bool = False, annotate: str | None = None,
             legend_loc: str = "outside", colors: dict | None = None, ax=None) -> None:
    """A dot per series and group, ``series={"alone": [...], "federated": [...]}`` over ``groups``:
    grouped_bar_plot's data as points, for an axis that does not start at zero (``ylim``, ``log``).

    A bar's length is read as its value, so a bar chart must start at 0; dots can be zoomed in until
    differences of a point or two are visible. The dots of one group are joined by a thin grey line.
    ``annotate`` (e.g. ``"{:.1%}"``) writes each value beside its dot; ``legend_loc="outside"`` puts
    the legend to the right of the axes, where it hides no data (or any matplotlib location).

    Taught in notebook 03, §4, where it is first used.
    """
    ax = _axes(ax)
    groups = [str(g) for g in groups]
    x = np.arange(len(groups))
    n = len(series)
    offsets = (np.arange(n) - (n - 1) / 2) * min(0.25, 0.6 / max(n, 1))
    values = {label: np.asarray(v, dtype=float) for label, v in series.items()}
    with _course_style():
        if n > 1:  # join the dots of one group, so the eye reads the difference
            stacked = np.array(list(values.values()))
            for g in range(len(groups)):
                ax.plot(x[g] + offsets, stacked[:, g], color="#BBBBBB", linewidth=1.0, zorder=1)
        for i, (label, v) in enumerate(values.items()):
            color = (colors or {}).get(label) or COLORS.get(label) or _SERIES[i % len(_SERIES)]
            ax.plot(x + offsets[i], v, linestyle="none", marker="o", markersize=7, label=label, color=color,
                    zorder=3)
            if annotate:
                for xi, vi in zip(x + offsets[i], v):
                    ax.annotate(annotate.format(vi), (xi, vi), xytext=(4 if i == n - 1 else -4, 0),
                                textcoords="offset points", fontsize=8, va="center",
                                ha="left" if i == n - 1 else "right")
        ax.set_xticks(x, groups)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.grid(False, axis="x")
        if log:
            ax.set_yscale("log")
        if ylim is not None:
            ax.set_ylim(*ylim)
    _label(ax, title, xlabel, ylabel, percent, legend=False, percent_decimals=percent_decimals)
    if n > 1:
        with _course_style():
            if legend_loc == "outside":
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            else:
                ax.legend(loc=legend_loc, frameon=True, framealpha=1)


def sequence_diagram(parties, messages, title: str, *, steps: dict | None = None, ax=None) -> None:
    """Who sends what to whom, in order: a protocol's sequence diagram. Taught in notebook 05.

    ``parties``: names left to right, each with a lifeline. ``messages``: a list of
    ``(senders, receivers, text)``, each a name or a list of names; every sender gets an arrow to
    every receiver, and the row gets one label. A message whose receivers are its senders is drawn
    as a note on their lifelines (something each computes alone). ``steps={index of a message:
    "step name"}`` starts a shaded band, labelled on the left, at that message."""
    ax = _axes(ax)
    parties = [str(p) for p in parties]
    x = {name: i for i, name in enumerate(parties)}
    rows = len(messages)
    as_list = lambda names: [names] if isinstance(names, str) else list(names)   # noqa: E731
    with _course_style():
        ax.set_xlim(-1.6, len(parties) - 0.4)
        ax.set_ylim(rows + 0.2, -1.3)
        ax.axis("off")
        ax.set_title(title)
        for name, i in x.items():
            color = COLORS.get(name, "#555555")
            ax.plot([i, i], [-0.6, rows], color=color, linewidth=1, linestyle=(0, (3, 3)), zorder=0)
            ax.text(i, -0.85, name, ha="center", va="center", fontsize=10, fontweight="bold", color="white",
                    bbox=dict(boxstyle="round,pad=0.35", facecolor=color, edgecolor="none"))
        band_starts = sorted((steps or {}).items())
        for j, (start, name) in enumerate(band_starts):
            end = band_starts[j + 1][0] if j + 1 < len(band_starts) else rows
            if j % 2 == 0:
                ax.axhspan(start, end, color="#F2F2F2", zorder=-1)
            ax.text(-1.55, (start + end) / 2, name, ha="left", va="center", fontsize=8.5, color="#333333",
                    fontstyle="italic")
        for row, (senders, receivers, text) in enumerate(messages):
            senders, receivers = as_list(senders), as_list(receivers)
            if receivers == senders:
                for sender in senders:
                    ax.text(x[sender], row + 0.5, text, ha="center", va="center", fontsize=7.5,
                            bbox=dict(boxstyle="round,pad=0.25", facecolor="#FFFBE6", edgecolor="#BBBBBB"))
                continue
            pairs = [(s, r) for s in senders for r in receivers if s != r]
            for k, (sender, receiver) in enumerate(pairs):
                y = row + 0.62 + (k - (len(pairs) - 1) / 2) * min(0.1, 0.3 / max(len(pairs), 1))
                ax.annotate("", xy=(x[receiver], y), xytext=(x[sender], y),
                            arrowprops=dict(arrowstyle="-|>", color=COLORS.get(sender, "#555555"),
                                            linewidth=1.2, shrinkA=1, shrinkB=1))
            ends = [x[name] for name in senders + receivers]
            ax.text((min(ends) + max(ends)) / 2, row + 0.42, text, ha="center", va="bottom", fontsize=8,
                    color="#222222", bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.85))


def scoreboard_heatmap(values, texts, row_labels, col_labels, title: str, *, row_scales, unmeasured=None,
                       reasons=None, neutral=None, footnote: str | None = None, ax=None) -> None:
    """A grid of numbers with one colour scale per row: the course's scoreboard. Taught in notebook 13.

    ``values`` (rows x columns, nan where there is no number) sets each cell's colour, ``texts`` is
    written in it. ``row_scales``: one ``(low, high, colormap, log)`` per row — each row (each
    attack, each cost) is coloured on its own scale, so a percentage and a number of seconds are
    never compared by colour. Cells where ``unmeasured`` is true are drawn grey and hatched, with
    ``reasons[i][j]`` (a few words) written in them instead of a number. Cells where ``neutral`` is
    true have a number that is not on the row's scale (ε = ∞, a success that is no success): drawn
    pale, not hatched, with their text. Columns are the x axis
    (defenses), rows the y axis (attacks); the labels say so.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    if len(row_scales) != n_rows or len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ValueError(f"a {n_rows} x {n_cols} grid needs {n_rows} row labels and scales and {n_cols} column labels")
    unmeasured = np.zeros(values.shape, bool) if unmeasured is None else np.asarray(unmeasured, bool)
    neutral = np.zeros(values.shape, bool) if neutral is None else np.asarray(neutral, bool)
    ax = ax if ax is not None else panels(width=max(8.0, 1.05 * n_cols + 3), height=max(4.0, 0.62 * n_rows + 2))[1]
    with _course_style():
        for i in range(n_rows):
            low, high, cmap, log = row_scales[i]
            norm = LogNorm(low, high, clip=True) if log else Normalize(low, high, clip=True)
            for j in range(n_cols):
                if neutral[i, j] and not unmeasured[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#F4F1EA", edgecolor="white",
                                           linewidth=1.0))
                    ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color="#333333")
                    continue
                if unmeasured[i, j] or not np.isfinite(values[i, j]):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#E6E6E6", edgecolor="#9E9E9E",
                                           hatch="///", linewidth=0.0))
                    label = (reasons[i][j] if reasons is not None else "") if unmeasured[i, j] else texts[i][j]
                    ax.text(j, i, label, ha="center", va="center", fontsize=6.5, color="#333333", wrap=True)
                    continue
                shade = float(norm(values[i, j]))
                colour = colormaps[cmap](0.08 + 0.8 * shade)
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=colour, edgecolor="white", linewidth=1.0))
                luminance = 0.2126 * colour[0] + 0.7152 * colour[1] + 0.0722 * colour[2]
                ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=8.5,
                        color="white" if luminance < 0.5 else "black")
        ax.set_xlim(-0.5, n_cols - 0.5)
        ax.set_ylim(n_rows - 0.5, -0.5)
        ax.set_xticks(range(n_cols), col_labels, rotation=35, ha="right")
        ax.set_yticks(range(n_rows), row_labels)
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        if footnote:
            ax.annotate(footnote, (0, 0), xycoords="figure fraction", xytext=(6, 4), textcoords="offset points",
                        fontsize=7.5, color="#444444", va="bottom")
    _label(ax, title, "defense", "attack (and who runs it), then what the defense costs", percent=False, legend=False)
    ax.grid(False)


def scatter_plot(points: dict, title: str, xlabel: str, ylabel: str, *, percent_x: bool = False,
                 percent_y: bool = False, logy: bool = False, colors: dict | None = None,
                 reference: dict | None = None, xlim=None, ylim=None, ax=None) -> None:
    """One point per entry of ``points={label: (x, y)}``: a trade-off. Taught in notebook 13, §7.

    The points take the left part of the axes; each is named in a column of labels on the right,
    joined to it by a thin line, so that names never overlap; points that coincide share one label
    ("FedAvg, FedProx").
    ``reference={label: y}`` draws dashed horizontal lines (in the legend); ``logy`` a log y axis.
    """
    from matplotlib.ticker import PercentFormatter as _Percent

    ax = _axes(ax)
    merged: dict = {}
    for label, (x, y) in points.items():
        for key in merged:
            if abs(key[0] - x) <= 1e-9 + 1e-6 * abs(x) and abs(key[1] - y) <= 1e-9 + 1e-6 * abs(y):
                merged[key].append(label)
                break
        else:
            merged[(x, y)] = [label]
    with _course_style():
        for i, ((x, y), labels) in enumerate(merged.items()):
            colour = (colors or {}).get(labels[0]) or _SERIES[i % len(_SERIES)]
            ax.plot([x], [y], linestyle="none", marker="o", markersize=7, color=colour, zorder=3)
        for j, (label, y) in enumerate((reference or {}).items()):
            ax.axhline(y, linestyle="--", linewidth=1.1, color=_GREYS[j % len(_GREYS)], label=label)
        if logy:
            ax.set_yscale("log")
        xs = [key[0] for key in merged]
        low, high = xlim if xlim is not None else (min(xs), max(xs))
        span = (high - low) or abs(high) or 1.0
        ax.set_xlim(low - 0.08 * span, high + 1.0 * span)   # the right part holds the labels
        if ylim is not None:
            ax.set_ylim(*ylim)
        if percent_x:
            ax.xaxis.set_major_formatter(_Percent(1.0, decimals=1))
        ticks = [t for t in ax.get_xticks() if low - 0.08 * span <= t <= high + 0.05 * span]
        ax.set_xticks(ticks)                                # no ticks under the labels
        ax.set_xlim(low - 0.08 * span, high + 1.0 * span)
    _label(ax, title, xlabel, ylabel, percent_y, legend=False)
    if reference:
        with _course_style():
            ax.legend(loc="center left")
    if percent_y and logy:
        ax.yaxis.set_major_formatter(_Percent(1.0, decimals=None))
    # the labels: a column right of the axes, in the points' vertical order, at least `gap` apart
    ax.figure.canvas.draw()
    to_axes = ax.transAxes.inverted()
    placed = sorted(((to_axes.transform(ax.transData.transform(key))[1], key, labels) for key, labels in merged.items()),
                    key=lambda item: item[0])
    gap = 0.065
    texts = [",\n".join(", ".join(labels[k:k + 2]) for k in range(0, len(labels), 2)) for _, _, labels in placed]
    lines = [text.count("\n") + 1 for text in texts]
    heights = [y_axes for y_axes, _, _ in placed]
    apart = lambda k: gap * (lines[k] + lines[k - 1]) / 2   # noqa: E731  (centres of labels k-1 and k)
    bottom, top = 0.03, 0.95
    for k in range(1, len(heights)):                        # push up what overlaps the label below
        heights[k] = max(heights[k], heights[k - 1] + apart(k))
    if heights and heights[-1] > top:                       # then down from the top, as little as needed
        heights[-1] = top
        for k in range(len(heights) - 2, -1, -1):
            heights[k] = min(heights[k], heights[k + 1] - apart(k + 1))
    if heights and heights[0] < bottom:
        heights[0] = bottom
        for k in range(1, len(heights)):
            heights[k] = max(heights[k], heights[k - 1] + apart(k))
    for height, text, (_, key, _) in zip(heights, texts, placed):
        ax.annotate(text, xy=key, xycoords="data", xytext=(0.55, height), textcoords="axes fraction",
                    fontsize=8, va="center", color="#222222",
                    arrowprops=dict(arrowstyle="-", color="#AAAAAA", linewidth=0.6, shrinkA=0, shrinkB=3))
