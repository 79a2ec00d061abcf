"""Fresh randomness: Gram-Schmidt bases of past hidden states and what is left outside them (arXiv v4, App. B).

The weight-tied network reuses one ``W`` at every step, so ``W h_{i,l}`` is not a fresh Gaussian vector. The
paper splits every hidden state into the part inside the span of all earlier states and the part outside it:

* **Definition B.1.** ``U_l = GS(h_{1,1}, ..., h_{n,1}, ..., h_{1,l}, ..., h_{n,l})``: an orthonormal basis, built
  by Gram-Schmidt in this order, of the span of every hidden state of every sample up to step ``l``
  (``U_0`` is empty). ``U_l`` has ``n l`` columns when the states are linearly independent.
* **Lemma B.6** bounds the *fresh residual* ``||(I - U_l U_l^T) h_{i,l+1}||`` from below, for all ``i`` and
  ``l = 0..L-1``. Note that ``U_l`` contains the states of step ``l`` and earlier, not the other samples' states
  at step ``l+1``.
* **Definition B.2.** The *fresh direction* ``v_{i,l} = (I - U_{l-1} U_{l-1}^T) h_{i,l} / ||...||``.
* **Definition B.8.** Vectors ``a, b`` are delta-separable when ``||(I - b b^T/||b||^2) a|| >= delta`` and
  ``||(I - a a^T/||a||^2) b|| >= delta``; :func:`separation` returns the largest such delta (the minimum of the
  two), and Lemma B.9 applies it to ``a = (I - U_l U_l^T) h_{i,l+1}``, ``b = (I - U_l U_l^T) h_{j,l+1}``.

:func:`fresh_decomposition` computes all of these for every step at once, batched over the ensemble: one
incremental Gram-Schmidt pass in float64 (block classical Gram-Schmidt with re-orthogonalisation against the
basis so far, then column-by-column Gram-Schmidt, again with re-orthogonalisation, inside the block of step
``l``). The first ``n l`` basis vectors span ``U_l``, so one basis serves every ``l``: no QR from scratch per step.

Rank deficiency (documented behaviour, not an error). When a state lies in the span of the earlier ones -- always
the case once ``n l > m``, or for two identical sequences -- Gram-Schmidt has nothing to add. A vector whose
component outside the current span is at most ``rtol`` times its norm counts as dependent: it adds a **zero**
basis vector (so ``U_l U_l^T`` is still the orthogonal projector onto the span, and ``rank`` holds the true
dimension), its fresh residual is reported as exactly 0 and its fresh direction as NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks

WORK_DTYPE = torch.float64


def _hidden(h) -> torch.Tensor:
    """Accept a :class:`rnnbook.model.Forward` or a tensor ``(E, n, L+1, m)`` whose position 0 is ``h_0 = 0``."""
    if hasattr(h, "h_by_step") and hasattr(h, "h"):
        h = h.h
    checks.tensor("h", h, ndim=4, finite=True)
    E, n, Lp1, m = h.shape
    if Lp1 < 2:
        raise ValueError(f"h must hold steps 0..L with L >= 1 (shape (E, n, L+1, m)), got shape {tuple(h.shape)}")
    if min(E, n, m) < 1:
        raise ValueError(f"h must have E, n, m >= 1, got shape {tuple(h.shape)}")
    if bool((h[:, :, 0] != 0).any()):
        raise ValueError("h[:, :, 0] must be h_0 = 0 (pass fw.h, indexed like the paper, positions 0..L); "
                         "did you pass only steps 1..L?")
    return h


def _project_out(X: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``X - (X Q^T) Q`` for rows X (E, k, m) and basis rows Q (E, r, m)."""
    if Q.shape[1] == 0:
        return X
    return X - torch.matmul(torch.matmul(X, Q.transpose(1, 2)), Q)


