"""Statistics for the experiments: medians and spreads over seeds, and log-log slopes with uncertainty.

A lemma's constants are vacuous at the sizes a laptop can run, so the book tests *trends*: the exponent
of a power law fitted on log-log axes. The fit uses the median over seeds at each x; its uncertainty is
the standard deviation of the same fit over bootstrap resamples of the seeds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from . import checks


#: The bootstrap's resampling is deterministic (the same data give the same uncertainty), with a seed derived
#: from its name like every other seed of the book.
BOOTSTRAP_SEED = int.from_bytes(hashlib.sha256(b"rnnbook.stats bootstrap").digest()[:4], "big")


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


@dataclass(frozen=True)
class SlopeFit:
    """``log y ~ intercept + slope * log x``; ``stderr`` is the bootstrap standard deviation of ``slope``."""

    slope: float
    stderr: float
    intercept: float

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x, dtype=np.float64) ** self.slope

    def __str__(self) -> str:
        return f"{self.slope:.3f} ± {self.stderr:.3f}"

    def consistent_with(self, exponent: float, n_sigma: float = 3.0, floor: float = 0.02) -> bool:
        """True when ``exponent`` lies within ``n_sigma`` standard errors (at least ``floor``) of the slope."""
        return abs(self.slope - exponent) <= max(n_sigma * self.stderr, floor)


def _fit(logx: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(logx, logy, 1)
    return float(slope), float(intercept)


def loglog_slope(x, samples, *, n_boot: int = 200, seed: int = BOOTSTRAP_SEED) -> SlopeFit:
    """Fit the exponent of ``median(samples) ~ x^slope``.

    ``x``: K positive values. ``samples``: array ``(S, K)`` -- S seeds (independent repetitions) at each
    of the K values of x -- or ``(K,)`` for a single series (then ``stderr`` is the regression's standard
    error instead of a bootstrap). All values must be positive.
    """
    x = _as_numpy(x).ravel()
    y = _as_numpy(samples)
    if x.size < 2:
        raise ValueError(f"x needs at least 2 points to fit a slope, got {x.size}")
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"samples must have shape (seeds, {x.size}) or ({x.size},), got {y.shape}")
    if np.any(x <= 0) or np.any(~np.isfinite(x)):
        raise ValueError("x must be positive and finite for a log-log fit")
    if np.any(y <= 0) or np.any(~np.isfinite(y)):
        raise ValueError("samples must be positive and finite for a log-log fit")
    logx = np.log(x)
    slope, intercept = _fit(logx, np.log(np.median(y, axis=0)))
    S = y.shape[0]
    if S == 1:
        if x.size < 3:
            return SlopeFit(slope, float("nan"), intercept)
        resid = np.log(y[0]) - (intercept + slope * logx)
        se = np.sqrt(resid @ resid / (x.size - 2) / np.sum((logx - logx.mean()) ** 2))
        return SlopeFit(slope, float(se), intercept)
    checks.positive_int("n_boot", n_boot)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, S, size=S)
        boots[b] = _fit(logx, np.log(np.median(y[pick], axis=0)))[0]
    return SlopeFit(slope, float(boots.std(ddof=1)), intercept)


def loglog_slope_or_none(x, samples, **kw) -> SlopeFit | None:
    """:func:`loglog_slope` on the x values where every seed's sample is positive (counts such as sign flips
    can be 0 at small sizes); ``None`` when fewer than two such values remain. ``samples``: (S, K)."""
    x = _as_numpy(x).ravel()
    y = _as_numpy(samples)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] != x.size:
        raise ValueError(f"samples must have shape (seeds, {x.size}) or ({x.size},), got {y.shape}")
    keep = (y > 0).all(axis=0) & np.isfinite(y).all(axis=0)
    if keep.sum() < 2:
        return None
    return loglog_slope(x[keep], y[:, keep], **kw)


def median_band(samples, q: float = 0.1, dim: int = 0):
    """``(median, lower, upper)`` over ``dim``, with ``q`` and ``1 - q`` quantiles as the band (numpy)."""
    q = checks.real_in("q", q, 0.0, 0.5, high_open=True)
    y = _as_numpy(samples)
    return np.median(y, axis=dim), np.quantile(y, q, axis=dim), np.quantile(y, 1 - q, axis=dim)


def fraction(mask) -> float:
    """Fraction of ``True`` entries of a boolean array or tensor."""
    a = _as_numpy(mask)
    if a.size == 0:
        raise ValueError("fraction of an empty array is undefined")
    return float(a.mean())
