"""How wide is wide enough: batched width sweeps of gradient descent and the smallest width that trains.

The paper's theorems need ``m >= C varrho^C`` for an absolute constant C that the text never states (arXiv v4,
Theorem 1 as restated in Appendix H), so they cannot say which width a given problem needs. This module measures
it, the book's way:

* :func:`pad_params` embeds networks of width m in width M >= m by zero rows and columns. Full-batch GD keeps
  the padding exactly zero (the padded coordinates have ``g = 0``, ``h = phi(0) = 0``, and their backward
  vectors ``u`` vanish because the padded rows of ``B^T`` and ``W^T`` are zero), so the embedded network follows
  the same trajectory as the original one. This is what lets several widths run as **one** batched GD run.
* :func:`gd_width_sweep` runs GD with the book's step size ``c / (m n L)`` (:func:`rnnbook.paper.book_step_size`,
  the book's choice, not the paper's) for a grid of widths, every seed of every width, and optionally several
  data sets of the same n and L, grouping widths that are close so that padding costs little.
* :func:`smallest_width` is the book's width threshold: the smallest width of the grid from which on (at it and at
  every larger width of the grid) at least a fraction ``quantile`` of the seeds succeed. Found on a grid, it is an
  upper bound at the grid's resolution.
* :func:`threshold_fit` fits the exponent of the threshold against a knob (n, L or delta) on log-log axes, with a
  bootstrap over seeds for its uncertainty (defined in its docstring).
* :func:`paper_width` is the smallest m with ``m >= C varrho(m)^C`` for a *chosen* C (the paper gives none),
  to say how far the condition is from the widths that train.
* :func:`pinned_data` makes random data whose closest pair of first tokens is exactly delta apart, so that a delta
  sweep changes the data's separation rather than only a lower bound on it.
* :func:`ratio_of_medians` compares two sets of per-seed values (e.g. GD rates of two models) with a bootstrap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import checks, paper, rng, training
from .data import SequenceData, make_data, min_first_token_distance
from .model import ACTIVATIONS, Params, init_params
from .stats import SlopeFit

__all__ = ["pad_params", "WidthSweep", "gd_width_sweep", "group_widths", "smallest_width", "ThresholdFit",
           "threshold_fit", "paper_width", "pinned_data", "ratio_of_medians"]


# ----------------------------------------------------------------------------------------------------------
# several widths in one batched run

def pad_params(params: Params, M: int) -> Params:
    """Networks of width m embedded in width ``M >= m``: ``W`` gets zero rows and columns (tied (E, M, M) or
    untied (E, L, M, M)), ``A`` zero rows, ``B`` zero columns. Every activation of the book has ``phi(0) = 0``,
    so the padded coordinates stay 0 in the forward pass, their backward vectors vanish, and the gradient is zero
    on every padded entry of W: GD moves the embedded network exactly like the original one."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    M = checks.positive_int("M", M)
    m = params.m
    if M < m:
        raise ValueError(f"M must be at least the width m={m}, got M={M}")
    if M == m:
        return params
    W = params.W.new_zeros(params.W.shape[:-2] + (M, M))
    W[..., :m, :m] = params.W
    A = params.A.new_zeros((params.ensemble, M, params.d_x))
    A[:, :m] = params.A
    B = params.B.new_zeros((params.ensemble, params.d, M))
    B[:, :, :m] = params.B
    return Params(W=W, A=A, B=B, activation=params.activation)


def group_widths(widths, pad_ratio: float) -> list[list[int]]:
    """Consecutive widths of an ascending grid, grouped greedily so that in each group the largest is at most
    ``pad_ratio`` times the smallest (``pad_ratio=1``: every width alone)."""
    widths = [checks.positive_int("width", int(w)) for w in widths]
    if not widths or any(b <= a for a, b in zip(widths, widths[1:])):
        raise ValueError(f"widths must be a non-empty strictly increasing grid, got {widths}")
    pad_ratio = checks.real_in("pad_ratio", pad_ratio, 1.0, math.inf, high_open=True)
    groups, cur = [], [widths[0]]
    for w in widths[1:]:
        if w <= pad_ratio * cur[0]:
            cur.append(w)
        else:
            groups.append(cur)
            cur = [w]
    groups.append(cur)
    return groups


