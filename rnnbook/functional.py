"""The objective as a function of W, for autograd and ``torch.func`` (functions that return functions).

* :func:`objective_fn` -- ``f(W) = sum_i 1/2 sum_{l>=2} ||B h_{i,l}(W) - y*_{i,l}||^2`` (Section 2);
* :func:`fake_objective_fn` -- for *fixed* loss vectors ``loss_{i,a}``, the function
  ``F(W) = sum_i sum_{a>=2} <loss_{i,a}, B h_{i,a}(W)>`` whose gradient is the paper's fake gradient
  (Definition E.1, eq. (6.1)): ``grad F = sum_i sum_l D_{i,l+1} u_{i,l} h_{i,l}^T`` with the u of the fixed
  loss vectors. With the true loss vectors at W it equals grad f at W;
* :func:`linearize` -- the first-order Taylor model of the network outputs in W at a point W_0 (the
  "linearised network" of the neural tangent kernel picture; the book's addition, not the paper's), and the
  objective of that model.

Each returned function takes ``W`` shaped like ``params.W`` -- ``(E, m, m)``, returning one value per network
``(E,)`` -- or, for a single network, ``(m, m)``, returning a scalar (convenient for ``torch.func.hessian``).
They run the reference recurrence (:func:`rnnbook.model.reference_forward`), which has no in-place writes, so
``torch.autograd`` and ``torch.func`` (grad, jacrev, jvp, vmap, hessian) can differentiate them, twice. The
fast BPTT of :func:`rnnbook.model.gradient` is tested against them.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import checks
from .model import Params, _tokens, reference_forward


def _shape_W(params: Params, W: torch.Tensor):
    """``W`` as (E, m, m) (or untied (E, L, m, m)) and whether to return a scalar."""
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
    full = tuple(params.W.shape)
    if tuple(W.shape) == full:
        return W, False
    if params.ensemble == 1 and tuple(W.shape) == full[1:]:
        return W.unsqueeze(0), True
    raise ValueError(f"W must have shape {full} (like params.W)"
                     + (f" or {full[1:]} (one network)" if params.ensemble == 1 else "") + f", got {tuple(W.shape)}")


def _outputs(params: Params, W: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
    """``B h_{i,l}(W)`` for l = 1..L: (E, n, L, d)."""
    h_s, _ = reference_forward(W, params.A, x4, params.activation)
    return torch.matmul(h_s[:, 1:].transpose(1, 2), params.B.transpose(1, 2).unsqueeze(1))


def objective_fn(params: Params, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W -> f(W)`` for the fixed ``A``, ``B`` of ``params`` and the data ``(x, y)``. See the module docstring."""
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    y4 = _tokens("y", y, params, params.d, "output dimension d")
    if y4.shape[1:3] != x4.shape[1:3]:
        raise ValueError(f"y must have the n={x4.shape[1]} sequences of L={x4.shape[2]} steps of x, got {tuple(y.shape)}")

    def f(W: torch.Tensor) -> torch.Tensor:
        W3, scalar = _shape_W(params, W)
        e = (_outputs(params, W3, x4) - y4)[:, :, 1:]   # steps l = 2..L (footnote 6)
        val = 0.5 * e.square().sum(dim=(1, 2, 3))
        return val[0] if scalar else val

    return f


def fake_objective_fn(params: Params, x: torch.Tensor, loss: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W -> F(W) = sum_i sum_{a>=2} <loss_{i,a}, B h_{i,a}(W)>`` for fixed loss vectors ``loss`` ((n, L, d) or
    (E, n, L, d); step 1 is ignored). ``grad F(W)`` is the fake gradient of Definition E.1 at W."""
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    e4 = _tokens("loss", loss, params, params.d, "output dimension d")
    if e4.shape[1:3] != x4.shape[1:3]:
        raise ValueError(f"loss must have the n={x4.shape[1]} sequences of L={x4.shape[2]} steps of x, got {tuple(loss.shape)}")
    fixed = e4.detach()[:, :, 1:]

    def F(W: torch.Tensor) -> torch.Tensor:
        W3, scalar = _shape_W(params, W)
        val = (_outputs(params, W3, x4)[:, :, 1:] * fixed).sum(dim=(1, 2, 3))
        return val[0] if scalar else val

    return F


def linearize(params: Params, x: torch.Tensor, y: torch.Tensor, W0: torch.Tensor | None = None):
    """The network linearised in W at ``W0`` (default ``params.W``): returns ``(outputs_lin, f_lin)`` where
    ``outputs_lin(W) = out(W0) + J(W0)[W - W0]`` (the outputs ``B h_{i,l}``, (E, n, L, d), through one
    Jacobian-vector product) and ``f_lin(W)`` is the paper's objective of those outputs. This first-order
    Taylor model is the book's comparison (the lazy-training / kernel picture), not part of the paper."""
    x4 = _tokens("x", x, params, params.d_x, "input dimension d_x")
    y4 = _tokens("y", y, params, params.d, "output dimension d")
    W0 = params.W if W0 is None else W0
    checks.tensor("W0", W0, shape=tuple(params.W.shape))
    W0 = W0.detach()
    out0 = _outputs(params, W0, x4).detach()

    def outputs_lin(W: torch.Tensor) -> torch.Tensor:
        W3, _ = _shape_W(params, W)
        _, jvp = torch.func.jvp(lambda V: _outputs(params, V, x4), (W0,), (W3 - W0,))
        return out0 + jvp

    def f_lin(W: torch.Tensor) -> torch.Tensor:
        W3, scalar = _shape_W(params, W)
        e = (outputs_lin(W3) - y4)[:, :, 1:]
        val = 0.5 * e.square().sum(dim=(1, 2, 3))
        return val[0] if scalar else val

    return outputs_lin, f_lin
