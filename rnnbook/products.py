"""Products of masked recurrent matrices, the objects of Lemma B.11 to Corollary B.19 (arXiv v4).

For one sample ``i`` the paper writes ``prod_{l=l2}^{l1} D_{i,l} W = D_{i,l2} W D_{i,l2-1} W ... D_{i,l1} W``
(``l2 >= l1``; the rightmost factor acts first) and the backward operators
``Back_{i,l1->l2} = B D_{i,l2} W ... D_{i,l1+1} W`` (``Back_{i,l->l} = B``).

Nothing here forms an m x m product unless asked (:func:`product_matrix`, :func:`sandwich_matrix`, for
entrywise quantities and checks): the products are applied to blocks of vectors, one masked
matrix-vector product per step, batched over the ensemble. Vectors are stored as rows: a block ``V`` of
shape ``(E, k, m)`` holds k vectors per network.

Masks are passed per network as ``D`` of shape ``(E, L+1, m)`` (position l is ``D_l``), e.g.
``fw.D[:, i]`` for sample ``i`` of a forward pass ``fw``. Any diagonal works, not only 0/1 masks: for a
tanh or identity network pass ``fw.slope[:, i]`` (the diagonal of ``phi'(g_l)``). ``W`` is ``(E, m, m)``
(the paper's weight-tied model) or ``(E, L', m, m)`` with ``L' >= L`` (the untied comparison model; ``W[:, l-1]``
acts at step ``l``).
"""
from __future__ import annotations

import math

import torch

from . import checks


# ----------------------------------------------------------------------------------------------------------
# validation and the matrix acting at a step

def _check_WD(W: torch.Tensor, D: torch.Tensor) -> int:
    """Validate ``W`` (tied or untied) and ``D``; return L."""
    checks.tensor("W", W, ndim=(3, 4))
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(f"W must be square in its last two dimensions, got shape {tuple(W.shape)}")
    if not isinstance(D, torch.Tensor):
        raise TypeError(f"D must be a torch.Tensor, got {type(D).__name__}")
    if D.ndim != 3 or D.shape[0] != W.shape[0] or D.shape[2] != W.shape[-1]:
        raise ValueError(f"D must have shape (E={W.shape[0]}, L+1, m={W.shape[-1]}), got {tuple(D.shape)}")
    if D.device != W.device:
        raise ValueError(f"D is on {D.device} but W is on {W.device}")
    L = D.shape[1] - 1
    if L < 1:
        raise ValueError(f"D must hold at least one step (shape (E, L+1, m) with L >= 1), got {tuple(D.shape)}")
    if W.ndim == 4 and W.shape[1] < L:
        raise ValueError(f"untied W has {W.shape[1]} steps but D has L={L}")
    return L