@dataclass
class WidthSweep:
    """GD runs over a grid of widths. Arrays are indexed ``[record, data set, width, seed]`` (``(R, G, K, S)``);
    records are at ``steps`` (t = 0, record_every, ..., up to the budget). A group of widths whose networks had
    all reached ``stop_below`` stopped early: its later records are NaN. ``loss``: f(W_t); ``dist``:
    ``sqrt(m) ||W_t - W_0||_F`` with each network's own m; ``flips``: ``max_{i,l} ||D_{i,l}(W_t) - D_{i,l}(W_0)||_0``
    (ReLU only, else None); ``diverged`` (G, K, S); ``eta`` (K,) the step size of each width; ``budget``: the
    number of GD steps allowed."""

    widths: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    dist: np.ndarray
    flips: np.ndarray | None
    diverged: np.ndarray
    eta: np.ndarray
    budget: int

    def first_below(self, target: float) -> np.ndarray:
        """(G, K, S): the first recorded step with ``f_t / f_0 <= target``, NaN where the run never got there
        (or diverged)."""
        target = checks.positive_real("target", target)
        with np.errstate(invalid="ignore"):
            below = self.loss / self.loss[0] <= target
        hit = below.any(axis=0)
        first = self.steps[below.argmax(axis=0)].astype(np.float64)
        return np.where(hit & ~self.diverged, first, np.nan)

    def success(self, target: float, budget: int | None = None) -> np.ndarray:
        """(G, K, S) booleans: ``f_t / f_0 <= target`` within ``budget`` steps (default: the sweep's budget).
        A budget smaller than the sweep's reads the same runs, at the resolution of the records."""
        budget = self.budget if budget is None else checks.positive_int("budget", budget)
        if budget > self.budget:
            raise ValueError(f"budget={budget} exceeds the {self.budget} steps that were run")
        first = self.first_below(target)
        with np.errstate(invalid="ignore"):
            return np.isfinite(first) & (first <= budget)

    def final(self, name: str) -> np.ndarray:
        """(G, K, S): the last recorded value of ``loss``, ``dist`` or ``flips`` of every network (at the budget,
        or where its group stopped early; a diverged network's last finite record)."""
        checks.choice("name", name, ("loss", "dist", "flips"))
        a = getattr(self, name)
        if a is None:
            raise ValueError(f"the sweep recorded no {name!r} (sign flips need ReLU)")
        ok = np.isfinite(a)
        last = (ok.cumsum(axis=0) * ok).argmax(axis=0)  # index of the last finite record
        return np.take_along_axis(a, last[None], axis=0)[0]

    def rate(self, start: int | None = None) -> np.ndarray:
        """(G, K, S): the per-step geometric rate r in ``f_t ~ f_0 (1 - r)^t`` of every network, from a least-squares
        line through ``log f_t`` over the records with ``t >= start`` (default: the second half of the budget);
        NaN for a network with a missing record there (diverged, or its group stopped early)."""
        start = self.budget // 2 if start is None else checks.int_at_least("start", start, 0)
        rows = self.steps >= start
        if rows.sum() < 2:
            raise ValueError(f"start={start} leaves fewer than two records to fit a rate over")
        t = self.steps[rows].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(self.loss[rows])
        flat = y.reshape(len(t), -1)
        ok = np.isfinite(flat).all(axis=0)
        slope = np.full(flat.shape[1], np.nan)
        if ok.any():
            slope[ok] = np.polyfit(t, flat[:, ok], 1)[0]
        return (1.0 - np.exp(slope)).reshape(self.loss.shape[1:])

    def flip_fraction(self) -> np.ndarray:
        """(G, K, S): the largest fraction of ReLU signs flipped over the run, ``max_t flips_t / m``."""
        if self.flips is None:
            raise ValueError("the sweep recorded no sign flips (ReLU only)")
        return np.nanmax(self.flips, axis=0) / self.widths[None, :, None]


