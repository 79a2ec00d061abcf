"""The probability tools of Appendix A (arXiv v4): Monte Carlo of each statement's event and, where the law is
known in closed form, its exact probability.

Two kinds of functions:

* **exact laws** (float64, CPU, no sampling): the chi-square distribution through the regularised incomplete
  gamma function (:func:`chi2_cdf`, :func:`chi2_sf`); the law of ``||phi(x)||^2`` for a Gaussian vector, a
  chi-square with a Binomial(n, 1/2) number of degrees of freedom (:func:`relu_chi2_cdf`, :func:`relu_chi2_sf`,
  :func:`relu_chi2_moments`; Lemmas A.6-A.8, Corollary A.9, Fact A.11); and each lemma's probability built from
  them (:func:`a3_tails`, :func:`a4_tail`, :func:`a8_failure`, :func:`a17_row_certificate_failure`,
  :func:`a19_toy_exact`);
* **Monte Carlo** (batched draws from an explicit generator or seed): Gaussian vectors (:func:`gaussian_norms`,
  Lemmas A.3, A.4, A.8), Gaussian matrices applied to fixed vectors (:func:`a9_ratios`, :func:`a11_draws`),
  the l2/l_inf split of ``Wx`` uniformly over x (:func:`a17_draws`, Lemma A.17) and a toy function for the
  extended McDiarmid inequality (:func:`a19_toy_draws`, Lemma A.19).

The bounds themselves (the lemmas' thresholds and right-hand sides) live in :mod:`rnnbook.paper`.
Draws are made in the requested ``dtype`` on the CPU generator and moved to ``device``; every sum of squares
is accumulated in float64.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import checks, paper, rng

__all__ = [
    "chi2_cdf", "chi2_sf", "binomial_pmf", "relu_chi2_cdf", "relu_chi2_sf", "relu_chi2_moments", "a3_tails",
    "a4_tail", "a4_b_critical", "a8_failure", "A8Failure", "a9_width_for_failure", "a17_row_certificate_failure",
    "a19_toy_f", "a19_toy_threshold", "a19_toy_exact", "A19Exact", "frequency", "Frequency", "ks_distance",
    "ks_critical", "gaussian_norms", "GaussianNorms", "a9_ratios",
    "a11_draws", "A11Draws", "a17_statistics", "a17_draws", "A17Draws", "a19_toy_draws",
    "a19_toy_condition", "A19Draws",
]

_F64 = torch.float64
#: numbers drawn per chunk (about 16-32 MB), so that no draw holds all repetitions at once
_CHUNK = 1 << 22


# ----------------------------------------------------------------------------------------------------------
# argument helpers

def _draws(draws) -> int:
    return checks.positive_int("draws", draws)


def _placement(device, dtype):
    device = torch.device("cpu" if device is None else device)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return device, dtype


def _f64(name: str, x) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=_F64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {x!r}")
    return t


def _dof(name: str, k) -> torch.Tensor:
    t = torch.as_tensor(k, dtype=_F64)
    if t.numel() == 0 or not torch.all(t == torch.round(t)) or not torch.all(t >= 1):
        raise ValueError(f"{name} must be a positive integer (or a tensor of them), got {k!r}")
    return t


def _vector(name: str, v, n: int | None = None) -> torch.Tensor:
    t = checks.tensor(name, torch.as_tensor(v, dtype=_F64) if not isinstance(v, torch.Tensor) else v, ndim=1,
                      finite=True)
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, got {t.shape[0]}")
    return t.to(_F64).cpu()


# ----------------------------------------------------------------------------------------------------------
# exact laws

def chi2_cdf(k, x) -> torch.Tensor:
    """``Pr[chi^2_k <= x]`` (float64), the regularised lower incomplete gamma ``P(k/2, x/2)``; broadcasts over
    ``k`` (positive integers) and ``x`` (0 for ``x <= 0``)."""
    k, x = _dof("k", k), _f64("x", x)
    out = torch.special.gammainc(k / 2, x.clamp(min=0.0) / 2)
    return torch.where(x > 0, out, torch.zeros_like(out))


def chi2_sf(k, x) -> torch.Tensor:
    """``Pr[chi^2_k > x]`` (float64), computed directly (``Q(k/2, x/2)``), so that deep tails keep their
    relative accuracy; 1 for ``x <= 0``."""
    k, x = _dof("k", k), _f64("x", x)
    out = torch.special.gammaincc(k / 2, x.clamp(min=0.0) / 2)
    return torch.where(x > 0, out, torch.ones_like(out))


def binomial_pmf(n: int, p: float) -> torch.Tensor:
    """``Pr[Bin(n, p) = j]`` for ``j = 0..n`` (float64, from log-gamma: no overflow at large n)."""
    n = checks.positive_int("n", n)
    p = checks.real_in("p", p, 0.0, 1.0)
    j = torch.arange(n + 1, dtype=_F64)
    if p in (0.0, 1.0):
        return (j == (0 if p == 0.0 else n)).to(_F64)
    logc = math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    return torch.exp(logc + j * math.log(p) + (n - j) * math.log1p(-p))


def _relu_mixture(n: int, x, tail: bool, tol: float) -> torch.Tensor:
    n = checks.positive_int("n", n)
    x = _f64("x", x)
    tol = checks.real_in("tol", tol, 0.0, 1.0)
    w = binomial_pmf(n, 0.5)                          # (n + 1,) weights of omega = 0..n
    omega = torch.arange(n + 1, dtype=_F64)
    keep = (w >= tol) & (omega >= 1)                  # chi^2_0 is the point mass at 0, handled apart
    xs = x.reshape(-1, 1)
    part = chi2_sf(omega[keep], xs) if tail else chi2_cdf(omega[keep], xs)     # (len(x), kept terms)
    zero = (xs[:, 0] < 0).to(_F64) if tail else (xs[:, 0] >= 0).to(_F64)
    return (w[0] * zero + part @ w[keep]).reshape(x.shape)


def relu_chi2_cdf(n: int, x, *, tol: float = 0.0) -> torch.Tensor:
    """``Pr[chi^2_omega <= x]`` with ``omega ~ Bin(n, 1/2)`` (and ``chi^2_0 = 0``): the exact law of
    ``||phi(x)||^2 / sigma^2`` for ``x ~ N(0, sigma^2 I_n)`` (Lemmas A.6-A.8) and of ``m ||v||^2 / (2 ||h||^2)`` in
    Fact A.11 (with n = m). ``tol > 0`` drops the omega whose binomial weight is below it (faster at large n; the
    result then errs by at most the dropped mass, ``<= (n + 1) tol``)."""
    return _relu_mixture(n, x, False, tol)


def relu_chi2_sf(n: int, x, *, tol: float = 0.0) -> torch.Tensor:
    """``Pr[chi^2_omega > x]``, ``omega ~ Bin(n, 1/2)``, summed term by term (accurate in the far tail when
    ``tol = 0``)."""
    return _relu_mixture(n, x, True, tol)


def relu_chi2_moments(n: int) -> tuple[float, float]:
    """Mean and variance of ``chi^2_omega`` with ``omega ~ Bin(n, 1/2)``, by summation over omega (given omega:
    mean omega, variance 2 omega)."""
    w = binomial_pmf(n, 0.5)
    omega = torch.arange(n + 1, dtype=_F64)
    mean = float(w @ omega)
    second = float(w @ (2 * omega + omega ** 2))
    return mean, second - mean ** 2


def a3_tails(k: int, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact probabilities of Lemma A.3's two events for ``X ~ chi^2_k``: ``Pr[X - k >= 2 sqrt(k t) + 2 t]`` and
    ``Pr[k - X >= 2 sqrt(k t)]``, for each ``t`` (a number or a 1-D sequence)."""
    ts = torch.atleast_1d(_f64("t", t))
    up = torch.tensor([paper.a3_upper_threshold(k, float(v)) for v in ts], dtype=_F64)
    lo = torch.tensor([paper.a3_lower_threshold(k, float(v)) for v in ts], dtype=_F64)
    upper = chi2_sf(k, up)
    lower = torch.where(lo > 0, chi2_cdf(k, lo), torch.zeros_like(lo))
    return upper.reshape(torch.as_tensor(t).shape), lower.reshape(torch.as_tensor(t).shape)


