"""Norms of the forward pass at random initialisation: Lemma B.3 of arXiv 1810.12065 v4 and its limit.

Lemma B.3 (forward propagation) says that with probability ``1 - exp(-Omega(m / L^2))``, for every
sequence ``i`` and every ``l in {0, ..., L-1}``::

    (1 - 1/(4L))^l  <=  ||h_{i,l+1}||  <=  2 l + 4,        ||g_{i,l+1}||  <=  4 l + 8.

This module measures those norms over an ensemble of networks, checks them against the lemma's bounds,
and gives the Gaussian ("mean-field" / infinite-width) prediction of ``E ||h_{i,l}||^2``.

Indexing follows :mod:`rnnbook.model`: norms are returned per step ``l = 1..L`` at position ``l - 1``,
with shape ``(E, n, L)`` (ensemble, sequence, step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import checks, paper
from .model import ACTIVATIONS, INIT_VARIANCE_TIMES_M, Params, forward

#: Readings of the lower bound of Lemma B.3 (see :func:`b3_bounds`).
LOWER_READINGS = ("printed", "shifted")


@dataclass(frozen=True)
class ForwardNorms:
    """``h[e, i, l-1] = ||h_{i,l}||`` and ``g[e, i, l-1] = ||g_{i,l}||`` for l = 1..L (float64 tensors)."""

    h: torch.Tensor
    g: torch.Tensor

    @property
    def L(self) -> int:
        return self.h.shape[-1]

    @property
    def steps(self) -> np.ndarray:
        """The steps ``l = 1..L`` as a numpy array (the x axis of every plot against l)."""
        return np.arange(1, self.L + 1)


def forward_norms(params: Params, x: torch.Tensor) -> ForwardNorms:
    """``||h_{i,l}||`` and ``||g_{i,l}||`` for l = 1..L of every network of the ensemble (the quantities of
    Lemma B.3), computed by :func:`rnnbook.model.forward`. ``x`` is ``(n, L, d_x)`` or ``(E, n, L, d_x)``.
    Norms are accumulated in float64 on the parameters' device."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    fw = forward(params, x)
    # fw.h, fw.g: (E, n, L+1, m), position 0 is step 0 -> drop it -> (E, n, L). float64, so that the squares of
    # exploding norms (small m, long L) cannot overflow.
    h = torch.linalg.vector_norm(fw.h[:, :, 1:].to(torch.float64), dim=-1)
    g = torch.linalg.vector_norm(fw.g[:, :, 1:].to(torch.float64), dim=-1)
    return ForwardNorms(h=h.contiguous(), g=g.contiguous())