@dataclass
class FreshDecomposition:
    """The output of :func:`fresh_decomposition` (all float64, on the input's device).

    ``Q``: ``(E, n L, m)`` Gram-Schmidt basis as rows, in the order of Definition B.1; its first ``n l`` rows
    span ``U_l`` (a dependent direction gives a zero row). ``projected_t``: ``(E, L+1, n, m)`` time-major, read
    through :attr:`projected`. ``rank``: ``(E, L+1)`` integer dimension of ``span U_l``. ``h_norm``:
    ``(E, n, L+1)`` the norms ``||h_{i,l}||``.
    """

    Q: torch.Tensor
    projected_t: torch.Tensor
    residual: torch.Tensor
    rank: torch.Tensor
    h_norm: torch.Tensor

    @property
    def E(self) -> int:
        return self.Q.shape[0]

    @property
    def n(self) -> int:
        return self.projected_t.shape[2]

    @property
    def L(self) -> int:
        return self.projected_t.shape[1] - 1

    @property
    def m(self) -> int:
        return self.Q.shape[2]

    @property
    def projected(self) -> torch.Tensor:
        """``(E, n, L+1, m)``: position ``l >= 1`` holds ``(I - U_{l-1} U_{l-1}^T) h_{i,l}``, the fresh part of
        ``h_{i,l}``; position 0 holds ``h_0 = 0``. Indexed like ``fw.h``."""
        return self.projected_t.transpose(1, 2)

    @property
    def v(self) -> torch.Tensor:
        """Fresh directions of Definition B.2, ``(E, n, L+1, m)``: position ``l >= 1`` holds ``v_{i,l}``; position
        0, and any dependent state (zero fresh part), is NaN."""
        p = self.projected
        return p / p.norm(dim=-1, keepdim=True)

    def U(self, l: int) -> torch.Tensor:
        """``U_l`` as an ``(E, m, n l)`` matrix (``l = 0..L``; ``U_0`` has no columns). Zero columns mark
        dependent directions, so ``U_l U_l^T`` is the orthogonal projector onto the span in every case."""
        l = checks.int_at_least("l", l, 0)
        if l > self.L:
            raise ValueError(f"l must lie in [0, L={self.L}], got {l}")
        return self.Q[:, : self.n * l].transpose(1, 2)

    def min_residual(self) -> torch.Tensor:
        """``min_{i, l} ||(I - U_l U_l^T) h_{i,l+1}||`` over ``i`` and ``l = 0..L-1``: Lemma B.6's quantity, ``(E,)``."""
        return self.residual.amin(dim=(1, 2))

    def _pair(self, i: int, j: int):
        for name, k in (("i", i), ("j", j)):
            k = checks.int_at_least(name, k, 0)
            if k >= self.n:
                raise ValueError(f"{name} must lie in [0, n={self.n}), got {k}")
        if i == j:
            raise ValueError(f"Lemma B.9 compares two different samples: i and j must differ, got i=j={i}")
        return self.projected_t[:, 1:, i], self.projected_t[:, 1:, j]

    def separation(self, i: int, j: int) -> torch.Tensor:
        """Projected separation of samples ``i != j`` (0-based), ``(E, L)``: entry ``l`` (``l = 0..L-1``) is
        :func:`separation` of ``(I - U_l U_l^T) h_{i,l+1}`` and ``(I - U_l U_l^T) h_{j,l+1}`` (Lemma B.9,
        Definition B.8). NaN where either fresh part is zero (Definition B.8 is then undefined)."""
        a, b = self._pair(i, j)
        return _separation(a, b)

    def min_separation(self) -> torch.Tensor:
        """``min_{i != j}`` of :meth:`separation`, ``(E, L)`` (needs ``n >= 2``)."""
        if self.n < 2:
            raise ValueError(f"separation needs at least two samples, got n={self.n}")
        a = self.projected_t[:, 1:].unsqueeze(3)  # (E, L, n, 1, m)
        b = self.projected_t[:, 1:].unsqueeze(2)  # (E, L, 1, n, m)
        s = _separation(a, b)  # (E, L, n, n)
        eye = torch.eye(self.n, dtype=torch.bool, device=s.device)
        return s.masked_fill(eye, float("inf")).amin(dim=(2, 3))


