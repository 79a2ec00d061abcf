"""Semi-smoothness of the objective: Appendix G of arXiv 1810.12065 v4 (Theorem 4).

Definition G.1 fixes three points: ``W~`` (the random initialisation), ``W_breve`` (the current iterate) and
``W = W_breve + W'`` (the next one), with their pre-activations ``g``, hidden states ``h`` and masks ``D``; the
loss vectors ``loss_breve`` are those at ``W_breve``. Here ``params`` holds ``W_breve`` (and the fixed A, B).

* :func:`prop_g3` -- Proposition G.3: ``phi(a) - phi(b) = (D + D'')(a - b)`` with ``D = diag(1[a >= 0])``,
  ``|D''_kk| <= 1`` and ``D''_kk = 0`` unless the signs of ``a_k`` and ``b_k`` differ;
* :func:`g2_expansion` -- Claim G.2: with ``D''_{i,l}`` from G.3 (``a = g_breve``, ``b = g``),
  ``h_{i,l} - h_breve_{i,l} = sum_{a=1}^{l-1} (D_breve_l + D''_l) W_breve ... W_breve (D_breve_{a+1} + D''_{a+1}) W' h_{i,a}``,
  computed term by term as the paper writes it (an exact identity);
* :func:`identity_72` -- the identity (7.2) (the PDF's left side prints W for W_breve): the remainder
  ``f(W_breve + W') - f(W_breve) - <grad f(W_breve), W'>`` equals
  ``sum_i sum_{l>=2} [ loss_breve^T B ((h - h_breve) - sum_{a<l} D_breve_l W_breve ... D_breve_{a+1} W' h_breve_a) + 1/2 ||B (h - h_breve)||^2 ]``;
* :func:`remainder` -- that remainder along a direction, for many step lengths at once, split into the three
  parts of the proof: the **sign-flip part** (the terms of G.2 that contain a ``D''``: (G.5), Theorem 4's
  ``m^{1/3} ||W'||`` term), the **cross part** (``D_breve`` products applied to ``W' (h_a - h_breve_a)``: (G.6),
  second order) and the **square part** ``1/2 ||B (h - h_breve)||^2`` ((G.4), second order). The quadratic
  part of the book is cross + square, Theorem 4's ``m ||W'||^2`` term.

How :func:`remainder` computes (the book's rewriting of the proof, not a formula of the paper). With
``dg_l = g_l - g_breve_l = W_breve dh_{l-1} + W' h_{l-1}`` and ``dh_l = h_l - h_breve_l``, Proposition G.3 gives
``dh_l = D_breve_l dg_l + D''_l dg_l``, and for ReLU ``D''_l dg_l = D'_l g_l`` exactly, where
``D'_l = D_l - D_breve_l`` are the sign flips (the ``D' g`` of Lemma C.2(c)). The remainder vectors
``r_l = dh_l - J_l`` (``J`` the derivative of h along W') then obey

    r_l = D_breve_l (W_breve r_{l-1} + W' dh_{l-1}) + D'_l g_l,

whose two sources split r into the sign-flip part (driven by ``D' g``) and the cross part (driven by
``W' dh``). Everything is a recursion on differences, with no subtraction of nearly equal forward passes, so
the remainder is accurate to float64 rounding even at step lengths where ``f(W_breve + W') - f(W_breve)``
would lose every digit. For tanh the sign-flip source becomes the activation's own curvature
``tanh(g) - tanh(g_breve) - tanh'(g_breve) dg``; for the identity it is zero. ``frozen=True`` keeps the masks
(slopes) of ``W_breve``: the remainder of the *frozen-pattern* network ``h_l = D_breve_l (W h_{l-1} + A x_l)``,
which has the same value and gradient at ``W_breve`` and no sign-flip part (:func:`frozen_objective` is that
network's objective, for the tests).

Everything is batched over the ensemble dimension E; the step lengths of :func:`remainder` are batched too
(stacked with the samples, so the products of one time step are one GEMM).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import checks, linalg
from .model import Params, _tokens, backward, forward, loss_vectors, objective_from_loss, phi_slope

__all__ = ["prop_g3", "g2_expansion", "identity_72", "Remainder", "remainder", "frozen_objective", "unit_direction"]


def _check_params(params: Params, *, relu_only: bool = False) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    if not params.tied:
        raise ValueError("Appendix G concerns the weight-tied network: params.W must be (E, m, m)")
    if relu_only and params.activation != "relu":
        raise ValueError(f"this identity involves ReLU masks D''; the network uses {params.activation!r}")


def _check_Wp(params: Params, Wp: torch.Tensor, name: str = "Wp") -> torch.Tensor:
    checks.tensor(name, Wp, shape=(params.ensemble, params.m, params.m), finite=True)
    checks.same_placement("params", params.A, **{name: Wp})
    return Wp


def unit_direction(V: torch.Tensor) -> torch.Tensor:
    """``V / ||V||_2`` for every matrix of an (E, m, m) batch (Lanczos spectral norm): a direction of unit
    spectral norm, so that ``t V`` has ``||W'||_2 = t``."""
    checks.tensor("V", V, ndim=3)
    s = linalg.matrix_norm(V).to(V.dtype)
    if bool((s == 0).any()):
        raise ValueError("V has an all-zero matrix: it has no direction")
    return V / s.view(-1, 1, 1)