def _as_data_sets(data, S: int) -> list[list[SequenceData]]:
    """``data`` as G lists of S data sets (entry [g][s]: what network s trains on in copy g)."""
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    if not items:
        raise TypeError("data must be an rnnbook.SequenceData or a non-empty list of them")
    out = []
    for it in items:
        sets = list(it) if isinstance(it, (list, tuple)) else [it] * S
        if len(sets) != S:
            raise ValueError(f"a list of per-seed data sets must hold one per seed ({S}), got {len(sets)}")
        if not all(isinstance(dd, SequenceData) and not isinstance(dd, training.EnsembleData) for dd in sets):
            raise TypeError("data must hold rnnbook.SequenceData (one data set, or one per seed)")
        out.append(sets)
    first = out[0][0]
    if any((dd.n, dd.L, dd.d_x, dd.d, dd.x.device, dd.x.dtype) != (first.n, first.L, first.d_x, first.d, first.x.device,
                                                                  first.x.dtype) for sets in out for dd in sets):
        raise ValueError("every data set must have the same n, L, d_x, d, device and dtype")
    return out


def gd_width_sweep(widths, data, *, c: float, steps: int, seeds: int, seed_of, activation: str = "relu",
                   untied: bool = False, record_every: int = 10, stop_below: float | None = None,
                   diverge_factor: float = 1e3, pad_ratio: float = 2.0) -> WidthSweep:
    """Full-batch GD (:func:`rnnbook.train`) from the random initialisation (Definition 2.3) at every width of the
    ascending grid ``widths``, ``seeds`` networks per width, with the book's step size
    ``eta = book_step_size(m, n, L, c=c)`` (not the paper's), for ``steps`` steps.

    ``data``: one :class:`rnnbook.SequenceData` (every network trains on it), or a list of G entries, each one data
    set or a list of ``seeds`` data sets (network s trains on entry s: a fresh data draw per seed); all with the
    same n, L. Every network of a width is trained on each of the G entries (G copies of it). ``seed_of(m)`` gives
    the seed of the networks of width m (e.g. ``lambda m: rb.seed(chapter, "networks", m)``), so each width's
    networks are those a direct run would draw. Widths are grouped (:func:`group_widths`, ``pad_ratio``) and each
    group runs as one batched GD run of padded networks (:func:`pad_params`) on the data's device and dtype;
    ``stop_below`` stops a group once all its networks have ``f_t <= stop_below f_0``. A network whose f stops
    being finite or exceeds ``diverge_factor f_0`` is frozen and counts as diverged. ``untied=True``: a fresh
    ``W_l`` per step (the feedforward comparison model)."""
    S = checks.positive_int("seeds", seeds)
    sets = _as_data_sets(data, S)
    n, L, d_x, d = sets[0][0].n, sets[0][0].L, sets[0][0].d_x, sets[0][0].d
    dev, dt = sets[0][0].x.device, sets[0][0].x.dtype
    checks.choice("activation", activation, ACTIVATIONS)
    if not callable(seed_of):
        raise TypeError("seed_of must be a function of the width m returning a seed")
    steps = checks.positive_int("steps", steps)
    c = checks.positive_real("c", c)
    G = len(sets)
    shared = all(all(dd is row[0] for dd in row) for row in sets)
    groups = group_widths(widths, pad_ratio)
    widths = [w for g in groups for w in g]
    t_all = np.unique(np.r_[np.arange(0, steps + 1, checks.positive_int("record_every", record_every)), steps])
    R, K = len(t_all), len(widths)
    out = {k: np.full((R, G, K, S), np.nan) for k in ("loss", "dist", "flips")}
    diverged = np.zeros((G, K, S), dtype=bool)
    etas = np.array([paper.book_step_size(m, n, L, c=c) for m in widths])
    k0 = 0
    for group in groups:
        M = group[-1]
        parts = []
        for m in group:
            p = init_params(m, d_x, d, ensemble=S, activation=activation, untied_steps=L if untied else None,
                            seed=seed_of(m), device=dev, dtype=dt)
            p = pad_params(p, M)
            parts.append(training.replicate(p, G) if G > 1 else p)
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        params = Params(W=cat("W"), A=cat("A"), B=cat("B"), activation=activation)
        # member (k, s, g) of the group is network s of width group[k] on data set [g][s]
        if G == 1 and shared:
            run_data = sets[0][0]
        else:
            order = [sets[g][s] for _ in group for s in range(S) for g in range(G)]
            run_data = training.EnsembleData(torch.stack([dd.x for dd in order]), torch.stack([dd.y for dd in order]),
                                             tuple(dd.delta for dd in order))
        eta = torch.tensor(np.repeat(etas[k0:k0 + len(group)], S * G), dtype=torch.float64, device=dev)
        recs = {"loss": training.record_loss, "dist_fro": training.record_dist_fro}
        if activation == "relu":
            recs["flips"] = training.record_flips
        h = training.train(params, run_data, eta=eta, steps=steps, record_every=record_every, records=recs,
                           on_divergence="stop", diverge_factor=diverge_factor, stop_below=stop_below)
        rows = np.searchsorted(t_all, h.steps)
        shape = (len(h.steps), len(group), S, G)
        scale = np.sqrt(np.array(group, dtype=np.float64) / M)[None, :, None, None]  # sqrt(m) instead of sqrt(M)
        for key, rec in (("loss", "loss"), ("dist", "dist_fro"), ("flips", "flips")):
            if rec in h.records:
                v = h.records[rec].reshape(shape) * (scale if key == "dist" else 1.0)
                out[key][rows, :, k0:k0 + len(group)] = v.transpose(0, 3, 1, 2)
        diverged[:, k0:k0 + len(group)] = h.diverged.reshape(len(group), S, G).transpose(2, 0, 1)
        k0 += len(group)
    return WidthSweep(widths=np.array(widths, dtype=np.float64), steps=t_all, loss=out["loss"], dist=out["dist"],
                      flips=out["flips"] if activation == "relu" else None, diverged=diverged, eta=etas, budget=steps)


