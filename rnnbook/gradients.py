"""The gradient is large when the loss is: Appendices D, E and F of arXiv 1810.12065 v4 (Theorems 5 and 3).

Notation and conventions (the same as :mod:`rnnbook.model`):

* ``(i*, l*)`` is a sample and a step: ``i_star`` is a 0-based sample index (``0 <= i_star < n``) and
  ``l_star`` is the paper's step (1-based). Lemma D.2 looks at the pre-activations of step ``l* + 1``, so it
  needs ``1 <= l_star <= L - 1``; Lemma D.7 reads ``loss_{i*, l*}``, which exists for ``2 <= l_star <= L``.
* **The index convention for u is that of Definition E.1 / eq. (6.1)** (and of ``rb.backward``):
  ``u_{i,l} = sum_{a=l+1..L} Back_{i,l+1->a}^T loss_{i,a}``, paired in the gradient with ``h_{i,l}`` and the
  indicator ``1[(g_{i,l+1})_k >= 0]``. The paper's appendices clash with it (Lemma D.7 bounds
  ``sum_{a>=l*} Back_{i*,l*->a}^T loss_{i*,a}``, which is ``u_{i*,l*-1}`` here; E.2.1 and F.1 redefine u with
  the sum from ``a = l``). Every function below computes *its lemma's own sum* and says which u that is.
* Thresholds ``b_minus``, ``b_plus`` are in units of ``1/sqrt(m)``: a coordinate is "small" when
  ``|sqrt(m) g_k| <= b_minus`` and "large" when ``|sqrt(m) g_k| >= b_plus`` (Definition D.1 uses
  ``beta_- / sqrt(m)`` and ``beta_+ / sqrt(m)`` with ``beta_- = delta / rho^10``, ``beta_+ = delta / rho^2``,
  :func:`rnnbook.paper.beta_minus`; those are unusably small at any width a computer holds, so the book picks
  its own ``b_minus``, ``b_plus``).

What is here:

* Lemma D.2 (with D.3-D.5): :func:`indicator_coordinates` -- which neurons meet the three conditions;
* Lemma D.7: :func:`d7_sum`, :func:`backward_coordinate_fraction`;
* Definition E.1 / Lemma E.2: :func:`fake_gradient_norms` (Frobenius, per sample, rows);
* the worst loss direction (the book's reading of Theorems 5 and 3, not the paper's): the Gram matrix of the
  output Jacobians over ``(i, a, k)`` with ``a = 2..L`` -- :func:`loss_ntk`, the matrix ``K`` with
  ``||fake grad f||_F^2 = loss^T K loss`` for every loss vector -- its extreme eigenvalues
  (:func:`ntk_extreme_eigenvalues`) and the loss vectors that attain them (:func:`worst_loss`);
* Proposition 6.1 / Lemma E.4: :func:`randomness_decomposition`;
* the thought experiment of Section 6.2: :func:`kick_flips` (a rank-one kick of one row of W);
* Lemma F.1 / Theorem 3: :func:`pl_ratio`, :func:`lambda_min_gradient` (the gradient of ``lambda_min(K(W))``)
  and :func:`adversarial_min_eig` (the book's adversary: projected gradient on W' over the ball
  ``||W'||_2 <= tau0 / sqrt(m)``, to make ``lambda_min`` smallest).

Everything is batched over the ensemble dimension ``E`` and runs on the device of ``params``; Gram matrices
and eigenvalues are float64 whatever the network's dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks, paper, projections, rng
from .model import Backward, Forward, Params, backward, check_forward, forward

__all__ = [
    "argmax_loss", "fixed_loss_vectors", "IndicatorCoordinates", "indicator_coordinates", "d7_sum", "backward_coordinate_fraction",
    "FakeGradientNorms", "fake_gradient_norms", "loss_ntk", "loss_to_vector", "vector_to_loss",
    "ntk_extreme_eigenvalues", "worst_loss", "gradient_ratio", "RandomnessDecomposition",
    "randomness_decomposition", "fresh_direction", "ks_distance_normal", "KickResult", "sample_neurons", "kick_flips", "pl_ratio",
    "fake_gradient_jvp", "lambda_min_gradient", "AdversaryResult", "mask_surrogate", "adversarial_min_eig",
]


# ----------------------------------------------------------------------------------------------------------
# validation

def _check_params(params) -> Params:
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params (from rnnbook.init_params), got {type(params).__name__}")
    if params.activation != "relu" or not params.tied:
        raise ValueError("Appendices D-F concern the paper's model: params must be a weight-tied ReLU network")
    return params


def _check_fw(params: Params, fw, name: str = "fw") -> Forward:
    return check_forward(fw, params, name)


def _check_loss(params: Params, fw: Forward, loss) -> torch.Tensor:
    """Loss vectors ``(n, L, d)`` or ``(E, n, L, d)`` of these networks; returns ``(E or 1, n, L, d)``."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss must be a torch.Tensor of loss vectors, got {type(loss).__name__}")
    checks.tensor("loss", loss, ndim=(3, 4))
    shape = (fw.n, fw.L, params.d)
    if tuple(loss.shape[-3:]) != shape or (loss.ndim == 4 and loss.shape[0] not in (1, params.ensemble)):
        raise ValueError(f"loss must have shape (n, L, d) = {shape} or (E={params.ensemble}, n, L, d), "
                         f"got {tuple(loss.shape)}")
    checks.same_placement("params", params.A, loss=loss)
    return loss if loss.ndim == 4 else loss.unsqueeze(0)


def _check_sample(i_star, n: int) -> int:
    if isinstance(i_star, bool) or not isinstance(i_star, int):
        raise TypeError(f"i_star must be an integer sample index, got {i_star!r}")
    if not 0 <= i_star < n:
        raise ValueError(f"i_star must be a sample index in [0, n) = [0, {n}), got {i_star}")
    return i_star


def _check_step(l_star, low: int, high: int, why: str) -> int:
    if isinstance(l_star, bool) or not isinstance(l_star, int):
        raise TypeError(f"l_star must be an integer step, got {l_star!r}")
    if not low <= l_star <= high:
        raise ValueError(f"l_star must lie in [{low}, {high}] ({why}), got {l_star}")
    return l_star