def a4_tail(n: int, b) -> torch.Tensor:
    """Exact ``Pr[| ||x||^2 - n sigma^2 | >= n sigma^2 / b]`` for x with n i.i.d. ``N(0, sigma^2)`` entries
    (Lemma A.4; the event does not depend on sigma), for each ``b > 0``."""
    n = checks.positive_int("n", n)
    bs = _f64("b", b)
    if not torch.all(bs > 0):
        raise ValueError(f"b must be positive, got {b!r}")
    dev = n / bs
    upper = chi2_sf(n, n + dev)
    lower = torch.where(n - dev > 0, chi2_cdf(n, (n - dev).clamp(min=0)), torch.zeros_like(dev))
    return upper + lower


class A8Failure(NamedTuple):
    """Exact failure probabilities of Lemmas A.6-A.8: ``||phi(x)|| <= (1 - eps) sqrt(n/2) sigma`` (``low``),
    ``||phi(x)|| >= (1 + eps) sqrt(n/2) sigma`` (``high``) and either (``total``)."""

    low: torch.Tensor
    high: torch.Tensor
    total: torch.Tensor


def a8_failure(n: int, eps) -> A8Failure:
    """Exact ``Pr[||phi(x)|| not in ((1 - eps), (1 + eps)) sqrt(n/2) sigma]`` for ``x ~ N(0, sigma^2 I_n)``
    (Lemma A.8 with its two one-sided halves A.6, A.7; Corollary A.9 is the case n = m), for each ``eps`` in
    (0, 1)."""
    n = checks.positive_int("n", n)
    e = _f64("eps", eps)
    if not torch.all((e > 0) & (e < 1)):
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    low = relu_chi2_cdf(n, (1 - e) ** 2 * n / 2)
    high = relu_chi2_sf(n, (1 + e) ** 2 * n / 2)
    return A8Failure(low, high, low + high)


