"""Products of masked recurrent matrices, the objects of Lemma B.11 to Corollary B.19 (arXiv v4).

For one sample ``i`` the paper writes ``prod_{l=l2}^{l1} D_{i,l} W = D_{i,l2} W D_{i,l2-1} W ... D_{i,l1} W``
(``l2 >= l1``; the rightmost factor acts first) and the backward operators
``Back_{i,l1->l2} = B D_{i,l2} W ... D_{i,l1+1} W`` (``Back_{i,l->l} = B``).

Nothing here forms an m x m product unless asked (:func:`product_matrix`, for checks and small m): the
products are applied to blocks of vectors, one masked matrix-vector product per step, batched over the
ensemble. Vectors are stored as rows: a block ``V`` of shape ``(E, k, m)`` holds k vectors per network.

Masks are passed per network as ``D`` of shape ``(E, L+1, m)`` (position l is ``D_l``), e.g.
``fw.D[:, i]`` for sample ``i`` of a forward pass ``fw``.
"""
from __future__ import annotations

import torch

from . import checks


def _check(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> None:
    checks.tensor("W", W, ndim=3)
    if D.ndim != 3 or D.shape[0] != W.shape[0] or D.shape[2] != W.shape[1]:
        raise ValueError(f"D must have shape (E={W.shape[0]}, L+1, m={W.shape[1]}), got {tuple(D.shape)}")
    if D.device != W.device:
        raise ValueError(f"D is on {D.device} but W is on {W.device}")
    L = D.shape[1] - 1
    if not (1 <= l1 <= l2 <= L):
        raise ValueError(f"need 1 <= l1 <= l2 <= L={L}, got l1={l1}, l2={l2}")


def apply_product(W: torch.Tensor, D: torch.Tensor, V: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``(D_{l2} W ... D_{l1} W) v`` for every row v of ``V`` (E, k, m)."""
    _check(W, D, l1, l2)
    Dm = D.to(W.dtype)
    X = V
    for l in range(l1, l2 + 1):
        X = torch.matmul(X, W.transpose(1, 2)) * Dm[:, l].unsqueeze(1)
    return X


def apply_product_T(W: torch.Tensor, D: torch.Tensor, U: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """``(D_{l2} W ... D_{l1} W)^T u = W^T D_{l1} ... W^T D_{l2} u`` for every row u of ``U`` (E, k, m)."""
    _check(W, D, l1, l2)
    Dm = D.to(W.dtype)
    X = U
    for l in range(l2, l1 - 1, -1):
        X = torch.matmul(X * Dm[:, l].unsqueeze(1), W)
    return X


def product_matrix(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The explicit m x m matrix ``D_{l2} W ... D_{l1} W``, shape (E, m, m). O(span * m^3): checks only."""
    _check(W, D, l1, l2)
    E, m = W.shape[0], W.shape[1]
    eye = torch.eye(m, dtype=W.dtype, device=W.device).expand(E, m, m)
    # rows of the identity are the basis vectors; apply_product gives (P e_j)^T as rows -> P^T
    return apply_product(W, D, eye, l1, l2).transpose(1, 2)


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
                         (W.shape[0], W.shape[1]), device=W.device, dtype=W.dtype, **kw)


def backward_rows(B: torch.Tensor, W: torch.Tensor, D: torch.Tensor, l1: int, l2: int) -> torch.Tensor:
    """The backward operator ``Back_{l1->l2} = B D_{l2} W ... D_{l1+1} W`` as a (E, d, m) matrix (Fact 2.5).

    Formed by pushing the d rows of B backwards, so it costs d * span matrix-vector products.
    """
    checks.tensor("B", B, ndim=3)
    if l1 == l2:
        _check(W, D, max(l1, 1), max(l2, 1))
        return B.clone()
    return apply_product_T(W, D, B, l1 + 1, l2)
