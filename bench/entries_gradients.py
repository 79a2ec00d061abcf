"""Benchmarks of rnnbook.gradients (Part IV): the smallest eigenvalue of the output NTK (the loss NTK of the
chapter "The gradient at initialisation") from rnnbook's factored Gram against explicit torch.func Jacobians.

Discovered by bench/run.py (``ENTRIES``); run alone with ``bench/run.py --only ntk_min_eig_f64``. The name ends
in ``_f64``, so the harness also measures the float64 GEMM peak.
"""
from __future__ import annotations

import harness as H
import torch
from torch.func import jacrev, vmap

import rnnbook as rb
from rnnbook import gradients as gr

N, L, D_X, D = 8, 10, 8, 1


def _outputs_one(W, A, B, x):
    """One sample x (L, d_x) through the paper's recurrence: outputs B h_l for l = 2..L, flattened."""
    h = torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)
    outs = []
    for l in range(x.shape[0]):
        h = torch.relu(W @ h + A @ x[l])
        outs.append(B @ h)
    return torch.stack(outs)[1:].reshape(-1)


def ntk_min_eig_f64(suite) -> None:
    """lambda_min of the Gram matrix of the output Jacobians over (i, l = 2..L, k), n = 8, L = 10, d = 1, float64:
    ``gr.loss_ntk`` (one batched backward sweep for all outputs, then Gram matrices of O(n L^2 d) vectors) with
    its forward pass, against ``torch.func.vmap(jacrev(...))`` per-sample Jacobians, their Gram matrix and
    ``torch.linalg.eigvalsh``. Target: at least 20x at m = 1024."""
    dt, dev = torch.float64, suite.device
    data = rb.make_data(N, L, D_X, D, 0.1, seed=rb.seed("bench", "ntk_min_eig", "data"), device=dev, dtype=dt)
    jac = vmap(jacrev(_outputs_one), in_dims=(None, None, None, 0))
    for m in (256, 1024):
        p = rb.init_params(m, D_X, D, seed=rb.seed("bench", "ntk_min_eig", "networks", m), device=dev, dtype=dt)
        out = {}

        def ours():
            fw = rb.forward(p, data.x)
            out["ours"] = torch.linalg.eigvalsh(gr.loss_ntk(p, fw))[0, 0]

        def theirs():
            J = jac(p.W[0], p.A[0], p.B[0], data.x).reshape(N * (L - 1) * D, m * m)
            out["func"] = torch.linalg.eigvalsh(J @ J.T)[0]

        ours()
        theirs()
        err = abs(out["ours"].item() - out["func"].item()) / abs(out["func"].item())
        t = H.interleaved({"ours": ours, "func": theirs}, repeats=suite.reps(5, 3), device=dev)
        T = L - 1
        rows = N * D * T * (T + 1) // 2  # the non-zero Jacobian factors D_{l+1} Back^T e_k
        flops = 2.0 * N * L * m * m + 2.0 * N * D * (L * (L + 1) // 2) * m * m + 2.0 * rows * rows * m
        suite.add_t(f"ntk_min_eig_m{m}", t, "ours", "func", "torch.func vmap(jacrev) Jacobians + Gram + eigvalsh",
                    flops, dt, {"m": m, "n": N, "L": L, "d": D}, rel_err=err, lambda_min=out["func"].item(),
                    note="float64 on both sides; rel_err: |lambda_min difference| / lambda_min")


ENTRIES = {"ntk_min_eig_f64": ntk_min_eig_f64}
