"""Products of masked recurrent matrices and the backward operators: Lemma B.11 to Corollary B.19 (arXiv v4),
and the objects that Appendices C to G keep coming back to.

Conventions (used by every function here, and by :mod:`rnnbook.perturb`):

* ``W`` is ``(E, m, m)`` (the paper's weight-tied model) or ``(E, L', m, m)`` with ``L' >= L`` (the untied
  comparison model; ``W[:, l-1]`` acts at step ``l``).
* Masks ``D`` are ``(E, L+1, m)`` -- one sample per network, e.g. ``fw.D[:, i]`` -- or ``(E, n, L+1, m)`` --
  every sample, ``fw.D``; position ``l`` is ``D_l`` (position 0 is unused). Any diagonal works, not only
  0/1 masks: for a tanh or identity network pass ``fw.slope``.
* Vectors are rows: a block ``V`` holds k vectors per network, ``(E, k, m)`` with 3-D masks, ``(E, n, k, m)``
  (k per sample) with 4-D masks. Results keep the same leading dimensions.
* The **product** ``P(l1, l2) = prod_{l=l2}^{l1} D_l W = D_{l2} W D_{l2-1} W ... D_{l1} W`` for
  ``1 <= l1 <= l2 <= L`` (the rightmost factor acts first, as in the paper). Tables over all pairs are indexed
  ``[..., l1 - 1, l2 - 1]``: first where the product starts, then where it ends.
* The **backward operator** of Fact 2.5 / Definition D.6, ``Back_{l->a} = B D_a W ... D_{l+1} W = B P(l+1, a)``
  (``Back_{l->l} = B``), is :func:`back`. The quantities of Lemma B.17 and Corollaries B.18, B.19,
  ``a^T B prod_{l=l2}^{l1} D_l W = a^T Back_{l1-1 -> l2}``, take the product's ``(l1, l2)``.

Nothing here forms an m x m product unless asked (:func:`product_matrix`, :func:`sandwich_matrix`, for
entrywise quantities and checks): products are applied to blocks of vectors, one masked matrix product per
step, batched over networks and samples. Spectral norms of products (implicit operators) use
:mod:`rnnbook.linalg`; the small explicit blocks of the sparse and backward quantities (k x k, d x m) take an
exact SVD.
"""
from __future__ import annotations

import math

import torch

from . import checks, linalg, rng


# ----------------------------------------------------------------------------------------------------------
# validation, and the one step every product is made of

def _check_WD(W: torch.Tensor, D: torch.Tensor) -> int:
    """Validate ``W`` (tied or untied) and ``D`` (3-D or 4-D); return L."""
    checks.tensor("W", W, ndim=(3, 4))
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(f"W must be square in its last two dimensions, got shape {tuple(W.shape)}")
    if not isinstance(D, torch.Tensor):
        raise TypeError(f"D must be a torch.Tensor, got {type(D).__name__}")
    if D.ndim not in (3, 4) or D.shape[0] != W.shape[0] or D.shape[-1] != W.shape[-1]:
        raise ValueError(f"D must have shape (E={W.shape[0]}, L+1, m={W.shape[-1]}) or (E, n, L+1, m), "
                         f"got {tuple(D.shape)}")
    if D.device != W.device:
        raise ValueError(f"D is on {D.device} but W is on {W.device}")
    L = D.shape[-2] - 1
    if L < 1:
        raise ValueError(f"D must hold at least one step (L+1 >= 2 positions), got shape {tuple(D.shape)}")
    if W.ndim == 4 and W.shape[1] < L:
        raise ValueError(f"untied W has {W.shape[1]} steps but D has L={L}")
    return L


