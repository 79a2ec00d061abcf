"""The paper's network, exactly: an Elman RNN with ReLU, no biases, only W trained.

Notation follows arXiv 1810.12065 v4, Section 2 (Definitions 2.2, 2.3 and Fact 2.5)::

    h_0 = 0,   g_l = W h_{l-1} + A x_l,   h_l = phi(g_l),   y_l = B h_l,   D_l = diag(1[g_l >= 0])
    f(W) = sum_i 1/2 sum_{l=2..L} || B h_{i,l} - y*_{i,l} ||^2
    grad f(W) = sum_i sum_{l=1..L-1} D_{i,l+1} u_{i,l} h_{i,l}^T,   u_{i,l} = sum_{a>l} Back_{i,l+1->a}^T loss_{i,a}

Shapes. Every parameter carries a leading *ensemble* dimension ``E``: ``E`` independent networks (seeds)
run as one batched computation. ``W`` is ``(E, m, m)`` (weight-tied, the paper's model) or
``(E, L, m, m)`` for the untied comparison model (a fresh ``W_l`` at each step; ``W[:, l-1]`` acts at
step ``l``). ``A`` is ``(E, m, d_x)`` and ``B`` is ``(E, d, m)``.

Indexing. Hidden states use the paper's step index: ``fw.h[e, i, l]`` is ``h_{i,l}`` for ``l = 0..L``
(``h_0 = 0``), and the same for ``g``, ``D``, and the backward vectors ``u``. Per-token data -- inputs
``x``, labels ``y`` and loss vectors -- have ``L`` positions: position ``l-1`` holds step ``l``
(``x[i, 0]`` is ``x_{i,1}``).

Two implementations of each pass sit behind :func:`forward` and :func:`backward`: the recurrence as written
above (:func:`reference_forward`, differentiable by autograd and ``torch.func``; used whenever a gradient is
being recorded) and fast loops that write into preallocated buffers with kernels chosen by measurement
(private, :mod:`rnnbook._loops`). The tests check them against each other and against ``torch.nn.RNN``.
The objective as a function of W, for ``torch.func``, is :mod:`rnnbook.functional`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from . import _loops, checks, rng
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
    gen = rng.generator(generator, seed)
    std = math.sqrt(INIT_VARIANCE_TIMES_M[activation] / m)
    if untied_steps is None:
        W = rng.randn((E, m, m), gen=gen, std=std, device=device, dtype=dtype)
    else:
        steps = checks.positive_int("untied_steps", untied_steps)
        W = rng.randn((E, steps, m, m), gen=gen, std=std, device=device, dtype=dtype)
    A = rng.randn((E, m, d_x), gen=gen, std=std, device=device, dtype=dtype)
    B = rng.randn((E, d, m), gen=gen, std=math.sqrt(1.0 / d), device=device, dtype=dtype)
    return Params(W=W, A=A, B=B, activation=activation)


def phi(name: str, g: torch.Tensor) -> torch.Tensor:
    """The activation: ReLU (the paper's), tanh or the identity (comparison models)."""
    if name == "relu":
        return torch.relu(g)
    if name == "tanh":
        return torch.tanh(g)
    return g


def phi_slope(name: str, g: torch.Tensor) -> torch.Tensor:
    """phi'(g), with the paper's convention 1[g >= 0] for ReLU (the diagonal of D, Definition 2.2)."""
    if name == "relu":
        return (g >= 0).to(g.dtype)
    if name == "tanh":
        return 1.0 - torch.tanh(g) ** 2
    return torch.ones_like(g)


def _tokens(name: str, t: torch.Tensor, params: Params, last: int, what: str) -> torch.Tensor:
    """Validate per-token data of shape (n, L, last) or (E, n, L, last); return (E or 1, n, L, last)."""
    checks.tensor(name, t, ndim=(3, 4), finite=not _is_traced(t))
    checks.same_placement("params", params.A, **{name: t})
    if t.shape[-1] != last:
        raise ValueError(f"{name} has last dimension {t.shape[-1]} but the network's {what} is {last}")
    if t.ndim == 4 and t.shape[0] not in (1, params.ensemble):
        raise ValueError(f"{name} has ensemble dimension {t.shape[0]} but the network ensemble is {params.ensemble}")
    return t if t.ndim == 4 else t.unsqueeze(0)


def _is_traced(t: torch.Tensor) -> bool:
    """True inside a ``torch.func`` transform (grad, jacrev, vmap, ...): there the fast in-place loops and
    data-dependent checks cannot run, and the reference recurrence is used."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


@dataclass
class Forward:
    """Everything the forward pass computed. ``h``, ``g``, ``D`` are ``(E, n, L+1, m)`` views indexed like the
    paper (position ``l`` is step ``l``; position 0 is ``h_0 = g_0 = 0``); they are stored step-major
    (``h_by_step[e, l]`` holds ``h_{i,l}`` of every sample i), the layout the recurrence writes."""

    h_by_step: torch.Tensor  # (E, L+1, n, m)
    g_by_step: torch.Tensor  # (E, L+1, n, m)
    activation: str

    @property
    def h(self) -> torch.Tensor:
        return self.h_by_step.transpose(1, 2)

    @property
    def g(self) -> torch.Tensor:
        return self.g_by_step.transpose(1, 2)

    @property
    def D(self) -> torch.Tensor:
        """ReLU masks ``D_{i,l} = 1[g_{i,l} >= 0]`` as booleans (ReLU networks only); position 0 is unused."""
        if self.activation != "relu":
            raise ValueError(f"D masks are defined for ReLU networks; this network uses {self.activation!r} (use slope)")
        return self.g >= 0

    @property
    def slope(self) -> torch.Tensor:
        """phi'(g_{i,l}) for any activation (equals D for ReLU)."""
        return phi_slope(self.activation, self.g)

    @property
    def L(self) -> int:
        return self.h_by_step.shape[1] - 1

    @property
    def n(self) -> int:
        return self.h_by_step.shape[2]


def check_forward(fw, params: Params, name: str = "fw") -> Forward:
    """``fw`` if it is the :class:`Forward` of a network shaped like ``params`` (same ensemble size and width),
    else a TypeError or ValueError naming ``name``: the one check every module that takes a forward pass makes."""
    if not isinstance(fw, Forward):
        raise TypeError(f"{name} must be an rnnbook.Forward (the output of rnnbook.forward), got {type(fw).__name__}")
    if fw.h_by_step.shape[0] != params.ensemble or fw.h_by_step.shape[-1] != params.m:
        raise ValueError(f"{name} belongs to another network: ensemble/width {fw.h_by_step.shape[0]}/"
                         f"{fw.h_by_step.shape[-1]}, params has {params.ensemble}/{params.m}")
    return fw


def reference_forward(W: torch.Tensor, A: torch.Tensor, x4: torch.Tensor, activation: str):
    """The recurrence of Section 2 as written, with no in-place writes (autograd and ``torch.func`` can
    differentiate it). ``W`` (E, m, m) or (E, L', m, m), ``A`` (E, m, d_x), ``x4`` (E or 1, n, L, d_x).
    Returns ``(h_by_step, g_by_step)``, each (E, L+1, n, m)."""
    E, m = A.shape[0], A.shape[1]
    n, L = x4.shape[1], x4.shape[2]
    Ax = torch.matmul(x4, A.unsqueeze(1).transpose(-1, -2))  # (E, n, L, m): A x_{i,l}
    h = torch.zeros(E, n, m, device=A.device, dtype=A.dtype)
    hs, gs = [h], [torch.zeros_like(h)]
    for l in range(1, L + 1):
        Wl = W if W.ndim == 3 else W[:, l - 1]
        g = Ax[:, :, l - 1] + torch.matmul(h, Wl.transpose(-1, -2))
        h = phi(activation, g)
        gs.append(g)
        hs.append(h)
    return torch.stack(hs, dim=1), torch.stack(gs, dim=1)


def forward(params: Params, x: torch.Tensor) -> Forward:
    """Run the recurrence of Section 2 on inputs ``x`` of shape ``(n, L, d_x)`` (shared by the ensemble)
    or ``(E, n, L, d_x)`` (one data set per network). Returns all ``h_{i,l}`` and ``g_{i,l}``."""
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    L = x4.shape[2]
    if not params.tied and params.W.shape[1] < L:
        raise ValueError(f"untied W has {params.W.shape[1]} steps but x has L={L} tokens")
    traced = _is_traced(params.W) or _is_traced(x)
    if traced or (torch.is_grad_enabled() and (params.W.requires_grad or params.A.requires_grad or x.requires_grad)):
        h_s, g_s = reference_forward(params.W, params.A, x4, params.activation)
    else:
        h_s, g_s = _loops.forward(params.W, params.A, x4, params.activation)
    return Forward(h_by_step=h_s, g_by_step=g_s, activation=params.activation)


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
    step_one = torch.zeros_like(e[:, :, :1])
    return torch.cat([step_one, e[:, :, 1:]], dim=2)


def objective_from_loss(loss: torch.Tensor) -> torch.Tensor:
    """f = sum_i 1/2 sum_{l>=2} ||loss_{i,l}||^2 from loss vectors (E, n, L, d) -- a sum over samples,
    not a mean (Section 2). The one place f is computed from loss vectors. Shape (E,)."""
    return 0.5 * loss.square().sum(dim=(1, 2, 3))


def objective(params: Params, fw: Forward, y: torch.Tensor) -> torch.Tensor:
    """The paper's f(W) for the forward pass ``fw`` and labels ``y``. Shape (E,)."""
    return objective_from_loss(loss_vectors(params, fw, y))


@dataclass
class Backward:
    """Backpropagation through time, exposing the vectors of Fact 2.5.

    ``u[e, i, l]`` is ``u_{i,l} = sum_{a=l+1..L} Back_{i,l+1->a}^T loss_{i,a}`` for l = 0..L-1 (zero at L);
    ``Du[e, i, l]`` is ``D_{i,l+1} u_{i,l}`` (``phi'`` in place of D for other activations);
    ``grad`` is ``sum_i sum_l D_{i,l+1} u_{i,l} h_{i,l}^T``, shape like ``W``. Stored step-major like
    :class:`Forward` (``u_by_step[e, l]``).
    """

    u_by_step: torch.Tensor  # (E, L+1, n, m)
    Du_by_step: torch.Tensor  # (E, L+1, n, m)
    grad: torch.Tensor

    @property
    def u(self) -> torch.Tensor:
        return self.u_by_step.transpose(1, 2)

    @property
    def Du(self) -> torch.Tensor:
        return self.Du_by_step.transpose(1, 2)


def backward(params: Params, fw: Forward, loss: torch.Tensor) -> Backward:
    """Gradient of f with respect to W by explicit BPTT (Fact 2.5), for the given loss vectors.

    With ``loss = loss_vectors(params, fw, y)`` this is the true gradient of :func:`objective`; with any
    other fixed vectors it is the paper's *fake gradient* (Definition E.1). ``loss`` has shape
    ``(n, L, d)`` or ``(E, n, L, d)``; its step-1 entries never matter (they would multiply ``h_0 = 0``).
    """
    if not isinstance(fw, Forward):
        raise TypeError(f"fw must be an rnnbook.Forward (from rnnbook.forward), got {type(fw).__name__}")
    if fw.h_by_step.shape[0] != params.ensemble or fw.h_by_step.shape[-1] != params.m:
        raise ValueError(f"fw belongs to another network: ensemble/width {fw.h_by_step.shape[0]}/"
                         f"{fw.h_by_step.shape[-1]}, params has {params.ensemble}/{params.m}")
    e4 = _tokens("loss", loss, params, params.d, "output dimension d")
    if e4.shape[1:3] != (fw.n, fw.L):
        raise ValueError(f"loss must have n={fw.n} sequences of L={fw.L} vectors, got shape {tuple(loss.shape)}")
    u_s, Du_s, grad = _loops.backward(params.W, params.B, fw.h_by_step, fw.g_by_step, e4, params.activation)
    return Backward(u_by_step=u_s, Du_by_step=Du_s, grad=grad)


@dataclass
class Gradient:
    """What :func:`gradient` computed: ``f`` (E,), ``grad`` (like W), the loss vectors (E, n, L, d), and the
    forward and backward passes (``fw``, ``bw``) for anything else a chapter wants to read off."""

    f: torch.Tensor
    grad: torch.Tensor
    loss: torch.Tensor
    fw: Forward
    bw: Backward


def gradient(params: Params, x: torch.Tensor, y: torch.Tensor) -> Gradient:
    """f(W) and its gradient wrt W (Fact 2.5) for inputs ``x`` and labels ``y``, in one forward and one
    backward pass."""
    fw = forward(params, x)
    e = loss_vectors(params, fw, y)
    bw = backward(params, fw, e)
    return Gradient(f=objective_from_loss(e), grad=bw.grad, loss=e, fw=fw, bw=bw)