# ----------------------------------------------------------------------------------------------------------
# the threshold and its exponent

def _fractions(success: np.ndarray) -> np.ndarray:
    return success.mean(axis=-1)


def _threshold_from_fractions(widths: np.ndarray, frac: np.ndarray, quantile: float) -> np.ndarray:
    """frac (..., K) -> the smallest width from which on every fraction is >= quantile (inf if none)."""
    ok = frac >= quantile - 1e-12
    # from which on: ok at k and at every larger k
    tail_ok = np.flip(np.cumprod(np.flip(ok, axis=-1), axis=-1), axis=-1).astype(bool)
    first = tail_ok.argmax(axis=-1)
    return np.where(tail_ok.any(axis=-1), widths[first], np.inf)


def smallest_width(widths, success, *, quantile: float = 0.75) -> float:
    """The book's width threshold: the smallest width ``m`` of the ascending grid ``widths`` (K,) such that at
    ``m`` and at every larger width of the grid at least a fraction ``quantile`` of the seeds succeeded;
    ``success`` is (K, S) booleans (width by seed). ``inf`` when even the largest widths do not qualify.
    Found on a grid, it is an upper bound at the grid's resolution: the true threshold lies between the
    previous grid width and this one."""
    w = np.asarray(widths, dtype=np.float64).ravel()
    s = np.asarray(success, dtype=bool)
    if s.ndim != 2 or s.shape[0] != w.size:
        raise ValueError(f"success must have shape (len(widths), seeds) = ({w.size}, S), got {s.shape}")
    if np.any(np.diff(w) <= 0):
        raise ValueError("widths must be strictly increasing")
    quantile = checks.real_in("quantile", quantile, 0.0, 1.0, low_open=True)
    return float(_threshold_from_fractions(w, _fractions(s), quantile))