def fresh_decomposition(h, *, rtol: float = 1e-10) -> FreshDecomposition:
    """Gram-Schmidt bases ``U_l`` (Definition B.1), fresh parts and residuals (Lemma B.6) and fresh directions
    ``v_{i,l}`` (Definition B.2) for every step ``l`` at once.

    ``h``: a :class:`rnnbook.model.Forward` or its ``fw.h``, shape ``(E, n, L+1, m)`` with ``h[:, :, 0] = h_0 = 0``
    (any float dtype; the computation runs in float64 on ``h``'s device). ``rtol``: a state whose component
    outside the span of the earlier ones is at most ``rtol`` times its norm counts as dependent (see the module
    docstring). Returns a :class:`FreshDecomposition`; ``residual[e, i, l] = ||(I - U_l U_l^T) h_{i,l+1}||`` for
    ``l = 0..L-1``.

    Cost: ``O(E (nL)^2 m)`` -- one pass; no projector ``m x m`` is ever formed.
    """
    h = _hidden(h)
    rtol = checks.real_in("rtol", rtol, 0.0, 1.0, high_open=True)
    E, n, Lp1, m = h.shape
    L = Lp1 - 1
    X_t = h.transpose(1, 2).to(WORK_DTYPE)  # (E, L+1, n, m)
    h_norm_t = X_t.norm(dim=-1)  # (E, L+1, n)
    Q = torch.zeros(E, n * L, m, dtype=WORK_DTYPE, device=h.device)
    P_t = torch.zeros(E, L + 1, n, m, dtype=WORK_DTYPE, device=h.device)
    rank = torch.zeros(E, L + 1, dtype=torch.long, device=h.device)
    for l in range(1, L + 1):
        k = n * (l - 1)
        basis = Q[:, :k]
        # Fresh part against U_{l-1}: classical Gram-Schmidt, twice ("twice is enough").
        R = _project_out(_project_out(X_t[:, l], basis), basis)
        dep = R.norm(dim=-1) <= rtol * h_norm_t[:, l]
        R = R.masked_fill(dep.unsqueeze(-1), 0.0)
        P_t[:, l] = R
        # Extend the basis inside the block of step l, in the order of Definition B.1.
        Q[:, k : k + n], added = _extend_block(R, basis, h_norm_t[:, l], rtol)
        rank[:, l] = rank[:, l - 1] + added
    residual = P_t[:, 1:].norm(dim=-1).transpose(1, 2).contiguous()  # (E, n, L)
    return FreshDecomposition(Q=Q, projected_t=P_t, residual=residual, rank=rank,
                              h_norm=h_norm_t.transpose(1, 2).contiguous())


def _extend_block(R: torch.Tensor, basis: torch.Tensor, h_norm: torch.Tensor, rtol: float):
    """Orthonormal rows spanning the block ``R`` (E, n, m) (rows already orthogonal to ``basis``), in order.

    Fast path: a batched Householder QR of the block, repeated once after re-projecting against ``basis``
    (re-orthogonalisation). If any diagonal entry of the triangular factor -- the part of a row outside the span
    of the rows before it -- is at most ``rtol ||h||``, the block is rank-deficient and is redone row by row
    (classical Gram-Schmidt twice per row), giving zero rows for the dependent directions.
    Returns ``(rows (E, n, m), number of nonzero rows (E,))``.
    """
    E, n, m = R.shape
    if n <= m:
        Q1, T = torch.linalg.qr(R.transpose(1, 2))  # (E, m, n), (E, n, n)
        if bool((T.diagonal(dim1=1, dim2=2).abs() > rtol * h_norm).all()):
            Q2, T2 = torch.linalg.qr(_project_out(Q1.transpose(1, 2), basis).transpose(1, 2))
            signs = torch.sign(T2.diagonal(dim1=1, dim2=2)).unsqueeze(1)  # keep the Gram-Schmidt orientation
            rows = (Q2 * signs).transpose(1, 2) * torch.sign(T.diagonal(dim1=1, dim2=2)).unsqueeze(-1)
            return rows, torch.full((E,), n, dtype=torch.long, device=R.device)
    rows = torch.zeros_like(R)
    added = torch.zeros(E, dtype=torch.long, device=R.device)
    tiny = torch.finfo(R.dtype).tiny
    for i in range(n):
        sofar = torch.cat([basis, rows[:, :i]], dim=1)
        w = _project_out(_project_out(R[:, i : i + 1], sofar), sofar)[:, 0]
        nw = w.norm(dim=-1)
        ok = nw > rtol * h_norm[:, i]
        rows[:, i] = torch.where(ok.unsqueeze(-1), w / nw.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(w))
        added += ok.long()
    return rows, added