def _check_range(L: int, l1: int, l2: int) -> None:
    for name, v in (("l1", l1), ("l2", l2)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer step, got {v!r}")
    if not (1 <= l1 <= l2 <= L):
        raise ValueError(f"need 1 <= l1 <= l2 <= L={L}, got l1={l1}, l2={l2}")


def _W(W: torch.Tensor, l: int) -> torch.Tensor:
    """The matrix acting at step l (1-based)."""
    return W if W.ndim == 3 else W[:, l - 1]


def _as4(D: torch.Tensor, V: torch.Tensor | None, name: str = "V"):
    """Masks as (E, n, L+1, m) and rows as (E, n, k, m), plus a function that restores the caller's shape."""
    if D.ndim == 3:
        D4 = D.unsqueeze(1)
        if V is not None:
            checks.tensor(name, V, ndim=3)
            if V.shape[0] not in (1, D.shape[0]) or V.shape[-1] != D.shape[-1]:
                raise ValueError(f"{name} must have shape (E={D.shape[0]}, k, m={D.shape[-1]}), got {tuple(V.shape)}")
            V = V.expand(D.shape[0], -1, -1).unsqueeze(1)
        return D4, V, (lambda X: X.squeeze(1))
    if V is not None:
        checks.tensor(name, V, ndim=4)
        if V.shape[0] not in (1, D.shape[0]) or V.shape[1] != D.shape[1] or V.shape[-1] != D.shape[-1]:
            raise ValueError(f"{name} must have shape (E={D.shape[0]}, n={D.shape[1]}, k, m={D.shape[-1]}), "
                             f"got {tuple(V.shape)}")
        V = V.expand(D.shape[0], -1, -1, -1)
    return D, V, (lambda X: X)


def _step(X: torch.Tensor, Wl: torch.Tensor, Dl: torch.Tensor) -> torch.Tensor:
    """Rows ``X`` (E, n, k, m) mapped by ``D_l W_l``: ``(X W_l^T) * D_l`` (``Dl`` (E, n, m))."""
    E, n, k, m = X.shape
    return (torch.matmul(X.reshape(E, n * k, m), Wl.transpose(-1, -2)).reshape(E, n, k, m)) * Dl.unsqueeze(2)


def _step_T(X: torch.Tensor, Wl: torch.Tensor, Dl: torch.Tensor) -> torch.Tensor:
    """Rows ``X`` mapped by ``(D_l W_l)^T = W_l^T D_l``: ``(X * D_l) W_l``."""
    E, n, k, m = X.shape
    return torch.matmul((X * Dl.unsqueeze(2)).reshape(E, n * k, m), Wl).reshape(E, n, k, m)


# ----------------------------------------------------------------------------------------------------------
# applying products (Lemma B.11, Claim B.12)

def apply_product(W: torch.Tensor, D: torch.Tensor, V: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``P(l1, l2) v = D_{l2} W ... D_{l1} W v`` for every row v of ``V``."""
    L = _check_WD(W, D)
    _check_range(L, l1, l2)
    D4, X, back_shape = _as4(D, V)
    checks.same_placement("W", W, V=V)
    Dm = D4.to(W.dtype)
    for l in range(l1, l2 + 1):
        X = _step(X, _W(W, l), Dm[:, :, l])
    return back_shape(X)


def apply_product_T(W: torch.Tensor, D: torch.Tensor, U: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``P(l1, l2)^T u = W^T D_{l1} ... W^T D_{l2} u`` for every row u of ``U``."""
    L = _check_WD(W, D)
    _check_range(L, l1, l2)
    D4, X, back_shape = _as4(D, U, "U")
    checks.same_placement("W", W, U=U)
    Dm = D4.to(W.dtype)
    for l in range(l2, l1 - 1, -1):
        X = _step_T(X, _W(W, l), Dm[:, :, l])
    return back_shape(X)


def product_matrix(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The explicit m x m matrix ``P(l1, l2)``, (E, m, m) or (E, n, m, m). O(span m^3): for checks."""
    _check_WD(W, D)
    m = W.shape[-1]
    eye = torch.eye(m, dtype=W.dtype, device=W.device)
    basis = eye.expand(*D.shape[:-2], m, m)
    # rows of the identity are the basis vectors; apply_product gives (P e_j)^T as rows, i.e. P^T
    return apply_product(W, D, basis, l1, l2).transpose(-1, -2)


def fixed_vector_growth(W: torch.Tensor, D: torch.Tensor, z: torch.Tensor, l1: int = 1) -> torch.Tensor:
    """Claim B.12: ``||P(l1, l2) z|| / ||z||`` for every ``l2 = l1..L`` and every row z of ``z``.

    ``z``: a block of *fixed* vectors (chosen without looking at W, e.g. random). Returns the block's shape
    with the last dimension replaced by ``L - l1 + 1``: entry ``[..., j]`` is the ratio at ``l2 = l1 + j``.
    Claim B.12 bounds it by ``(1 + 1/L)^(l2 - l1 + 1)`` with probability ``1 - exp(-Omega(m / L^2))``.
    """
    L = _check_WD(W, D)
    _check_range(L, l1, l1)
    D4, X, back_shape = _as4(D, z, "z")
    nz = X.norm(dim=-1)
    if (nz == 0).any():
        raise ValueError("z has a zero row: the ratio ||P z|| / ||z|| is undefined")
    Dm = D4.to(W.dtype)
    out = []
    for l in range(l1, L + 1):
        X = _step(X, _W(W, l), Dm[:, :, l])
        out.append(X.norm(dim=-1) / nz)
    return back_shape(torch.stack(out, dim=-1))


# ----------------------------------------------------------------------------------------------------------
# spectral norms of products

def _pair_operator(W: torch.Tensor, D4: torch.Tensor, l1s: torch.Tensor, l2s: torch.Tensor):
    """``apply`` / ``apply_T`` for many products at once (problem j is ``P(l1s[j], l2s[j])``), for
    :func:`rnnbook.linalg.top_singular_values`. At step l every product with ``l1 <= l <= l2`` is multiplied
    by the same ``D_l W``, so one sweep over l = 1..L is one batched product per step whose rows are the
    vectors of all products active at that step. Batch members are (network, sample) pairs, (E*n)."""
    E, n, Lp1, m = D4.shape
    L = Lp1 - 1
    Dm = D4.to(W.dtype)
    dev = W.device

    def active(idx):
        a1, a2 = l1s[idx.cpu()], l2s[idx.cpu()]
        return [torch.nonzero((a1 <= l) & (a2 >= l)).flatten().to(dev) for l in range(L + 1)]

    last = {}  # apply and apply_T of one Lanczos step see the same problems: compute their rows once

    def rows_for(idx):
        if "idx" not in last or not torch.equal(last["idx"], idx):
            last["idx"], last["rows"] = idx.clone(), active(idx)
        return last["rows"]

    def apply(V, idx):
        X = V.reshape(E, n, -1, m).clone()
        for l, ix in enumerate(rows_for(idx)):
            if l >= 1 and ix.numel():
                X[:, :, ix] = _step(X.index_select(2, ix), _W(W, l), Dm[:, :, l])
        return X.reshape(E * n, -1, m)

    def apply_T(U, idx):
        Y = U.reshape(E, n, -1, m).clone()
        act = rows_for(idx)
        for l in range(L, 0, -1):
            ix = act[l]
            if ix.numel():
                Y[:, :, ix] = _step_T(Y.index_select(2, ix), _W(W, l), Dm[:, :, l])
        return Y.reshape(E * n, -1, m)

    return apply, apply_T


def all_product_norms(W: torch.Tensor, D: torch.Tensor, *, iters: int = 80, tol: float = 1e-4,
                      min_iters: int = 4, seed: int = 0, starts=None, return_iters: bool = False):
    """``||P(l1, l2)||_2`` for every pair ``1 <= l1 <= l2 <= L`` at once (Lemma B.11).

    Returns a float64 table indexed ``[..., l1-1, l2-1]`` -- (E, L, L) for 3-D masks, (E, n, L, L) for 4-D --
    with NaN where ``l1 > l2``. With ``return_iters=True`` also the number of Lanczos steps of each pair, (L, L).
    ``starts``: an optional collection of start steps l1 to restrict the work to (the other rows stay NaN);
    a Lanczos step costs the total span of the pairs still iterating. Method: Golub-Kahan-Lanczos for all
    pairs together (:func:`rnnbook.linalg.top_singular_values` with the shared sweep of the pairs); at
    m = 1024 the default ``tol`` gave relative errors ~1e-5 against explicit SVDs.
    """
    L = _check_WD(W, D)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    D4, _, _ = _as4(D, None)
    E, n, m = D4.shape[0], D4.shape[1], W.shape[-1]
    if starts is None:
        starts = range(1, L + 1)
    starts = list(starts)
    if not starts or any(isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= L for a in starts):
        raise ValueError(f"starts must be a non-empty collection of steps in [1, L={L}], got {starts}")
    starts = sorted(set(starts))
    l1s = torch.tensor([a for a in starts for _ in range(a, L + 1)])
    l2s = torch.tensor([b for a in starts for b in range(a, L + 1)])
    apply, apply_T = _pair_operator(W, D4, l1s, l2s)
    start = linalg.random_start((E * n, l1s.numel(), m), seed=seed, device=W.device, dtype=W.dtype)
    res, steps = linalg.top_singular_values(apply, apply_T, start, iters=iters, tol=tol, min_iters=min_iters,
                                            return_iters=True)
    out = torch.full((E * n, L, L), math.nan, dtype=torch.float64, device=W.device)
    out[:, l1s - 1, l2s - 1] = res
    out = out.reshape(E, n, L, L) if D.ndim == 4 else out
    if return_iters:
        it = torch.zeros(L, L, dtype=torch.long)
        it[l1s - 1, l2s - 1] = steps
        return out, it
    return out


def product_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, *, tol: float = 1e-4, iters: int = 80,
                 seed: int = 0) -> torch.Tensor:
    """``||P(l1, l2)||_2`` for every network (and sample, with 4-D masks), matrix-free: (E,) or (E, n)."""
    L = _check_WD(W, D)
    _check_range(L, l1, l2)
    D4, _, _ = _as4(D, None)
    E, n, m = D4.shape[0], D4.shape[1], W.shape[-1]
    apply, apply_T = _pair_operator(W, D4, torch.tensor([l1]), torch.tensor([l2]))
    start = linalg.random_start((E * n, 1, m), seed=seed, device=W.device, dtype=W.dtype)
    res = linalg.top_singular_values(apply, apply_T, start, iters=iters, tol=tol)[:, 0]
    return res.reshape(E, n) if D.ndim == 4 else res


def by_span(norms: torch.Tensor, reduce: str = "median") -> torch.Tensor:
    """Summarise a table of :func:`all_product_norms` ``[..., l1-1, l2-1]`` by span ``s = l2 - l1 + 1``.

    Returns ``[..., s-1]``: the median (``"median"``), maximum (``"max"``) or mean (``"mean"``) over the starting
    steps l1 of the norms of span s. NaN entries (pairs not computed) are ignored; a span with no computed
    pair gives NaN.
    """
    checks.tensor("norms", norms, ndim=(3, 4))
    checks.choice("reduce", reduce, ("median", "max", "mean"))
    L, L2 = norms.shape[-2:]
    if L != L2:
        raise ValueError(f"norms must be square in its last two dimensions (L, L), got {tuple(norms.shape)}")
    out = torch.empty(*norms.shape[:-1], dtype=norms.dtype, device=norms.device)
    for s in range(1, L + 1):
        diag = torch.diagonal(norms, offset=s - 1, dim1=-2, dim2=-1)  # [..., l1 - 1] for l1 = 1..L-s+1
        if reduce == "median":
            out[..., s - 1] = torch.nanquantile(diag, 0.5, dim=-1)
        elif reduce == "max":
            filled = torch.where(torch.isnan(diag), torch.full_like(diag, -math.inf), diag).amax(dim=-1)
            out[..., s - 1] = torch.where(torch.isinf(filled), torch.full_like(filled, math.nan), filled)
        else:
            out[..., s - 1] = torch.nanmean(diag, dim=-1)
    return out


# ----------------------------------------------------------------------------------------------------------
# sparse quantities (Lemma B.14, Corollaries B.15 and B.16); one sample per network (3-D masks)

def _one_sample(D: torch.Tensor, what: str) -> None:
    if D.ndim != 3:
        raise ValueError(f"{what} takes the masks of one sample per network, shape (E, L+1, m); got {tuple(D.shape)}")


def sandwich_matrix(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The explicit matrix ``W P(l1, l2) = W D_{l2} W ... D_{l1} W`` of Lemma B.14, (E, m, m). O(span m^3).

    For an untied W the leading factor is the matrix of step ``l2 + 1`` (the next step), if it exists.
    """
    _one_sample(D, "sandwich_matrix")
    P = product_matrix(W, D, l1, l2)
    Wn = W if W.ndim == 3 else W[:, min(l2, W.shape[1] - 1)]
    return torch.matmul(Wn, P)


def largest_entry(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """Corollary B.16: ``max_{j,k} |e_j^T W P(l1, l2) e_k|`` (the 1-sparse case), (E,); bounded by ``rho/sqrt(m)``."""
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
    """Lemma B.14 / Corollary B.15: ``||(W P(l1, l2))_{rows, cols}||_2``, (E,).

    ``rows``/``cols``: coordinate sets, (k,) shared by the ensemble or (E, k) per network; ``cols`` defaults to
    ``rows`` (the block ``S x S``). Matrix-free: the k basis vectors of ``cols`` are pushed through the
    product (span k matrix-vector products), then only the rows ``rows`` of W are used.
    """
    _one_sample(D, "sparse_block_norm")
    L = _check_WD(W, D)
    _check_range(L, l1, l2)
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
    """:func:`sparse_block_norm` on a uniformly random S x S block (|S| = k, one S per network), (E,)."""
    E, m = W.shape[0], W.shape[-1]
    k = checks.positive_int("k", k)
    if k > m:
        raise ValueError(f"k must be at most m={m}, got {k}")
    gen = rng.generator(None, seed)
    S = torch.argsort(torch.rand(E, m, generator=gen), dim=1)[:, :k]
    return sparse_block_norm(W, D, l1, l2, S)


def worst_sparse_block_norm(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, k: int, *, iters: int = 30,
                            M: torch.Tensor | None = None, return_support: bool = False):
    """A greedy worst case for Lemma B.14 / Corollary B.15: ``max ||M_{S1,S2}||_2`` over k-row, k-column blocks
    of ``M = W P(l1, l2)``, searched by truncated power iteration (the book's choice of search, not the
    paper's), (E,).

    Starting from the largest entry of M, alternate ``y <- top_k(M z)``, ``z <- top_k(M^T y)`` (keep the k
    largest coordinates in absolute value, normalise). The result is the exact norm of the block found, so it
    is a lower bound on the true k-sparse norm ``max |y^T M z|`` over k-sparse unit y, z. Forms M explicitly
    (O(span m^3)) unless it is passed as ``M`` (from :func:`sandwich_matrix`, to reuse it over several k).
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
# backward operators (Fact 2.5, Definition D.6; Lemma B.17, Corollaries B.18 and B.19)

def _check_B(B: torch.Tensor, W: torch.Tensor) -> None:
    checks.tensor("B", B, ndim=3)
    if B.shape[0] != W.shape[0] or B.shape[2] != W.shape[-1]:
        raise ValueError(f"B must have shape (E={W.shape[0]}, d, m={W.shape[-1]}), got {tuple(B.shape)}")
    checks.same_placement("W", W, B=B)


def _B_rows(B: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The d rows of B as a row block matching the masks: (E, d, m) or (E, n, d, m)."""
    return B if D.ndim == 3 else B.unsqueeze(1).expand(-1, D.shape[1], -1, -1)


def back(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l: int, a: int) -> torch.Tensor:
    """The backward operator ``Back_{l->a} = B D_a W D_{a-1} W ... D_{l+1} W`` of Fact 2.5 (``= B`` for
    ``a = l``), as a matrix: (E, d, m), or (E, n, d, m) with 4-D masks. Needs ``0 <= l <= a <= L``.
    Formed by pushing the d rows of B backwards: d (a - l) matrix-vector products."""
    L = _check_WD(W, D)
    _check_B(B, W)
    for name, v in (("l", l), ("a", a)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer step, got {v!r}")
    if not 0 <= l <= a <= L:
        raise ValueError(f"Back_(l->a) needs 0 <= l <= a <= L={L}, got l={l}, a={a}")
    rows = _B_rows(B, D)
    return rows.clone() if l == a else apply_product_T(W, D, rows, l + 1, a)


def backward_product(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``B P(l1, l2) = B D_{l2} W ... D_{l1} W`` (``= Back_{l1-1 -> l2}``), the operator of Lemma B.17."""
    _check_B(B, W)
    return apply_product_T(W, D, _B_rows(B, D), l1, l2)


def backward_column_norms(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """Corollary B.19 with the worst ``a``: ``||B P(l1, l2) e_k||`` for every k, (E, m) (or (E, n, m)).
    Its maximum over k is the maximum over 1-sparse unit y and unit a of ``|a^T B P(l1, l2) y|``."""
    return backward_product(B, W, D, l1, l2).norm(dim=-2)


def _unit_or_given(a: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    checks.tensor("a", a, ndim=(1, 2), finite=True)
    E, d = B.shape[0], B.shape[1]
    a2 = a.unsqueeze(0).expand(E, -1) if a.ndim == 1 else a
    if a2.shape != (E, d):
        raise ValueError(f"a must have shape ({d},) or ({E}, {d}), got {tuple(a.shape)}")
    checks.same_placement("B", B, a=a2)
    return a2


def backward_entries(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int,
                     a: torch.Tensor) -> torch.Tensor:
    """Lemma B.17 / Corollary B.19 for a fixed ``a``: ``a^T B P(l1, l2) e_k`` for every k, (E, m) (or (E, n, m)).

    ``a``: (d,) shared or (E, d), used as given (normalise it for the lemma's ``||a|| = 1``). Costs span
    matrix-vector products (``a^T B`` is pushed backwards as one row)."""
    _check_B(B, W)
    a2 = _unit_or_given(a, B)
    row = torch.matmul(a2.unsqueeze(1), B)                               # (E, 1, m)
    if D.ndim == 4:
        row = row.unsqueeze(1).expand(-1, D.shape[1], -1, -1)
    return apply_product_T(W, D, row, l1, l2).squeeze(-2)


def backward_norm(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The dense ``||B P(l1, l2)||_2``: about ``sqrt(m/d)``, since B has variance 1/d. (E,) or (E, n)."""
    return torch.linalg.matrix_norm(backward_product(B, W, D, l1, l2), ord=2)


def backward_rows(a: torch.Tensor, B: torch.Tensor, W: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``r(l1, l2) = a^T B P(l1, l2)`` for all ``1 <= l1 <= l2 <= L`` (the rows of Lemma C.9): indexed
    ``[..., l1-1, l2-1, :]`` -- (E, L, L, m) for 3-D masks, (E, n, L, L, m) for 4-D -- zero where ``l1 > l2``.

    ``a``: (d,) or (E, d), used as given. The sweeps of all l2 advance together: at step l every row with
    ``l2 >= l`` is multiplied by the same ``D_l W``, so W is read L times in all (one batched product per
    step), not L(L+1)/2 times -- these products are memory-bound."""
    L = _check_WD(W, D)
    _check_B(B, W)
    a2 = _unit_or_given(a, B)
    D4, _, back_shape = _as4(D, None)
    E, n, m = D4.shape[0], D4.shape[1], W.shape[-1]
    Dm = D4.to(W.dtype)
    start = torch.bmm(a2.unsqueeze(1), B).unsqueeze(1).expand(E, n, 1, m)  # a^T B, for every sample
    out = torch.zeros(E, n, L, L, m, device=W.device, dtype=W.dtype)
    X = None  # (E, n, k, m): the running rows of the sweeps l2 = L, L-1, ..., l (k = L - l + 1)
    for l in range(L, 0, -1):
        X = start if X is None else torch.cat([X, start], dim=2)
        X = _step_T(X, _W(W, l), Dm[:, :, l])
        out[:, :, l - 1, l - 1:] = X.flip(2)  # sweep j (l2 = L - j) now holds r(l, l2)
    return back_shape(out)


# ----------------------------------------------------------------------------------------------------------
# a heuristic reference (the book's, not the paper's)

def free_product_edge(s: int, first_ratio: float = 2.0) -> float:
    """Large-m limit of the top singular value of ``s`` *independent* Gaussian factors (free probability).

    The book's heuristic for ``||P(l1, l2)||_2`` with span s, not a result of the paper: treat each masked
    factor as an independent Gaussian matrix between the ~m/2 active coordinates (variance 2/m, i.e.
    1 / (m/2)), except the first, which sees all m inputs (aspect ratio ``first_ratio`` = 2). Multiplying the
    S-transforms, ``chi(z) = z / ((1+z)^s (r+z))`` and the squared edge is ``1 / max_z chi(z)``; the maximiser
    solves ``s z^2 + r (s-1) z - r = 0``. ``first_ratio=1`` gives the Fuss-Catalan edge
    ``sqrt((s+1)^(s+1) / s^s)`` of s square Ginibre matrices; ``s = 1, r = 2`` gives ``1 + sqrt(2)`` (a
    half-masked square Gaussian with variance 2/m).
    """
    s = checks.positive_int("s", s)
    r = checks.positive_real("first_ratio", first_ratio)
    z = (-r * (s - 1) + math.sqrt(r * r * (s - 1) ** 2 + 4 * s * r)) / (2 * s)
    return math.sqrt((1 + z) ** s * (r + z) / z)
