"""The infinite-width limit of the paper's RNN at initialisation (NOT in the paper).

For the model of Section 2 (ReLU, ``W`` and ``A`` with i.i.d. N(0, 2/m) entries, ``h_0 = 0``, no bias), the
hidden states of two sequences have an inner product that converges, as ``m -> infinity`` at fixed ``l``, to
a deterministic kernel given by a closed-form recursion over the steps::

    K_0 = 0
    S_l(i, j) = K_{l-1}(i, j) + <x_{i,l}, x_{j,l}>                              (pre-activation covariance x m/2)
    K_l(i, j) = (1/pi) sqrt(S_l(i,i) S_l(j,j)) (sin t + (pi - t) cos t),   cos t = S_l(i,j) / sqrt(S_l(i,i) S_l(j,j))

``K_l`` is the degree-1 arc-cosine kernel of Cho & Saul (2009) applied to ``S_l``; the variance 2/m makes it
preserve the diagonal, ``K_l(i,i) = S_l(i,i) = sum_{a<=l} ||x_{i,a}||^2``. Weight tying does not change this
same-step limit (Yang, Tensor Programs I, 2019; the recurrent GP kernel of Alemohammad et al., 2021). This is
the book's own statement for this exact model, checked numerically in ``tests/test_kernels.py``.

Shapes. Inputs ``x`` are ``(n, L, d_x)`` (position ``l-1`` holds step ``l``), optionally with leading batch
dimensions. Gram matrices are indexed like the paper's steps: ``K[l]`` is ``K_l`` for ``l = 0..L`` (``K[0] = 0``),
so a limit Gram is ``(L+1, n, n)`` and an empirical one from an ensemble of networks is ``(E, L+1, n, n)``.
All kernel arithmetic is done in float64.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .model import Forward, Params, forward


def arccos_map(S: torch.Tensor) -> torch.Tensor:
    """One ReLU step of the limit: ``2 E[relu(u) relu(v)]`` for ``(u, v) ~ N(0, S)``, for every pair at once.

    ``S`` is a (batch of) symmetric positive semi-definite ``(..., n, n)`` matrix. Returns the degree-1
    arc-cosine kernel (Cho & Saul 2009) scaled by 2, which maps ``S(i, i)`` to itself: the factor 2 is the
    2 of the paper's variance 2/m (Definition 2.3), which exactly undoes ReLU's halving of the second moment.
    ``cos t`` is clamped into [-1, 1] against rounding, and pairs with a zero diagonal entry give 0.
    The result is float64.
    """
    checks.tensor("S", S, finite=True)
    if S.ndim < 2 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S must be a square matrix (..., n, n), got shape {tuple(S.shape)}")
    S = S.to(torch.float64)
    diag = S.diagonal(dim1=-2, dim2=-1)
    if (diag < 0).any():
        raise ValueError("S must be positive semi-definite: it has a negative diagonal entry")
    scale = torch.sqrt(diag.unsqueeze(-1) * diag.unsqueeze(-2))
    pos = scale > 0
    cos = torch.where(pos, S / torch.where(pos, scale, torch.ones_like(scale)), torch.ones_like(S)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
    K = torch.where(pos, scale * (sin + (math.pi - theta) * cos) / math.pi, torch.zeros_like(S))
    # theta = 0 on the diagonal gives S(i, i) exactly in exact arithmetic; make it exact in floating point too.
    K.diagonal(dim1=-2, dim2=-1).copy_(diag)
    return K


def _inputs(x: torch.Tensor) -> torch.Tensor:
    checks.tensor("x", x, finite=True)
    if x.ndim < 3:
        raise ValueError(f"x must have shape (n, L, d_x) (optionally with leading batch dimensions), got {tuple(x.shape)}")
    if min(x.shape[-3:]) < 1:
        raise ValueError(f"x must have n, L, d_x >= 1, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def input_gram(x: torch.Tensor) -> torch.Tensor:
    """``<x_{i,l}, x_{j,l}>`` for every step: ``x`` ``(..., n, L, d_x)`` -> ``(..., L, n, n)`` (position ``l-1`` is step ``l``)."""
    x = _inputs(x)
    return torch.einsum("...ild,...jld->...lij", x, x)


def limit_gram(x: torch.Tensor) -> torch.Tensor:
    """The infinite-width Gram matrices ``K_l(i, j) = lim_{m->inf} <h_{i,l}, h_{j,l}>`` for ``l = 0..L``.

    ``x``: inputs ``(n, L, d_x)`` (or ``(..., n, L, d_x)``). Returns float64 ``(..., L+1, n, n)`` with
    ``K[..., 0] = 0`` and ``K[..., l] = arccos_map(K[..., l-1] + <x_l, x_l>)`` (module docstring). Not in the
    paper: the Gaussian-process limit of its RNN (Tensor Programs I), in closed form for ReLU with variance 2/m.
    """
    X = input_gram(x)
    L, n = X.shape[-3], X.shape[-1]
    K = torch.zeros(*X.shape[:-3], L + 1, n, n, dtype=torch.float64, device=X.device)
    for l in range(1, L + 1):
        K[..., l, :, :] = arccos_map(K[..., l - 1, :, :] + X[..., l - 1, :, :])
    return K


def hidden_gram(fw: Forward) -> torch.Tensor:
    """``<h_{i,l}, h_{j,l}>`` from a forward pass, for every network of the ensemble and every step.

    Returns float64 ``(E, L+1, n, n)`` (position ``l`` is step ``l``; position 0 is ``h_0 = 0``). The inner
    products are formed in float64 from the stored hidden states, whatever the network's dtype.
    """
    if not isinstance(fw, Forward):
        raise TypeError(f"fw must be an rnnbook.Forward (from rnnbook.forward), got {type(fw).__name__}")
    h = fw.h_by_step.to(torch.float64)  # (E, L+1, n, m)
    return h @ h.transpose(-1, -2)


def empirical_gram(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Run the forward pass of ``params`` (an ensemble of E networks, tied or untied W) on ``x`` (n, L, d_x)
    and return the finite-width Gram matrices ``<h_{i,l}, h_{j,l}>``, float64 ``(E, L+1, n, n)``."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params (from rnnbook.init_params), got {type(params).__name__}")
    return hidden_gram(forward(params, x))


def gram_relative_error(G: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Max-entry relative error of a Gram matrix ``G`` against the limit ``K``, at every step.

    ``max_{i,j} |G_l(i,j) - K_l(i,j)| / sqrt(K_l(i,i) K_l(j,j))``: each entry is compared at the scale of its
    own row and column, so off-diagonal entries near 0 do not blow up the ratio, and on the diagonal it is the
    relative error of ``||h_{i,l}||^2``. ``G``: ``(..., L+1, n, n)`` (e.g. ``(E, L+1, n, n)``); ``K``:
    ``(L+1, n, n)`` or the same shape as ``G``. Returns float64 ``(..., L+1)``; entries where ``K`` has a zero
    diagonal are 0 when ``G`` also vanishes there (as at ``l = 0``) and inf otherwise.
    """
    checks.tensor("G", G, finite=True)
    checks.tensor("K", K, finite=True)
    if G.ndim < 3 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"G must have shape (..., L+1, n, n), got {tuple(G.shape)}")
    if K.ndim < 3 or K.shape[-3:] != G.shape[-3:]:
        raise ValueError(f"K must end in G's shape {tuple(G.shape[-3:])} (steps, n, n), got {tuple(K.shape)}")
    if G.device != K.device:
        raise ValueError(f"G is on {G.device} but K is on {K.device}: put them on one device")
    G, K = G.to(torch.float64), K.to(torch.float64)
    diag = K.diagonal(dim1=-2, dim2=-1)
    if (diag < 0).any():
        raise ValueError("K must be a Gram matrix: it has a negative diagonal entry")
    scale = torch.sqrt(diag.unsqueeze(-1) * diag.unsqueeze(-2))
    diff = (G - K).abs()
    ratio = torch.where(scale > 0, diff / torch.where(scale > 0, scale, torch.ones_like(scale)),
                        torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff)))
    return ratio.amax(dim=(-2, -1))


