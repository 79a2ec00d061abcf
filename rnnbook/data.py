"""Training data that meet the paper's assumptions (arXiv v4, Section 2.1 and Assumption 2.1).

* every token has ``||x_{i,l}|| <= 1``;
* the first token has ``||x_{i,1}|| = 1`` and last coordinate exactly ``1/sqrt(2)`` (footnote 5: with
  A ~ N(0, 2/m) that coordinate acts as a first-step bias ~ N(0, 1/m));
* the first tokens are delta-separable: ``||x_{i,1} - x_{j,1}|| >= delta`` for ``i != j``, ``delta in (0, 1]``;
* labels ``y*_{i,l}`` have O(1) entries (the paper states no bound; its proof needs ``O(rho L)``).

Shapes: ``x`` is ``(n, L, d_x)`` and ``y`` is ``(n, L, d)``; position ``l-1`` holds step ``l``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import checks, rng
from .config import resolve_device, resolve_dtype

FIRST_TOKEN_LAST = 1.0 / math.sqrt(2.0)


@dataclass(frozen=True)
class SequenceData:
    """Inputs ``x`` (n, L, d_x), labels ``y`` (n, L, d), and the separation ``delta`` they were built for."""

    x: torch.Tensor
    y: torch.Tensor
    delta: float

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def L(self) -> int:
        return self.x.shape[1]

    @property
    def d_x(self) -> int:
        return self.x.shape[2]

    @property
    def d(self) -> int:
        return self.y.shape[2]

    def to(self, device=None, dtype=None) -> "SequenceData":
        return SequenceData(self.x.to(device=device, dtype=dtype), self.y.to(device=device, dtype=dtype), self.delta)


def _unit_rows(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=-1, keepdim=True)


def _first_tokens(directions: torch.Tensor) -> torch.Tensor:
    """Map unit vectors of R^{d_x-1} to first tokens (u / sqrt 2, 1 / sqrt 2): unit norm, last coordinate 1/sqrt 2.

    Distances scale by 1/sqrt(2): ||x_i - x_j|| = ||u_i - u_j|| / sqrt(2) <= sqrt(2).
    """
    last = torch.full((*directions.shape[:-1], 1), FIRST_TOKEN_LAST, dtype=directions.dtype, device=directions.device)
    return torch.cat([directions * FIRST_TOKEN_LAST, last], dim=-1)


def _later_tokens(shape, token_norm: float, gen, device, dtype) -> torch.Tensor:
    return token_norm * _unit_rows(rng.randn(shape, gen=gen, std=1.0, device=device, dtype=dtype))


def min_first_token_distance(x: torch.Tensor) -> float:
    """``min_{i != j} ||x_{i,1} - x_{j,1}||`` (inf for a single sequence)."""
    first = x[:, 0].to(torch.float64)
    if first.shape[0] < 2:
        return math.inf
    dist = torch.cdist(first, first)
    dist.fill_diagonal_(math.inf)
    return float(dist.min())


def make_data(n: int, L: int, d_x: int, d: int, delta: float, *, token_norm: float = 1.0,
              seed: int | None = None, generator: torch.Generator | None = None, device=None, dtype=None,
              max_tries: int = 100) -> SequenceData:
    """Random data meeting Section 2.1 and Assumption 2.1 with separation at least ``delta``.

    First tokens: random directions mapped by :func:`_first_tokens`, redrawn until every pair is at least
    ``delta`` apart. Later tokens: random directions of norm ``token_norm`` (<= 1). Labels: i.i.d. N(0, 1).
    Raises ``ValueError`` if ``delta`` is too large for ``n`` points in dimension ``d_x`` to be found.
    """
    n = checks.positive_int("n", n)
    L = checks.positive_int("L", L)
    d_x = checks.int_at_least("d_x", d_x, 2)
    d = checks.positive_int("d", d)
    delta = checks.real_in("delta", delta, 0.0, 1.0, low_open=True)
    token_norm = checks.real_in("token_norm", token_norm, 0.0, 1.0, low_open=True)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    gen = rng.generator(generator, seed)
    dirs = _unit_rows(rng.randn((n, d_x - 1), gen=gen, std=1.0, device="cpu", dtype=torch.float64))
    for _ in range(max_tries):
        close = torch.cdist(_first_tokens(dirs), _first_tokens(dirs)).fill_diagonal_(math.inf) < delta
        if not close.any():
            break
        # redraw the later member of each too-close pair, keep the rest
        redo = torch.unique(close.triu().nonzero()[:, 1])
        dirs[redo] = _unit_rows(rng.randn((redo.numel(), d_x - 1), gen=gen, std=1.0, device="cpu", dtype=torch.float64))
    else:
        if n > 2 * (d_x - 1):
            raise ValueError(f"could not place n={n} first tokens at pairwise distance >= delta={delta} in d_x={d_x} "
                             f"dimensions after {max_tries} tries; lower delta or n, or raise d_x")
        # Random rotation of the cross-polytope +-e_k: pairwise distances 1 or sqrt(2), so any delta <= 1 holds.
        q, _ = torch.linalg.qr(rng.randn((d_x - 1, d_x - 1), gen=gen, std=1.0, device="cpu", dtype=torch.float64))
        dirs = torch.cat([q.T, -q.T])[:n]
    x = torch.empty(n, L, d_x, dtype=torch.float64)
    x[:, 0] = _first_tokens(dirs)
    if L > 1:
        x[:, 1:] = _later_tokens((n, L - 1, d_x), token_norm, gen, "cpu", torch.float64)
    y = rng.randn((n, L, d), gen=gen, std=1.0, device="cpu", dtype=torch.float64)
    return SequenceData(x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype), delta)


def hard_pair(L: int, d_x: int, d: int, delta: float, *, token_norm: float = 1.0, seed: int | None = None,
              generator: torch.Generator | None = None, device=None, dtype=None) -> SequenceData:
    """The hardest case of Assumption 2.1: two sequences whose first tokens are exactly ``delta`` apart and
    whose later tokens are identical, so everything that tells them apart enters at step 1."""
    L = checks.positive_int("L", L)
    d_x = checks.int_at_least("d_x", d_x, 3)
    d = checks.positive_int("d", d)
    delta = checks.real_in("delta", delta, 0.0, 1.0, low_open=True)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    gen = rng.generator(generator, seed)
    raw = rng.randn((2, d_x - 1), gen=gen, std=1.0, device="cpu", dtype=torch.float64)
    u = _unit_rows(raw[0])
    v = raw[1] - (raw[1] @ u) * u
    v = v / v.norm()
    # Directions at chord sqrt(2)*delta on the unit sphere map to first tokens exactly delta apart.
    theta = 2.0 * math.asin(min(1.0, math.sqrt(2.0) * delta / 2.0))
    dirs = torch.stack([u, math.cos(theta) * u + math.sin(theta) * v])
    x = torch.empty(2, L, d_x, dtype=torch.float64)
    x[:, 0] = _first_tokens(dirs)
    if L > 1:
        x[:, 1:] = _later_tokens((1, L - 1, d_x), token_norm, gen, "cpu", torch.float64)
    y = rng.randn((2, L, d), gen=gen, std=1.0, device="cpu", dtype=torch.float64)
    return SequenceData(x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype), delta)


@dataclass
class AssumptionReport:
    """Which of the paper's data assumptions hold; ``violations`` lists each failure in words."""

    violations: list[str] = field(default_factory=list)
    min_distance: float = math.inf

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        if self.ok:
            return f"all assumptions hold (min first-token distance {self.min_distance:.4g})"
        return "assumptions violated:\n" + "\n".join(f"  - {v}" for v in self.violations)


