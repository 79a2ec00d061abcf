"""The paper's network, exactly: an Elman RNN with ReLU, no biases, only W trained.

Notation follows arXiv 1810.12065 v4, Section 2 (Definition 2.3 and Fact 2.5)::

    h_0 = 0,   g_l = W h_{l-1} + A x_l,   h_l = phi(g_l),   y_l = B h_l,   D_l = diag(1[g_l >= 0])
    f(W) = sum_i 1/2 sum_{l=2..L} || B h_{i,l} - y*_{i,l} ||^2

Shapes. Every parameter carries a leading *ensemble* dimension ``E``: ``E`` independent networks (seeds)
run as one batched computation. ``W`` is ``(E, m, m)`` (weight-tied, the paper's model) or
``(E, L, m, m)`` for the untied comparison model (a fresh ``W_l`` at each step; ``W[:, l-1]`` acts at
step ``l``). ``A`` is ``(E, m, d_x)`` and ``B`` is ``(E, d, m)``.

Indexing. Hidden states use the paper's step index: ``fw.h[e, i, l]`` is ``h_{i,l}`` for
``l = 0..L`` (``h_0 = 0``), and the same for ``g``, ``D``, and the backward vectors ``u``.
Per-token data -- inputs ``x``, labels ``y`` and loss vectors -- have ``L`` positions: position ``l-1``
holds step ``l`` (``x[i, 0]`` is ``x_{i,1}``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

from . import checks
from .config import resolve_device, resolve_dtype

ACTIVATIONS = ("relu", "tanh", "identity")

#: Variance of the entries of W and A, times m, for each activation. ReLU uses the paper's 2/m (He):
#: ReLU zeroes half of a symmetric vector, so variance 2/m keeps ||phi(W h)|| close to ||h||. tanh and the
#: identity have slope 1 at 0, so 1/m (Glorot/LeCun) is their norm-preserving choice.
INIT_VARIANCE_TIMES_M = {"relu": 2.0, "tanh": 1.0, "identity": 1.0}


@dataclass(frozen=True)
class Params:
    """Weights of ``E`` networks: ``W`` (trained), ``A`` and ``B`` (fixed at initialisation)."""

    W: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    activation: str = "relu"

    def __post_init__(self):
        checks.choice("activation", self.activation, ACTIVATIONS)
        checks.tensor("A", self.A, ndim=3)
        E, m, _ = self.A.shape
        checks.tensor("W", self.W, ndim=(3, 4))
        if self.W.shape[0] != E or self.W.shape[-2:] != (m, m):
            raise ValueError(f"W must have shape ({E}, m, m) or ({E}, L, m, m) with m={m} (from A), got {tuple(self.W.shape)}")
        checks.tensor("B", self.B, ndim=3)
        if self.B.shape[0] != E or self.B.shape[2] != m:
            raise ValueError(f"B must have shape ({E}, d, {m}), got {tuple(self.B.shape)}")
        checks.same_placement("A", self.A, W=self.W, B=self.B)

    @property
    def ensemble(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.A.shape[1]

    @property
    def d_x(self) -> int:
        return self.A.shape[2]

    @property
    def d(self) -> int:
        return self.B.shape[1]

    @property
    def tied(self) -> bool:
        return self.W.ndim == 3

    @property
    def device(self) -> torch.device:
        return self.A.device

    @property
    def dtype(self) -> torch.dtype:
        return self.A.dtype

    def with_W(self, W: torch.Tensor) -> "Params":
        """The same A, B and activation with another recurrent matrix (e.g. ``W + W'``)."""
        return replace(self, W=W)

    def member(self, e: int) -> "Params":
        """Network ``e`` of the ensemble, as an ensemble of one (a view, no copy)."""
        if not 0 <= e < self.ensemble:
            raise IndexError(f"ensemble member {e} out of range [0, {self.ensemble})")
        s = slice(e, e + 1)
        return replace(self, W=self.W[s], A=self.A[s], B=self.B[s])

    def to(self, device=None, dtype=None) -> "Params":
        return replace(self, W=self.W.to(device=device, dtype=dtype), A=self.A.to(device=device, dtype=dtype),
                       B=self.B.to(device=device, dtype=dtype))


def init_params(m: int, d_x: int, d: int, *, ensemble: int = 1, activation: str = "relu",
                untied_steps: int | None = None, seed: int | None = None, generator: torch.Generator | None = None,
                device=None, dtype=None) -> Params:
    """Random initialisation of Definition 2.3 (arXiv v4) for ``ensemble`` independent networks.

    ``W`` and ``A`` have i.i.d. entries N(0, 2/m) for ReLU (N(0, 1/m) for tanh and identity, see
    :data:`INIT_VARIANCE_TIMES_M`); ``B`` has i.i.d. entries N(0, 1/d). With ``untied_steps=L`` the model
    gets a fresh, independent ``W_l`` for each of ``L`` steps (a comparison model, not the paper's).
    One of ``seed`` / ``generator`` is required. Draws are made in float64 on the generator's device and
    then cast, so a seed gives the same network on CPU and CUDA and in both precisions.
    """
    m = checks.positive_int("m", m)
    d_x = checks.positive_int("d_x", d_x)
    d = checks.positive_int("d", d)
    E = checks.positive_int("ensemble", ensemble)
    checks.choice("activation", activation, ACTIVATIONS)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    gen = checks.generator(generator, seed)
    std = math.sqrt(INIT_VARIANCE_TIMES_M[activation] / m)
    if untied_steps is None:
        W = checks.randn((E, m, m), gen=gen, std=std, device=device, dtype=dtype)
    else:
        steps = checks.positive_int("untied_steps", untied_steps)
        W = checks.randn((E, steps, m, m), gen=gen, std=std, device=device, dtype=dtype)
    A = checks.randn((E, m, d_x), gen=gen, std=std, device=device, dtype=dtype)
    B = checks.randn((E, d, m), gen=gen, std=math.sqrt(1.0 / d), device=device, dtype=dtype)
    return Params(W=W, A=A, B=B, activation=activation)


def _act(name: str, g: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(g)
    if name == "tanh":
        return torch.tanh(g)
    return g.clone()


def _act_slope(name: str, g: torch.Tensor) -> torch.Tensor:
    """phi'(g), with the paper's convention 1[g >= 0] for ReLU (the diagonal of D)."""
    if name == "relu":
        return (g >= 0).to(g.dtype)
    if name == "tanh":
        return 1.0 - torch.tanh(g) ** 2
    return torch.ones_like(g)


def _baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``bias + a @ b`` over the ensemble; a single network uses addmm, which is faster than a bmm of one."""
    if a.shape[0] == 1:
        return torch.addmm(bias[0], a[0], b[0]).unsqueeze(0)
    return torch.baddbmm(bias, a, b)


_ONEDNN: dict = {}


def _onednn_ok(t: torch.Tensor) -> bool:
    """Whether oneDNN's linear kernels can serve ``t``'s products (CPU float32, torch built with oneDNN).

    On x86 CPUs oneDNN's JIT GEMM is often about twice as fast as the BLAS that ``torch.mm`` calls for the
    skinny ``(n x m) @ (m x m)`` products of BPTT (measured in ``bench/``). The ops are torch-internal, so
    they are probed once (result checked against ``torch.mm``) and everything falls back to ``torch.mm``/
    ``addmm`` where they are missing or wrong. ``RNNBOOK_NO_ONEDNN=1`` disables them.
    """
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return False
    if "ok" not in _ONEDNN:
        ok = False
        try:
            if os.environ.get("RNNBOOK_NO_ONEDNN", "") not in ("", "0"):
                raise RuntimeError("disabled")
            if torch.backends.mkldnn.is_available():
                gen = torch.Generator().manual_seed(0)
                a, w, c = (torch.randn(s, generator=gen) for s in ((5, 7), (6, 7), (5, 6)))
                lp = torch.ops.mkldnn._linear_pointwise
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 5)
                r1 = lp.binary(a, c, packed, None, "add")
                r2 = lp(a, w, None, "none", [], "")
                ok = (torch.allclose(r1, c + a @ w.T, atol=1e-5) and torch.allclose(r2, a @ w.T, atol=1e-5))
        except Exception:  # noqa: BLE001 -- any failure means: use torch.mm
            ok = False
        _ONEDNN["ok"] = ok
    return _ONEDNN["ok"]


#: Widths from which oneDNN beats torch.mm for the (32 x m) @ (m x m) step products, and from which
#: reordering W once (about the cost of 1.5 products) pays back over ~20 steps (bench/, 1 thread).
_ONEDNN_MIN_M, _PACK_MIN_M = 256, 512


def _use_onednn(W: torch.Tensor) -> bool:
    return W.shape[-1] >= _ONEDNN_MIN_M and _onednn_ok(W)


def _packed(M: torch.Tensor, batch: int) -> torch.Tensor:
    """``M`` (m, m) for oneDNN's ``x @ M^T``: reordered once into its blocked layout when that pays back."""
    if M.shape[-1] >= _PACK_MIN_M:
        return torch.ops.mkldnn._reorder_linear_weight(M.contiguous(), batch)
    return M


def _linear_add_into(out: torch.Tensor, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``out += x @ M^T`` for one network with oneDNN (``packed`` from :func:`_packed`); returns the sum."""
    r = torch.ops.mkldnn._linear_pointwise.binary(x, out, packed, None, "add")
    out.copy_(r)
    return r


def _baddbmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """In place ``out += a @ b`` over the ensemble (``out`` may be a strided view of a time-major buffer)."""
    if a.shape[0] == 1:
        out[0].addmm_(a[0], b[0])
    else:
        out.baddbmm_(a, b)


def _gram_T(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T b`` over the ensemble for row blocks a, b of shape (E, k, m): the weight-gradient GEMM."""
    if a.shape[1] > 0 and _use_onednn(a):
        lp = torch.ops.mkldnn._linear_pointwise
        # linear(X, Y) = X @ Y^T with X = a^T and Y = b^T (strided views, no copies)
        if a.shape[0] == 1:
            return lp(a[0].t(), b[0].t(), None, "none", [], "").unsqueeze(0)
        out = torch.empty(a.shape[0], a.shape[2], b.shape[2], device=a.device, dtype=a.dtype)
        for e in range(a.shape[0]):
            out[e].copy_(lp(a[e].t(), b[e].t(), None, "none", [], ""))
        return out
    if a.shape[0] == 1:
        return torch.mm(a[0].t(), b[0]).unsqueeze(0)
    return torch.bmm(a.transpose(1, 2), b)


def _act_into(name: str, g: torch.Tensor, out: torch.Tensor) -> None:
    """``out = phi(g)`` written into a preallocated view."""
    if name == "relu":
        torch.clamp_min(g, 0.0, out=out)
    elif name == "tanh":
        torch.tanh(g, out=out)
    else:
        out.copy_(g)


def _W_at(params: Params, l: int) -> torch.Tensor:
    """The matrix acting at step l (1-based): W itself when tied, W_l when untied."""
    return params.W if params.tied else params.W[:, l - 1]


def _tokens(name: str, t: torch.Tensor, params: Params, last: int, what: str) -> torch.Tensor:
    """Validate per-token data of shape (n, L, last) or (E, n, L, last); return (E or 1, n, L, last)."""
    checks.tensor(name, t, ndim=(3, 4), finite=True)
    checks.same_placement("params", params.A, **{name: t})
    if t.shape[-1] != last:
        raise ValueError(f"{name} has last dimension {t.shape[-1]} but the network's {what} is {last}")
    if t.ndim == 4 and t.shape[0] not in (1, params.ensemble):
        raise ValueError(f"{name} has ensemble dimension {t.shape[0]} but the network ensemble is {params.ensemble}")
    return t if t.ndim == 4 else t.unsqueeze(0)


@dataclass
class Forward:
    """Everything the forward pass computed, stored time-major for speed; read it through the views.

    ``h``, ``g``, ``D`` are ``(E, n, L+1, m)`` views indexed like the paper (position ``l`` is step ``l``;
    position 0 is ``h_0 = g_0 = 0``).
    """

    h_t: torch.Tensor  # (E, L+1, n, m)
    g_t: torch.Tensor  # (E, L+1, n, m)
    activation: str

    @property
    def h(self) -> torch.Tensor:
        return self.h_t.transpose(1, 2)

    @property
    def g(self) -> torch.Tensor:
        return self.g_t.transpose(1, 2)

    @property
    def D(self) -> torch.Tensor:
        """ReLU masks ``D_{i,l} = 1[g_{i,l} >= 0]`` as booleans (ReLU networks only); position 0 is unused."""
        if self.activation != "relu":
            raise ValueError(f"D masks are defined for ReLU networks; this network uses {self.activation!r} (use slope)")
        return self.g >= 0

    @property
    def slope(self) -> torch.Tensor:
        """phi'(g_{i,l}) for any activation (equals D for ReLU)."""
        return _act_slope(self.activation, self.g)

    @property
    def L(self) -> int:
        return self.h_t.shape[1] - 1

    @property
    def n(self) -> int:
        return self.h_t.shape[2]


def forward(params: Params, x: torch.Tensor) -> Forward:
    """Run the recurrence of Section 2 on inputs ``x`` of shape ``(n, L, d_x)`` (shared by the ensemble)
    or ``(E, n, L, d_x)`` (one data set per network). Returns all ``h_{i,l}`` and ``g_{i,l}``."""
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    E, m = params.ensemble, params.m
    _, n, L, d_x = x4.shape
    if not params.tied and params.W.shape[1] < L:
        raise ValueError(f"untied W has {params.W.shape[1]} steps but x has L={L} tokens")
    xt = x4.transpose(1, 2).reshape(x4.shape[0], L * n, d_x)  # time-major tokens (Ex, L n, d_x), Ex = 1 or E
    if torch.is_grad_enabled() and (params.W.requires_grad or params.A.requires_grad or x.requires_grad):
        # Autograd path: steps collected in lists and stacked once (no in-place writes into a graph).
        Ax = torch.matmul(xt, params.A.transpose(1, 2)).reshape(E, L, n, m)  # A x_l for all steps at once
        h_prev = torch.zeros(E, n, m, device=params.device, dtype=params.dtype)
        gs, hs = [torch.zeros_like(h_prev)], [h_prev]
        for l in range(1, L + 1):
            g = _baddbmm(Ax[:, l - 1], hs[-1], _W_at(params, l).transpose(-1, -2))
            gs.append(g)
            hs.append(_act(params.activation, g))
        g_t, h_t = torch.stack(gs, dim=1), torch.stack(hs, dim=1)
        return Forward(h_t=h_t, g_t=g_t, activation=params.activation)
    # Fast path: preallocated time-major buffers, every step written in place (no per-step allocation,
    # no final stack). g_t[:, 1:] first receives A x_l for all steps, then g_l = A x_l + W h_{l-1}
    # accumulates into it; step 1 needs no product since h_0 = 0.
    g_t = torch.empty(E, L + 1, n, m, device=params.device, dtype=params.dtype)
    h_t = torch.empty_like(g_t)
    g_t[:, 0].zero_()
    h_t[:, 0].zero_()
    if params.tied and L > 1 and _use_onednn(params.W):
        # oneDNN, one network at a time, so that its W (and its slice of the buffers) stays in cache for
        # all L steps; a step-outer loop over the ensemble would cycle E matrices through the cache.
        for e in range(E):
            torch.mm(xt[e if xt.shape[0] > 1 else 0], params.A[e].t(), out=g_t[e, 1:].view(L * n, m))
            _act_into(params.activation, g_t[e, 1], h_t[e, 1])
            packed = _packed(params.W[e], n)
            for l in range(2, L + 1):
                r = _linear_add_into(g_t[e, l], h_t[e, l - 1], packed)
                _act_into(params.activation, r, h_t[e, l])
    else:
        g_t[:, 1:].copy_(torch.matmul(xt, params.A.transpose(1, 2)).reshape(E, L, n, m))
        _act_into(params.activation, g_t[:, 1], h_t[:, 1])
        for l in range(2, L + 1):
            g = g_t[:, l]
            _baddbmm_(g, h_t[:, l - 1], _W_at(params, l).transpose(-1, -2))
            _act_into(params.activation, g, h_t[:, l])
    return Forward(h_t=h_t, g_t=g_t, activation=params.activation)


def outputs(params: Params, fw: Forward) -> torch.Tensor:
    """Network outputs ``B h_{i,l}`` for l = 1..L, shape ``(E, n, L, d)`` (position l-1 is step l)."""
    return torch.matmul(fw.h[:, :, 1:], params.B.transpose(1, 2).unsqueeze(1))


def loss_vectors(params: Params, fw: Forward, y: torch.Tensor) -> torch.Tensor:
    """``loss_{i,l} = B h_{i,l} - y*_{i,l}`` for l >= 2, and 0 at l = 1 (footnote 6: step 1 does not depend
    on W and is not in the objective). ``y`` is ``(n, L, d)`` or ``(E, n, L, d)``; result ``(E, n, L, d)``."""
    y4 = _tokens("y", y, params, params.d, "output dimension d")
    if y4.shape[1:3] != (fw.n, fw.L):
        raise ValueError(f"y must have n={fw.n} sequences of L={fw.L} labels, got shape {tuple(y.shape)}")
    e = outputs(params, fw) - y4
    e[:, :, 0] = 0.0
    return e


def objective(params: Params, fw: Forward, y: torch.Tensor) -> torch.Tensor:
    """The paper's f(W) = sum_i 1/2 sum_{l>=2} ||loss_{i,l}||^2 -- a sum over samples, not a mean. Shape (E,)."""
    return 0.5 * loss_vectors(params, fw, y).square().sum(dim=(1, 2, 3))


@dataclass
class Backward:
    """Backpropagation through time, exposing the vectors of Fact 2.5.

    ``u[e, i, l]`` is ``u_{i,l} = sum_{a=l+1..L} Back_{i,l+1->a}^T loss_{i,a}`` for l = 0..L-1 (zero at L);
    ``Du[e, i, l]`` is ``D_{i,l+1} u_{i,l}`` (``phi'`` in place of D for other activations);
    ``grad`` is ``sum_i sum_l D_{i,l+1} u_{i,l} h_{i,l}^T``, shape like ``W``.
    """

    u_t: torch.Tensor  # (E, L+1, n, m)
    Du_t: torch.Tensor  # (E, L+1, n, m)
    grad: torch.Tensor

    @property
    def u(self) -> torch.Tensor:
        return self.u_t.transpose(1, 2)

    @property
    def Du(self) -> torch.Tensor:
        return self.Du_t.transpose(1, 2)


def backward(params: Params, fw: Forward, loss: torch.Tensor) -> Backward:
    """Gradient of f with respect to W by explicit BPTT (Fact 2.5), for the given loss vectors.

    With ``loss = loss_vectors(params, fw, y)`` this is the true gradient of :func:`objective`; with any
    other fixed vectors it is the paper's *fake gradient* (Definition E.1). ``loss`` has shape
    ``(n, L, d)`` or ``(E, n, L, d)``; its step-1 entries never matter (they would multiply ``h_0 = 0``).
    The weight gradient is formed as one large matrix product at the end rather than L rank-n updates.
    """
    e4 = _tokens("loss", loss, params, params.d, "output dimension d")
    E, m, L, n = params.ensemble, params.m, fw.L, fw.n
    if e4.shape[1:3] != (n, L):
        raise ValueError(f"loss must have n={n} sequences of L={L} vectors, got shape {tuple(loss.shape)}")
    # u_t[:, a-1] starts as B^T loss_{i,a} (all a at once, time-major); the recursion
    # u_{l-2} = W^T D_l u_{l-1} + B^T loss_{l-1} then accumulates in place, so nothing is copied.
    et = e4.transpose(1, 2).reshape(e4.shape[0], L * n, params.d)  # time-major loss (E or 1, L n, d)
    u_t = torch.empty(E, L + 1, n, m, device=params.device, dtype=params.dtype)
    Du_t = torch.empty_like(u_t)
    u_t[:, L].zero_()
    Du_t[:, L].zero_()
    relu = params.activation == "relu"

    def slope_times_u(e, l, mask):  # Du_t[e, l-1] = D_l u_{l-1}; mask = D_l as booleans (ReLU) or None
        if relu:
            torch.mul(u_t[e, l - 1], mask, out=Du_t[e, l - 1])
        else:
            torch.mul(u_t[e, l - 1], _act_slope(params.activation, fw.g_t[e, l]), out=Du_t[e, l - 1])

    k = (L - 1) * n  # rows of the weight-gradient GEMM: positions l = 1..L-1 (h_0 = 0 and Du_L = 0)
    if params.tied and L > 1 and _use_onednn(params.W):
        # oneDNN, one network at a time (cache locality, see forward); z @ W = z @ (W^T)^T.
        grad = torch.empty_like(params.W)
        lp = torch.ops.mkldnn._linear_pointwise
        for e in range(E):
            torch.mm(et[e if et.shape[0] > 1 else 0], params.B[e], out=u_t[e, :L].view(L * n, m))
            masks = fw.g_t[e, 1:] >= 0 if relu else [None] * L  # all D_l of network e at once
            packed = _packed(params.W[e].t(), n)
            for l in range(L, 1, -1):
                slope_times_u(e, l, masks[l - 1])
                _linear_add_into(u_t[e, l - 2], Du_t[e, l - 1], packed)  # u_{l-2} += W^T D_l u_{l-1}
            slope_times_u(e, 1, masks[0])
            # sum over (l, i) of Du_{i,l} h_{i,l}^T as one GEMM: linear(X, Y) = X @ Y^T, X = Du^T, Y = h^T
            grad[e].copy_(lp(Du_t[e, 1:L].reshape(k, m).t(), fw.h_t[e, 1:L].reshape(k, m).t(), None, "none", [], ""))
        return Backward(u_t=u_t, Du_t=Du_t, grad=grad)
    u_t[:, :L].copy_(torch.matmul(et, params.B).reshape(E, L, n, m))  # broadcasts a shared loss over E
    masks = fw.g_t[:, 1:] >= 0 if relu else None  # all D_l at once, as booleans: (E, L, n, m)
    E_all = slice(None)
    for l in range(L, 0, -1):
        slope_times_u(E_all, l, masks[:, l - 1] if relu else None)
        if l > 1:  # u_{l-2} += W^T D_l u_{l-1} (row vectors: z @ W)
            _baddbmm_(u_t[:, l - 2], Du_t[:, l - 1], _W_at(params, l))
    if params.tied:
        # sum over (l, i) of Du_{i,l} h_{i,l}^T as one GEMM over l = 1..L-1.
        grad = _gram_T(Du_t[:, 1:L].reshape(E, k, m), fw.h_t[:, 1:L].reshape(E, k, m))
    else:
        grad = torch.zeros_like(params.W)
        # W_l acts at step l: its gradient is sum_i D_{i,l} u_{i,l-1} h_{i,l-1}^T.
        grad[:, :L] = torch.einsum("elnj,elnk->eljk", Du_t[:, :L], fw.h_t[:, :L])
    return Backward(u_t=u_t, Du_t=Du_t, grad=grad)


def gradient(params: Params, x: torch.Tensor, y: torch.Tensor):
    """Convenience: ``(f, grad, fw, bw)`` for inputs ``x`` and labels ``y``; ``f`` has shape ``(E,)``."""
    fw = forward(params, x)
    e = loss_vectors(params, fw, y)
    bw = backward(params, fw, e)
    return 0.5 * e.square().sum(dim=(1, 2, 3)), bw.grad, fw, bw
