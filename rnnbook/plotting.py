"""One figure style for the whole book, and the plot every chapter needs: measurement against prediction.

The measured quantity is drawn as its median over seeds with a shaded band (10%-90% by default); the
lemma's predicted trend is a dashed reference line, anchored to the measurement so that only its slope
(exponent) is compared, or drawn as an absolute bound curve when the lemma gives one.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter

from .stats import median_band, _as_numpy

#: The width of the book's text column, in inches at the saved resolution: a figure drawn at this width is shown
#: at its natural size on a desktop, so its 8-10 pt text stays legible (wider figures are scaled down).
CONTENT_WIDTH = 7.0

STYLE = {
    "figure.figsize": (CONTENT_WIDTH, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's figure style (call once at the top of a chapter)."""
    matplotlib.rcParams.update(STYLE)


def subplots(nrows: int = 1, ncols: int = 1, *, height: float | None = None, **kw):
    """``plt.subplots`` at the width of the text column: ``ncols`` panels share :data:`CONTENT_WIDTH` (use at
    most 3 side by side), ``height`` (inches, default 2.6 per row for 2-3 columns, 3.6 for one) sets the rest."""
    if not (isinstance(nrows, int) and isinstance(ncols, int) and nrows >= 1 and 1 <= ncols <= 3):
        raise ValueError(f"subplots takes 1 <= ncols <= 3 panels side by side and nrows >= 1, got {nrows} x {ncols}")
    per_row = 3.6 if ncols == 1 else 2.6
    h = height if height is not None else per_row * nrows
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(CONTENT_WIDTH, h), **kw)


def log_axes(ax, *, x: bool = True, y: bool = True) -> None:
    """Log scales whose tick labels do not overlap: major ticks labelled (at most ~6 per axis), minor ticks
    unlabelled (on short ranges matplotlib labels the minor ticks too, and they collide)."""

    for on, axis, setter in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            setter("log")
            axis.set_major_locator(LogLocator(base=10, numticks=6))
            axis.set_minor_formatter(NullFormatter())


def short_log_ticks(ax, axis: str = "y") -> None:
    """Label 1-2-5 ticks on a log axis that spans two decades or less (:func:`log_axes` labels only powers of
    ten, and none may fall inside a short range). Call it after plotting, when the limits are known."""
    import math

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if lo <= 0 or hi / lo > 100:
        return
    subs = (1, 2, 3, 5, 7) if hi / lo <= 10 else (1, 2, 5)
    ks = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [t for t in (c * 10.0 ** k for k in ks for c in subs) if lo <= t <= hi]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(ticks, [f"{t:g}" for t in ticks])
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)


def ticks_at(ax, values=None, axis: str = "x") -> None:
    """Label a log axis at exactly ``values``, or (``values=None``) at the 1-2-5 steps inside its current range:
    a range shorter than a decade has no power of ten to label. Minor labels are switched off and the limits
    kept."""
    import math

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    lim = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if values is None:
        if lim[0] <= 0:
            raise ValueError(f"ticks_at without values needs a positive (log) range on the {axis} axis, got {lim}")
        lo, hi = math.floor(math.log10(lim[0])), math.ceil(math.log10(lim[1]))
        values = [c * 10.0 ** k for k in range(lo, hi + 1) for c in (1, 2, 5) if lim[0] <= c * 10.0 ** k <= lim[1]]
    values = [float(v) for v in values]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(values, [f"{v:g}" for v in values])
    (ax.xaxis if axis == "x" else ax.yaxis).set_minor_formatter(NullFormatter())
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lim)


def legend_below(fig, axes, *, ncol: int = 3):
    """One legend for a figure of several panels, below them (off the data): each label once, in the order the
    panels first show it; labels starting with "_" are left out, as matplotlib does."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_") and lab not in labels:
                handles.append(h)
                labels.append(lab)
    return legend_outside(fig, ncol=ncol, handles=handles, labels=labels)


def legend_outside(ax_or_fig, *, ncol: int = 3, **kw):
    """A legend below the axes (or the whole figure), off the data."""
    kw.setdefault("frameon", False)
    if hasattr(ax_or_fig, "legend") and hasattr(ax_or_fig, "transAxes"):
        return ax_or_fig.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=ncol, **kw)
    return ax_or_fig.legend(loc="outside lower center", ncol=ncol, **kw)


def colors(k: int):
    """``k`` distinguishable colours along the viridis map (e.g. one per width)."""
    return [plt.cm.viridis(t) for t in np.linspace(0.05, 0.85, max(k, 1))]


def plot_measured(ax, x, samples, *, label=None, color=None, q: float = 0.1, marker="o"):
    """Median over seeds (rows of ``samples``, shape ``(S, K)``) with a ``q``..``1-q`` band."""
    x = _as_numpy(x)
    med, lo, hi = median_band(samples, q=q)
    line, = ax.plot(x, med, marker=marker, ms=3, label=label, color=color)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    return line


def plot_trend(ax, x, samples, *, exponent=None, bound=None, label=None, color=None, log=True,
               trend_label=None, bound_label="bound", anchor="last", q: float = 0.1):
    """Measured median and band against a predicted trend.

    ``exponent``: draw ``c * x^exponent`` anchored to the measured median at the first or last point
    (``anchor``). ``bound``: an array (or callable of x) drawn as an absolute bound curve.
    """
    x = _as_numpy(x)
    line = plot_measured(ax, x, samples, label=label, color=color, q=q)
    med = np.median(_as_numpy(samples), axis=0)
    if exponent is not None:
        i = -1 if anchor == "last" else 0
        ref = med[i] * (x / x[i]) ** exponent
        ax.plot(x, ref, ls="--", color=line.get_color(), alpha=0.7,
                label=trend_label if trend_label is not None else f"slope {exponent:g}")
    if bound is not None:
        b = bound(x) if callable(bound) else _as_numpy(bound)
        ax.plot(x, b, ls=":", color="k", label=bound_label)
    if log:
        log_axes(ax)
    return line