def check_assumptions(x: torch.Tensor, delta: float, *, tol: float = 1e-5) -> AssumptionReport:
    """Report every way ``x`` (n, L, d_x) breaks Section 2.1 / Assumption 2.1 for separation ``delta``.
    Sequences and steps are numbered from 1 in the messages, as in the paper."""
    checks.tensor("x", x, ndim=3)
    delta = checks.real_in("delta", delta, 0.0, 1.0, low_open=True)
    rep = AssumptionReport()
    norms = x.to(torch.float64).norm(dim=-1)
    over = (norms > 1 + tol).nonzero()
    if over.numel():
        i, l = over[0].tolist()
        rep.violations.append(f"||x_(i,l)|| <= 1 fails at {over.shape[0]} tokens, e.g. i={i + 1}, l={l + 1}: norm {norms[i, l]:.6g}")
    first = norms[:, 0]
    off = ((first - 1).abs() > tol).nonzero().flatten()
    if off.numel():
        rep.violations.append(f"||x_(i,1)|| = 1 fails for {off.numel()} sequences, e.g. i={off[0].item() + 1}: norm {first[off[0]]:.6g}")
    last = x[:, 0, -1].to(torch.float64)
    off = ((last - FIRST_TOKEN_LAST).abs() > tol).nonzero().flatten()
    if off.numel():
        rep.violations.append(f"last coordinate of x_(i,1) = 1/sqrt(2) fails for {off.numel()} sequences, "
                              f"e.g. i={off[0].item() + 1}: {last[off[0]]:.6g}")
    rep.min_distance = min_first_token_distance(x)
    if rep.min_distance < delta - tol:
        rep.violations.append(f"delta-separability fails: min_(i!=j) ||x_(i,1) - x_(j,1)|| = {rep.min_distance:.6g} < delta = {delta}")
    return rep


def require_assumptions(x: torch.Tensor, delta: float, *, tol: float = 1e-5) -> None:
    """Raise ``ValueError`` listing every violated assumption (see :func:`check_assumptions`)."""
    rep = check_assumptions(x, delta, tol=tol)
    if not rep.ok:
        raise ValueError(str(rep))