def _check_threshold(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a positive number (a threshold in units of 1/sqrt(m)), got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive threshold (in units of 1/sqrt(m)), got {value}")
    return float(value)


def _check_tau0(tau0) -> float:
    if isinstance(tau0, bool) or not isinstance(tau0, (int, float)) or not math.isfinite(tau0):
        raise TypeError(f"tau0 must be a positive radius, got {tau0!r}")
    if tau0 <= 0:
        raise ValueError(f"tau0 must be a positive radius (||W'||_2 <= tau0 / sqrt(m)), got {tau0}")
    return float(tau0)


def argmax_loss(loss: torch.Tensor) -> tuple[int, int]:
    """``(i*, l*) = argmax_{i, l >= 2} ||loss_{i,l}||`` for loss vectors ``(n, L, d)`` (Appendix D fixes this pair):
    ``i*`` 0-based, ``l*`` the paper's step. Step 1 never counts (it is not in the objective)."""
    checks.tensor("loss", loss, ndim=3)
    n, L, _ = loss.shape
    if L < 2:
        raise ValueError(f"loss must hold at least two steps (the objective starts at l = 2), got shape {tuple(loss.shape)}")
    norms = loss[:, 1:].norm(dim=-1)
    flat = int(norms.flatten().argmax())
    return flat // (L - 1), flat % (L - 1) + 2


def fixed_loss_vectors(E: int, n: int, L: int, d: int, i_star: int, l_star: int, *, seed: int, low: float = 0.2,
                       device=None, dtype=None) -> torch.Tensor:
    """Fixed loss vectors for Appendices D and E, drawn without looking at any network: ``(E, n, L, d)``, zero at
    step 1, random directions with norms uniform in ``[low, 1]`` and norm exactly 1 at ``(i*, l*)``, so that
    ``(i*, l*) = argmax ||loss_{i,l}||`` (the pair the appendices fix). ``2 <= l_star <= L``; ``0 < low < 1``."""
    E, n, L, d = (checks.positive_int(k, v) for k, v in (("E", E), ("n", n), ("L", L), ("d", d)))
    i_star = _check_sample(i_star, n)
    l_star = _check_step(l_star, 2, L, "the loss starts at step 2")
    low = checks.real_in("low", low, 0.0, 1.0, low_open=True, high_open=True)
    gen = rng.generator(None, seed)
    e = torch.randn(E, n, L, d, generator=gen, dtype=torch.float64)
    norms = low + (1.0 - low) * torch.rand(E, n, L, 1, generator=gen, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True) * norms
    e[:, i_star, l_star - 1] /= norms[:, i_star, l_star - 1]
    e[:, :, 0] = 0.0
    return e.to(device=device if device is not None else "cpu", dtype=dtype if dtype is not None else torch.float32)


# ----------------------------------------------------------------------------------------------------------
# Lemma D.2 (with D.3, D.4, D.5): indicator coordinates

@dataclass
class IndicatorCoordinates:
    """Which neurons ``k`` meet the conditions of Lemma D.2 for ``(i*, l*)``; every field is ``(E, m)`` boolean.

    ``small``: ``|sqrt(m) (g_{i*,l*+1})_k| <= b_minus`` (Lemma D.3's condition);
    ``others``: ``|sqrt(m) (g_{i,l*+1})_k| >= b_plus`` for every ``i != i*`` (Lemma D.4's; all true when n = 1);
    ``later``: ``|sqrt(m) (g_{i,l+1})_k| >= b_plus`` for every ``i`` and every ``l > l*`` (Lemma D.5's; all true
    when ``l* = L - 1``); ``good``: all three (Lemma D.2's coordinates).
    """

    small: torch.Tensor
    others: torch.Tensor
    later: torch.Tensor

    @property
    def good(self) -> torch.Tensor:
        return self.small & self.others & self.later

    def fraction(self, which: str = "good") -> torch.Tensor:
        """Fraction of neurons meeting ``which`` (``"good"``, ``"small"``, ``"others"``, ``"later"``, or
        ``"small_others"``: the conditions of D.3 and D.4 together), float64 ``(E,)``."""
        checks.choice("which", which, ("good", "small", "others", "later", "small_others"))
        mask = self.small & self.others if which == "small_others" else getattr(self, which)
        return mask.to(torch.float64).mean(dim=-1)


def indicator_coordinates(fw: Forward, i_star: int, l_star: int, b_minus: float, b_plus: float) -> IndicatorCoordinates:
    """Lemma D.2's three conditions at every neuron, for the forward pass ``fw`` of ``E`` networks.

    Thresholds in units of ``1/sqrt(m)`` (see the module docstring): the paper's ``beta_-`` and ``beta_+`` are
    ``b_minus`` and ``b_plus`` here. ``1 <= l_star <= L - 1``; the conditions read ``g`` at steps ``l* + 1`` to
    ``L``. Lemma D.2 says that at least a fraction ``beta_- / (64 L)`` of any fixed set of at least
    ``n^2 L^2 / beta_-`` neurons is good (:func:`rnnbook.paper.d2_fraction`)."""
    if not isinstance(fw, Forward):
        raise TypeError(f"fw must be an rnnbook.Forward (from rnnbook.forward), got {type(fw).__name__}")
    n, L = fw.n, fw.L
    i_star = _check_sample(i_star, n)
    l_star = _check_step(l_star, 1, L - 1, "Lemma D.2 reads g at step l* + 1 <= L")
    b_minus = _check_threshold("b_minus", b_minus)
    b_plus = _check_threshold("b_plus", b_plus)
    m = fw.h_by_step.shape[-1]
    a = fw.g_by_step[:, l_star + 1:].abs() * math.sqrt(m)  # (E, L - l*, n, m): steps l*+1 .. L
    small = a[:, 0, i_star] <= b_minus
    mask = torch.ones(n, dtype=torch.bool, device=a.device)
    mask[i_star] = False
    others = (a[:, 0, mask] >= b_plus).all(dim=1) if n > 1 else torch.ones_like(small)
    later = (a[:, 1:] >= b_plus).flatten(1, 2).all(dim=1) if a.shape[1] > 1 else torch.ones_like(small)
    return IndicatorCoordinates(small=small, others=others, later=later)


# ----------------------------------------------------------------------------------------------------------
# Lemma D.7: backward coordinates

def d7_sum(params: Params, fw: Forward, loss: torch.Tensor, i_star: int, l_star: int, *,
           bw: Backward | None = None) -> torch.Tensor:
    """Lemma D.7's own sum ``sum_{a = l*..L} Back_{i*,l*->a}^T loss_{i*,a}`` (``Back_{l*->l*} = B``), ``(E, m)``.

    In Definition E.1's convention this is ``u_{i*, l*-1}`` (it includes ``B^T loss_{i*,l*}``); the vector that
    E.1 pairs with the indicator ``1[(g_{i*,l*+1})_k >= 0]`` is ``u_{i*,l*}``, one step later (see the module
    docstring). ``2 <= l_star <= L``. Pass ``bw`` (``rb.backward(params, fw, loss)``) to reuse a backward pass."""
    _check_params(params)
    _check_fw(params, fw)
    _check_loss(params, fw, loss)
    i_star = _check_sample(i_star, fw.n)
    l_star = _check_step(l_star, 2, fw.L, "Lemma D.7 reads loss_{i*,l*}, and the loss starts at step 2")
    if bw is None:
        bw = backward(params, fw, loss)
    elif not isinstance(bw, Backward):
        raise TypeError(f"bw must be an rnnbook.Backward (from rnnbook.backward), got {type(bw).__name__}")
    return bw.u_by_step[:, l_star - 1, i_star]


def backward_coordinate_fraction(params: Params, fw: Forward, loss: torch.Tensor, i_star: int, l_star: int, *,
                                 bw: Backward | None = None, shift: int = 0) -> torch.Tensor:
    """The fraction of neurons ``k`` whose backward coordinate is *below* Lemma D.7's threshold
    ``||loss_{i*,l*}|| / (6 sqrt(d) n L)`` (:func:`rnnbook.paper.d7_threshold`), float64 ``(E,)``.

    Lemma D.7 says this fraction is at most ``1 / (2 n L)`` (:func:`rnnbook.paper.d7_fraction`) with probability
    ``1 - exp(-Omega(rho^2))``, for fixed loss vectors and any set of neurons chosen without looking at B.
    ``shift=0`` measures D.7's own sum (:func:`d7_sum`, ``u_{i*,l*-1}`` in E.1's convention); ``shift=1``
    measures ``u_{i*,l*}``, the vector E.1 pairs with the indicator at step ``l* + 1`` (needs ``l* <= L - 1``),
    against the same threshold -- the book's comparison for the paper's clash of conventions."""
    checks.choice("shift", shift, (0, 1))
    e4 = _check_loss(params, fw, loss)
    if bw is None:
        bw = backward(params, fw, loss)
    if shift == 1:
        l_star = _check_step(l_star, 2, fw.L - 1, "u_{i*,l*} in E.1's convention is zero at l* = L")
    s = d7_sum(params, fw, loss, i_star, l_star + shift, bw=bw) if shift else d7_sum(params, fw, loss, i_star, l_star, bw=bw)
    norm = e4[:, i_star, l_star - 1].to(torch.float64).norm(dim=-1)  # (E or 1,)
    thr = torch.tensor([paper.d7_threshold(float(v), params.d, fw.n, fw.L) for v in norm], dtype=torch.float64)
    thr = thr.expand(params.ensemble).to(s.device)
    return (s.to(torch.float64).abs() < thr.unsqueeze(-1)).to(torch.float64).mean(dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Definition E.1 and Lemma E.2: the fake gradient and its norms

@dataclass
class FakeGradientNorms:
    """Norms of the fake gradient (Definition E.1) for fixed loss vectors, each divided by ``max_{i,l} ||loss_{i,l}||``
    (so they compare directly with Lemma E.2); all float64 ``(E,)`` except ``per_sample`` ``(E, n)``.

    ``frobenius``: ``||fake grad f||_F``; ``per_sample``: ``||fake grad f_i||_F``; ``max_row``:
    ``max_k ||fake grad_k f||`` (the rows of Fact 2.5). ``max_loss``: ``max_{i,l} ||loss_{i,l}||``.
    """

    frobenius: torch.Tensor
    per_sample: torch.Tensor
    max_row: torch.Tensor
    max_loss: torch.Tensor


def fake_gradient_norms(params: Params, fw: Forward, loss: torch.Tensor) -> FakeGradientNorms:
    """Lemma E.2's quantities for fixed loss vectors ``loss``: ``||fake grad f||_F <= O(n L^6 sqrt m) max ||loss||``,
    ``||fake grad f_i||_F <= O(L^6 sqrt m) max ||loss||`` and every row ``<= O(n rho L^3) max ||loss||``.
    The per-sample norms come from the diagonal of the per-sample Gram matrix (:func:`rnnbook.ntk.gram`)."""
    from . import ntk

    _check_params(params)
    _check_fw(params, fw)
    e4 = _check_loss(params, fw, loss)
    bw = backward(params, fw, loss)
    G = bw.grad.to(torch.float64)
    max_loss = e4[:, :, 1:].to(torch.float64).norm(dim=-1).flatten(1).amax(dim=1).expand(params.ensemble)
    if bool((max_loss == 0).any()):
        raise ValueError("loss is zero at every step l >= 2 in some network: the norms are undefined")
    per_sample = ntk.gram(params, fw, bw=bw).diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    scale = max_loss.to(G.device)
    return FakeGradientNorms(frobenius=G.flatten(1).norm(dim=1) / scale, per_sample=per_sample / scale.unsqueeze(-1),
                             max_row=G.norm(dim=-1).amax(dim=-1) / scale, max_loss=scale)


def gradient_ratio(grad: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Theorem 5's ratio ``R = ||grad||_F^2 / (m max_{i,l>=2} ||loss_{i,l}||^2)``, float64 ``(E,)``, for gradients
    ``(E, m, m)`` and the loss vectors ``(n, L, d)`` or ``(E, n, L, d)`` they were made from. Theorem 5 says
    ``R >= Omega(delta / rho^14)`` (:func:`rnnbook.paper.thm5_lower`) for fixed loss vectors."""
    checks.tensor("grad", grad, ndim=3)
    checks.tensor("loss", loss, ndim=(3, 4))
    e4 = loss if loss.ndim == 4 else loss.unsqueeze(0)
    E, m = grad.shape[0], grad.shape[-1]
    if e4.shape[0] not in (1, E):
        raise ValueError(f"loss has ensemble dimension {e4.shape[0]} but grad has {E}")
    mx = e4[:, :, 1:].to(torch.float64).norm(dim=-1).flatten(1).amax(dim=1).expand(E).to(grad.device)
    if bool((mx == 0).any()):
        raise ValueError("loss is zero at every step l >= 2: the ratio is undefined")
    return grad.to(torch.float64).flatten(1).square().sum(dim=1) / (m * mx ** 2)


# ----------------------------------------------------------------------------------------------------------
# The Gram matrix of the output Jacobians (the loss NTK): the worst loss direction

def _source_vectors(params: Params, fw: Forward) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The factors of every output Jacobian, packed.

    The Jacobian of output ``(B h_{i,a})_k`` with respect to W is ``sum_{l=1..a-1} D_{i,l+1} w^{(a,k)}_{i,l+1}
    h_{i,l}^T`` with ``w^{(a,k)}_{i,l} = Back_{i,l->a}^T e_k`` (Fact 2.5 with the loss vector ``e_k`` at step a).
    All ``w`` are made in ONE backward sweep: going down from step L, the sources ``a >= l`` are pushed back
    together (``w_l = W^T D_{l+1} w_{l+1}``, one batched product with ``n (L - l + 1) d`` rows) and source ``a = l``
    joins with ``w = B^T e_k``. Only the non-zero pairs ``(l, a)``, ``a > l``, are kept.

    Returns ``V`` ``(E, P n d, m)`` float64 (rows ``D_{i,l+1} w^{(a,k)}_{i,l+1}``, ordered by pair p, then i, then k),
    ``H`` ``(E, (L-1) n, m)`` float64 (rows ``h_{i,l}``, l = 1..L-1, then i) and the list of pairs ``(l, a)``.
    """
    E, n, L, d, m = params.ensemble, fw.n, fw.L, params.d, params.m
    W, B = params.W, params.B
    Dm = (fw.g_by_step >= 0).to(W.dtype)  # (E, L+1, n, m), step-major
    Bt = B.unsqueeze(1).expand(E, n, d, m)  # rows e_k^T B for every sample
    pairs, blocks = [], []
    X = None  # (E, n, S, d, m): w_l for the sources a = l..L (S = L - l + 1), oldest source last
    with torch.no_grad():
        for l in range(L, 1, -1):
            if X is None:
                X = Bt.unsqueeze(2).clone()
            else:
                Y = X * Dm[:, l + 1].unsqueeze(2).unsqueeze(3)  # D_{l+1} w_{l+1}
                Y = torch.matmul(Y.reshape(E, -1, m), W).reshape(E, n, -1, d, m)  # W^T D_{l+1} w_{l+1}, as rows
                X = torch.cat([Bt.unsqueeze(2), Y], dim=2)
            # rows paired with h_{l-1}: D_l w_l for every source a = l..L
            R = (X * Dm[:, l].unsqueeze(2).unsqueeze(3)).to(torch.float64)  # (E, n, S, d, m)
            for s in range(R.shape[2]):
                pairs.append((l - 1, l + s))
                blocks.append(R[:, :, s])  # (E, n, d, m)
    V = torch.stack(blocks, dim=1).reshape(E, -1, m)  # (E, P n d, m)
    H = fw.h_by_step[:, 1:L].to(torch.float64).reshape(E, (L - 1) * n, m)
    return V, H, pairs


def loss_ntk(params: Params, fw: Forward) -> torch.Tensor:
    """The Gram matrix ``K`` of the output Jacobians over ``(i, a, k)``, ``a = 2..L``: float64 ``(E, N, N)`` with
    ``N = n (L-1) d``, index ``i (L-1) d + (a-2) d + k``.

    ``K[(i,a,k), (j,b,k')] = <d(B h_{i,a})_k / dW, d(B h_{j,b})_{k'} / dW>_F``. Since the fake gradient of
    Definition E.1 is ``sum_{i,a} J_{i,a}^T loss_{i,a}``, ``||fake grad f||_F^2 = loss^T K loss`` for every loss
    vector (flattened by :func:`loss_to_vector`), and the worst loss direction is the eigenvector of the
    smallest eigenvalue: ``min_loss ||fake grad f||_F^2 / ||loss||^2 = lambda_min(K)``. Reading Theorems 5 and 3
    through ``lambda_min(K)`` is the book's, not the paper's: the theorems bound ``||fake grad f||_F^2`` by
    ``m max_{i,l} ||loss_{i,l}||^2``, which lies between ``||loss||^2 / (n (L-1))`` and ``||loss||^2``, so
    Theorem 3's lower bound (for all loss vectors) gives ``lambda_min(K) >= Omega(delta / rho^14) m / (n (L-1))``.

    Computed in factored form (:func:`_source_vectors`: one batched backward sweep for all outputs, then Gram
    matrices of ``O(n L^2 d)`` vectors of length m): ``O(n d L^2 m^2 + (n d L^2)^2 m)`` work, no m x m Jacobian.
    The same matrix as :func:`rnnbook.ntk.output_ntk` restricted to steps ``a >= 2`` (the tests check both
    against ``torch.func`` Jacobians), faster because the outputs share one sweep.
    """
    _check_params(params)
    _check_fw(params, fw)
    E, n, L, d = params.ensemble, fw.n, fw.L, params.d
    if L < 2:
        raise ValueError(f"the loss NTK needs L >= 2 steps (the objective starts at l = 2), got L={L}")
    V, H, pairs = _source_vectors(params, fw)
    P = len(pairs)
    Gu = torch.matmul(V, V.transpose(1, 2)).reshape(E, P, n, d, P, n, d)
    Gh = torch.matmul(H, H.transpose(1, 2)).reshape(E, L - 1, n, L - 1, n)
    lp = torch.tensor([p[0] - 1 for p in pairs], device=V.device)  # position of h_{l}: l - 1
    ap = torch.tensor([p[1] - 2 for p in pairs], device=V.device)  # output step a -> a - 2
    Ghp = Gh[:, lp][:, :, :, lp]  # (E, P, n, P, n): <h_{i,l_p}, h_{j,l_q}>
    T = Gu * Ghp.unsqueeze(3).unsqueeze(-1)  # (E, P, n, d, P, n, d)
    M = torch.zeros(P, L - 1, dtype=torch.float64, device=V.device)
    M[torch.arange(P, device=V.device), ap] = 1.0  # pair p -> its output step
    K = torch.einsum("epidqjc,pa,qb->eiadjbc", T, M, M)
    return K.reshape(E, n * (L - 1) * d, n * (L - 1) * d)


def loss_to_vector(loss: torch.Tensor) -> torch.Tensor:
    """Loss vectors ``(..., n, L, d)`` as the flat vectors of :func:`loss_ntk`, ``(..., n (L-1) d)`` (step 1 dropped)."""
    checks.tensor("loss", loss, ndim=(3, 4))
    return loss[..., 1:, :].reshape(*loss.shape[:-3], -1)


def vector_to_loss(v: torch.Tensor, n: int, L: int, d: int) -> torch.Tensor:
    """The inverse of :func:`loss_to_vector`: ``(..., n (L-1) d)`` to loss vectors ``(..., n, L, d)`` (zero at step 1)."""
    n, L, d = checks.positive_int("n", n), checks.int_at_least("L", L, 2), checks.positive_int("d", d)
    checks.tensor("v", v, ndim=(1, 2))
    if v.shape[-1] != n * (L - 1) * d:
        raise ValueError(f"v must have last dimension n (L-1) d = {n * (L - 1) * d}, got {tuple(v.shape)}")
    body = v.reshape(*v.shape[:-1], n, L - 1, d)
    return torch.cat([torch.zeros_like(body[..., :1, :]), body], dim=-2)


def ntk_extreme_eigenvalues(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda_min, lambda_max)`` of symmetric matrices ``K`` ``(E, N, N)``, float64 ``(E,)`` each (exact, eigvalsh)."""
    checks.tensor("K", K, ndim=3)
    if K.shape[1] != K.shape[2]:
        raise ValueError(f"K must hold square matrices, got shape {tuple(K.shape)}")
    ev = torch.linalg.eigvalsh(K.to(torch.float64))
    return ev[:, 0], ev[:, -1]


def worst_loss(params: Params, fw: Forward, *, K: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss vectors that make the fake gradient smallest for their size: the eigenvector of ``lambda_min`` of
    :func:`loss_ntk`, as loss vectors ``(E, n, L, d)`` of unit total norm (zero at step 1), in the network's dtype,
    and ``lambda_min`` ``(E,)``. (The book's reading of the "for all loss vectors" of Theorem 3.)"""
    _check_params(params)
    _check_fw(params, fw)
    K = loss_ntk(params, fw) if K is None else K
    ev, vec = torch.linalg.eigh(K)
    v = vec[:, :, 0]
    return vector_to_loss(v, fw.n, fw.L, params.d).to(params.dtype), ev[:, 0]


# ----------------------------------------------------------------------------------------------------------
# Proposition 6.1 / Lemma E.4: the randomness decomposition

def fresh_direction(fw: Forward, i_star: int, l_star: int) -> torch.Tensor:
    """The fresh direction ``v_{i*,l*} = (I - U_{l*-1} U_{l*-1}^T) h_{i*,l*} / ||...||`` of Definition B.2,
    ``(E, m)`` float64 (:func:`rnnbook.projections.fresh_decomposition`). ``1 <= l_star <= L``."""
    if not isinstance(fw, Forward):
        raise TypeError(f"fw must be an rnnbook.Forward (from rnnbook.forward), got {type(fw).__name__}")
    i_star = _check_sample(i_star, fw.n)
    l_star = _check_step(l_star, 1, fw.L, "a step of the forward pass")
    v = projections.fresh_decomposition(fw).v[:, i_star, l_star]
    if bool(torch.isnan(v).any()):
        raise ValueError(f"h_{{i*,l*}} lies in the span of the earlier states in some network (no fresh direction)")
    return v


@dataclass
class RandomnessDecomposition:
    """``W = W2 + u v^T`` (Lemma E.4), every field float64: ``W2`` ``(E, m, m)``, ``u``, ``v`` ``(E, m)`` and the
    Gaussian pieces of Proposition 6.1: ``w = W v = sqrt(1 - theta^2) g1 + theta g2 = g1 + g3`` with ``g1, g2``
    i.i.d. ``N(0, 2/m I)`` and ``g3 = u = theta g2 - (1 - sqrt(1 - theta^2)) g1``."""

    W2: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    g1: torch.Tensor
    g2: torch.Tensor
    theta: float


def randomness_decomposition(params: Params, fw: Forward, i_star: int, l_star: int, theta: float, *,
                             seed: int | None = None, generator: torch.Generator | None = None) -> RandomnessDecomposition:
    """Proposition 6.1 / Lemma E.4 for ``v = v_{i*,l*}`` (:func:`fresh_direction`).

    ``w = W v`` is a fresh ``N(0, 2/m I)`` vector (v is orthogonal to every state W acted on before step l*).
    Draw an independent ``xi ~ N(0, 2/m I)`` and rotate: ``g1 = sqrt(1 - theta^2) w + theta xi``,
    ``g2 = theta w - sqrt(1 - theta^2) xi`` (i.i.d. ``N(0, 2/m I)``, and ``w = sqrt(1 - theta^2) g1 + theta g2``).
    Then ``W2 = W - u v^T`` with ``u = w - g1`` replaces ``W v`` by the fresh ``g1``: (a) W2 is distributed like W,
    (b) ``W = W2 + u v^T`` is rank one away from it, (c) conditionally on W2, ``u_k`` is Gaussian with standard
    deviation ``theta sqrt(2/m)`` and a mean of order ``theta^2 / sqrt(m)``, so ``Pr[u_k >= theta / (2 sqrt m)]``
    and ``Pr[u_k <= -theta / (2 sqrt m)]`` are at least 1/4, and (d) ``||u||_inf <= 3 theta rho / (2 sqrt m)`` whp.
    (Def. E.3's ``theta`` has no ``1/sqrt(m)``: u is ``theta`` times an ``N(0, 2/m)`` vector.) ``theta`` in (0, 1)."""
    _check_params(params)
    _check_fw(params, fw)
    theta = checks.real_in("theta", theta, 0.0, 1.0, low_open=True, high_open=True)
    v = fresh_direction(fw, i_star, l_star)
    W = params.W.to(torch.float64)
    w = torch.matmul(W, v.unsqueeze(-1)).squeeze(-1)
    gen = rng.generator(generator, seed)
    xi = rng.randn(w.shape, gen=gen, std=math.sqrt(2.0 / params.m), device=w.device, dtype=torch.float64)
    c = math.sqrt(1.0 - theta ** 2)
    g1 = c * w + theta * xi
    g2 = theta * w - c * xi
    u = w - g1
    W2 = W - u.unsqueeze(-1) * v.unsqueeze(-2)
    return RandomnessDecomposition(W2=W2, u=u, v=v, g1=g1, g2=g2, theta=theta)


def ks_distance_normal(samples: torch.Tensor, std: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance between the empirical law of ``samples`` (any shape, flattened) and
    ``N(0, std^2)``, and the 1% critical value ``1.63 / sqrt(N)`` of the test for N independent samples (for the
    Monte Carlo checks of Proposition 6.1 / Lemma E.4)."""
    checks.tensor("samples", samples)
    std = checks.positive_real("std", std)
    x = samples.detach().to("cpu", torch.float64).flatten().sort().values
    N = x.numel()
    if N < 2:
        raise ValueError(f"samples must hold at least 2 values, got {N}")
    cdf = 0.5 * (1.0 + torch.erf(x / (std * math.sqrt(2.0))))
    i = torch.arange(1, N + 1, dtype=torch.float64)
    D = torch.maximum(i / N - cdf, cdf - (i - 1) / N).max().item()
    return D, 1.63 / math.sqrt(N)


# ----------------------------------------------------------------------------------------------------------
# The thought experiment of Section 6.2: a rank-one kick of one row of W

@dataclass
class KickResult:
    """What a kick ``W' = c e_k v^T`` did to the indicators of its neuron k, for each network and kick.

    ``intended`` ``(E, K)``: the indicator ``1[(g_{i*,l*+1})_k >= 0]`` flipped; ``others`` ``(E, K)``: how many
    *other* indicators ``1[(g_{i,l})_k >= 0]`` of neuron k flipped (all i and steps); ``elsewhere`` ``(E, K)``: how
    many indicators of the other neurons flipped (the kick reaches them only through ``h``). ``exact``: the
    intended flip and no other indicator of neuron k (the event of Section 6.2 (a)+(b))."""

    intended: torch.Tensor
    others: torch.Tensor
    elsewhere: torch.Tensor

    @property
    def exact(self) -> torch.Tensor:
        return self.intended & (self.others == 0)


def sample_neurons(mask: torch.Tensor, count: int, *, seed: int | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` neurons per network drawn uniformly, with replacement, among those where ``mask`` ``(E, m)`` is
    true (e.g. the good coordinates of :func:`indicator_coordinates`). Returns integer ``(E, count)`` and a boolean
    ``(E,)`` that says which networks have any such neuron (the others get neuron 0: ignore their rows)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
        raise TypeError("mask must be a boolean tensor of shape (E, m)")
    count = checks.positive_int("count", count)
    valid = mask.any(dim=1)
    weights = mask.to("cpu", torch.float64)
    weights[~valid.cpu(), 0] = 1.0
    gen = rng.generator(generator, seed)
    return torch.multinomial(weights, count, replacement=True, generator=gen).to(mask.device), valid


def kick_flips(params: Params, x: torch.Tensor, fw: Forward, i_star: int, l_star: int, neurons: torch.Tensor,
               amplitudes: torch.Tensor, v: torch.Tensor) -> KickResult:
    """Run the network with ``W + c e_k v^T`` for many kicks at once and report which indicators changed.

    ``neurons`` ``(E, K)`` (integer rows k), ``amplitudes`` ``(E, K)`` (the c of each kick; Section 6.2 draws
    ``c ~ N(0, theta^2)`` with ``beta_- / sqrt(m) << theta << beta_+ / sqrt(m)``), ``v`` ``(E, m)`` (the fresh
    direction ``v_{i*,l*}``, :func:`fresh_direction`). Since v is orthogonal to every ``h_{i,l}`` with
    ``l < l*``, steps up to ``l*`` do not change; the kicked networks are run from step ``l* + 1`` on, sharing
    ``W`` (one product with all kicks' states, plus the rank-one term ``c (v . h) e_k``). ``1 <= l_star <= L - 1``.
    """
    _check_params(params)
    _check_fw(params, fw)
    n, L, m, E = fw.n, fw.L, params.m, params.ensemble
    i_star = _check_sample(i_star, n)
    l_star = _check_step(l_star, 1, L - 1, "the kick aims at the indicator of step l* + 1 <= L")
    if not isinstance(neurons, torch.Tensor) or neurons.dtype not in (torch.int64, torch.int32) or neurons.ndim != 2:
        raise TypeError("neurons must be an integer tensor of shape (E, K)")
    if neurons.shape[0] != E or bool((neurons < 0).any()) or bool((neurons >= m).any()):
        raise ValueError(f"neurons must have shape ({E}, K) with entries in [0, {m}), got shape {tuple(neurons.shape)}")
    checks.tensor("amplitudes", amplitudes, shape=tuple(neurons.shape))
    checks.tensor("v", v, shape=(E, m))
    Kk = neurons.shape[1]
    dt = params.dtype
    W = params.W
    nk = neurons.to(W.device, torch.int64)
    c = amplitudes.to(W.device, dt)
    vv = v.to(W.device, dt)
    x4 = x if x.ndim == 4 else x.unsqueeze(0)
    Ax = torch.matmul(x4.to(dt), params.A.unsqueeze(1).transpose(-1, -2))  # (E or 1, n, L, m)
    Ax = Ax.expand(E, -1, -1, -1)
    h = fw.h_by_step[:, l_star].unsqueeze(1).expand(E, Kk, n, m).contiguous()  # (E, K, n, m): h_{l*} unchanged
    onehot = torch.zeros(E, Kk, m, dtype=dt, device=W.device).scatter_(-1, nk.unsqueeze(-1), 1.0)
    g_tilde = fw.g_by_step  # (E, L+1, n, m)
    intended = torch.zeros(E, Kk, dtype=torch.bool, device=W.device)
    others = torch.zeros(E, Kk, dtype=torch.long, device=W.device)
    elsewhere = torch.zeros(E, Kk, dtype=torch.long, device=W.device)
    idx = nk.unsqueeze(-1).unsqueeze(-1).expand(E, Kk, n, 1)
    with torch.no_grad():
        for l in range(l_star + 1, L + 1):
            g = torch.matmul(h.reshape(E, Kk * n, m), W.transpose(1, 2)).reshape(E, Kk, n, m) + Ax[:, :, l - 1].unsqueeze(1)
            hv = torch.matmul(h, vv.view(E, 1, m, 1)).squeeze(-1)  # (E, K, n): <v, h_{i,l-1}>
            g = g + (c.unsqueeze(-1) * hv).unsqueeze(-1) * onehot.unsqueeze(2)
            flip = (g >= 0) != (g_tilde[:, l] >= 0).unsqueeze(1)  # (E, K, n, m)
            at_k = flip.gather(-1, idx).squeeze(-1)  # (E, K, n)
            if l == l_star + 1:
                intended = at_k[:, :, i_star].clone()
                at_k[:, :, i_star] = False
            others += at_k.sum(dim=-1)
            elsewhere += flip.sum(dim=(-1, -2)) - flip.gather(-1, idx).squeeze(-1).sum(dim=-1)
            h = torch.relu(g)
    return KickResult(intended=intended, others=others, elsewhere=elsewhere)


# ----------------------------------------------------------------------------------------------------------
# Lemma F.1 and Theorem 3: near initialisation

def pl_ratio(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Polyak-Lojasiewicz ratio ``||grad f(W)||_F^2 / (m f(W))`` of the true objective, float64 ``(E,)``.

    Theorem 3 (main text): ``delta / poly(rho) <= ||grad f||_F^2 / (m f) <= poly(rho)`` near initialisation. In the
    kernel picture ``||grad f||_F^2 = loss^T K loss >= 2 lambda_min(K) f``, so the ratio is at least
    ``2 lambda_min(K) / m`` with K the :func:`loss_ntk` at the same W."""
    from .model import gradient

    _check_params(params)
    g = gradient(params, x, y)
    return g.grad.to(torch.float64).flatten(1).square().sum(dim=1) / (params.m * g.f.to(torch.float64))


def _apply_C(C, X: torch.Tensor, transpose: bool) -> torch.Tensor:
    """Rows ``X`` (E, k, m) times ``C^T`` (``transpose=False``: the rows of ``(C x)^T``) or times ``C``
    (``transpose=True``: the rows of ``(C^T x)^T``), for ``C`` an ``(E, m, m)`` tensor or a factored pair
    ``(P, R)`` meaning ``C = P^T R`` with ``P``, ``R`` of shape ``(E, r, m)``."""
    if isinstance(C, torch.Tensor):
        return torch.matmul(X, C if transpose else C.transpose(1, 2))
    P, R = C
    if transpose:  # x^T C = (x^T P^T) R
        return torch.matmul(torch.matmul(X, P.transpose(1, 2)), R)
    return torch.matmul(torch.matmul(X, R.transpose(1, 2)), P)  # (C x)^T = x^T R^T P


def _check_direction(params: Params, C):
    if isinstance(C, torch.Tensor):
        checks.tensor("C", C, shape=tuple(params.W.shape))
        checks.same_placement("params", params.W, C=C)
        return C
    if not (isinstance(C, tuple) and len(C) == 2):
        raise TypeError("C must be an (E, m, m) tensor or a pair (P, R) of (E, r, m) tensors with C = P^T R")
    P, R = C
    checks.tensor("C[0]", P, ndim=3)
    checks.tensor("C[1]", R, shape=tuple(P.shape))
    if P.shape[0] != params.ensemble or P.shape[2] != params.m:
        raise ValueError(f"the factors of C must have shape (E={params.ensemble}, r, m={params.m}), got {tuple(P.shape)}")
    checks.same_placement("params", params.W, **{"C[0]": P, "C[1]": R})
    return C


def fake_gradient_jvp(params: Params, fw: Forward, loss: torch.Tensor, C, *, bw: Backward | None = None,
                      factored: bool = False):
    """The derivative of the fake-gradient map ``W -> fake grad F_loss(W)`` (Definition E.1, loss vectors fixed) in
    the direction ``C``, with the ReLU masks held fixed (their derivative is zero almost everywhere). Since the
    Hessian of ``F_loss`` is symmetric, this is also ``grad_W <C, fake grad F_loss(W)>``.

    ``C``: an ``(E, m, m)`` tensor, or a pair ``(P, R)`` of ``(E, r, m)`` row blocks meaning ``C = P^T R`` (the fake
    gradient itself has this form with ``r = n (L-1)``, and products with it then cost ``O(r m)``). Returns
    ``(E, m, m)``, or with ``factored=True`` the pair ``(rows, cols)`` of ``(E, 2 n (L-1), m)`` blocks whose product
    ``rows^T cols`` is the result.

    Forward-mode BPTT: the tangents ``hdot_l = D_l (C h_{l-1} + W hdot_{l-1})`` of the forward pass and
    ``udot_l = W^T D_{l+2} udot_{l+1} + C^T D_{l+2} u_{l+1}`` of E.1's backward vectors, then
    ``sum_l D_{l+1} udot_l h_l^T + D_{l+1} u_l hdot_l^T``; no autograd graph."""
    _check_params(params)
    _check_fw(params, fw)
    _check_loss(params, fw, loss)
    C = _check_direction(params, C)
    if bw is None:
        bw = backward(params, fw, loss)
    E, n, L, m = params.ensemble, fw.n, fw.L, params.m
    W = params.W
    Dm = (fw.g_by_step >= 0).to(W.dtype)  # (E, L+1, n, m)
    h = fw.h_by_step
    Wt = W.transpose(1, 2)
    hdot = [torch.zeros_like(h[:, 0])]
    for l in range(1, L):  # hdot_l for l = 1..L-1 (h_L is never multiplied by W)
        g = _apply_C(C, h[:, l - 1], transpose=False) + torch.matmul(hdot[-1], Wt)
        hdot.append(Dm[:, l] * g)
    Du = bw.Du_by_step  # (E, L+1, n, m): D_{l+1} u_l at position l
    udot = [None] * L
    udot[L - 1] = torch.zeros_like(h[:, 0])
    for l in range(L - 2, 0, -1):  # udot_l = (D_{l+2} u_{l+1}) C + (D_{l+2} udot_{l+1}) W, as rows
        udot[l] = _apply_C(C, Du[:, l + 1], transpose=True) + torch.matmul(Dm[:, l + 2] * udot[l + 1], W)
    rows = torch.cat([torch.stack([Dm[:, l + 1] * udot[l] for l in range(1, L)], dim=1),
                      Du[:, 1:L]], dim=1).reshape(E, -1, m)  # (E, 2 (L-1) n, m)
    cols = torch.cat([h[:, 1:L], torch.stack(hdot[1:L], dim=1)], dim=1).reshape(E, -1, m)
    if factored:
        return rows, cols
    return torch.matmul(rows.transpose(1, 2), cols)


def _fake_gradient_factors(fw: Forward, bw: Backward) -> tuple[torch.Tensor, torch.Tensor]:
    """The fake gradient ``sum_l D_{l+1} u_l h_l^T`` as the pair ``(P, R)`` with ``P^T R`` equal to it, ``(E, n(L-1), m)``."""
    E, m, L = fw.h_by_step.shape[0], fw.h_by_step.shape[-1], fw.L
    return bw.Du_by_step[:, 1:L].reshape(E, -1, m), fw.h_by_step[:, 1:L].reshape(E, -1, m)


def lambda_min_gradient(params: Params, x: torch.Tensor, v_loss: torch.Tensor, *, fw: Forward | None = None,
                        factored: bool = False):
    """``(lambda, dlambda/dW)`` for ``lambda(W) = ||fake grad F_v(W)||_F^2`` at fixed loss vectors ``v_loss``
    ``(E, n, L, d)``: with v the unit eigenvector of ``lambda_min`` of :func:`loss_ntk` at W, this is
    ``lambda_min(K(W))`` and its gradient (Danskin's theorem, for a simple eigenvalue),
    ``2 (Hessian of F_v) [fake grad F_v]`` (:func:`fake_gradient_jvp`). ``lambda`` is float64 ``(E,)``; the gradient
    ``(E, m, m)``, or a factored pair ``(rows, cols)`` (gradient ``= rows^T cols``) with ``factored=True``. ReLU masks
    have zero derivative almost everywhere, so sign flips are invisible to this gradient;
    :func:`adversarial_min_eig` adds a surrogate for them. The tests check it against ``torch.func`` (grad of grad
    through :mod:`rnnbook.functional`)."""
    _check_params(params)
    fw = forward(params, x) if fw is None else _check_fw(params, fw)
    bw = backward(params, fw, v_loss)
    PR = _fake_gradient_factors(fw, bw)
    P, R = (t.to(torch.float64) for t in PR)  # ||P^T R||_F^2 = trace((P P^T)(R R^T)): no m x m pass
    lam = (torch.matmul(P, P.transpose(1, 2)) * torch.matmul(R, R.transpose(1, 2))).sum(dim=(1, 2))
    out = fake_gradient_jvp(params, fw, v_loss, PR, bw=bw, factored=True)
    if factored:
        return lam, (2.0 * out[0], out[1])
    return lam, 2.0 * torch.matmul(out[0].transpose(1, 2), out[1])


@dataclass
class AdversaryResult:
    """The book's adversary: ``Wp`` ``(E, m, m)`` with ``||Wp||_2 <= tau0 / sqrt(m)``, the smallest eigenvalue of
    the loss NTK it reached (``lam`` (E,)) and at ``W' = 0`` (``lam0``), and ``lambda_min`` after every iteration
    (``trace`` (E, steps + 1), non-increasing)."""

    Wp: torch.Tensor
    lam: torch.Tensor
    lam0: torch.Tensor
    trace: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        return self.lam / self.lam0


def mask_surrogate(params: Params, fw: Forward, v_loss: torch.Tensor, width: float, *, bw: Backward | None = None):
    """A surrogate for the derivative of ``lambda = ||fake grad F_v||_F^2`` through the ReLU indicators of
    Definition E.1, whose true derivative is zero almost everywhere (the book's construction, not the paper's).

    Row k of the fake gradient is ``G_k = sum_{i,l} s_{i,l+1,k} u_{i,l,k} h_{i,l}`` with ``s = 1[g >= 0]``. Treating
    the indicator as a smooth step of ``g`` with slope ``kappa(g)``, a Gaussian bump of width ``width / sqrt(m)``
    (``width`` in units of ``1/sqrt(m)``), and using ``d g_{i,l+1,k} / d W_k = h_{i,l}`` (the direct effect only),
    gives ``dlambda/dW_k ~ sum_{i,l} 2 <G_k, h_{i,l}> u_{i,l,k} kappa(g_{i,l+1,k}) h_{i,l}``: a push of W_k along
    the states whose indicator at neuron k is near its switching point, in the direction that lowers lambda.
    Returned factored, ``(rows, cols)`` of ``(E, n (L-1), m)`` with the term ``= rows^T cols``."""
    width = _check_threshold("width", width)
    if bw is None:
        bw = backward(params, fw, v_loss)
    E, m, L = params.ensemble, params.m, fw.L
    P, R = _fake_gradient_factors(fw, bw)  # G = P^T R
    h = fw.h_by_step[:, 1:L].reshape(E, -1, m)  # h_{i,l}, l = 1..L-1
    u = bw.u_by_step[:, 1:L].reshape(E, -1, m)  # u_{i,l} (E.1), paired with the indicator at step l + 1
    z = math.sqrt(m) * fw.g_by_step[:, 2:L + 1].reshape(E, -1, m) / width
    kappa = torch.exp(-0.5 * z * z) * (math.sqrt(m) / (width * math.sqrt(2.0 * math.pi)))
    Gh = torch.matmul(torch.matmul(h, R.transpose(1, 2)), P)  # <G_k, h_{i,l}> for every k: rows h^T G^T
    return 2.0 * Gh * u * kappa, h


def adversarial_min_eig(params: Params, x: torch.Tensor, tau0: float, *, steps: int = 10, lr: float = 1.0,
                        mask_width: float | None = 0.3) -> AdversaryResult:
    """The book's adversary for Theorem 3 / Lemma F.1 (not the paper's): a ``W'`` in the ball
    ``||W'||_2 <= tau0 / sqrt(m)`` that makes the smallest eigenvalue of the loss NTK (:func:`loss_ntk`) small.

    Projected gradient descent on ``W' = Y Q^T``, where the rows of ``Q`` are an orthonormal basis of the initial
    hidden states ``h_{i,l}``, ``l = 1..L-1`` (the directions W acts on: every gradient with respect to W has the
    form ``sum (...) h^T``), so that ``||W'||_2 = ||Y||_2`` and the projection onto the ball -- clipping the
    singular values of the ``m x n(L-1)`` matrix Y at ``tau0 / sqrt(m)`` -- is exact and cheap. From ``Y = 0``
    (``W' = 0``), each step tries two directions against the gradient of ``lambda_min`` -- the true (almost
    everywhere) gradient (:func:`lambda_min_gradient`) and, when ``mask_width`` is given (in units of
    ``1/sqrt(m)``), that gradient plus :func:`mask_surrogate` for the sign flips, each of unit spectral norm --
    moves Y by ``lr`` times the radius along each, and projects. ``lambda_min`` is recomputed exactly at every
    candidate; the better candidate is taken if it lowers ``lambda_min``, otherwise the step is refused and its
    length halved (per network). Deterministic (no random start); the gradients stay factored (no m x m matrix
    but W' itself).
    """
    _check_params(params)
    tau0 = _check_tau0(tau0)
    steps = checks.positive_int("steps", steps)
    lr = checks.positive_real("lr", lr)
    if mask_width is not None:
        mask_width = _check_threshold("mask_width", mask_width)
    E, m = params.ensemble, params.m
    fw0 = forward(params, x)
    n, L = fw0.n, fw0.L
    Q = projections.fresh_decomposition(fw0).Q[:, : n * (L - 1)].to(params.dtype)  # (E, r, m) orthonormal rows
    radius = tau0 / math.sqrt(m)

    def project(Y):  # clip the singular values of the tall Y at the radius, through the small r x r Gram matrix
        s2, V = torch.linalg.eigh(torch.matmul(Y.transpose(1, 2), Y).to(torch.float64))
        scale = (radius / s2.clamp_min(0).sqrt().clamp_min(1e-300)).clamp_max(1.0)
        return torch.matmul(Y, ((V * scale.unsqueeze(1)) @ V.transpose(1, 2)).to(Y.dtype))

    def evaluate(Y):
        p = params.with_W(params.W + torch.matmul(Y, Q))
        fw = forward(p, x)
        v_loss, lam = worst_loss(p, fw)
        return p, fw, v_loss, lam

    def unit(gY):  # unit spectral norm, through the small r x r Gram matrix
        top = torch.linalg.eigvalsh(torch.matmul(gY.transpose(1, 2), gY).to(torch.float64))[:, -1].clamp_min(0).sqrt()
        return gY / top.to(gY.dtype).clamp_min(1e-30).view(E, 1, 1)

    def directions(p, fw, v_loss):  # d lambda / dY = (d lambda / dW) Q^T, from the factored gradients
        _, (rows, cols) = lambda_min_gradient(p, x, v_loss, fw=fw, factored=True)
        smooth = unit(torch.matmul(rows.transpose(1, 2), torch.matmul(cols, Q.transpose(1, 2))))
        if mask_width is None:
            return [smooth]
        r2, c2 = mask_surrogate(p, fw, v_loss, mask_width)
        flips = unit(torch.matmul(r2.transpose(1, 2), torch.matmul(c2, Q.transpose(1, 2))))
        return [smooth, unit(smooth + flips)]

    Y = torch.zeros(E, m, Q.shape[1], dtype=params.dtype, device=params.device)
    p, fw, v_loss, lam = evaluate(Y)
    lam0 = lam.clone()
    trace = [lam.cpu()]
    step = torch.full((E,), lr * radius, dtype=params.dtype, device=params.device)
    for _ in range(steps):
        best = None
        for gY in directions(p, fw, v_loss):  # every candidate is evaluated exactly; the best one per network wins
            Y_c = project(Y - step.view(E, 1, 1) * gY)
            cand = (Y_c,) + evaluate(Y_c)
            if best is None:
                best = cand
            else:
                pick = cand[4] < best[4]
                Yb = torch.where(pick.view(E, 1, 1), cand[0], best[0])
                vb = torch.where(pick.view(E, 1, 1, 1), cand[3], best[3])
                lb = torch.where(pick, cand[4], best[4])
                same = bool(pick.all()) or not bool(pick.any())
                pb, fb = (cand[1], cand[2]) if bool(pick.all()) else (best[1], best[2])
                best = (Yb, pb if same else None, fb if same else None, vb, lb)
        Y_new, p_new, fw_new, v_new, lam_new = best
        better = lam_new < lam
        step = torch.where(better, step, 0.5 * step)
        Y = torch.where(better.view(E, 1, 1), Y_new, Y)
        lam = torch.where(better, lam_new, lam)
        v_loss = torch.where(better.view(E, 1, 1, 1), v_new, v_loss)
        if bool(better.all()) and p_new is not None:
            p, fw = p_new, fw_new
        elif bool(better.any()):
            p = params.with_W(params.W + torch.matmul(Y, Q))
            fw = forward(p, x)
        trace.append(lam.cpu())
    return AdversaryResult(Wp=torch.matmul(Y, Q), lam=lam, lam0=lam0, trace=torch.stack(trace, dim=1))