@dataclass(frozen=True)
class ThresholdFit:
    """``thresholds`` (X,) at each value ``x`` of the knob; ``fit``: the log-log slope of the finite thresholds
    against x (None when fewer than two are finite), whose ``stderr`` is the bootstrap standard deviation (see
    :func:`threshold_fit`); ``boot`` (n_boot, X): the bootstrap thresholds; ``kept``: the fraction of bootstrap
    replicates in which every threshold used by the fit was finite (only those enter ``stderr``)."""

    x: np.ndarray
    thresholds: np.ndarray
    fit: SlopeFit | None
    boot: np.ndarray
    kept: float


def threshold_fit(x, widths, success, *, quantile: float = 0.75, n_boot: int = 200, seed: int,
                  paired: bool = False) -> ThresholdFit:
    """The exponent of the width threshold against a knob: ``threshold(x) ~ x^slope``.

    ``x``: X positive values of the knob (n, L or delta); ``widths`` (K,): the ascending grid; ``success``
    (X, K, S): whether seed s at width k reached the target for knob value j. The point estimate is the
    least-squares slope of ``log threshold`` on ``log x`` over the values with a finite threshold.

    Uncertainty (a bootstrap over seeds): each replicate resamples, independently for every (x, width) cell, S
    of that cell's S seeds with replacement (right when the networks and data of different cells are independent
    draws), recomputes every threshold (:func:`smallest_width`) and refits the slope over the same x values. With
    ``paired=True`` the same resampled seed indices are used for every x at a given width (right when seed s of a
    width is the same network, on related data, for every x, as in a delta sweep that moves one pair of tokens).
    ``stderr`` is the standard deviation of the slopes over the replicates in which all those thresholds were
    finite. It measures the seed-to-seed noise only: the grid's resolution adds an error of up to one grid step
    per threshold."""
    x = np.asarray(x, dtype=np.float64).ravel()
    w = np.asarray(widths, dtype=np.float64).ravel()
    s = np.asarray(success, dtype=bool)
    if s.ndim != 3 or s.shape[:2] != (x.size, w.size):
        raise ValueError(f"success must have shape (len(x), len(widths), seeds) = ({x.size}, {w.size}, S), got {s.shape}")
    if np.any(x <= 0) or not np.all(np.isfinite(x)):
        raise ValueError("x must be positive and finite for a log-log fit")
    if np.any(np.diff(w) <= 0):
        raise ValueError("widths must be strictly increasing")
    quantile = checks.real_in("quantile", quantile, 0.0, 1.0, low_open=True)
    n_boot = checks.positive_int("n_boot", n_boot)
    thr = _threshold_from_fractions(w, _fractions(s), quantile)
    S = s.shape[2]
    gen = np.random.default_rng(checks.int_at_least("seed", seed, 0))
    pick = gen.integers(0, S, size=(n_boot, 1 if paired else x.size, w.size, S))
    pick = np.broadcast_to(pick, (n_boot, x.size, w.size, S))
    resampled = np.take_along_axis(s[None], pick, axis=-1)                  # (n_boot, X, K, S)
    boot = _threshold_from_fractions(w, _fractions(resampled), quantile)    # (n_boot, X)
    use = np.isfinite(thr)
    if use.sum() < 2:
        return ThresholdFit(x=x, thresholds=thr, fit=None, boot=boot, kept=0.0)
    lx = np.log(x[use])
    slope, intercept = np.polyfit(lx, np.log(thr[use]), 1)
    good = np.isfinite(boot[:, use]).all(axis=1)
    slopes = np.array([np.polyfit(lx, np.log(b), 1)[0] for b in boot[good][:, use]])
    err = float(slopes.std(ddof=1)) if slopes.size >= 2 else math.nan
    # equal thresholds give a slope of 0 up to rounding (1e-16): report it as 0, not as a tiny number
    slope = 0.0 if abs(slope) < 1e-10 else slope
    err = 0.0 if err < 1e-10 else err
    return ThresholdFit(x=x, thresholds=thr, fit=SlopeFit(float(slope), err, float(intercept)), boot=boot,
                        kept=float(good.mean()))