def _separation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Definition B.8 without input checks; NaN where ``a`` or ``b`` is zero.

    ``||(I - b b^T/||b||^2) a|| = ||a|| sin(theta)`` and symmetrically, so the minimum is
    ``min(||a||, ||b||) sin(theta)``. ``sin(theta)`` is computed as ``||a^ - b^|| ||a^ + b^|| / 2`` from the unit
    vectors, which stays accurate for nearly parallel vectors (no ``1 - cos^2`` cancellation).
    """
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ua, ub = a / na.unsqueeze(-1), b / nb.unsqueeze(-1)
    sin = ((ua - ub).norm(dim=-1) * (ua + ub).norm(dim=-1) / 2).clamp(max=1.0)
    return torch.minimum(na, nb) * sin


def separation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The separation of Definition B.8: ``min(||(I - b b^T/||b||^2) a||, ||(I - a a^T/||a||^2) b||)``, i.e. the
    largest ``delta`` for which ``a`` and ``b`` are delta-separable.

    ``a``, ``b``: tensors ``(..., m)`` of the same shape (batched over all leading dimensions); result ``(...)``,
    in the inputs' dtype. Zero vectors are rejected (the projector onto a zero vector is undefined).
    """
    checks.tensor("a", a, finite=True)
    checks.tensor("b", b, finite=True)
    checks.same_placement("a", a, b=b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (..., m), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError(f"a and b must be vectors along the last dimension, got shape {tuple(a.shape)}")
    for name, t in (("a", a), ("b", b)):
        if bool((t.norm(dim=-1) == 0).any()):
            raise ValueError(f"{name} contains a zero vector: Definition B.8 needs nonzero vectors")
    return _separation(a, b)


def reused_part_norm(W: torch.Tensor, dec: FreshDecomposition) -> torch.Tensor:
    """``||W U_l||_2`` for ``l = 1..L``, shape ``(E, L)`` (column ``l-1`` is step ``l``): the spectral norm of the
    reused part of ``W`` (Section 4 of the paper: the tall ``m x n l`` matrix that multiplies the old directions
    ``U_l^T h``). For a Gaussian ``W`` with N(0, 2/m) entries *independent of* ``U_l`` this is about
    ``sqrt(2) (1 + sqrt(n l / m))``; here ``U_l`` is built from the network's own states (it depends on ``W``
    for ``l >= 2``), which is exactly why it is worth measuring.

    ``W``: the tied recurrent matrix ``(E, m, m)`` of the network that produced ``dec``. Computed in float64 as
    one product ``Q W^T`` and the singular values of its leading row blocks.
    """
    checks.tensor("W", W, ndim=3)
    if not isinstance(dec, FreshDecomposition):
        raise TypeError(f"dec must be a FreshDecomposition (from fresh_decomposition), got {type(dec).__name__}")
    if W.shape != (dec.E, dec.m, dec.m):
        raise ValueError(f"W must have shape (E={dec.E}, m={dec.m}, m={dec.m}) to match dec, got {tuple(W.shape)}")
    if W.device != dec.Q.device:
        raise ValueError(f"W is on {W.device} but dec is on {dec.Q.device}: put them on one device")
    WQ = torch.matmul(dec.Q, W.to(WORK_DTYPE).transpose(1, 2))  # rows: (W q)^T, (E, nL, m)
    out = torch.empty(dec.E, dec.L, dtype=WORK_DTYPE, device=W.device)
    for l in range(1, dec.L + 1):
        out[:, l - 1] = torch.linalg.svdvals(WQ[:, : dec.n * l]).amax(dim=-1)
    return out
