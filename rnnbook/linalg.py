"""Largest singular values of implicit linear operators: the one Lanczos implementation of the book.

Spectral norms appear everywhere in the paper (Lemmas B.11, C.7, the radius ``||W'||_2 <= tau0 / sqrt(m)`` of
Appendix C, Theorems 3 and 4). They are computed here, matrix-free, by Golub-Kahan-Lanczos
bidiagonalisation, for many operators at once:

* a *batch* dimension ``E`` (networks, or networks x samples) whose members share the work of every step;
* a *problem* dimension ``P`` of different operators (e.g. the L(L+1)/2 products of
  :func:`rnnbook.products.all_product_norms`), each of which stops iterating once it has converged in every
  member of the batch, so that the remaining problems get cheaper.

The operator is given by two functions ``apply(V, idx)`` (``M v`` for the rows ``V`` (E, k, q) of the problems
``idx``, a LongTensor of length k) and ``apply_T(U, idx)`` (``M^T u``). After j steps the largest singular
value of the j x j bidiagonal matrix is the best estimate of ``||M||_2`` from the Krylov space; it converges
from below. Without reorthogonalisation Lanczos loses orthogonality only through copies of converged
values, which does not harm the largest one; ``reorth=True`` keeps all vectors and reorthogonalises (exact
to rounding, for small explicit matrices whose top singular values must be known to ~1e-12, as in
:func:`matrix_norm`). A problem stops when the estimate grew by a relative amount below ``tol`` for two
consecutive steps *and* the growth still to come, extrapolated from the last two increments (a geometric
tail), is below ``tol`` too, in every batch member, after ``min_iters`` steps; or when its Krylov space is
exhausted (a low-rank operator, e.g. a rank-one W'); ``iters`` caps the number of steps. Like any Krylov
method started from one vector, it can stop at the second singular value when the top two are very close
and the start is nearly orthogonal to the top singular vector; a smaller ``tol`` makes that rarer.
"""
from __future__ import annotations

import math

import torch

from . import checks

__all__ = ["top_singular_values", "matrix_norm", "random_start"]


