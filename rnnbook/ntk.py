"""The empirical neural tangent kernel with respect to W, in factored form (no m x m matrix per sample).

The paper's gradient (arXiv v4, Fact 2.5) is a sum over samples of rank-L matrices,
``grad_W f = sum_i G_i`` with ``G_i = sum_l D_{i,l+1} u_{i,l} h_{i,l}^T``, where ``u`` comes from the
loss vectors of sample i only. The Gram matrix of the per-sample gradients,
``K_ij = <G_i, G_j>_F``, is then (the book's rewriting, not a formula of the paper)

    K_ij = sum_{l, l'} <D_{i,l+1} u_{i,l}, D_{j,l'+1} u_{j,l'}> * <h_{i,l}, h_{j,l'}>,

a sum of products of two (L n) x (L n) Gram matrices: O((L n)^2 m) work and O(L n m) memory, against
O(n m^2) memory for explicit per-sample gradients. With the true loss vectors ``K`` is the Gram
matrix of per-sample gradients of f; with fixed (fake) loss vectors (Definition E.1) it is the Gram
matrix of the fake gradients. For the untied comparison model (one W_l per step) only ``l = l'`` pairs
survive, since the per-step gradients live in different blocks.

:func:`output_ntk` is the NTK of the network outputs ``y_{i,a} = B h_{i,a}``: the Gram matrix of the
Jacobians ``d (B h_{i,a})_k / dW``, built the same way from one backward pass per (step, coordinate).

Every result carries the ensemble dimension E first and is float64 whatever the network's dtype (the
inner products are formed from the stored vectors in float64).
"""
from __future__ import annotations

import torch

from . import checks
from .model import Backward, Forward, Params, backward, forward, loss_vectors

__all__ = ["gram", "gram_from_vectors", "empirical_ntk", "output_ntk"]

#: Upper bound on the entries of one block of pair Gram matrices formed at once (memory control).
_BLOCK_ENTRIES = 1 << 22


def _check_fw(fw) -> None:
    if not isinstance(fw, Forward):
        raise TypeError(f"fw must be an rnnbook.Forward (from rnnbook.forward), got {type(fw).__name__}")


