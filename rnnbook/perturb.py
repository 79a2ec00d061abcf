"""Stability after an adversarial perturbation: Appendix C of arXiv 1810.12065 v4.

The setting of Appendix C (Definition C.1): ``W~`` is the random initialisation (``params.W``), the
network runs with ``W = W~ + W'`` for a perturbation ``W'`` of spectral norm at most ``tau0 / sqrt(m)``,
and the perturbation quantities are

    g' = g - g~,   h' = h - h~,   D' = D - D~   (entries in {-1, 0, 1}: the ReLU sign flips),

where un-tilded quantities belong to the perturbed network. ``W'`` may depend on ``W~, A, B`` (it is
"adversarial"); Lemma C.2 (forward), C.7 (intermediate products) and C.9 (backward operators) hold for all
such ``W'`` at once, and the special rank-one Lemmas C.10 / C.11 for ``W' = y z^T`` with ``y`` N-sparse.

This module builds three kinds of ``W'`` with ``||W'||_2 = tau0 / sqrt(m)`` exactly (to the precision of
the power iteration, see :func:`top_singular_value`):

* :func:`random_direction`  -- a Gaussian matrix rescaled;
* :func:`adversarial_rank_one` -- the book's own construction (not the paper's): ``W' = y hhat^T`` that
  spends the whole budget on flipping as many ReLU signs as possible at one sample and step;
* :func:`gd_direction` -- ``W_T - W_0`` of a gradient-descent run (:func:`rnnbook.train`), rescaled;

the special rank-one perturbations of Lemmas C.10/C.11 (:func:`sparse_rank_one`), and the measurements:
:func:`perturbation_stats` (Lemma C.2), :func:`product_norms` (Lemma C.7), :func:`backward_change`
(Lemmas C.9 and C.11) and :func:`forward_coordinate_change` (Lemma C.10). Everything is batched over the
ensemble dimension ``E`` and runs on the device of ``params``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks
from . import products
from .data import SequenceData
from .model import Params, Forward, forward
from .train import train as _train

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
    if not isinstance(fw, Forward):
        raise TypeError(f"{name} must be an rnnbook.Forward (the output of rnnbook.forward), got {type(fw).__name__}")
    if fw.h_t.shape[0] != params.ensemble or fw.h_t.shape[-1] != params.m:
        raise ValueError(f"{name} belongs to another network: ensemble/width {fw.h_t.shape[0]}/{fw.h_t.shape[-1]}, "
                         f"expected {params.ensemble}/{params.m}")
    return fw


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
# spectral norms and rescaling

def top_singular_value(M: torch.Tensor, *, tol: float | None = None, max_iters: int = 300, seed: int = 0,
                       return_iters: bool = False):
    """``||M_e||_2`` for each matrix of a batch ``M`` (E, p, q), by Lanczos on ``M^T M``.

    Lanczos with full reorthogonalisation: after k rounds the largest eigenvalue of the k x k tridiagonal
    matrix is the best estimate of ``||M||_2^2`` from the Krylov space of dimension k (a lower bound that
    converges from below, far faster than power iteration when the top singular values are close, as for a
    Gaussian matrix). Stops when that estimate changes by less than ``tol`` (relative; default 1e-7 in
    float32, 1e-12 in float64) in every network, or when the Krylov space is exhausted (low-rank M).
    Works in M's dtype; returns (E,) (and the number of rounds with ``return_iters``). Much cheaper than a
    full SVD at m >= 512; tested against ``torch.linalg.matrix_norm(ord=2)``.
    """
    checks.tensor("M", M, ndim=3)
    max_iters = checks.positive_int("max_iters", max_iters)
    if tol is None:
        tol = 1e-7 if M.dtype == torch.float32 else 1e-12
    tol = checks.positive_real("tol", tol)
    E, p, q = M.shape
    dt, dev = M.dtype, M.device
    A = M.contiguous()
    At = M.transpose(1, 2).contiguous()  # a transposed bmm is a slow path on CPU: keep both layouts
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(E, q, generator=gen, dtype=torch.float64).to(device=dev, dtype=dt)
    v = v / v.norm(dim=-1, keepdim=True)
    K = min(max_iters, q)
    Q = torch.zeros(E, K + 1, q, dtype=dt, device=dev)  # Lanczos vectors as rows
    Q[:, 0] = v
    alphas, betas = [], []
    theta_prev = None
    tiny = torch.finfo(dt).tiny
    k = 0
    for k in range(K):
        w = torch.bmm(At, torch.bmm(A, v.unsqueeze(-1))).squeeze(-1)
        alpha = (w * v).sum(-1)
        Qk = Q[:, : k + 1]
        for _ in range(2):  # full reorthogonalisation against the whole basis, twice for stability
            w = w - torch.bmm(torch.bmm(w.unsqueeze(1), Qk.transpose(1, 2)), Qk).squeeze(1)
        beta = w.norm(dim=-1)
        alphas.append(alpha)
        T = torch.diag_embed(torch.stack(alphas, -1).double())
        if betas:
            off = torch.stack(betas, -1).double()
            T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        theta = torch.linalg.eigvalsh(T)[:, -1].to(dt)
        scale = theta.abs().clamp_min(tiny)
        exhausted = beta <= 10 * torch.finfo(dt).eps * scale.sqrt()
        if theta_prev is not None and bool((((theta - theta_prev).abs() <= tol * scale) | exhausted).all()):
            break
        if bool(exhausted.all()):
            break
        theta_prev = theta
        betas.append(torch.where(exhausted, torch.zeros_like(beta), beta))
        v = torch.where(exhausted.unsqueeze(-1), torch.zeros_like(w), w / beta.clamp_min(tiny).unsqueeze(-1))
        Q[:, k + 1] = v
    s = theta.clamp_min(0).sqrt()
    return (s, k + 1) if return_iters else s


def rescale(Wp: torch.Tensor, tau0: float, **kw) -> torch.Tensor:
    """``Wp * tau0 / (sqrt(m) ||Wp||_2)``: the same direction with spectral norm exactly ``tau0 / sqrt(m)``
    (the radius of Appendix C). ``Wp`` is (E, m, m); every matrix must be non-zero."""
    checks.tensor("Wp", Wp, ndim=3)
    tau0 = checks.positive_real("tau0", tau0)
    if Wp.shape[1] != Wp.shape[2]:
        raise ValueError(f"Wp must hold square m x m matrices, got shape {tuple(Wp.shape)}")
    m = Wp.shape[1]
    s = top_singular_value(Wp, **kw)
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
    gen = checks.generator(generator, seed)
    G = checks.randn((params.ensemble, params.m, params.m), gen=gen, std=1.0, device=params.device,
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


def gd_direction(params: Params, data: SequenceData, tau0: float | None, *, eta: float, steps: int):
    """``W' = W_T - W_0`` after ``steps`` of full gradient descent (:func:`rnnbook.train`) from ``params``.

    Returns ``(Wp, tau_natural, history)``: ``tau_natural = sqrt(m) ||W_T - W_0||_2`` (E,) is the radius the
    run actually reached; with ``tau0`` given, ``Wp`` is rescaled to ``||Wp||_2 = tau0 / sqrt(m)`` exactly (the
    GD *direction* at the chapter's radius), with ``tau0=None`` it is returned as is.
    """
    _check_params(params)
    if tau0 is not None:
        tau0 = checks.positive_real("tau0", tau0)
    steps = checks.positive_int("steps", steps)
    hist = _train(params, data, eta=eta, steps=steps, record_every=steps)
    delta = hist.params.W - params.W
    tau_nat = math.sqrt(params.m) * top_singular_value(delta)
    Wp = delta if tau0 is None else rescale(delta, tau0)
    return Wp, tau_nat, hist


def make_perturbation(kind: str, params: Params, data: SequenceData, tau0: float, *, seed: int = 0,
                      eta: float | None = None, steps: int = 30, sample: int = 0, step: int = 1) -> torch.Tensor:
    """One of :data:`KINDS` (``"random"``, ``"adversarial"``, ``"gd"``) with ``||W'||_2 = tau0 / sqrt(m)``.

    ``eta`` for ``"gd"`` defaults to ``0.2 / (m n L)``; ``seed`` is used by ``"random"``.
    """
    checks.choice("kind", kind, KINDS)
    if kind == "random":
        return random_direction(params, tau0, seed=seed)
    if kind == "adversarial":
        return adversarial_rank_one(params, data.x, tau0, sample=sample, step=step).Wp
    if eta is None:
        eta = 0.2 / (params.m * data.n * data.L)
    return gd_direction(params, data, tau0, eta=eta, steps=steps)[0]


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
        gen = checks.generator(generator, seed)
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


# ----------------------------------------------------------------------------------------------------------
# Lemma C.2: forward perturbation quantities

@dataclass
class PerturbationStats:
    """The quantities of Definition C.1 for every network, sample and step ``l = 1..L``: arrays (E, n, L).

    ``h_norm = ||h'_{i,l}||``, ``g_norm = ||g'_{i,l}||``, ``flips = ||D'_{i,l}||_0`` (sign flips),
    ``Dg_norm = ||D'_{i,l} g_{i,l}||`` (g of the perturbed network); ``fw_tilde`` and ``fw`` are the two
    forward passes (unperturbed and perturbed).
    """

    h_norm: torch.Tensor
    g_norm: torch.Tensor
    flips: torch.Tensor
    Dg_norm: torch.Tensor
    fw_tilde: Forward
    fw: Forward

    def max(self, field: str) -> torch.Tensor:
        """Max over samples and steps of one field: (E,), as in Lemma C.2's "for all i, l"."""
        return getattr(self, field).flatten(1).amax(dim=1)


def sign_flips(fw_tilde: Forward, fw: Forward) -> torch.Tensor:
    """``D' = D - D~`` (E, n, L+1, m) with entries in {-1, 0, 1} (as int8); position 0 is zero."""
    return fw.D.to(torch.int8) - fw_tilde.D.to(torch.int8)


def perturbation_stats(params: Params, Wp: torch.Tensor, x: torch.Tensor,
                       fw_tilde: Forward | None = None) -> PerturbationStats:
    """Run the network with ``W~`` and with ``W~ + W'`` on ``x`` and return the quantities of Lemma C.2."""
    _check_params(params)
    _check_Wp(params, Wp)
    fw_t = forward(params, x) if fw_tilde is None else _check_fw("fw_tilde", fw_tilde, params)
    fw = forward(params.with_W(params.W + Wp), x)
    dh = (fw.h - fw_t.h)[:, :, 1:]
    dg = (fw.g - fw_t.g)[:, :, 1:]
    Dp = sign_flips(fw_t, fw)[:, :, 1:]
    flips = (Dp != 0).sum(dim=-1)
    Dg = (Dp.to(params.dtype) * fw.g[:, :, 1:]).norm(dim=-1)
    return PerturbationStats(h_norm=dh.norm(dim=-1), g_norm=dg.norm(dim=-1), flips=flips, Dg_norm=Dg,
                             fw_tilde=fw_t, fw=fw)


def forward_coordinate_change(params: Params, Wp: torch.Tensor, fw_tilde: Forward, fw: Forward) -> torch.Tensor:
    """Lemma C.10's quantity ``max_{i,l,k} |((W~ + W') h'_{i,l})_k|`` (over l = 1..L-1), shape (E,).

    Note ``(W~+W') h'_{i,l} = g'_{i,l+1} - W' h~_{i,l}``: the change of the next pre-activation minus the
    direct effect of ``W'``; the lemma says it is coordinatewise ``O(m^{-2/3})``.
    """
    _check_params(params)
    _check_Wp(params, Wp)
    _check_fw("fw_tilde", fw_tilde, params)
    _check_fw("fw", fw, params)
    dh = (fw.h_t - fw_tilde.h_t)[:, 1:-1]  # (E, L-1, n, m): h'_{l} for l = 1..L-1
    E, Lm1, n, m = dh.shape
    out = torch.bmm(dh.reshape(E, Lm1 * n, m), (params.W + Wp).transpose(1, 2).contiguous())
    return out.abs().flatten(1).amax(dim=1)


# ----------------------------------------------------------------------------------------------------------
# Lemma C.7: intermediate products

def _batched_product(W: torch.Tensor, D: torch.Tensor, l1: int, l2: int, transpose: bool):
    """apply / apply_T of ``D_{l2} W ... D_{l1} W`` for every network and sample: rows (E*n, k, m)."""
    E, n = D.shape[0], D.shape[1]
    Dm = D.to(W.dtype)
    WT = None if transpose else W.transpose(1, 2).contiguous()  # a transposed bmm is a slow path on CPU

    def apply(V):
        k, m = V.shape[1], V.shape[2]
        X = V.reshape(E, n * k, m)
        for l in range(l1, l2 + 1):
            X = (torch.bmm(X, WT).reshape(E, n, k, m) * Dm[:, :, l].unsqueeze(2)).reshape(E, n * k, m)
        return X.reshape(E * n, k, m)

    def apply_T(U):
        k, m = U.shape[1], U.shape[2]
        X = U.reshape(E, n, k, m)
        for l in range(l2, l1 - 1, -1):
            X = torch.bmm((X * Dm[:, :, l].unsqueeze(2)).reshape(E, n * k, m), W).reshape(E, n, k, m)
        return X.reshape(E * n, k, m)

    return apply_T if transpose else apply


def product_norms(params: Params, Wp: torch.Tensor, fw_tilde: Forward, fw: Forward, l1: int, l2: int, *,
                  iters: int = 30, block: int = 4) -> dict:
    """Spectral norms of Lemma C.7, maximised over samples; a dict of (E,) tensors.

    ``"tilde"``: ``||D~_{l2} W~ ... D~_{l1} W~||``; ``"masks"``: ``||prod (D~+D') W~||`` (new masks, old W);
    ``"full"``: ``||prod (D~+D')(W~+W')||``; ``"diff"``: ``||prod D W - prod D~ W~||``. Matrix-free block power
    iteration (:func:`rnnbook.products.spectral_norm`), ``iters`` rounds.
    """
    _check_params(params)
    _check_Wp(params, Wp)
    _check_fw("fw_tilde", fw_tilde, params)
    _check_fw("fw", fw, params)
    L = fw.L
    if not (1 <= l1 <= l2 <= L):
        raise ValueError(f"need 1 <= l1 <= l2 <= L={L}, got l1={l1}, l2={l2}")
    E, n, m = params.ensemble, fw.n, params.m
    Wt, W = params.W, params.W + Wp
    Dt, D = fw_tilde.D, fw.D
    ops = {"tilde": (Wt, Dt), "masks": (Wt, D), "full": (W, D)}
    kw = dict(iters=iters, block=block, device=params.device, dtype=params.dtype)
    out = {}
    for name, (Wx, Dx) in ops.items():
        s = products.spectral_norm(_batched_product(Wx, Dx, l1, l2, False), _batched_product(Wx, Dx, l1, l2, True),
                                   (E * n, m), **kw)
        out[name] = s.reshape(E, n).amax(dim=1)
    a, aT = _batched_product(W, D, l1, l2, False), _batched_product(W, D, l1, l2, True)
    b, bT = _batched_product(Wt, Dt, l1, l2, False), _batched_product(Wt, Dt, l1, l2, True)
    s = products.spectral_norm(lambda V: a(V) - b(V), lambda U: aT(U) - bT(U), (E * n, m), **kw)
    out["diff"] = s.reshape(E, n).amax(dim=1)
    return out


# ----------------------------------------------------------------------------------------------------------
# Lemmas C.9 and C.11: backward operators

def backward_row_vectors(a: torch.Tensor, B: torch.Tensor, W: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``r_{i,l1,l2} = a^T B D_{i,l2} W D_{i,l2-1} W ... D_{i,l1} W`` for all ``1 <= l1 <= l2 <= L``.

    ``a`` (E, d) (one vector per network, shared by the samples), ``B`` (E, d, m), ``W`` (E, m, m), masks ``D``
    (E, n, L+1, m). Returns (E, n, L, L, m) indexed ``[e, i, l2-1, l1-1]``; entries with ``l1 > l2`` are zero.
    Each ``l2`` is one backward sweep of masked vector-matrix products, so all spans cost ``L^2/2`` products.
    """
    E, n, Lp1, m = D.shape
    L = Lp1 - 1
    Dm = D.to(W.dtype)
    aB = torch.bmm(a.unsqueeze(1), B).squeeze(1)  # (E, m)
    out = torch.zeros(E, n, L, L, m, device=W.device, dtype=W.dtype)
    for l2 in range(1, L + 1):
        X = aB.unsqueeze(1).expand(E, n, m)
        for l1 in range(l2, 0, -1):
            X = torch.bmm(X * Dm[:, :, l1], W)
            out[:, :, l2 - 1, l1 - 1] = X
    return out


@dataclass
class BackwardChange:
    """Changes of the backward rows ``a^T B prod D W`` (Lemma C.9) and of their coordinates (Lemma C.11).

    Every field is (E,), a maximum over samples i and spans ``1 <= l1 <= l2 <= L``:
    ``size``: ``||a^T B prod D~ W~||`` (the unperturbed size, ~ sqrt(m/d));
    ``abs[v]`` for v in ``"a".."d"``: ``||a^T B (prod X - prod Y)||`` with (X, Y) the pair of Lemma C.9(v):
    (a) ``D~W~`` vs ``DW~``, (b) ``DW~`` vs ``DW``, (c) ``D~W~`` vs ``D~W``, (d) ``D~W~`` vs ``DW``;
    ``rel[v]``: the same change divided by ``||a^T B prod D~ W~||`` for the same (i, l1, l2);
    ``coord["a"]``, ``coord["b"]``: ``max_k`` of the coordinatewise change ``|(a^T B prod ... e_k)|`` for
    the pairs of Lemma C.11 (a) ``D W~`` vs ``D~ W~`` and (b) ``D W`` vs ``D W~``.
    """

    size: torch.Tensor
    abs: dict
    rel: dict
    coord: dict


def backward_change(params: Params, Wp: torch.Tensor, fw_tilde: Forward, fw: Forward, a: torch.Tensor) -> BackwardChange:
    """Measure Lemma C.9 (and C.11) for unit vectors ``a`` ((d,) or (E, d); normalised here)."""
    _check_params(params)
    _check_Wp(params, Wp)
    _check_fw("fw_tilde", fw_tilde, params)
    _check_fw("fw", fw, params)
    a = _unit_rows("a", a, params.ensemble, params.d, params.A)
    Wt, W = params.W, params.W + Wp
    Dt, D = fw_tilde.D, fw.D
    r = {"tt": backward_row_vectors(a, params.B, Wt, Dt), "Dt": backward_row_vectors(a, params.B, Wt, D),
         "tW": backward_row_vectors(a, params.B, W, Dt), "DW": backward_row_vectors(a, params.B, W, D)}
    L = fw.L
    valid = torch.ones(L, L, dtype=torch.bool, device=params.device).tril()  # l1 <= l2
    size = r["tt"].norm(dim=-1)  # (E, n, L, L)

    def vmax(t):
        return t.masked_fill(~valid, -math.inf).flatten(1).amax(dim=1)

    pairs = {"a": ("tt", "Dt"), "b": ("Dt", "DW"), "c": ("tt", "tW"), "d": ("tt", "DW")}
    abs_, rel = {}, {}
    for v, (p, q) in pairs.items():
        diff = (r[p] - r[q]).norm(dim=-1)
        abs_[v] = vmax(diff)
        rel[v] = vmax(diff / size.clamp_min(torch.finfo(size.dtype).tiny))
    coord = {"a": vmax((r["Dt"] - r["tt"]).abs().amax(dim=-1)), "b": vmax((r["DW"] - r["Dt"]).abs().amax(dim=-1))}
    return BackwardChange(size=vmax(size), abs=abs_, rel=rel, coord=coord)