def b3_bounds(L: int, *, lower: str = "printed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bounds of Lemma B.3 at steps ``l = 1..L`` (position ``l - 1``): ``(h_low, h_high, g_high)``.

    With step ``l = l' + 1`` for the lemma's ``l' in {0..L-1}``: ``h_high = 2l + 2``, ``g_high = 4l + 4``
    and ``h_low = (1 - 1/(4L))^(l-1)`` as printed (``lower="printed"``), which asks ``||h_{i,1}|| >= 1`` at
    the first step. ``lower="shifted"`` uses ``(1 - 1/(4L))^l`` instead: a one-step slack at step 1, which
    is what a concentration bound ``||h_{i,1}|| >= 1 - 1/(4L)`` (Corollary A.9) can give. The shifted
    reading is the book's, not the paper's.
    """
    L = checks.positive_int("L", L)
    checks.choice("lower", lower, LOWER_READINGS)
    lemma_l = range(L)  # the lemma's l = 0..L-1 bounds step l + 1
    shift = 0 if lower == "printed" else 1
    low = np.array([paper.b3_lower(l + shift, L) for l in lemma_l])
    return low, np.array([paper.b3_upper(l) for l in lemma_l]), np.array([paper.b3_g_upper(l) for l in lemma_l])


@dataclass(frozen=True)
class B3Check:
    """Where Lemma B.3 fails: boolean masks of shape ``(E, n, L)``, one per inequality."""

    h_low: torch.Tensor
    h_high: torch.Tensor
    g_high: torch.Tensor

    @property
    def any(self) -> torch.Tensor:
        """``(E, n, L)``: some inequality of the lemma fails at (seed, i, l)."""
        return self.h_low | self.h_high | self.g_high

    @property
    def per_seed(self) -> torch.Tensor:
        """``(E,)``: the lemma fails somewhere (any i, any l) for this network -- the event whose
        probability the lemma bounds by ``exp(-Omega(m / L^2))``."""
        return self.any.flatten(1).any(dim=1)


def b3_check(norms: ForwardNorms, *, lower: str = "printed") -> B3Check:
    """Compare measured norms with :func:`b3_bounds` (Lemma B.3) at every (seed, i, l)."""
    if not isinstance(norms, ForwardNorms):
        raise TypeError(f"norms must be a ForwardNorms (from forward_norms), got {type(norms).__name__}")
    lo, hi, ghi = (torch.as_tensor(b, dtype=norms.h.dtype, device=norms.h.device)
                   for b in b3_bounds(norms.L, lower=lower))
    return B3Check(h_low=norms.h < lo, h_high=norms.h > hi, g_high=norms.g > ghi)


def _gaussian_mean(fun, var: np.ndarray, nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``E fun(sqrt(var) z)`` for z ~ N(0, 1), elementwise in ``var``, by Gauss-Hermite quadrature."""
    z = np.sqrt(var)[..., None] * nodes
    return fun(z) @ weights


def norm_recursion(x, m: int | None = None, *, activation: str = "relu", quad: int = 80) -> np.ndarray:
    """Gaussian prediction of ``E ||h_{i,l}||^2`` for l = 1..L: shape ``x.shape[:-1]``.

    Treat each coordinate of ``g_l = W h_{l-1} + A x_l`` as a centred Gaussian of variance
    ``s (||h_{l-1}||^2 + ||x_l||^2) / m`` with ``s = 2`` for ReLU and ``1`` otherwise (the initialisation
    variances of :data:`rnnbook.model.INIT_VARIANCE_TIMES_M`), and replace ``||h_l||^2`` by its mean::

        q_l = m * E[phi(sqrt(s (q_{l-1} + ||x_l||^2) / m) z)^2],   q_0 = 0.

    This is the diagonal of the infinite-width kernel recursion (for ReLU, of the arc-cosine kernel). For
    ReLU and the identity it does not depend on ``m`` and is exactly ``q_l = sum_{a<=l} ||x_a||^2``; for
    tanh it depends on ``m`` (coordinates of size ``sqrt(q/m)`` feel the saturation), and ``m=None`` gives
    the ``m -> infinity`` limit, where tanh acts linearly and the sum is recovered too.
    ``x``: tokens ``(..., L, d_x)`` (tensor or array).
    """
    checks.choice("activation", activation, ACTIVATIONS)
    quad = checks.positive_int("quad", quad)
    xa = x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if xa.ndim < 2:
        raise ValueError(f"x must have shape (..., L, d_x), got {xa.shape}")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x contains NaN or infinite entries")
    x2 = np.square(xa).sum(axis=-1)  # (..., L)
    if m is not None:
        m = checks.positive_int("m", m)
    if activation in ("relu", "identity") or m is None:
        return np.cumsum(x2, axis=-1)
    s = INIT_VARIANCE_TIMES_M[activation]
    nodes, weights = np.polynomial.hermite_e.hermegauss(quad)
    weights = weights / math.sqrt(2 * math.pi)
    q = np.zeros(x2.shape[:-1])
    out = np.empty_like(x2)
    for l in range(x2.shape[-1]):
        q = m * _gaussian_mean(lambda z: np.tanh(z) ** 2, s * (q + x2[..., l]) / m, nodes, weights)
        out[..., l] = q
    return out