def _top_bidiag_sv(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Largest singular value of upper bidiagonal matrices with diagonals ``alpha`` (N, j) and
    superdiagonals ``beta`` (N, j-1), in float64 on the CPU (they are tiny)."""
    j = alpha.shape[1]
    Bm = torch.diag_embed(alpha)
    if j > 1:
        Bm = Bm + torch.diag_embed(beta, offset=1)
    return torch.linalg.eigvalsh(Bm.transpose(1, 2) @ Bm)[:, -1].clamp_min(0).sqrt()


def random_start(shape, *, seed: int, device, dtype) -> torch.Tensor:
    """Gaussian start vectors of ``shape`` (E, P, q) from ``seed`` (drawn in float64 on the CPU, then placed)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def top_singular_values(apply, apply_T, start: torch.Tensor, *, iters: int = 80, tol: float = 1e-4,
                        min_iters: int = 2, reorth: bool = False, return_iters: bool = False):
    """``||M_{e,p}||_2`` for every batch member e and problem p: (E, P) float64 on the start's device.

    ``start`` (E, P, q): one start vector per member and problem (normalised here; use :func:`random_start`).
    ``apply(V, idx)`` maps rows (E, k, q) of the problems ``idx`` to (E, k, p); ``apply_T(U, idx)`` maps
    (E, k, p) back to (E, k, q). With ``return_iters=True`` also returns the number of Lanczos steps each
    problem took, (P,). See the module docstring for the method and the stopping rule.
    """
    checks.tensor("start", start, ndim=3, finite=True)
    iters = checks.positive_int("iters", iters)
    min_iters = checks.positive_int("min_iters", min_iters)
    tol = checks.real_in("tol", tol, 0.0, 1.0, low_open=True, high_open=True)
    E, P, q = start.shape
    dev, dt = start.device, start.dtype
    tiny = torch.finfo(dt).tiny
    eps = torch.finfo(dt).eps
    norms = start.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("start has a zero vector: every start vector must be non-zero")
    V = start / norms
    U = None
    beta_prev = torch.zeros(E, P, device=dev, dtype=dt)
    alphas = torch.zeros(E, P, iters, dtype=torch.float64)
    betas = torch.zeros(E, P, iters, dtype=torch.float64)
    result = torch.zeros(E, P, dtype=torch.float64)
    steps = torch.zeros(P, dtype=torch.long)
    alive = torch.arange(P)
    prev = torch.zeros(E, P, dtype=torch.float64)
    inc_prev = torch.full((E, P), math.inf, dtype=torch.float64)
    calm = torch.zeros(P, dtype=torch.long)
    Vs, Us = ([V], []) if reorth else (None, None)

    def orth(X, basis):  # project out the stored vectors of the same problems: basis (E, k, j, dim)
        B = torch.stack(basis, dim=2)
        for _ in range(2):
            X = X - torch.einsum("ekj,ekjd->ekd", torch.einsum("ekd,ekjd->ekj", X, B), B)
        return X

    for j in range(iters):
        idx = alive.to(dev)
        p_vec = apply(V, idx)
        if U is not None:
            p_vec = p_vec - beta_prev.unsqueeze(-1) * U
        if reorth and Us:
            p_vec = orth(p_vec, Us)
        alpha = p_vec.norm(dim=-1)
        U = torch.where((alpha > tiny).unsqueeze(-1), p_vec / alpha.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(p_vec))
        q_vec = apply_T(U, idx) - alpha.unsqueeze(-1) * V
        if reorth:
            Us.append(U)
            q_vec = orth(q_vec, Vs)
        beta = q_vec.norm(dim=-1)
        alphas[:, alive, j] = alpha.detach().to("cpu", torch.float64)
        betas[:, alive, j] = beta.detach().to("cpu", torch.float64)
        k = alive.numel()
        est = _top_bidiag_sv(alphas[:, alive, : j + 1].reshape(E * k, j + 1),
                             betas[:, alive, :j].reshape(E * k, j)).reshape(E, k)
        steps[alive] = j + 1
        result[:, alive] = est
        scale = est.clamp_min(1e-300)
        # exhausted Krylov space (beta ~ 0): the estimate is exact for that member
        exhausted = beta.detach().to("cpu", torch.float64) <= 100 * eps * scale
        inc = (est - prev[:, alive]).clamp_min(0)
        ratio = (inc / inc_prev[:, alive].clamp_min(1e-300)).clamp(0.0, 0.98)
        remaining = inc * ratio / (1 - ratio)
        prev[:, alive], inc_prev[:, alive] = est, inc
        small = (((inc <= tol * scale) & (remaining <= tol * scale)) | exhausted).all(dim=0)
        calm[alive] = torch.where(small, calm[alive] + 1, torch.zeros_like(calm[alive]))
        done = ((calm[alive] >= 2) & (j + 1 >= min_iters)) | exhausted.all(dim=0)
        V = torch.where((~exhausted.to(dev)).unsqueeze(-1), q_vec / beta.clamp_min(tiny).unsqueeze(-1),
                        torch.zeros_like(q_vec))
        beta_prev = torch.where(exhausted.to(dev), torch.zeros_like(beta), beta)
        if reorth:
            Vs.append(V)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            alive = alive[keep]
            kd = keep.to(dev)
            V, U, beta_prev = V[:, kd], U[:, kd], beta_prev[:, kd]
            if reorth:
                Vs = [x[:, kd] for x in Vs]
                Us = [x[:, kd] for x in Us]
    result = result.to(dev)
    return (result, steps) if return_iters else result


def matrix_norm(M: torch.Tensor, *, tol: float | None = None, iters: int = 300, seed: int = 0) -> torch.Tensor:
    """``||M_e||_2`` for each matrix of a batch ``M`` (E, p, q), with full reorthogonalisation, to about
    ``tol`` (default 1e-7 in float32, 1e-12 in float64). Much cheaper than an SVD at m >= 512. (E,) float64."""
    checks.tensor("M", M, ndim=3)
    if tol is None:
        tol = 1e-7 if M.dtype == torch.float32 else 1e-12
    E, p, q = M.shape
    A = M.contiguous()
    At = M.transpose(1, 2).contiguous()  # a transposed bmm is a slow path on CPU: keep both layouts
    start = random_start((E, 1, q), seed=seed, device=M.device, dtype=M.dtype)
    return top_singular_values(lambda V, idx: torch.bmm(V, At), lambda U, idx: torch.bmm(U, A), start,
                               iters=min(iters, q + 1), tol=tol, reorth=True)[:, 0]
