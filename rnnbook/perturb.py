"""Stability after an adversarial perturbation: Appendix C of arXiv 1810.12065 v4.

The setting of Appendix C (Definition C.1): ``W~`` is the random initialisation (``params.W``), the
network runs with ``W = W~ + W'`` for a perturbation ``W'`` of spectral norm at most ``tau0 / sqrt(m)``,
and the perturbation quantities are

    g' = g - g~,   h' = h - h~,   D' = D - D~   (entries in {-1, 0, 1}: the ReLU sign flips),

where un-tilded quantities belong to the perturbed network. ``W'`` may depend on ``W~, A, B`` (it is
"adversarial"); Lemma C.2 (forward), C.7 (intermediate products), C.9 (backward operators) and C.10 hold for
all such ``W'`` at once; Lemma C.11 for a fixed ``W' = y z^T`` (``y`` N-sparse) that does not look at ``B``.

A network and its perturbation on given inputs is one object, :class:`Perturbed` (made by
:func:`perturbed`), and every measurement takes it: :func:`perturbation_stats` (Lemma C.2),
:func:`product_norms` (C.7), :func:`backward_change` (C.9 and C.11), :func:`forward_coordinate_change` (C.10).
Products and backward rows follow the conventions of :mod:`rnnbook.products`.

The perturbations, each with ``||W'||_2 = tau0 / sqrt(m)`` exactly (to the precision of
:func:`rnnbook.linalg.matrix_norm`):

* :func:`random_direction` -- a Gaussian matrix rescaled;
* :func:`adversarial_rank_one` -- the book's own construction (not the paper's): ``W' = y hhat^T`` that
  spends the whole budget on flipping as many ReLU signs as possible at one sample and step;
* :func:`sparse_rank_one`, :func:`aimed_sparse_rank_one` -- the special rank-one perturbations of Lemmas
  C.10/C.11 (entries ``+-tau0/sqrt(m)`` on N coordinates), random or aimed at the N smallest pre-activations;
* the displacement of a gradient-descent run, rescaled, is :func:`rnnbook.training.gd_direction` (it needs
  training, which sits above this module).

Everything is batched over the ensemble dimension ``E`` and runs on the device of ``params``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks, linalg, products, rng
from .model import Params, Forward, check_forward, forward

KINDS = ("random", "adversarial", "gd")
#: How the chapters name each kind in legends and prose (the adversarial construction is the book's own).
KIND_LABELS = {"random": "random Gaussian direction", "adversarial": "adversarial rank one (book's)",
               "gd": "GD displacement, rescaled"}


# ----------------------------------------------------------------------------------------------------------
# validation helpers

def _check_params(params: Params) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    if params.activation != "relu" or not params.tied:
        raise ValueError("Appendix C concerns the paper's model: params must be a weight-tied ReLU network")


def _check_Wp(params: Params, Wp: torch.Tensor) -> torch.Tensor:
    checks.tensor("Wp", Wp, shape=(params.ensemble, params.m, params.m))
    checks.same_placement("params", params.A, Wp=Wp)
    return Wp


def _check_fw(name: str, fw, params: Params) -> Forward:
    return check_forward(fw, params, name)


def _unit_rows(name: str, a: torch.Tensor, E: int, d: int, ref: torch.Tensor) -> torch.Tensor:
    """``a`` of shape (d,) or (E, d), non-zero rows, normalised to unit norm; returns (E, d)."""
    checks.tensor(name, a, ndim=(1, 2), finite=True)
    checks.same_placement("params", ref, **{name: a})
    if a.shape[-1] != d or (a.ndim == 2 and a.shape[0] != E):
        raise ValueError(f"{name} must have shape ({d},) or ({E}, {d}), got {tuple(a.shape)}")
    a2 = a.expand(E, d) if a.ndim == 1 else a
    norms = a2.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has a zero row; it must hold non-zero vectors")
    return a2 / norms


# ----------------------------------------------------------------------------------------------------------
# rescaling to the radius of Appendix C

def rescale(Wp: torch.Tensor, tau0: float, **kw) -> torch.Tensor:
    """``Wp * tau0 / (sqrt(m) ||Wp||_2)``: the same direction with spectral norm exactly ``tau0 / sqrt(m)``
    (the radius of Appendix C). ``Wp`` is (E, m, m); every matrix must be non-zero."""
    checks.tensor("Wp", Wp, ndim=3)
    tau0 = checks.positive_real("tau0", tau0)
    if Wp.shape[1] != Wp.shape[2]:
        raise ValueError(f"Wp must hold square m x m matrices, got shape {tuple(Wp.shape)}")
    m = Wp.shape[1]
    s = linalg.matrix_norm(Wp, **kw).to(Wp.dtype)
    if (s == 0).any():
        raise ValueError("Wp has an all-zero matrix: it has no direction to rescale")
    return Wp * (tau0 / math.sqrt(m) / s).view(-1, 1, 1)


# ----------------------------------------------------------------------------------------------------------
# the three kinds of W'

def random_direction(params: Params, tau0: float, *, seed: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """A random perturbation: an (E, m, m) Gaussian matrix rescaled to ``||W'||_2 = tau0 / sqrt(m)``.

    It does not look at the network, so it is the *least* adversarial ``W'`` of the book's three kinds.
    """
    _check_params(params)
    tau0 = checks.positive_real("tau0", tau0)
    gen = rng.generator(generator, seed)
    G = rng.randn((params.ensemble, params.m, params.m), gen=gen, std=1.0, device=params.device,
                     dtype=params.dtype)
    return rescale(G, tau0)


@dataclass
class RankOne:
    """``W' = y z^T`` with its factors: ``y`` (E, m), unit ``z`` (E, m); ``planned`` is the number of
    coordinates the construction aimed at (E,) (for :func:`sparse_rank_one`, the sparsity N)."""

    Wp: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    planned: torch.Tensor


def adversarial_rank_one(params: Params, x: torch.Tensor, tau0: float, *, sample: int = 0, step: int = 1,
                         margin: float = 0.05) -> RankOne:
    """The book's adversarial perturbation (not the paper's): a rank-one ``W' = y hhat^T`` that flips as many
    ReLU signs of ``g_{i, step+1}`` as the budget ``||W'||_2 = ||y|| = tau0 / sqrt(m)`` allows.

    With ``hhat = h~_{i,step} / ||h~_{i,step}||`` the pre-activation at step ``step + 1`` moves by
    ``W' h~_{i,step} = ||h~_{i,step}|| y``. Coordinate k flips once ``y_k`` has the sign opposite to
    ``g~_{i,step+1,k}`` and ``|y_k| > |g~_k| / ||h~||``. Flipping the coordinates of smallest ``|g~_k|``
    first (each with a relative ``margin``) is the greedy optimum for a fixed l2 budget: the construction
    takes the longest such prefix whose cost fits, then scales ``y`` up to the exact budget. At
    ``step = 1`` (the default) ``h_{i,1} = phi(A x_{i,1})`` does not depend on W, so every planned flip
    happens exactly; at later steps ``h_{i,step}`` itself moves and the plan is first order only.

    Heuristic count: ``g~_k`` has density ~ sqrt(m) near 0, so the j-th smallest ``|g~_k|`` is ~ j / m^{3/2};
    flipping the first N costs ~ N^{3/2} / m^{3/2} in l2 norm, and the budget ~ tau0 / sqrt(m) buys
    N ~ tau0^{2/3} m^{2/3} flips: the exponent of Lemma C.2(b).
    """
    _check_params(params)
    tau0 = checks.positive_real("tau0", tau0)
    margin = checks.real_in("margin", margin, 0.0, math.inf, high_open=True)
    fw = forward(params, x)
    n, L = fw.n, fw.L
    sample = checks.int_at_least("sample", sample, 0)
    if sample >= n:
        raise ValueError(f"sample must be in [0, {n}), got {sample}")
    step = checks.int_at_least("step", step, 1)
    if step >= L:
        raise ValueError(f"step must be in [1, L-1] = [1, {L - 1}] (it targets g at step+1), got {step}")
    h = fw.h[:, sample, step]  # (E, m)
    g = fw.g[:, sample, step + 1]
    hn = h.norm(dim=-1, keepdim=True)
    if (hn == 0).any():
        raise ValueError(f"h at sample {sample}, step {step} is zero in some network: no direction to aim along")
    hhat = h / hn
    budget = tau0 / math.sqrt(params.m)
    need = g.abs() * (1.0 + margin) / hn  # |y_k| needed to flip coordinate k
    order = need.argsort(dim=-1)
    cost = need.gather(-1, order).square().cumsum(dim=-1)
    count = (cost <= budget ** 2).sum(dim=-1).clamp_min(1)  # (E,)
    ranks = torch.arange(params.m, device=params.device).expand_as(order)
    chosen = torch.zeros_like(g, dtype=torch.bool).scatter(-1, order, ranks < count.unsqueeze(-1))
    sign = torch.where(g >= 0, -1.0, 1.0).to(g.dtype)  # D = 1[g >= 0]: push g >= 0 below 0 and g < 0 above
    y = torch.where(chosen, sign * need, torch.zeros_like(g))
    if (y.norm(dim=-1) == 0).any():  # only when the smallest |g~| is exactly 0: aim a unit push at it
        y = torch.where(chosen & (y == 0), sign, y)
    y = y * (budget / y.norm(dim=-1, keepdim=True))
    return RankOne(Wp=y.unsqueeze(-1) * hhat.unsqueeze(-2), y=y, z=hhat, planned=count)


def sparse_rank_one(z: torch.Tensor, N: int, tau0: float, *, support: torch.Tensor | None = None,
                    signs: torch.Tensor | None = None, seed: int | None = None,
                    generator: torch.Generator | None = None) -> RankOne:
    """The special rank-one perturbation of Lemmas C.10/C.11: ``W' = y z^T`` with ``||z|| = 1`` and ``y``
    N-sparse with entries ``+-tau0 / sqrt(m)`` (so ``||y||_inf = tau0 / sqrt(m)`` and
    ``||W'||_2 = sqrt(N) tau0 / sqrt(m)``).

    ``z``: (E, m), normalised here (rows must be non-zero). ``support``: (E, N) distinct coordinates, or
    ``None`` for a uniformly random support per network. ``signs``: (E, N) of +-1, or ``None`` for random
    signs. A seed or generator is needed whenever something is drawn.
    """
    checks.tensor("z", z, ndim=2, finite=True)
    E, m = z.shape
    N = checks.positive_int("N", N)
    if N > m:
        raise ValueError(f"N must be at most m={m} (y is N-sparse in R^m), got {N}")
    tau0 = checks.positive_real("tau0", tau0)
    zn = z.norm(dim=-1, keepdim=True)
    if (zn == 0).any():
        raise ValueError("z has a zero row; it must hold non-zero vectors")
    zhat = z / zn
    gen = None
    if support is None or signs is None:
        gen = rng.generator(generator, seed)
    if support is None:
        support = torch.rand(E, m, generator=gen).argsort(dim=-1)[:, :N].to(z.device)
    else:
        if not isinstance(support, torch.Tensor) or support.dtype not in (torch.int64, torch.int32):
            raise TypeError("support must be an integer tensor of coordinates")
        if support.shape != (E, N):
            raise ValueError(f"support must have shape ({E}, {N}), got {tuple(support.shape)}")
        if (support < 0).any() or (support >= m).any():
            raise ValueError(f"support coordinates must lie in [0, {m})")
        if (support.sort(dim=-1).values.diff(dim=-1) == 0).any():
            raise ValueError("support coordinates must be distinct within each network")
        support = support.to(device=z.device, dtype=torch.int64)
    if signs is None:
        signs = torch.where(torch.rand(E, N, generator=gen) < 0.5, -1.0, 1.0)
    else:
        checks.tensor("signs", signs, shape=(E, N))
        if not ((signs == 1) | (signs == -1)).all():
            raise ValueError("signs must hold only +1 and -1")
    vals = signs.to(device=z.device, dtype=z.dtype) * (tau0 / math.sqrt(m))
    y = torch.zeros_like(z).scatter(-1, support, vals)
    planned = torch.full((E,), N, device=z.device)
    return RankOne(Wp=y.unsqueeze(-1) * zhat.unsqueeze(-2), y=y, z=zhat, planned=planned)



def aimed_sparse_rank_one(params: Params, fw_tilde: Forward, N: int, tau0: float, *, sample: int = 0,
                          step: int = 1) -> RankOne:
    """A special rank-one perturbation of Lemmas C.10/C.11 aimed at sign flips (the book's choice of ``y``,
    the form is the paper's): ``W' = y z^T`` with ``z = h~_{i,step} / ||h~_{i,step}||`` (at ``step = 1`` this is
    the fresh direction ``v_{i,1}``, nothing precedes it) and ``y`` on the N coordinates of smallest
    ``|g~_{i,step+1,k}|``, each ``+-tau0/sqrt(m)`` with the sign that pushes ``g~_k`` across zero.

    It is built from ``W~`` and ``A`` only (through the forward pass), never from ``B``, as Lemma C.11 requires."""
    _check_params(params)
    _check_fw("fw_tilde", fw_tilde, params)
    sample = checks.int_at_least("sample", sample, 0)
    if sample >= fw_tilde.n:
        raise ValueError(f"sample must be in [0, {fw_tilde.n}), got {sample}")
    step = checks.int_at_least("step", step, 1)
    if step >= fw_tilde.L:
        raise ValueError(f"step must be in [1, L-1] = [1, {fw_tilde.L - 1}] (it aims at g at step+1), got {step}")
    z = fw_tilde.h[:, sample, step]
    g = fw_tilde.g[:, sample, step + 1]
    N = checks.positive_int("N", N)
    if N > params.m:
        raise ValueError(f"N must be at most m={params.m}, got {N}")
    support = g.abs().argsort(dim=-1)[:, :N]
    signs = torch.where(g.gather(-1, support) >= 0, -1.0, 1.0).to(g.dtype)
    return sparse_rank_one(z, N, tau0, support=support, signs=signs)


def unit_vectors(E: int, d: int, *, seed: int, device=None, dtype=None) -> torch.Tensor:
    """``E`` fixed random unit vectors ``a`` in R^d (E, d), one per network: the ``a`` of Lemmas C.9 and C.11.

    Give it a seed of its own (``rb.seed(chapter, "a", m)``), never the networks' seed: with one seed for both,
    torch's batched draws make ``a`` equal to the first entries of network 0's W once E d >= 16."""
    E = checks.positive_int("E", E)
    d = checks.positive_int("d", d)
    gen = rng.generator(None, seed)
    a = rng.randn((E, d), gen=gen, std=1.0, device=device, dtype=dtype if dtype is not None else torch.float64)
    return a / a.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# a network and its perturbation

@dataclass
class Perturbed:
    """The network at ``W~`` (``params``) and at ``W = W~ + W'`` on inputs ``x``: both forward passes.

    Make it with :func:`perturbed`; every measurement of this module takes it."""

    params: Params
    Wp: torch.Tensor
    x: torch.Tensor
    fw_tilde: Forward
    fw: Forward

    @property
    def W_tilde(self) -> torch.Tensor:
        return self.params.W

    @property
    def W(self) -> torch.Tensor:
        """The perturbed recurrent matrix ``W~ + W'``."""
        return self.params.W + self.Wp

    @property
    def D_prime(self) -> torch.Tensor:
        """``D' = D - D~`` (E, n, L+1, m), entries in {-1, 0, 1} (int8): the sign flips; position 0 is zero."""
        return sign_flips(self.fw_tilde, self.fw)


def perturbed(params: Params, Wp: torch.Tensor, x: torch.Tensor, *, fw_tilde: Forward | None = None) -> Perturbed:
    """Run the network with ``W~ = params.W`` (unless ``fw_tilde``, its forward pass on ``x``, is given) and
    with ``W~ + W'`` on ``x``."""
    _check_params(params)
    _check_Wp(params, Wp)
    fw_t = forward(params, x) if fw_tilde is None else _check_fw("fw_tilde", fw_tilde, params)
    if fw_t.L != x.shape[-2]:
        raise ValueError(f"fw_tilde has L={fw_t.L} steps but x has {x.shape[-2]}")
    return Perturbed(params=params, Wp=Wp, x=x, fw_tilde=fw_t, fw=forward(params.with_W(params.W + Wp), x))


def _check_pert(pert) -> Perturbed:
    if not isinstance(pert, Perturbed):
        raise TypeError(f"pert must be an rnnbook.perturb.Perturbed (from perturb.perturbed), got {type(pert).__name__}")
    return pert


def sign_flips(fw_tilde: Forward, fw: Forward) -> torch.Tensor:
    """``D' = D - D~`` (E, n, L+1, m) with entries in {-1, 0, 1} (as int8); position 0 is zero."""
    return fw.D.to(torch.int8) - fw_tilde.D.to(torch.int8)


# ----------------------------------------------------------------------------------------------------------
# Lemma C.2: forward perturbation quantities

@dataclass
class PerturbationStats:
    """The quantities of Definition C.1 for every network, sample and step ``l = 1..L``: arrays (E, n, L).

    ``h_norm = ||h'_{i,l}||``, ``g_norm = ||g'_{i,l}||``, ``flips = ||D'_{i,l}||_0`` (sign flips),
    ``Dg_norm = ||D'_{i,l} g_{i,l}||`` (g of the perturbed network).
    """

    h_norm: torch.Tensor
    g_norm: torch.Tensor
    flips: torch.Tensor
    Dg_norm: torch.Tensor

    def max(self, field: str) -> torch.Tensor:
        """Max over samples and steps of one field: (E,), as in Lemma C.2's "for all i, l"."""
        checks.choice("field", field, ("h_norm", "g_norm", "flips", "Dg_norm"))
        return getattr(self, field).flatten(1).amax(dim=1)


def perturbation_stats(pert: Perturbed) -> PerturbationStats:
    """The quantities of Lemma C.2 for a network and its perturbation."""
    _check_pert(pert)
    fw_t, fw = pert.fw_tilde, pert.fw
    dh = (fw.h - fw_t.h)[:, :, 1:]
    dg = (fw.g - fw_t.g)[:, :, 1:]
    Dp = pert.D_prime[:, :, 1:]
    Dg = (Dp.to(fw.g.dtype) * fw.g[:, :, 1:]).norm(dim=-1)
    return PerturbationStats(h_norm=dh.norm(dim=-1), g_norm=dg.norm(dim=-1), flips=(Dp != 0).sum(dim=-1), Dg_norm=Dg)


def forward_coordinate_change(pert: Perturbed) -> torch.Tensor:
    """Lemma C.10's quantity ``max_{i,l,k} |((W~ + W') h'_{i,l})_k|`` (over l = 1..L-1), shape (E,).

    Note ``(W~+W') h'_{i,l} = g'_{i,l+1} - W' h~_{i,l}``: the change of the next pre-activation minus the
    direct effect of ``W'``; the lemma says it is coordinatewise ``O(m^{-2/3})``.
    """
    _check_pert(pert)
    dh = (pert.fw.h_by_step - pert.fw_tilde.h_by_step)[:, 1:-1]  # (E, L-1, n, m): h'_l for l = 1..L-1
    E, Lm1, n, m = dh.shape
    out = torch.bmm(dh.reshape(E, Lm1 * n, m), pert.W.transpose(1, 2).contiguous())
    return out.abs().flatten(1).amax(dim=1)


# ----------------------------------------------------------------------------------------------------------
# Lemma C.7: intermediate products

def product_norms(pert: Perturbed, l1: int, l2: int, *, tol: float = 1e-4, iters: int = 80) -> dict:
    """Spectral norms of Lemma C.7 for the product ``P(l1, l2)``, maximised over samples; a dict of (E,) tensors.

    ``"tilde"``: ``||prod D~ W~||``; ``"masks"``: ``||prod (D~+D') W~||`` (new masks, old W);
    ``"full"``: ``||prod (D~+D')(W~+W')||``; ``"diff"``: ``||prod D W - prod D~ W~||``.

    Matrix-free Lanczos (:func:`rnnbook.linalg.top_singular_values`) with the four operators as four problems
    of one run: at every step the rows of the chains through W~ (masks D~ for "tilde" and "diff", D for
    "masks") go through one product with W~, those through W ("full", "diff") through one product with W. The
    products are memory-bound (rows are few, W is large), so reading each matrix once per step instead of once
    per operator is what makes this fast.
    """
    _check_pert(pert)
    L = pert.fw.L
    products._check_range(L, l1, l2)
    Wt, W = pert.W_tilde, pert.W
    Dt, D = pert.fw_tilde.D.to(W.dtype), pert.fw.D.to(W.dtype)
    E, n, m = pert.params.ensemble, pert.fw.n, pert.params.m
    # problems 0..3 = tilde, masks, full, diff; chains: A = (W~, D~) for {0, 3}, B = (W~, D) for {1}, C = (W, D)
    # for {2, 3}. Rows arrive as (E n, k, m) with k = number of problems still iterating (idx).

    def run(V, idx, transpose):
        ids = idx.tolist()
        X = V.reshape(E, n, len(ids), m)
        pick = lambda want: [j for j, p in enumerate(ids) if p in want]
        a, b, c = pick({0, 3}), pick({1}), pick({2, 3})
        XA, XB, XC = X[:, :, a], X[:, :, b], X[:, :, c]
        steps = range(l2, l1 - 1, -1) if transpose else range(l1, l2 + 1)
        for l in steps:
            ka = len(a)
            if transpose:  # rows map by (D_l W)^T = W^T D_l: mask first, then the product
                left = torch.cat([XA * Dt[:, :, l].unsqueeze(2), XB * D[:, :, l].unsqueeze(2)], dim=2)
                left = torch.matmul(left.reshape(E, -1, m), Wt).reshape(E, n, -1, m)
                XC = torch.matmul((XC * D[:, :, l].unsqueeze(2)).reshape(E, -1, m), W).reshape(E, n, -1, m)
                XA, XB = left[:, :, :ka], left[:, :, ka:]
            else:
                left = torch.matmul(torch.cat([XA, XB], dim=2).reshape(E, -1, m), Wt.transpose(-1, -2)).reshape(E, n, -1, m)
                XA, XB = left[:, :, :ka] * Dt[:, :, l].unsqueeze(2), left[:, :, ka:] * D[:, :, l].unsqueeze(2)
                XC = torch.matmul(XC.reshape(E, -1, m), W.transpose(-1, -2)).reshape(E, n, -1, m) * D[:, :, l].unsqueeze(2)
        out = torch.empty_like(X)
        for j, p in enumerate(ids):
            if p == 0:
                out[:, :, j] = XA[:, :, a.index(j)]
            elif p == 1:
                out[:, :, j] = XB[:, :, b.index(j)]
            elif p == 2:
                out[:, :, j] = XC[:, :, c.index(j)]
            else:
                out[:, :, j] = XC[:, :, c.index(j)] - XA[:, :, a.index(j)]
        return out.reshape(E * n, len(ids), m)

    start = linalg.random_start((E * n, 4, m), seed=0, device=W.device, dtype=W.dtype)
    res = linalg.top_singular_values(lambda V, idx: run(V, idx, False), lambda U, idx: run(U, idx, True), start,
                                     tol=tol, iters=iters)  # (E n, 4)
    res = res.reshape(E, n, 4).amax(dim=1)
    return {"tilde": res[:, 0], "masks": res[:, 1], "full": res[:, 2], "diff": res[:, 3]}


# ----------------------------------------------------------------------------------------------------------
# Lemmas C.9 and C.11: backward operators

#: The pairs of Lemma C.9, as (rows X, rows Y) of ``a^T B (prod X - prod Y)``: "tt" is (D~, W~), "Dt" (D, W~),
#: "tW" (D~, W), "DW" (D, W); "full" is the whole change, bounded by (c) + (d).
C9_PAIRS = {"a": ("tt", "Dt"), "b": ("Dt", "DW"), "c": ("tt", "tW"), "d": ("tW", "DW"), "full": ("tt", "DW")}


@dataclass
class BackwardChange:
    """Changes of the backward rows ``a^T B P(l1, l2)`` (Lemma C.9) and of their coordinates (Lemma C.11).

    Every field is (E,), a maximum over samples i and spans ``1 <= l1 <= l2 <= L``:
    ``size``: ``||a^T B prod D~ W~||`` (the unperturbed size, ~ sqrt(m/d));
    ``abs[v]`` for v in ``"a".."d"``: ``||a^T B (prod X - prod Y)||`` for the pair (X, Y) of Lemma C.9(v) --
    (a) ``D~W~`` vs ``DW~``, (b) ``DW~`` vs ``DW``, (c) ``D~W~`` vs ``D~W``, (d) ``D~W`` vs ``DW`` -- and
    ``abs["full"]`` for ``D~W~`` vs ``DW``, the whole change, which the triangle inequality bounds by (c) + (d);
    ``rel[v]``: the same change divided by ``||a^T B prod D~ W~||`` for the same (i, l1, l2);
    ``coord["a"]``, ``coord["b"]``: ``max_k`` of the coordinatewise change ``|(a^T B prod ... e_k)|`` for the
    pairs of Lemma C.11 (a) ``D W~`` vs ``D~ W~`` and (b) ``D W`` vs ``D W~``.
    """

    size: torch.Tensor
    abs: dict
    rel: dict
    coord: dict


def backward_change(pert: Perturbed, a: torch.Tensor) -> BackwardChange:
    """Measure Lemma C.9 (and C.11) for unit vectors ``a`` ((d,) or (E, d); normalised here)."""
    _check_pert(pert)
    p = pert.params
    a = _unit_rows("a", a, p.ensemble, p.d, p.A)
    Wt, W = pert.W_tilde, pert.W
    Dt, D = pert.fw_tilde.D, pert.fw.D
    n = pert.fw.n
    # the two mask sets that share a W go through one call (stacked as samples): W is read half as often
    r_t = products.backward_rows(a, p.B, Wt, torch.cat([Dt, D], dim=1))
    r_W = products.backward_rows(a, p.B, W, torch.cat([Dt, D], dim=1))
    r = {"tt": r_t[:, :n], "Dt": r_t[:, n:], "tW": r_W[:, :n], "DW": r_W[:, n:]}
    L = pert.fw.L
    valid = torch.ones(L, L, dtype=torch.bool, device=p.device).triu()  # [l1 - 1, l2 - 1] with l1 <= l2
    size = r["tt"].norm(dim=-1)  # (E, n, L, L)

    def vmax(t):
        return t.masked_fill(~valid, -math.inf).flatten(1).amax(dim=1)

    abs_, rel = {}, {}
    for v, (x, y) in C9_PAIRS.items():
        diff = (r[x] - r[y]).norm(dim=-1)
        abs_[v] = vmax(diff)
        rel[v] = vmax(diff / size.clamp_min(torch.finfo(size.dtype).tiny))
    coord = {"a": vmax((r["Dt"] - r["tt"]).abs().amax(dim=-1)), "b": vmax((r["DW"] - r["Dt"]).abs().amax(dim=-1))}
    return BackwardChange(size=vmax(size), abs=abs_, rel=rel, coord=coord)