def a9_width_for_failure(eps: float, target: float, *, m_max: int = 1 << 26) -> int:
    """The smallest width m at which the **exact** failure probability of Corollary A.9 (:func:`a8_failure` with
    n = m) is at most ``target`` -- to set against :func:`rnnbook.paper.a9_width_for`, the width at which the
    corollary's *bound* reaches it. Bisection over m (the failure probability falls with m)."""
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
    target = checks.real_in("target", target, 0.0, 1.0, low_open=True, high_open=True)
    m_max = checks.positive_int("m_max", m_max)

    def fail(m):
        return float(a8_failure(m, eps).total)

    lo, hi = 1, 2
    while fail(hi) > target:
        lo, hi = hi, hi * 2
        if hi > m_max:
            raise ValueError(f"no width up to m_max={m_max} reaches failure probability {target} at eps={eps}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fail(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def a4_b_critical() -> float:
    """The b below which Lemma A.4's bound ``2 e^{-n/(8 b^2)}`` falls, for large n, below the true probability:
    the upper tail ``Pr[chi^2_n >= n (1 + 1/b)]`` decays like ``e^{-n I(1/b)}`` with Cramer's rate
    ``I(x) = (x - log(1 + x)) / 2``, so the bound fails for large n exactly when ``1/(8 b^2) > I(1/b)``.
    Solved by bisection (the book's derivation, not the paper's)."""
    def g(b):
        return 0.5 * (1 / b - math.log1p(1 / b)) - 1 / (8 * b * b)
    lo, hi = 0.05, 5.0            # g(lo) < 0 < g(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def a17_row_certificate_failure(m: int, d: int, s: int) -> float:
    """Exact probability that more than ``s`` rows of ``W in R^{m x d}`` (i.i.d. ``N(0, 2/m)`` entries) have norm
    above ``log m / sqrt(m)`` (:func:`rnnbook.paper.a17_linf_threshold`). When at most s rows do, the split of
    every ``y = W x`` into its s largest coordinates and the rest has ``||y_2||_inf <= (log m/sqrt m) ||x||`` for
    all x at once (Lemma A.17's l_inf part), since ``|(Wx)_k| <= ||W_k|| ||x||``; so this is an upper bound on the
    failure probability of that event. ``||W_k||^2 m / 2`` is ``chi^2_d``."""
    m, d = checks.positive_int("m", m), checks.positive_int("d", d)
    s = checks.positive_int("s", s)
    if not d <= s <= m:
        raise ValueError(f"Lemma A.17 needs d <= s <= m, got d={d}, s={s}, m={m}")
    tau = paper.a17_linf_threshold(m)
    p_row = float(chi2_sf(d, m * tau ** 2 / 2))
    return float(binomial_pmf(m, p_row)[s + 1:].sum())


def a19_toy_f(S, N: int, T: int) -> torch.Tensor:
    """The book's toy function for Lemma A.19, as a function of ``S = sum_i w_i`` (w_i in {0, 1}):
    ``f = (S / N) 1[S < T]``, with values in [0, 1]."""
    S = torch.as_tensor(S)
    return torch.where(S < T, S.to(_F64) / N, torch.zeros((), dtype=_F64))


def _toy_args(N, q, T):
    N = checks.positive_int("N", N)
    q = checks.real_in("q", q, 0.0, 1.0, low_open=True, high_open=True)
    T = checks.int_at_least("T", T, 2)
    if T > N:
        raise ValueError(f"T must satisfy 2 <= T <= N, got T={T}, N={N}")
    return N, q, T


def a19_toy_threshold(N: int, q: float, kappa: float) -> int:
    """The cliff ``T = ceil(N q + kappa sqrt(N q (1 - q)))`` of the toy: ``kappa`` standard deviations of S above its
    mean, so that the bad event ``S in {T - 1, T}`` has a small probability p."""
    N = checks.positive_int("N", N)
    q = checks.real_in("q", q, 0.0, 1.0, low_open=True, high_open=True)
    kappa = checks.real_in("kappa", kappa, 0.0, math.inf, high_open=True)
    return int(math.ceil(N * q + kappa * math.sqrt(N * q * (1 - q))))


class A19Exact(NamedTuple):
    """The toy of Lemma A.19 in closed form: ``mu = E f``, the probability ``p`` that its bounded-difference
    condition (with ``c = 1/N``) fails, the probability ``failure = Pr[f < mu/2]``, and the two parts of the
    failure, ``Pr[S >= T]`` (``cliff``) and ``Pr[S < mu N / 2]`` (``low_sum``)."""

    mu: float
    p: float
    c: float
    failure: float
    cliff: float
    low_sum: float


def a19_toy_exact(N: int, q: float, T: int) -> A19Exact:
    """Exact quantities of the book's toy for Lemma A.19 (not from the paper): ``w_1..w_N`` i.i.d. Bernoulli(q),
    ``S = sum w_i`` and ``f = (S/N) 1[S < T]``. Changing one ``w_i`` moves S by one, hence f by at most
    ``c = 1/N`` -- except when ``S in {T - 1, T}``, where one change can jump over the cliff at T (by about
    T/N). So the bounded-difference condition holds, for every i and every replacement at once, exactly when
    ``S not in {T-1, T}``: ``p = Pr[S = T-1] + Pr[S = T]``."""
    N, q, T = _toy_args(N, q, T)
    pmf = binomial_pmf(N, q)
    S = torch.arange(N + 1)
    f = a19_toy_f(S, N, T)
    mu = float(pmf @ f)
    p = float(pmf[T - 1] + pmf[T])
    fail = float(pmf[f < mu / 2].sum())
    cliff = float(pmf[T:].sum())
    low = float(pmf[(S.to(_F64) < mu * N / 2)].sum())
    return A19Exact(mu, p, 1.0 / N, fail, cliff, low)


# ----------------------------------------------------------------------------------------------------------
# Monte Carlo summaries

class Frequency(NamedTuple):
    """A Monte Carlo frequency: the ``estimate`` (an unbiased estimator of the probability), its standard
    error, the number of ``draws`` and ``upper`` (a 95% upper confidence bound, Wilson's, which stays useful when
    no draw hit the event)."""

    estimate: float
    stderr: float
    draws: int
    upper: float


def frequency(event) -> Frequency:
    """The fraction of draws in which ``event`` (a boolean tensor or array of draws) holds, with its
    uncertainty."""
    e = torch.as_tensor(event)
    if e.dtype != torch.bool:
        raise TypeError(f"event must be a boolean tensor of draws, got dtype {e.dtype}")
    n = e.numel()
    if n == 0:
        raise ValueError("event must hold at least one draw")
    k = int(e.sum())
    p = k / n
    z = 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Frequency(p, math.sqrt(p * (1 - p) / n), n, min(1.0, centre + half))


def ks_distance(samples, cdf) -> float:
    """Kolmogorov-Smirnov distance ``sup_x |F_R(x) - F(x)|`` between the empirical law of ``samples`` (1-D) and
    a continuous CDF ``cdf`` (a function of a float64 tensor)."""
    x = torch.sort(torch.as_tensor(samples, dtype=_F64).reshape(-1)).values
    n = x.numel()
    if n == 0:
        raise ValueError("samples must not be empty")
    if not callable(cdf):
        raise TypeError("cdf must be a function of a float64 tensor")
    F = torch.as_tensor(cdf(x), dtype=_F64)
    i = torch.arange(1, n + 1, dtype=_F64)
    return float(torch.maximum(i / n - F, F - (i - 1) / n).max())


def ks_critical(draws: int, alpha: float = 0.01) -> float:
    """The level that the Kolmogorov-Smirnov distance of ``draws`` samples from their own continuous law exceeds with
    probability ``alpha`` (asymptotic Kolmogorov law: ``Pr[sqrt(R) D > x] -> 2 sum_k (-1)^(k-1) e^{-2 k^2 x^2}``),
    divided by ``sqrt(draws)``."""
    R = _draws(draws)
    alpha = checks.real_in("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)

    def tail(x):
        return 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))

    lo, hi = 0.2, 5.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return 0.5 * (lo + hi) / math.sqrt(R)