def _check(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> None:
    L = _check_WD(W, D)
    if not (1 <= l1 <= l2 <= L):
        raise ValueError(f"need 1 <= l1 <= l2 <= L={L}, got l1={l1}, l2={l2}")


def _W(W: torch.Tensor, l: int) -> torch.Tensor:
    """The matrix acting at step l (1-based)."""
    return W if W.ndim == 3 else W[:, l - 1]


def _step(X: torch.Tensor, Wl: torch.Tensor, Dl: torch.Tensor) -> torch.Tensor:
    """Rows of ``X`` (E, k, m) mapped by ``D_l W_l``: ``(X W_l^T) * D_l``."""
    return torch.matmul(X, Wl.transpose(-1, -2)) * Dl.unsqueeze(1)


def _step_T(X: torch.Tensor, Wl: torch.Tensor, Dl: torch.Tensor) -> torch.Tensor:
    """Rows of ``X`` mapped by ``(D_l W_l)^T = W_l^T D_l``: ``(X * D_l) W_l``."""
    return torch.matmul(X * Dl.unsqueeze(1), Wl)


def _block(name: str, V: torch.Tensor, W: torch.Tensor) -> None:
    checks.tensor(name, V, ndim=3)
    if V.shape[0] not in (1, W.shape[0]) or V.shape[2] != W.shape[-1]:
        raise ValueError(f"{name} must have shape (E={W.shape[0]}, k, m={W.shape[-1]}), got {tuple(V.shape)}")
    checks.same_placement("W", W, **{name: V})


# ----------------------------------------------------------------------------------------------------------
# applying products (Lemma B.11, Claim B.12)

def apply_product(W: torch.Tensor, D: torch.Tensor, V: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``(D_{l2} W ... D_{l1} W) v`` for every row v of ``V`` (E, k, m)."""
    _check(W, D, l1, l2)
    Dm = D.to(W.dtype)
    X = V
    for l in range(l1, l2 + 1):
        X = _step(X, _W(W, l), Dm[:, l])
    return X


def apply_product_T(W: torch.Tensor, D: torch.Tensor, U: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``(D_{l2} W ... D_{l1} W)^T u = W^T D_{l1} ... W^T D_{l2} u`` for every row u of ``U`` (E, k, m)."""
    _check(W, D, l1, l2)
    Dm = D.to(W.dtype)
    X = U
    for l in range(l2, l1 - 1, -1):
        X = _step_T(X, _W(W, l), Dm[:, l])
    return X


def product_matrix(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The explicit m x m matrix ``D_{l2} W ... D_{l1} W``, shape (E, m, m). O(span * m^3): checks only."""
    _check(W, D, l1, l2)
    E, m = W.shape[0], W.shape[-1]
    eye = torch.eye(m, dtype=W.dtype, device=W.device).expand(E, m, m)
    # rows of the identity are the basis vectors; apply_product gives (P e_j)^T as rows -> P^T
    return apply_product(W, D, eye, l1, l2).transpose(1, 2)


def fixed_vector_growth(W: torch.Tensor, D: torch.Tensor, z: torch.Tensor, l1: int = 1) -> torch.Tensor:
    """Claim B.12: ``||D_{l2} W ... D_{l1} W z|| / ||z||`` for every ``l2 = l1..L`` and every row z of ``z``.

    ``z`` is a block (E, k, m) of *fixed* vectors (chosen without looking at W, e.g. random). Returns
    (E, k, L - l1 + 1); entry [..., j] is the ratio at ``l2 = l1 + j``. Claim B.12 bounds it by
    ``(1 + 1/L)^(l2 - l1 + 1)`` with probability ``1 - exp(-Omega(m / L^2))`` for each fixed z.
    """
    L = _check_WD(W, D)
    _check(W, D, l1, l1)
    _block("z", z, W)
    Dm = D.to(W.dtype)
    nz = z.norm(dim=-1)
    if (nz == 0).any():
        raise ValueError("z has a zero row: the ratio ||P z|| / ||z|| is undefined")
    X, out = z, []
    for l in range(l1, L + 1):
        X = _step(X, _W(W, l), Dm[:, l])
        out.append(X.norm(dim=-1) / nz)
    return torch.stack(out, dim=-1)


# ----------------------------------------------------------------------------------------------------------
# spectral norms

def spectral_norm(apply, apply_T, shape, *, iters: int = 30, block: int = 4, seed: int = 0,
                  device=None, dtype=None) -> torch.Tensor:
    """Largest singular value of an implicit operator by block power iteration on ``M^T M``.

    ``apply(V)`` and ``apply_T(U)`` act on row blocks ``(E, k, m)``; ``shape = (E, m)``. Returns ``(E,)``.
    The estimate is a lower bound that converges from below; ``block`` random starts guard against a start
    nearly orthogonal to the top singular vector.
    """
    E, m = shape
    iters = checks.positive_int("iters", iters)
    block = checks.positive_int("block", block)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = torch.randn(E, block, m, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    sigma = None
    for _ in range(iters):
        V, _ = torch.linalg.qr(V.transpose(1, 2))  # orthonormal columns (E, m, k)
        V = V.transpose(1, 2)
        MV = apply(V)
        sigma = torch.linalg.matrix_norm(MV, ord=2)  # top singular value of M restricted to span(V)
        V = apply_T(MV)
    return sigma


def product_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, **kw) -> torch.Tensor:
    """``||D_{l2} W ... D_{l1} W||_2`` for every network, matrix-free (Lemma B.11). Shape (E,)."""
    _check(W, D, l1, l2)
    return spectral_norm(lambda V: apply_product(W, D, V, l1, l2), lambda U: apply_product_T(W, D, U, l1, l2),
                         (W.shape[0], W.shape[-1]), device=W.device, dtype=W.dtype, **kw)


def _top_bidiag_sv(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Largest singular value of the upper bidiagonal matrices with diagonals ``alpha`` (N, j) and
    superdiagonals ``beta`` (N, j-1), computed in float64 on the CPU (they are tiny)."""
    a = alpha.detach().to("cpu", torch.float64)
    b = beta.detach().to("cpu", torch.float64)
    j = a.shape[1]
    Bm = torch.diag_embed(a)
    if j > 1:
        Bm = Bm + torch.diag_embed(b, offset=1)
    # eigenvalues of the tridiagonal B^T B; the largest one is sigma_max^2
    T = Bm.transpose(1, 2) @ Bm
    return torch.linalg.eigvalsh(T)[:, -1].clamp_min(0).sqrt()


def all_product_norms(W: torch.Tensor, D: torch.Tensor, *, iters: int = 80, tol: float = 1e-4,
                      min_iters: int = 4, seed: int = 0, starts=None, return_iters: bool = False):
    """``||D_{l2} W ... D_{l1} W||_2`` for every pair ``1 <= l1 <= l2 <= L`` at once (Lemma B.11).

    Returns a tensor (E, L, L) (float64, on W's device) whose entry ``[e, l1-1, l2-1]`` is the spectral
    norm for network e; entries with ``l1 > l2`` are NaN. With ``return_iters=True`` also returns the
    number of Lanczos steps each pair took, (L, L) (0 below the diagonal). ``starts``: an optional
    collection of start steps l1 to restrict the work to (the rows of the other l1 stay NaN); the cost
    per Lanczos step is proportional to the total span of the pairs computed.

    Method (matrix-free; no m x m product is ever formed). Golub-Kahan-Lanczos bidiagonalisation of
    every product ``P_{l1,l2}``, all L(L+1)/2 of them advanced together: one Lanczos step needs
    ``P v`` and ``P^T u`` for each pair, and at time step l every pair with ``l1 <= l <= l2`` is
    multiplied by the same ``D_l W``, so a forward sweep (and a backward sweep) over l = 1..L is one
    batched GEMM per step whose rows are the vectors of all pairs active at that step. The top singular
    value of the small bidiagonal matrix converges to ``||P||_2`` from below; without
    reorthogonalisation Lanczos loses orthogonality only through copies of converged values, which does
    not harm the largest one. A pair stops (and leaves the GEMMs) once its estimate has grown by a
    relative amount below ``tol`` for two consecutive steps and the remaining growth extrapolated from
    the last two increments (a geometric tail) is below ``tol`` too, in every network, after ``min_iters``
    steps; ``iters`` caps the number of steps. At m = 1024 the default gave relative errors ~1e-5. Like any
    single-start Krylov method, a pair can stop at the second singular value when the top two are close
    and the start is nearly orthogonal to the top singular vector; seen at tiny m (tens), rare at large m,
    where the dense spectrum keeps the estimate growing; a smaller ``tol`` makes it rarer. ``seed`` fixes the random start vectors.
    """
    L = _check_WD(W, D)
    iters = checks.positive_int("iters", iters)
    min_iters = checks.positive_int("min_iters", min_iters)
    tol = checks.real_in("tol", tol, 0.0, 1.0, low_open=True, high_open=True)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    E, m = W.shape[0], W.shape[-1]
    dev, dt = W.device, W.dtype
    Dm = D.to(dt)
    if starts is None:
        starts = range(1, L + 1)
    starts = sorted({checks.positive_int("starts", int(a)) if not isinstance(a, bool) else a for a in starts})
    if not starts or starts[-1] > L or any(isinstance(a, bool) for a in starts):
        raise ValueError(f"starts must be a non-empty collection of steps in [1, L={L}], got {starts}")
    l1s = torch.tensor([a for a in starts for _ in range(a, L + 1)])
    l2s = torch.tensor([b for a in starts for b in range(a, L + 1)])
    npairs = l1s.numel()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = torch.randn(E, npairs, m, generator=gen, dtype=torch.float64).to(device=dev, dtype=dt)
    V = V / V.norm(dim=-1, keepdim=True)
    U = torch.zeros_like(V)
    beta_prev = torch.zeros(E, npairs, device=dev, dtype=dt)
    alphas = torch.zeros(E, npairs, iters, dtype=torch.float64)
    betas = torch.zeros(E, npairs, iters, dtype=torch.float64)
    result = torch.full((E, npairs), math.nan, dtype=torch.float64)
    steps_taken = torch.zeros(npairs, dtype=torch.long)
    alive = torch.arange(npairs)            # original pair ids still iterating
    prev = torch.zeros(E, npairs, dtype=torch.float64)
    inc_prev = torch.full((E, npairs), math.inf, dtype=torch.float64)
    calm = torch.zeros(npairs, dtype=torch.long)  # consecutive small increases
    tiny = torch.finfo(dt).tiny

    def step_index(a1, a2):
        return [torch.nonzero((a1 <= l) & (a2 >= l)).flatten().to(dev) for l in range(L + 1)]

    idx = step_index(l1s, l2s)
    for j in range(iters):
        # forward sweep: X = P v for every alive pair
        X = V.clone()
        for l in range(1, L + 1):
            ix = idx[l]
            if ix.numel():
                X[:, ix] = _step(X.index_select(1, ix), _W(W, l), Dm[:, l])
        p = X - beta_prev.unsqueeze(-1) * U
        alpha = p.norm(dim=-1)
        U = p / alpha.clamp_min(tiny).unsqueeze(-1)
        # backward sweep: Y = P^T u
        Y = U.clone()
        for l in range(L, 0, -1):
            ix = idx[l]
            if ix.numel():
                Y[:, ix] = _step_T(Y.index_select(1, ix), _W(W, l), Dm[:, l])
        q = Y - alpha.unsqueeze(-1) * V
        beta = q.norm(dim=-1)
        V = q / beta.clamp_min(tiny).unsqueeze(-1)
        beta_prev = beta
        alphas[:, alive, j] = alpha.detach().to("cpu", torch.float64)
        betas[:, alive, j] = beta.detach().to("cpu", torch.float64)
        a_h = alphas[:, alive, : j + 1].reshape(E * alive.numel(), j + 1)
        b_h = betas[:, alive, :j].reshape(E * alive.numel(), j)
        est = _top_bidiag_sv(a_h, b_h).reshape(E, -1)
        steps_taken[alive] = j + 1
        result[:, alive] = est
        inc = (est - prev[:, alive]).clamp_min(0)
        # remaining error, extrapolated from the last two increments (geometric tail, Aitken)
        ratio = (inc / inc_prev[:, alive].clamp_min(1e-300)).clamp(0.0, 0.98)
        remaining = inc * ratio / (1 - ratio)
        prev[:, alive], inc_prev[:, alive] = est, inc
        scale = est.clamp_min(1e-300)
        small = ((inc <= tol * scale) & (remaining <= tol * scale)).all(dim=0)
        calm[alive] = torch.where(small, calm[alive] + 1, torch.zeros_like(calm[alive]))
        done = (calm[alive] >= 2) & (j + 1 >= min_iters)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            alive = alive[keep]
            keep_d = keep.to(dev)
            V, U, beta_prev = V[:, keep_d], U[:, keep_d], beta_prev[:, keep_d]
            idx = step_index(l1s[alive], l2s[alive])
    out = torch.full((E, L, L), math.nan, dtype=torch.float64)
    out[:, l1s - 1, l2s - 1] = result
    out = out.to(dev)
    if return_iters:
        it = torch.zeros(L, L, dtype=torch.long)
        it[l1s - 1, l2s - 1] = steps_taken
        return out, it
    return out


def by_span(norms: torch.Tensor, reduce: str = "median") -> torch.Tensor:
    """Summarise an (E, L, L) table of :func:`all_product_norms` by span ``s = l2 - l1 + 1``.

    Returns (E, L): entry [e, s-1] is the median (``reduce="median"``), maximum (``"max"``) or mean
    (``"mean"``) over the starting steps l1 of the norms of span s. NaN entries (pairs not computed, e.g.
    with ``starts=``) are ignored; a span with no computed pair gives NaN.
    """
    checks.tensor("norms", norms, ndim=3)
    checks.choice("reduce", reduce, ("median", "max", "mean"))
    E, L, L2 = norms.shape
    if L != L2:
        raise ValueError(f"norms must have shape (E, L, L), got {tuple(norms.shape)}")
    out = torch.empty(E, L, dtype=norms.dtype, device=norms.device)
    for s in range(1, L + 1):
        diag = torch.diagonal(norms, offset=s - 1, dim1=1, dim2=2)  # (E, L - s + 1): l1 = 1..L-s+1
        if reduce == "median":
            out[:, s - 1] = torch.nanquantile(diag, 0.5, dim=1)
        elif reduce == "max":
            filled = torch.where(torch.isnan(diag), torch.full_like(diag, -math.inf), diag).max(dim=1).values
            out[:, s - 1] = torch.where(torch.isinf(filled), torch.full_like(filled, math.nan), filled)
        else:
            out[:, s - 1] = torch.nanmean(diag, dim=1)
    return out


# ----------------------------------------------------------------------------------------------------------
# sparse quantities (Lemma B.14, Corollaries B.15 and B.16)

def sandwich_matrix(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The explicit matrix ``W D_{l2} W ... D_{l1} W`` of Lemma B.14 (E, m, m). O(span * m^3).

    For an untied W the leading factor is the matrix of step ``l2 + 1`` (the next step), if it exists.
    """
    _check(W, D, l1, l2)
    P = product_matrix(W, D, l1, l2)
    Wn = W if W.ndim == 3 else W[:, min(l2, W.shape[1] - 1)]
    return torch.matmul(Wn, P)


def largest_entry(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """Corollary B.16: ``max_{j,k} |e_j^T W D_{l2} W ... D_{l1} W e_k|`` (the 1-sparse case). Shape (E,).

    Forms the m x m matrix (every entry is needed); the corollary bounds it by ``rho / sqrt(m)``.
    """
    return sandwich_matrix(W, D, l1, l2).abs().flatten(1).max(dim=1).values


def _support(name: str, S: torch.Tensor, E: int, m: int) -> torch.Tensor:
    if not isinstance(S, torch.Tensor) or S.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor of coordinates")
    if S.ndim == 1:
        S = S.unsqueeze(0).expand(E, -1)
    if S.ndim != 2 or S.shape[0] != E or S.shape[1] < 1:
        raise ValueError(f"{name} must have shape (k,) or (E={E}, k) with k >= 1, got {tuple(S.shape)}")
    if S.min() < 0 or S.max() >= m:
        raise ValueError(f"{name} holds coordinates outside [0, {m})")
    return S.long()


def sparse_block_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, rows: torch.Tensor,
                      cols: torch.Tensor | None = None) -> torch.Tensor:
    """Lemma B.14 / Corollary B.15: ``||(W D_{l2} W ... D_{l1} W)_{rows, cols}||_2``, shape (E,).

    ``rows``/``cols``: coordinate sets, (k,) shared by the ensemble or (E, k) per network; ``cols``
    defaults to ``rows`` (the block ``S x S``). Matrix-free: the k basis vectors of ``cols`` are pushed
    through the product (span * k matrix-vector products), then only the rows ``rows`` of W are used.
    """
    _check(W, D, l1, l2)
    E, m = W.shape[0], W.shape[-1]
    R = _support("rows", rows, E, m).to(W.device)
    C = R if cols is None else _support("cols", cols, E, m).to(W.device)
    k = C.shape[1]
    basis = torch.zeros(E, k, m, dtype=W.dtype, device=W.device)
    basis.scatter_(2, C.unsqueeze(-1), 1.0)
    PC = apply_product(W, D, basis, l1, l2)                               # (E, k, m): rows (P e_c)^T
    Wn = W if W.ndim == 3 else W[:, min(l2, W.shape[1] - 1)]
    WR = torch.gather(Wn, 1, R.unsqueeze(-1).expand(-1, -1, m))          # (E, kr, m) rows of W
    block = torch.matmul(WR, PC.transpose(1, 2))                          # (E, kr, k)
    return torch.linalg.matrix_norm(block, ord=2)


def random_sparse_block_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, k: int, *,
                             seed: int) -> torch.Tensor:
    """:func:`sparse_block_norm` on a uniformly random S x S block (|S| = k, one S per network). (E,)"""
    E, m = W.shape[0], W.shape[-1]
    k = checks.positive_int("k", k)
    if k > m:
        raise ValueError(f"k must be at most m={m}, got {k}")
    gen = checks.generator(None, seed)
    S = torch.argsort(torch.rand(E, m, generator=gen), dim=1)[:, :k]
    return sparse_block_norm(W, D, l1, l2, S)


def worst_sparse_block_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, k: int, *, iters: int = 30,
                            M: torch.Tensor | None = None, return_support: bool = False):
    """A greedy worst case for Lemma B.14 / Corollary B.15: ``max ||M_{S1,S2}||_2`` over k-row, k-column
    blocks of ``M = W D_{l2} W ... D_{l1} W``, searched by truncated power iteration (the book's choice
    of search, not the paper's). Shape (E,).

    Starting from the largest entry of M, alternate ``y <- top_k(M z)``, ``z <- top_k(M^T y)`` (keep the
    k largest coordinates in absolute value, normalise). The result is the exact norm of the block found,
    so it is a lower bound on the true k-sparse norm ``max |y^T M z|`` over k-sparse unit y, z.
    Forms M explicitly (O(span * m^3)) unless it is passed as ``M`` (from :func:`sandwich_matrix`, to reuse
    it over several k).
    """
    k = checks.positive_int("k", k)
    iters = checks.positive_int("iters", iters)
    if M is None:
        M = sandwich_matrix(W, D, l1, l2)
    else:
        checks.tensor("M", M, shape=(W.shape[0], W.shape[-1], W.shape[-1]))
    E, m = M.shape[0], M.shape[-1]
    if k > m:
        raise ValueError(f"k must be at most m={m}, got {k}")
    flat = M.abs().flatten(1).argmax(dim=1)
    z = torch.zeros(E, m, dtype=M.dtype, device=M.device)
    z[torch.arange(E), flat % m] = 1.0

    def trunc(x):
        keep = x.abs().topk(k, dim=1).indices
        out = torch.zeros_like(x).scatter_(1, keep, torch.gather(x, 1, keep))
        return out / out.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny), keep

    for _ in range(iters):
        y, R = trunc(torch.matmul(M, z.unsqueeze(-1)).squeeze(-1))
        z, C = trunc(torch.matmul(M.transpose(1, 2), y.unsqueeze(-1)).squeeze(-1))
    block = torch.gather(torch.gather(M, 1, R.unsqueeze(-1).expand(-1, -1, m)), 2, C.unsqueeze(1).expand(-1, k, -1))
    val = torch.linalg.matrix_norm(block, ord=2)
    return (val, R, C) if return_support else val


# ----------------------------------------------------------------------------------------------------------
# backward operators (Lemma B.17, Corollaries B.18 and B.19)

def backward_rows(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The backward operator ``Back_{l1->l2} = B D_{l2} W ... D_{l1+1} W`` as a (E, d, m) matrix (Fact 2.5).

    Formed by pushing the d rows of B backwards, so it costs d * span matrix-vector products.
    """
    checks.tensor("B", B, ndim=3)
    if l1 == l2:
        _check(W, D, max(l1, 1), max(l2, 1))
        return B.clone()
    return apply_product_T(W, D, B, l1 + 1, l2)


def backward_matrix(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``B D_{l2} W ... D_{l1} W`` (E, d, m), the operator of Lemma B.17 (= ``Back_{l1-1 -> l2}``)."""
    checks.tensor("B", B, ndim=3)
    if B.shape[0] != W.shape[0] or B.shape[2] != W.shape[-1]:
        raise ValueError(f"B must have shape (E={W.shape[0]}, d, m={W.shape[-1]}), got {tuple(B.shape)}")
    return apply_product_T(W, D, B, l1, l2)


def backward_column_norms(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """Corollary B.19 with the worst ``a``: ``||B D_{l2} W ... D_{l1} W e_k||`` for every k. Shape (E, m).

    ``max_k`` of this is ``max`` over 1-sparse unit y and unit a of ``|a^T B ... D W y|``.
    """
    return backward_matrix(B, W, D, l1, l2).norm(dim=1)


def backward_entries(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int,
                     a: torch.Tensor) -> torch.Tensor:
    """Lemma B.17 / Corollary B.19 for a fixed ``a``: ``a^T B D_{l2} W ... D_{l1} W e_k`` for every k, (E, m).

    ``a``: (d,) shared or (E, d); it is used as given (normalise it for the lemma's ``||a|| = 1``).
    Costs span matrix-vector products (``a^T B`` is pushed backwards as one row).
    """
    checks.tensor("B", B, ndim=3)
    checks.tensor("a", a, ndim=(1, 2))
    E, d = B.shape[0], B.shape[1]
    a2 = a.unsqueeze(0).expand(E, -1) if a.ndim == 1 else a
    if a2.shape != (E, d):
        raise ValueError(f"a must have shape ({d},) or ({E}, {d}), got {tuple(a.shape)}")
    checks.same_placement("B", B, a=a2)
    row = torch.matmul(a2.unsqueeze(1), B)                                # (E, 1, m)
    if B.shape[0] != W.shape[0] or B.shape[2] != W.shape[-1]:
        raise ValueError(f"B must have shape (E={W.shape[0]}, d, m={W.shape[-1]}), got {tuple(B.shape)}")
    return apply_product_T(W, D, row, l1, l2).squeeze(1)


def backward_norm(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The dense ``||B D_{l2} W ... D_{l1} W||_2`` (E,): about ``sqrt(m/d)`` since B has variance 1/d."""
    return torch.linalg.matrix_norm(backward_matrix(B, W, D, l1, l2), ord=2)


# ----------------------------------------------------------------------------------------------------------
# a heuristic reference (the book's, not the paper's)

def free_product_edge(s: int, first_ratio: float = 2.0) -> float:
    """Large-m limit of the top singular value of ``s`` *independent* Gaussian factors (free probability).

    The book's heuristic for ``||D_{l2} W ... D_{l1} W||_2`` with span s, not a result of the paper: treat
    each masked factor as an independent Gaussian matrix between the ~m/2 active coordinates (variance
    2/m, i.e. 1 / (m/2)), except the first, which sees all m inputs (aspect ratio ``first_ratio`` = 2).
    Multiplying the S-transforms, ``chi(z) = z / ((1+z)^s (r+z))`` and the squared edge is
    ``1 / max_z chi(z)``; the maximiser solves ``s z^2 + r (s-1) z - r = 0``. ``first_ratio=1`` gives the
    Fuss-Catalan edge ``sqrt((s+1)^(s+1) / s^s)`` of s square Ginibre matrices; ``s = 1, r = 2`` gives
    ``1 + sqrt(2)`` (a half-masked square Gaussian with variance 2/m).
    """
    s = checks.positive_int("s", s)
    r = checks.positive_real("first_ratio", first_ratio)
    z = (-r * (s - 1) + math.sqrt(r * r * (s - 1) ** 2 + 4 * s * r)) / (2 * s)
    return math.sqrt((1 + z) ** s * (r + z) / z)
