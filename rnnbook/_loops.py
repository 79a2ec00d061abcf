"""Private: the fast forward and BPTT loops behind :func:`rnnbook.model.forward` and :func:`~rnnbook.model.backward`.

The mathematics is that of :mod:`rnnbook.model` (and :func:`rnnbook.model.reference_forward`, against which
the tests check these loops); what is added here is only speed:

* every step is written in place into preallocated step-major buffers ``(E, L+1, n, m)``;
* step 1 needs no product (``h_0 = 0``), and all ``A x_l`` (and all ``B^T loss_l``) are one GEMM;
* the weight gradient is one large GEMM over all (step, sample) rows instead of L rank-n updates;
* the matrix kernel of each product and the layout of an ensemble (one batched product per step, or one
  network after another so that its W stays in cache) are chosen by measurement on this machine
  (:mod:`rnnbook._gemm`).
"""
from __future__ import annotations

import torch

from . import _gemm


def _act_into(name: str, g: torch.Tensor, out: torch.Tensor) -> None:
    """``out = phi(g)`` written into a preallocated view."""
    if name == "relu":
        torch.clamp_min(g, 0.0, out=out)
    elif name == "tanh":
        torch.tanh(g, out=out)
    else:
        out.copy_(g)


def _slope(name: str, g: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return 1.0 - torch.tanh(g) ** 2
    return torch.ones_like(g)


def _baddbmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """In place ``out += a @ b`` over the ensemble (``out`` may be a strided view of a step-major buffer)."""
    if a.shape[0] == 1:
        out[0].addmm_(a[0], b[0])
    else:
        out.baddbmm_(a, b)


def _per_network(W: torch.Tensor, rows: int) -> bool:
    """Tied networks run one after another when that measured faster (always for a single network)."""
    return W.ndim == 3 and (W.shape[0] == 1 or _gemm.layout(W, rows) == "per_network")


def forward(W: torch.Tensor, A: torch.Tensor, x4: torch.Tensor, activation: str):
    """``(h_by_step, g_by_step)`` for tied ``W`` (E, m, m) or untied ``W`` (E, L', m, m); ``x4`` (E or 1, n, L, d_x)."""
    E, m = A.shape[0], A.shape[1]
    _, n, L, d_x = x4.shape
    xs = x4.transpose(1, 2).reshape(x4.shape[0], L * n, d_x)  # step-major tokens (E or 1, L n, d_x)
    g_s = torch.empty(E, L + 1, n, m, device=A.device, dtype=A.dtype)
    h_s = torch.empty_like(g_s)
    g_s[:, 0].zero_()
    h_s[:, 0].zero_()
    # g_s[:, 1:] first receives A x_l for all steps; then g_l = A x_l + W h_{l-1} accumulates into it.
    g_s[:, 1:].copy_(torch.matmul(xs, A.transpose(1, 2)).reshape(E, L, n, m))
    _act_into(activation, g_s[:, 1], h_s[:, 1])
    if L > 1 and _per_network(W, n):
        for e in range(E):
            mode = _gemm.step_mode(W[e], n)
            P = _gemm.prepare(W[e], n, mode)
            for l in range(2, L + 1):
                _gemm.add_product_(g_s[e, l], h_s[e, l - 1], P, mode)
                _act_into(activation, g_s[e, l], h_s[e, l])
    else:
        for l in range(2, L + 1):
            Wl = W if W.ndim == 3 else W[:, l - 1]
            _baddbmm_(g_s[:, l], h_s[:, l - 1], Wl.transpose(-1, -2))
            _act_into(activation, g_s[:, l], h_s[:, l])
    return h_s, g_s


def backward(W: torch.Tensor, B: torch.Tensor, h_s: torch.Tensor, g_s: torch.Tensor, loss4: torch.Tensor,
             activation: str):
    """``(u_by_step, Du_by_step, grad)`` of Fact 2.5 for loss vectors ``loss4`` (E or 1, n, L, d)."""
    E, Lp1, n, m = h_s.shape
    L, d = Lp1 - 1, B.shape[1]
    es = loss4.transpose(1, 2).reshape(loss4.shape[0], L * n, d)  # step-major loss (E or 1, L n, d)
    u_s = torch.empty(E, L + 1, n, m, device=W.device, dtype=W.dtype)
    Du_s = torch.empty_like(u_s)
    u_s[:, L].zero_()
    Du_s[:, L].zero_()
    # u_s[:, a-1] starts as B^T loss_{i,a} for all a at once; the recursion
    # u_{l-2} = W^T D_l u_{l-1} + B^T loss_{l-1} then accumulates into it (row vectors: z @ W).
    u_s[:, :L].copy_(torch.matmul(es, B).reshape(E, L, n, m))  # broadcasts a shared loss over E
    relu = activation == "relu"
    masks = g_s[:, 1:] >= 0 if relu else None  # all D_l at once, as booleans: (E, L, n, m)

    def slope_times_u(e, l):  # Du_s[e, l-1] = D_l u_{l-1}
        if relu:
            torch.mul(u_s[e, l - 1], masks[e, l - 1], out=Du_s[e, l - 1])
        else:
            torch.mul(u_s[e, l - 1], _slope(activation, g_s[e, l]), out=Du_s[e, l - 1])

    k = (L - 1) * n  # rows of the weight-gradient GEMM: positions l = 1..L-1 (h_0 = 0 and Du_L = 0)
    if L > 1 and _per_network(W, n):
        grad = torch.empty_like(W)
        for e in range(E):
            mode = _gemm.step_T_mode(W[e], n)
            P = _gemm.prepare(W[e].t(), n, mode)  # z @ W = z @ (W^T)^T
            for l in range(L, 1, -1):
                slope_times_u(e, l)
                _gemm.add_product_(u_s[e, l - 2], Du_s[e, l - 1], P, mode)
            slope_times_u(e, 1)
            a, b = Du_s[e, 1:L].reshape(k, m), h_s[e, 1:L].reshape(k, m)
            grad[e].copy_(_gemm.gram(a, b, _gemm.gram_mode(a)))
        return u_s, Du_s, grad
    everyone = slice(None)
    for l in range(L, 0, -1):
        slope_times_u(everyone, l)
        if l > 1:
            Wl = W if W.ndim == 3 else W[:, l - 1]
            _baddbmm_(u_s[:, l - 2], Du_s[:, l - 1], Wl)
    if W.ndim == 3:
        # sum over (l, i) of Du_{i,l} h_{i,l}^T as one GEMM over l = 1..L-1.
        a, b = Du_s[:, 1:L].reshape(E, k, m), h_s[:, 1:L].reshape(E, k, m)
        grad = torch.bmm(a.transpose(1, 2), b)
    else:
        grad = torch.zeros_like(W)
        # W_l acts at step l: its gradient is sum_i D_{i,l} u_{i,l-1} h_{i,l-1}^T.
        grad[:, :L] = torch.einsum("elnj,elnk->eljk", Du_s[:, :L], h_s[:, :L])
    return u_s, Du_s, grad