# ----------------------------------------------------------------------------------------------------------
# Monte Carlo draws

class GaussianNorms(NamedTuple):
    """Per draw: ``sq = ||x||^2`` and ``relu_sq = ||phi(x)||^2`` (float64) for ``x ~ N(0, sigma^2 I_n)``."""

    sq: torch.Tensor
    relu_sq: torch.Tensor


def gaussian_norms(n: int, draws: int, *, sigma: float = 1.0, generator=None, seed=None, device=None,
                   dtype=torch.float32) -> GaussianNorms:
    """``draws`` independent Gaussian vectors ``x ~ N(0, sigma^2 I_n)`` and, for each, ``||x||^2`` and
    ``||phi(x)||^2`` with ``phi = ReLU``: the variables of Lemmas A.3 (``||x||^2 / sigma^2 ~ chi^2_n``), A.4 and
    A.6-A.8. Drawn in chunks (nothing of size ``draws x n`` is held at once)."""
    n, draws = checks.positive_int("n", n), _draws(draws)
    sigma = checks.positive_real("sigma", sigma)
    device, dtype = _placement(device, dtype)
    gen = rng.generator(generator, seed)
    rows = max(1, _CHUNK // n)
    sq, rsq = [], []
    for start in range(0, draws, rows):
        r = min(rows, draws - start)
        x = torch.randn(r, n, generator=gen, dtype=dtype, device=gen.device).to(device).mul_(sigma)
        sq.append((x * x).sum(dim=1, dtype=_F64))
        x.clamp_(min=0)
        rsq.append((x * x).sum(dim=1, dtype=_F64))
    return GaussianNorms(torch.cat(sq), torch.cat(rsq))


def _matrix_products(m: int, n: int, vectors: torch.Tensor, draws: int, std: float, gen, device, dtype):
    """Yield ``W @ vectors.T`` (chunk, m, V) for ``draws`` matrices ``W in R^{m x n}`` with i.i.d. ``N(0, std^2)``
    entries, chunk by chunk."""
    V = vectors.to(device=device, dtype=dtype).T.contiguous()
    rows = max(1, _CHUNK // (m * n))
    for start in range(0, draws, rows):
        r = min(rows, draws - start)
        W = torch.randn(r, m, n, generator=gen, dtype=dtype, device=gen.device).to(device).mul_(std)
        yield W @ V


def a9_ratios(m: int, x, draws: int, *, sigma: float = 1.0, generator=None, seed=None, device=None,
              dtype=torch.float32) -> torch.Tensor:
    """Corollary A.9: ``||phi(A x)|| / (sigma ||x||)`` for ``draws`` independent matrices ``A in R^{m x n}`` with
    i.i.d. ``N(0, 2 sigma^2 / m)`` entries and the fixed vector ``x in R^n`` (float64, shape ``(draws,)``)."""
    m, draws = checks.positive_int("m", m), _draws(draws)
    sigma = checks.positive_real("sigma", sigma)
    x = _vector("x", x)
    if float(x.norm()) == 0:
        raise ValueError("x must be non-zero")
    device, dtype = _placement(device, dtype)
    gen = rng.generator(generator, seed)
    out = []
    for Y in _matrix_products(m, x.shape[0], x[None], draws, sigma * math.sqrt(2.0 / m), gen, device, dtype):
        out.append(Y[..., 0].clamp(min=0).pow(2).sum(dim=1, dtype=_F64).sqrt())
    return torch.cat(out).cpu() / (sigma * float(x.norm()))


class A11Draws(NamedTuple):
    """Per draw and per q (shape ``(draws, Q)``): ``X = m ||v||^2 / (2 ||h||^2)`` (float64), the number ``omega`` of
    non-zero coordinates of v (``<W_k, h + q> >= 0``) and the number of negative coordinates of v."""

    X: torch.Tensor
    omega: torch.Tensor
    negative: torch.Tensor


def a11_draws(m: int, h, qs, draws: int, *, generator=None, seed=None, device=None,
              dtype=torch.float32) -> A11Draws:
    """Fact A.11: ``v_k = 1[<W_k, h + q> >= 0] <W_k, h>`` for ``draws`` independent ``W in R^{m x n}`` with i.i.d.
    ``N(0, 2/m)`` entries, fixed ``h`` (n,) and each fixed ``q`` (rows of ``qs``, (Q, n)); the same W serves every
    q of a draw. The book's reading: for every fixed q with ``h + q != 0``, ``X = m ||v||^2 / (2 ||h||^2)`` is
    exactly ``chi^2_omega`` with ``omega ~ Bin(m, 1/2)`` (:func:`relu_chi2_cdf`)."""
    m, draws = checks.positive_int("m", m), _draws(draws)
    h = _vector("h", h)
    qs = torch.as_tensor(qs, dtype=_F64) if not isinstance(qs, torch.Tensor) else qs.to(_F64).cpu()
    if qs.ndim != 2 or qs.shape[1] != h.shape[0]:
        raise ValueError(f"qs must have shape (Q, {h.shape[0]}) (one q per row), got {tuple(qs.shape)}")
    hn2 = float(h @ h)
    if hn2 == 0:
        raise ValueError("h must be non-zero")
    device, dtype = _placement(device, dtype)
    gen = rng.generator(generator, seed)
    vecs = torch.cat([h[None], h[None] + qs])                  # (1 + Q, n): h, then h + q for each q
    X, om, neg = [], [], []
    for Y in _matrix_products(m, h.shape[0], vecs, draws, math.sqrt(2.0 / m), gen, device, dtype):
        a, on = Y[..., :1], Y[..., 1:] >= 0                      # (r, m, 1), (r, m, Q)
        v = torch.where(on, a, torch.zeros((), dtype=Y.dtype, device=Y.device))
        X.append((v * v).sum(dim=1, dtype=_F64).cpu() * (m / (2 * hn2)))
        om.append(on.sum(dim=1).cpu())
        neg.append((v < 0).sum(dim=1).cpu())
    return A11Draws(torch.cat(X), torch.cat(om), torch.cat(neg))


class A17Draws(NamedTuple):
    """Per draw of ``W in R^{m x d}`` (float64 unless a count), with ``tau = log m / sqrt(m)``, ``y = W x`` split into
    ``y_1`` = its s largest coordinates (in absolute value) and ``y_2`` = the rest, and ``Lambda`` = the smallest
    threshold with ``||y_2||_inf <= Lambda ||x||`` for all x (the sup over unit x of the (s+1)-th largest ``|y_k|``):

    * ``max_row``: ``max_k ||W_k||``, exactly ``sup_x ||W x||_inf / ||x||``;
    * ``level_found`` <= Lambda <= ``level_cert``: a searched x gives the lower end; the upper end is
      ``min(r_(s+1), ||W||_2 / sqrt(s + 1))`` (``r_(j)``: the j-th largest row norm);
    * ``count_cert``: an upper bound on ``sup_x #{k: |y_k| > tau ||x||}``: only the rows B with ``||W_k|| > tau``
      can exceed, and at most ``||W_B||_2^2 / tau^2`` of them at once;
    * ``count_found``: the most coordinates above ``tau ||x||`` among the searched x;
    * ``l2_found`` <= ``sup_x ||y_1|| / ||x||`` <= ``l2_cert = min(||W||_2, (sum_{j <= s} r_(j)^2)^{1/2})``.
    """

    max_row: torch.Tensor
    level_found: torch.Tensor
    level_cert: torch.Tensor
    count_cert: torch.Tensor
    count_found: torch.Tensor
    l2_found: torch.Tensor
    l2_cert: torch.Tensor


def _top_eigvec(G: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigh(G).eigenvectors[..., -1]           # (r, d)


def _min_norm_in_hull(P: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """The point of smallest norm in the convex hull of the rows of ``P`` (..., k, d), by Frank-Wolfe with exact line
    search. Normalised, it is the unit x that maximises ``min_k <p_k, x>`` (when that maximum is positive)."""
    z = P.mean(dim=-2)
    for _ in range(iters):
        j = (P @ z[..., None])[..., 0].argmin(dim=-1)
        v = torch.gather(P, -2, j[..., None, None].expand(*j.shape, 1, P.shape[-1]))[..., 0, :]
        step = v - z
        gam = (-(z * step).sum(-1) / (step * step).sum(-1).clamp(min=torch.finfo(P.dtype).tiny)).clamp(0, 1)
        z = z + gam[..., None] * step
    return z


def a17_statistics(W: torch.Tensor, s: int, *, search_steps: int = 2) -> A17Draws:
    """The quantities of :class:`A17Draws` for a batch of matrices ``W`` of shape ``(r, m, d)`` (any entries; the
    threshold is Lemma A.17's ``tau = log m / sqrt(m)``), uniformly over all x: the certificates hold for every x at
    once, and the search looks for a bad x. Search: start from the directions of the 2(s + 1) longest rows and the
    top right singular direction; then, ``search_steps`` times, take the s + 1 largest coordinates of ``Wx`` with
    their signs and move x to the unit vector that maximises the smallest of them (the min-norm point of the
    signed rows' convex hull)."""
    W = checks.tensor("W", W, ndim=3)
    r, m, d = W.shape
    s = checks.positive_int("s", s)
    if not d <= s < m:
        raise ValueError(f"s must satisfy d <= s < m (Lemma A.17: d <= s <= m), got d={d}, s={s}, m={m}")
    steps = checks.int_at_least("search_steps", search_steps, 0)
    dtype = W.dtype
    tau = paper.a17_linf_threshold(m)
    rn = W.norm(dim=2)                                          # (r, m) row norms
    top = torch.topk(rn, min(m, 2 * (s + 1)), dim=1)
    Wt = W.transpose(1, 2)                                      # (r, d, m)
    G = Wt @ W                                                  # (r, d, d)
    spec = torch.linalg.eigvalsh(G)[:, -1].clamp(min=0).sqrt()  # ||W||_2
    big = rn > tau
    spec_big2 = torch.linalg.eigvalsh(Wt @ (W * big[..., None]))[:, -1].clamp(min=0)
    count_cert = torch.minimum(big.sum(dim=1).to(dtype), torch.floor(spec_big2 / tau ** 2))
    level_cert = torch.minimum(top.values[:, s], spec / math.sqrt(s + 1))
    l2_cert = torch.minimum(spec, top.values[:, :s].pow(2).sum(dim=1).sqrt())
    X = torch.gather(W, 1, top.indices[..., None].expand(r, top.indices.shape[1], d))   # (r, C, d) candidates
    X = torch.cat([X, _top_eigvec(G)[:, None, :]], dim=1)
    C = X.shape[1]
    lvl = torch.zeros(r, dtype=dtype, device=W.device)
    cnt = torch.zeros(r, dtype=dtype, device=W.device)
    l2 = torch.zeros(r, dtype=dtype, device=W.device)
    for it in range(steps + 1):
        X = X / X.norm(dim=2, keepdim=True).clamp(min=1e-30)
        Y = X @ Wt                                              # (r, C, m): y = W x for each candidate x
        A = Y.abs()
        tk = torch.topk(A, s + 1, dim=2)                        # (r, C, s + 1)
        lvl = torch.maximum(lvl, tk.values[..., s].max(dim=1).values)
        cnt = torch.maximum(cnt, (A > tau).sum(dim=2).max(dim=1).values.to(dtype))
        l2 = torch.maximum(l2, tk.values[..., :s].pow(2).sum(dim=2).sqrt().max(dim=1).values)
        if it < steps:
            signs = torch.gather(torch.sign(Y), 2, tk.indices)  # (r, C, s + 1)
            P = torch.gather(W[:, None].expand(r, C, m, d), 2, tk.indices[..., None].expand(r, C, s + 1, d))
            X = _min_norm_in_hull(P * signs[..., None])
    vals = (top.values[:, 0], lvl, level_cert, count_cert, cnt, l2, l2_cert)
    return A17Draws(*(v.to("cpu", _F64) for v in vals))


def a17_draws(m: int, d: int, s: int, draws: int, *, generator=None, seed=None, device=None,
              dtype=torch.float32, search_steps: int = 2) -> A17Draws:
    """Lemma A.17 by Monte Carlo: ``draws`` matrices ``W in R^{m x d}`` with i.i.d. ``N(0, 2/m)`` entries and, for
    each, the quantities of :class:`A17Draws` (:func:`a17_statistics`), which bracket the lemma's event
    **uniformly over all x** (the lemma's "for every x"). Needs ``d <= s < m`` (the lemma's range)."""
    m, d, s, draws = (checks.positive_int(k, v) for k, v in (("m", m), ("d", d), ("s", s), ("draws", draws)))
    if not d <= s < m:
        raise ValueError(f"s must satisfy d <= s < m (Lemma A.17: d <= s <= m), got d={d}, s={s}, m={m}")
    device, dtype = _placement(device, dtype)
    gen = rng.generator(generator, seed)
    rows = max(1, _CHUNK // (m * max(d, 2 * s + 3)))
    parts = []
    for start in range(0, draws, rows):
        r = min(rows, draws - start)
        W = torch.randn(r, m, d, generator=gen, dtype=dtype, device=gen.device).to(device).mul_(math.sqrt(2.0 / m))
        parts.append(a17_statistics(W, s, search_steps=search_steps))
    return A17Draws(*(torch.cat([getattr(p, k) for p in parts]) for k in A17Draws._fields))


class A19Draws(NamedTuple):
    """Per draw of the toy (:func:`a19_toy_exact`): the sum ``S``, the value ``f`` and whether the
    bounded-difference condition with ``c = 1/N`` holds for every coordinate and every replacement (``condition``)."""

    S: torch.Tensor
    f: torch.Tensor
    condition: torch.Tensor


def a19_toy_draws(N: int, q: float, T: int, draws: int, *, generator=None, seed=None, device=None) -> A19Draws:
    """Lemma A.19 by Monte Carlo on the book's toy: ``draws`` vectors ``w in {0, 1}^N`` with i.i.d. Bernoulli(q)
    entries, ``f = (S/N) 1[S < T]``, and the condition checked over all single-coordinate changes (a change of
    ``w_i`` turns S into S - 1 or S + 1, so the neighbours of w take at most two values of f)."""
    N, q, T = _toy_args(N, q, T)
    draws = _draws(draws)
    device, _ = _placement(device, torch.float64)
    gen = rng.generator(generator, seed)
    rows = max(1, _CHUNK // N)
    S = []
    for start in range(0, draws, rows):
        r = min(rows, draws - start)
        w = torch.rand(r, N, generator=gen, device=gen.device) < q
        S.append(w.to(device).sum(dim=1))
    S = torch.cat(S).cpu()
    return A19Draws(S, a19_toy_f(S, N, T), a19_toy_condition(S, N, T))


def a19_toy_condition(S, N: int, T: int) -> torch.Tensor:
    """Whether the toy's bounded-difference condition with ``c = 1/N`` holds at a point with sum ``S``, for every
    coordinate i and every replacement of ``w_i``: changing a ``w_i = 1`` gives S - 1 (possible when S >= 1),
    changing a ``w_i = 0`` gives S + 1 (possible when S <= N - 1)."""
    S = torch.as_tensor(S)
    f = a19_toy_f(S, N, T)
    down = torch.where(S >= 1, (f - a19_toy_f(S - 1, N, T)).abs(), torch.zeros_like(f))
    up = torch.where(S <= N - 1, (f - a19_toy_f(S + 1, N, T)).abs(), torch.zeros_like(f))
    return torch.maximum(down, up) <= (1.0 / N) * (1 + 1e-9)