# ----------------------------------------------------------------------------------------------------------
# Proposition G.3 and Claim G.2

def prop_g3(a: torch.Tensor, b: torch.Tensor):
    """Proposition G.3 (arXiv v4) for ReLU: ``(D, D'')`` with ``D = 1[a >= 0]`` (as a float tensor, the
    diagonal) and ``D''`` such that ``phi(a) - phi(b) = (D + D'')(a - b)`` coordinatewise, ``|D''| <= 1``, and
    ``D''_k = 0`` wherever ``1[a_k >= 0] = 1[b_k >= 0]``. Where the signs differ,
    ``D''_k = (phi(a_k) - phi(b_k)) / (a_k - b_k) - D_k``, which lies in [-1, 0) (a >= 0 > b) or (0, 1]
    (a < 0 <= b)."""
    checks.tensor("a", a)
    checks.tensor("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    D = (a >= 0).to(a.dtype)
    differ = (a >= 0) != (b >= 0)
    diff = torch.where(differ, a - b, torch.ones_like(a))  # a != b wherever the signs differ
    Dpp = torch.where(differ, (torch.relu(a) - torch.relu(b)) / diff - D, torch.zeros_like(a))
    return D, Dpp


def g2_expansion(params: Params, x: torch.Tensor, Wp: torch.Tensor):
    """Claim G.2 (arXiv v4, c.f. (7.1)) term by term: returns ``(expansion, actual, Dpp)``, each (E, n, L+1, m).

    ``expansion[:, i, l] = sum_{a=1}^{l-1} (D_breve_l + D''_l) W_breve (D_breve_{l-1} + D''_{l-1}) W_breve ...
    W_breve (D_breve_{a+1} + D''_{a+1}) W' h_{i,a}`` (h of the network at ``W_breve + W'``), with ``D''`` of
    :func:`prop_g3` for ``a = g_breve``, ``b = g``; ``actual = h - h_breve`` from two forward passes. The claim
    is that they are equal (``expansion`` is formed as the paper's double sum, O(L^2) products)."""
    _check_params(params, relu_only=True)
    _check_Wp(params, Wp)
    fb = forward(params, x)
    fw = forward(params.with_W(params.W + Wp), x)
    Db, Dpp = prop_g3(fb.g_by_step, fw.g_by_step)  # (E, L+1, n, m), step-major
    M = Db + Dpp
    L = fb.L
    Wt = params.W.transpose(1, 2)
    exp = torch.zeros_like(fb.h_by_step)
    for a in range(1, L):
        v = M[:, a + 1] * (fw.h_by_step[:, a] @ Wp.transpose(1, 2))  # (D_{a+1} + D''_{a+1}) W' h_a
        exp[:, a + 1] += v
        for l in range(a + 2, L + 1):
            v = M[:, l] * (v @ Wt)                                  # (D_l + D''_l) W_breve (...)
            exp[:, l] += v
    actual = fw.h_by_step - fb.h_by_step
    return exp.transpose(1, 2), actual.transpose(1, 2), Dpp.transpose(1, 2)


def identity_72(params: Params, x: torch.Tensor, y: torch.Tensor, Wp: torch.Tensor):
    """Both sides of the identity (7.2) (arXiv v4; the PDF's left side prints W for W_breve), each (E,):

    ``lhs = f(W_breve + W') - f(W_breve) - <grad f(W_breve), W'>`` from two objectives and the BPTT gradient;
    ``rhs = sum_i sum_{l>=2} [loss_breve_{i,l}^T B ((h_{i,l} - h_breve_{i,l}) - sum_{a<l} D_breve_l W_breve ...
    D_breve_{a+1} W' h_breve_{i,a}) + 1/2 ||B (h_{i,l} - h_breve_{i,l})||^2]`` with the inner sum formed term
    by term. (Both subtract nearly equal numbers: use a W' large enough for the difference to carry digits.)"""
    _check_params(params, relu_only=True)
    _check_Wp(params, Wp)
    fb = forward(params, x)
    eb = loss_vectors(params, fb, y)
    fw = forward(params.with_W(params.W + Wp), x)
    grad = backward(params, fb, eb).grad
    lhs = objective_from_loss(loss_vectors(params.with_W(params.W + Wp), fw, y)) - objective_from_loss(eb) \
        - (grad * Wp).flatten(1).sum(dim=1)
    Db = fb.D.transpose(1, 2).to(params.dtype)  # (E, L+1, n, m) step-major
    L = fb.L
    Wt = params.W.transpose(1, 2)
    lin = torch.zeros_like(fb.h_by_step)
    for a in range(1, L):
        v = Db[:, a + 1] * (fb.h_by_step[:, a] @ Wp.transpose(1, 2))  # D_breve_{a+1} W' h_breve_a
        lin[:, a + 1] += v
        for l in range(a + 2, L + 1):
            v = Db[:, l] * (v @ Wt)
            lin[:, l] += v
    dh = (fw.h_by_step - fb.h_by_step)[:, 1:]          # (E, L, n, m): steps 1..L
    Bt = params.B.transpose(1, 2).unsqueeze(1)          # (E, 1, m, d)
    Bdh = dh @ Bt                                       # (E, L, n, d)
    e_s = eb.transpose(1, 2)                            # (E, L, n, d); step 1 is zero
    first = (e_s * ((dh - lin[:, 1:]) @ Bt)).sum(dim=(1, 2, 3))
    second = 0.5 * Bdh[:, 1:].square().sum(dim=(1, 2, 3))
    return lhs, first + second


# ----------------------------------------------------------------------------------------------------------
# the remainder along a direction, split into the proof's parts

@dataclass
class Remainder:
    """The remainder of Theorem 4 along a direction V at ``W_breve``, for step lengths ``t``: ``W' = t V``.

    Every (E, T) array is per network and step length: ``R = f(W_breve + W') - f(W_breve) - <grad f(W_breve), W'>``
    and its parts ``kink`` (the sign-flip terms of Claim G.2, (G.5); for tanh the activation's curvature; zero
    for the identity or with ``frozen=True``), ``cross`` ((G.6)) and ``square`` (``1/2 sum ||B (h - h_breve)||^2``,
    (G.4)), with ``R = kink + cross + square``; ``flips``: ``max_{i,l}`` number of sign changes between
    ``W_breve`` and ``W_breve + W'`` (for ``frozen=True`` and the identity: of the pre-activations, which then
    do not act); ``linear``: ``<grad f(W_breve), W'>``; ``Wp_norm``: ``||W'||_2``
    (``t ||V||_2``). Per network (E,): ``f_breve = f(W_breve)`` and ``loss_norm = max_{i,l} ||loss_breve_{i,l}||``.
    ``t`` (E, T) are the step lengths of each network."""

    t: np.ndarray
    R: np.ndarray
    kink: np.ndarray
    cross: np.ndarray
    square: np.ndarray
    flips: np.ndarray
    linear: np.ndarray
    Wp_norm: np.ndarray
    f_breve: np.ndarray
    loss_norm: np.ndarray

    @property
    def quad(self) -> np.ndarray:
        """The quadratic part ``cross + square`` (Theorem 4's ``m ||W'||_2^2`` term)."""
        return self.cross + self.square

    @property
    def kink_share(self) -> np.ndarray:
        """``|kink| / (|kink| + |quad|)``: the share of the remainder carried by the sign-flip terms."""
        k, q = np.abs(self.kink), np.abs(self.quad)
        tot = k + q
        return np.divide(k, tot, out=np.zeros_like(k), where=tot > 0)


def remainder(params: Params, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor, t, *,
              frozen: bool = False) -> Remainder:
    """Theorem 4's remainder ``R(W') = f(W_breve + W') - f(W_breve) - <grad f(W_breve), W'>`` at
    ``W_breve = params.W`` for ``W' = t V``, every step length of ``t`` at once, split into the sign-flip,
    cross and square parts of the proof (see the module docstring for the recursion). ``V`` (E, m, m);
    ``t``: positive step lengths, (T,) for every network or (E, T) (with a unit-spectral-norm V, see
    :func:`unit_direction`, ``t`` is ``||W'||_2``). ``frozen=True``: the frozen-pattern network (masks of ``W_breve``), which has no sign-flip
    part. Works for ReLU, tanh and identity networks. Use float64 for the small step lengths."""
    _check_params(params)
    _check_Wp(params, V, "V")
    ts = torch.as_tensor(np.asarray(t, dtype=np.float64))
    E, m = params.ensemble, params.m
    if ts.ndim == 0:
        ts = ts.reshape(1)
    if ts.ndim == 1:
        ts = ts.unsqueeze(0).expand(E, -1)
    if ts.ndim != 2 or ts.shape[0] != E:
        raise ValueError(f"t must have shape (T,) or (E, T) = ({E}, T), got {tuple(ts.shape)}")
    if ts.numel() == 0 or not bool(torch.isfinite(ts).all()) or bool((ts <= 0).any()):
        raise ValueError(f"t must hold positive finite step lengths, got {np.asarray(t).tolist()}")
    act = params.activation
    dev, dt = params.device, params.dtype
    T = ts.shape[1]
    with torch.no_grad():
        fb = forward(params, x)
        eb = loss_vectors(params, fb, y)                       # (E, n, L, d); step 1 zero
        grad = backward(params, fb, eb).grad
        L, n = fb.L, fb.n
        gb, hb = fb.g_by_step, fb.h_by_step                    # (E, L+1, n, m)
        slope = phi_slope(act, gb)                             # D_breve (or phi'(g_breve))
        u0 = eb.transpose(1, 2) @ params.B.unsqueeze(1)        # (E, L, n, m): B^T loss_breve_l, position l-1
        tt = ts.to(device=dev, dtype=dt).reshape(E, T, 1, 1)
        Wt, Vt = params.W.transpose(1, 2), V.transpose(1, 2)
        Vh = hb @ Vt.unsqueeze(1)                              # (E, L+1, n, m): V h_breve_l

        def rows(z):                                           # (E, T, n, m) -> (E, T n, m)
            return z.reshape(E, T * n, m)

        def back(z):
            return z.reshape(E, T, n, m)

        zeros = torch.zeros(E, T, n, m, device=dev, dtype=dt)
        dh, r_k, r_c = zeros, zeros, zeros                     # at step 1 all three vanish (h_0 = 0)
        kink = torch.zeros(E, T, device=dev, dtype=torch.float64)
        cross = torch.zeros_like(kink)
        square = torch.zeros_like(kink)
        flips = torch.zeros(E, T, device=dev, dtype=torch.long)
        Bt = params.B.transpose(1, 2).unsqueeze(1)             # (E, 1, m, d)
        for l in range(2, L + 1):
            stacked = torch.cat([dh, r_k, r_c], dim=1).reshape(E, 3 * T * n, m) @ Wt
            W_dh, W_rk, W_rc = (back(s) for s in stacked.reshape(E, 3, T * n, m).unbind(1))
            V_dh = back(rows(dh) @ Vt)
            dg = W_dh + tt * (Vh[:, l - 1].unsqueeze(1) + V_dh)   # g_l - g_breve_l
            s_l = slope[:, l].unsqueeze(1)
            gb_l = gb[:, l].unsqueeze(1)
            if frozen or act == "identity":               # no activation term; flips counted, not acted on
                src = torch.zeros_like(dg)
                flipped = (gb_l + dg >= 0) != (gb_l >= 0)
            elif act == "relu":
                g_new = gb_l + dg
                flipped = (g_new >= 0) != (gb_l >= 0)
                src = torch.where(flipped, g_new * torch.where(g_new >= 0, 1.0, -1.0).to(dt), torch.zeros_like(dg))
            else:  # tanh: tanh(g_b + dg) - tanh(g_b) - tanh'(g_b) dg, in a form without cancellation of O(dg)
                Tg, Td = torch.tanh(gb_l), torch.tanh(dg)
                src = (1 - Tg ** 2) * ((Td - dg) - dg * Tg * Td) / (1 + Tg * Td)
                flipped = (gb_l + dg >= 0) != (gb_l >= 0)
            dh = s_l * dg + src                                   # Proposition G.3
            r_k = s_l * W_rk + src
            r_c = s_l * (W_rc + tt * V_dh)
            u_l = u0[:, l - 1].unsqueeze(1)                       # (E, 1, n, m)
            kink += (u_l * r_k).sum(dim=(2, 3)).to(torch.float64)
            cross += (u_l * r_c).sum(dim=(2, 3)).to(torch.float64)
            square += 0.5 * (dh @ Bt).square().sum(dim=(2, 3)).to(torch.float64)
            flips = torch.maximum(flips, flipped.sum(dim=-1).amax(dim=-1))
        lin = (grad * V).flatten(1).sum(dim=1).to(torch.float64).view(E, 1) * ts.to(dev)
        Vn = linalg.matrix_norm(V).to(torch.float64).view(E, 1).cpu() * ts
        loss_norm = eb.norm(dim=-1).flatten(1).amax(dim=1)

    def np_(z):
        return z.detach().to("cpu", torch.float64).numpy()

    R = kink + cross + square
    return Remainder(t=ts.numpy().copy(), R=np_(R), kink=np_(kink), cross=np_(cross), square=np_(square),
                     flips=np_(flips), linear=np_(lin), Wp_norm=Vn.numpy(),
                     f_breve=np_(objective_from_loss(eb)), loss_norm=np_(loss_norm))


def frozen_objective(params: Params, x: torch.Tensor, y: torch.Tensor):
    """``W -> f_frozen(W)``: the objective of the network whose ReLU masks are frozen at those of ``params.W``,
    ``h_l = D_breve_l (W h_{l-1} + A x_l)`` (slopes ``phi'(g_breve_l)`` for other activations). At
    ``W = params.W`` it has the same value and gradient as f; it is differentiable by autograd (the tests'
    independent check of :func:`remainder` with ``frozen=True``). ``W`` (E, m, m); returns (E,)."""
    _check_params(params)
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    y4 = _tokens("y", y, params, params.d, "output dimension d")
    with torch.no_grad():
        fb = forward(params, x)
        slope = phi_slope(params.activation, fb.g_by_step)  # (E, L+1, n, m)
        # for ReLU the frozen network is exactly D_breve g; for smooth activations it is the activation
        # linearised at g_breve: phi(g_breve) + phi'(g_breve) (g - g_breve)
        hb, gb = fb.h_by_step, fb.g_by_step
    Ax = torch.matmul(x4, params.A.unsqueeze(1).transpose(-1, -2))  # (E or 1, n, L, m)
    E, n, L = params.ensemble, fb.n, fb.L

    def f(W: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(E, n, params.m, device=params.device, dtype=params.dtype)
        total = 0.0
        for l in range(1, L + 1):
            g = Ax[:, :, l - 1] + torch.matmul(h, W.transpose(-1, -2))
            h = hb[:, l] + slope[:, l] * (g - gb[:, l])
            if l >= 2:
                out = torch.matmul(h, params.B.transpose(1, 2))
                total = total + 0.5 * (out - y4[:, :, l - 1]).square().sum(dim=(1, 2))
        return total

    return f