# ----------------------------------------------------------------------------------------------------------
# the paper's width condition, for a chosen C

def paper_width(C: float, n: int, L: int, d: int, delta: float, eps: float) -> int:
    """The smallest integer m with ``m >= C varrho(m)^C``, ``varrho = n L d delta^{-1} log(m / eps)``
    (:func:`rnnbook.paper.varrho`): the width Theorems 1 and 2 would ask for if their unstated absolute constant
    were C (the paper only says "some C > 1"; the book picks small C to show that even those are far off)."""
    C = checks.real_in("C", C, 1.0, 64.0)
    need = lambda m: C * paper.varrho(n, L, d, delta, m, eps) ** C  # noqa: E731
    hi = 1
    while hi < need(hi):
        hi *= 2
        if hi > 2 ** 200:
            raise OverflowError("no width below 2^200 meets the condition for this C")
    lo = max(1, hi // 2)
    if lo >= need(lo):
        return lo
    while hi - lo > 1:            # lo fails, hi meets it
        mid = (lo + hi) // 2
        if mid >= need(mid):
            hi = mid
        else:
            lo = mid
    return hi


# ----------------------------------------------------------------------------------------------------------
# data whose separation is exactly delta

def pinned_data(n: int, L: int, d_x: int, d: int, delta: float, *, seed: int, device=None, dtype=None,
                max_tries: int = 100) -> SequenceData:
    """Random data of :func:`rnnbook.make_data` (Section 2.1, Assumption 2.1) whose closest pair of first tokens
    is exactly ``delta`` apart: the first token of sequence 2 is moved to distance delta from that of sequence 1
    (on the same sphere, with the same fixed last coordinate), in a random direction redrawn until every other
    pair stays at least delta apart. Later tokens and labels are those of ``make_data``."""
    n = checks.int_at_least("n", n, 2)
    delta = checks.real_in("delta", delta, 0.0, 1.0, low_open=True)
    gen = rng.generator(seed=seed)
    base = make_data(n, L, d_x, d, delta, generator=gen, device="cpu", dtype=torch.float64)
    x = base.x.clone()
    u = x[0, 0, :-1] * math.sqrt(2.0)                      # the unit direction of x_{1,1}
    theta = 2.0 * math.asin(math.sqrt(2.0) * delta / 2.0)  # chord sqrt(2) delta on the unit sphere
    for _ in range(checks.positive_int("max_tries", max_tries)):
        w = rng.randn((d_x - 1,), gen=gen, std=1.0, device="cpu", dtype=torch.float64)
        w = w - (w @ u) * u
        w = w / w.norm()
        v = math.cos(theta) * u + math.sin(theta) * w
        x[1, 0, :-1] = v / math.sqrt(2.0)
        if min_first_token_distance(x) >= delta * (1 - 1e-9):
            break
    else:
        raise ValueError(f"could not pin the closest pair at delta={delta} with the other pairs at least delta apart "
                         f"after {max_tries} tries; lower delta or n, or raise d_x")
    out = SequenceData(x, base.y, delta)
    return out.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else out


# ----------------------------------------------------------------------------------------------------------
# comparing two models

def ratio_of_medians(a, b, *, n_boot: int = 200, seed: int) -> tuple[float, float]:
    """``median(a) / median(b)`` for two sets of per-seed values (e.g. GD rates of two models), and its bootstrap
    standard deviation (a and b resampled independently, with replacement). NaN entries are ignored."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError("a and b need at least one finite value each")
    if np.median(b) == 0:
        raise ValueError("the median of b is 0: the ratio is undefined")
    n_boot = checks.positive_int("n_boot", n_boot)
    gen = np.random.default_rng(checks.int_at_least("seed", seed, 0))
    ra = np.median(a[gen.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    rb_ = np.median(b[gen.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = ra / rb_
    boots = boots[np.isfinite(boots)]
    err = float(boots.std(ddof=1)) if boots.size >= 2 else math.nan
    return float(np.median(a) / np.median(b)), err