def _pair(G: torch.Tensor, i: int, j: int):
    checks.tensor("G", G, finite=True)
    if G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"G must be a Gram matrix (..., n, n), got shape {tuple(G.shape)}")
    n = G.shape[-1]
    for name, v in (("i", i), ("j", j)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            raise ValueError(f"{name} must be an integer index in [0, {n}), got {v!r}")
    if i == j:
        raise ValueError(f"i and j must be different sequences, got i = j = {i}")
    G = G.to(torch.float64)
    return G[..., i, i], G[..., j, j], G[..., i, j]


def gram_distance(G: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """``||h_i - h_j|| = sqrt(G_ii + G_jj - 2 G_ij)`` read off a Gram matrix ``G`` ``(..., n, n)`` (any batch dims)."""
    gii, gjj, gij = _pair(G, i, j)
    return torch.sqrt((gii + gjj - 2.0 * gij).clamp_min(0.0))


def gram_separation(G: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Separation of Definition B.8 (arXiv v4) of ``h_i`` and ``h_j``, read off a Gram matrix ``G`` ``(..., n, n)``.

    ``min( ||(I - h_j h_j^T/||h_j||^2) h_i||, ||(I - h_i h_i^T/||h_i||^2) h_j|| )``
    ``= min( sqrt(G_ii - G_ij^2/G_jj), sqrt(G_jj - G_ij^2/G_ii) )``: the distance of each vector from the line of
    the other. (Lemma B.9 applies it after projecting out ``U_l``, which can only make it smaller.)
    """
    gii, gjj, gij = _pair(G, i, j)
    if (gii <= 0).any() or (gjj <= 0).any():
        raise ValueError("gram_separation needs non-zero vectors: G has a zero diagonal entry for i or j")
    a = (gii - gij * gij / gjj).clamp_min(0.0)
    b = (gjj - gij * gij / gii).clamp_min(0.0)
    return torch.sqrt(torch.minimum(a, b))
