"""One figure style for the whole book, and the plot every chapter needs: measurement against prediction.

The measured quantity is drawn as its median over seeds with a shaded band (10%-90% by default); the
lemma's predicted trend is a dashed reference line, anchored to the measurement so that only its slope
(exponent) is compared, or drawn as an absolute bound curve when the lemma gives one.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .stats import median_band, _as_numpy

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 120,
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
        ax.set_xscale("log")
        ax.set_yscale("log")
    return line