def gram_from_vectors(Du_s: torch.Tensor, h_s: torch.Tensor, *, tied: bool = True) -> torch.Tensor:
    """``K_ij = <sum_l Du_{i,l} h_{i,l}^T, sum_l' Du_{j,l'} h_{j,l'}^T>_F`` from time-major vectors.

    ``Du_s`` and ``h_s`` have shape ``(E, T, n, m)`` (for rnnbook: ``bw.Du_by_step`` and ``fw.h_by_step``, where
    position l holds ``D_{l+1} u_l`` and ``h_l``). With ``tied=False`` the gradients of different
    positions are in different blocks (untied W_l) and only ``l = l'`` terms are summed.
    Returns float64 ``(E, n, n)``.
    """
    checks.tensor("Du_s", Du_s, ndim=4)
    checks.tensor("h_s", h_s, ndim=4)
    if Du_s.shape != h_s.shape:
        raise ValueError(f"Du_s and h_s must have the same shape (E, T, n, m), got {tuple(Du_s.shape)} "
                         f"and {tuple(h_s.shape)}")
    if Du_s.device != h_s.device:
        raise ValueError(f"Du_s is on {Du_s.device} but h_s is on {h_s.device}: put them on one device")
    E, T, n, m = Du_s.shape
    U = Du_s.to(torch.float64)
    H = h_s.to(torch.float64)
    if not tied:
        # sum_l <Du_{i,l}, Du_{j,l}> <h_{i,l}, h_{j,l}>: batched over (E, l)
        return ((U @ U.transpose(-1, -2)) * (H @ H.transpose(-1, -2))).sum(dim=1)
    Uf = U.reshape(E, T * n, m)
    Hf = H.reshape(E, T * n, m)
    K = torch.zeros(E, n, n, dtype=torch.float64, device=Du_s.device)
    rows = max(1, _BLOCK_ENTRIES // max(1, E * T * n * n))  # positions l per block
    for a in range(0, T, rows):
        b = min(T, a + rows)
        Gu = Uf[:, a * n:b * n] @ Uf.transpose(1, 2)  # (E, (b-a) n, T n): <Du_{i,l}, Du_{j,l'}>
        Gh = Hf[:, a * n:b * n] @ Hf.transpose(1, 2)  # <h_{i,l}, h_{j,l'}>
        K += (Gu * Gh).reshape(E, b - a, n, T, n).sum(dim=(1, 3))
    return K


def _check_params_fw(params, fw) -> None:
    """``params`` are rnnbook.Params and ``fw`` is a forward pass of these networks."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params (from rnnbook.init_params), got {type(params).__name__}")
    _check_fw(fw)
    if fw.h_by_step.shape[0] != params.ensemble or fw.h_by_step.shape[-1] != params.m:
        raise ValueError(f"fw belongs to another network: ensemble/width {fw.h_by_step.shape[0]}/{fw.h_by_step.shape[-1]}, "
                         f"params has {params.ensemble}/{params.m}")


def gram(params: Params, fw: Forward, loss: torch.Tensor | None = None, *, bw: Backward | None = None) -> torch.Tensor:
    """Empirical NTK Gram matrix of the per-sample gradients with respect to W, ``(E, n, n)`` float64.

    ``K[e, i, j] = <grad_W f_i, grad_W f_j>_F`` for network e, where ``grad_W f_i`` is sample i's share of
    the gradient of Fact 2.5 (arXiv v4) for the loss vectors ``loss`` (``(n, L, d)`` or ``(E, n, L, d)``):
    the true ``loss_vectors(params, fw, y)`` gives the per-sample gradients of f, any fixed vectors the
    fake gradients of Definition E.1. Pass ``bw`` (a :func:`rnnbook.backward` result for ``fw``) instead of
    ``loss`` to reuse a backward pass already made. Computed in the factored form of the module docstring.
    """
    _check_params_fw(params, fw)
    if (loss is None) == (bw is None):
        raise ValueError("pass exactly one of loss= (loss vectors) or bw= (a backward pass)")
    if bw is None:
        bw = backward(params, fw, loss)
    elif not isinstance(bw, Backward):
        raise TypeError(f"bw must be an rnnbook.Backward (from rnnbook.backward), got {type(bw).__name__}")
    if bw.Du_by_step.shape != fw.h_by_step.shape:
        raise ValueError(f"bw does not match fw: Du_s has shape {tuple(bw.Du_by_step.shape)}, h_s {tuple(fw.h_by_step.shape)}")
    L = fw.L
    if params.tied:
        # Du at position L and h_0 vanish: only positions 1..L-1 contribute.
        return gram_from_vectors(bw.Du_by_step[:, 1:L], fw.h_by_step[:, 1:L], tied=True)
    return gram_from_vectors(bw.Du_by_step[:, :L], fw.h_by_step[:, :L], tied=False)


def empirical_ntk(params: Params, x: torch.Tensor, y: torch.Tensor | None = None, *,
                  loss: torch.Tensor | None = None) -> torch.Tensor:
    """Convenience: forward pass on ``x`` and :func:`gram` for labels ``y`` (true loss vectors, the paper's
    objective) or for fixed ``loss`` vectors (fake gradients). Returns float64 ``(E, n, n)``."""
    if (y is None) == (loss is None):
        raise ValueError("pass exactly one of y= (labels: true loss vectors) or loss= (fixed loss vectors)")
    with torch.no_grad():
        fw = forward(params, x)
        e = loss_vectors(params, fw, y) if y is not None else loss
        return gram(params, fw, e)


def output_ntk(params: Params, fw: Forward) -> torch.Tensor:
    """NTK of the outputs ``B h_{i,a}`` with respect to W: ``(E, n, L, d, n, L, d)`` float64.

    Entry ``[e, i, a-1, k, j, b-1, k']`` is ``<d(B h_{i,a})_k / dW, d(B h_{j,b})_{k'} / dW>_F``. The Jacobian
    of output (a, k) is a fake gradient whose loss vector is the unit vector e_k at step a (Fact 2.5), so
    this costs L d backward passes and a Gram matrix of (L d L n) vectors: fine for moderate L, d, n.
    Outputs at step 1 do not depend on W (h_0 = 0), so their rows are zero.
    """
    _check_params_fw(params, fw)
    E, L, n, d, m = params.ensemble, fw.L, fw.n, params.d, params.m
    tied = params.tied
    span = slice(1, L) if tied else slice(0, L)
    T = (L - 1) if tied else L
    # One backward pass per output (a, k); its Du vectors for all samples, (E, T, n, m) each.
    Us = []
    with torch.no_grad():
        for a in range(L):
            for k in range(d):
                e = torch.zeros(n, L, d, device=params.device, dtype=params.dtype)
                e[:, a, k] = 1.0
                Us.append(backward(params, fw, e).Du_by_step[:, span].to(torch.float64))
    U = torch.stack(Us, dim=3)  # (E, T, n, L d, m)
    H = fw.h_by_step[:, span].to(torch.float64)  # (E, T, n, m)
    if tied:
        Uf = U.reshape(E, T * n * L * d, m)
        Gu = (Uf @ Uf.transpose(1, 2)).reshape(E, T, n * L * d, T, n * L * d)
        Hf = H.reshape(E, T * n, m)
        Gh = (Hf @ Hf.transpose(1, 2)).reshape(E, T, n, 1, T, n, 1)
        K = (Gu.reshape(E, T, n, L * d, T, n, L * d) * Gh).sum(dim=(1, 4))
    else:
        Uf = U.reshape(E, T, n * L * d, m)
        Gu = (Uf @ Uf.transpose(-1, -2)).reshape(E, T, n, L * d, n, L * d)
        Gh = (H @ H.transpose(-1, -2)).reshape(E, T, n, 1, n, 1)
        K = (Gu * Gh).sum(dim=1)
    return K.reshape(E, n, L, d, n, L, d)
