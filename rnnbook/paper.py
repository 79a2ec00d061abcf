"""The paper's parameters and bounds, each a named function with its arXiv v4 number, in one place.

Every constant of Allen-Zhu, Li and Song (arXiv 1810.12065 v4) that a chapter, a test or another module
uses is computed here, so that prose, code and tests cannot disagree about, say, rho^44 or the threshold of
Lemma B.9. Hidden constants (the ``O(.)`` and ``Omega(.)`` of the statements) are set to 1: these functions
give the *shape* of each bound, which is what the book compares its measurements with; where the paper
states a number (the 10^6 of Lemma B.6, the 1/64 of Lemma D.2, ...) it is used as stated.

Notation (Section 2.1): ``rho = n L d log m`` and ``varrho = n L d delta^{-1} log(m / eps)``.
Logarithms are natural. The paper's theorems need ``m >= C varrho^C`` for an absolute constant ``C`` that it
never states, so no function here pretends to give the width a theorem needs.

At the end, clearly separated, is the one number that is **the book's choice and not the paper's**: the
step size the experiments actually use (:func:`book_step_size`).
"""
from __future__ import annotations

import math

from . import checks

__all__ = [
    "rho", "varrho", "b3_upper", "b3_g_upper", "b3_lower", "b6_threshold", "b6_step_loss", "b11_bound", "b12_growth", "b15_bound", "b16_bound",
    "b19_bound", "b9_delta_max", "b9_alpha", "c2_flip_bound",
    "c2_forward_bound", "c2_probability_exponent", "beta_plus", "beta_minus", "d2_fraction", "d7_threshold",
    "d7_fraction", "thm5_lower", "thm3_radius", "thm3_lower", "thm3_upper", "thm3_upper_per_sample",
    "thm4_linear", "thm4_quadratic", "thm1_step_size", "thm1_iterations", "thm1_min_iterations", "thm1_contraction", "thm2_step_size",
    "thm2_iterations", "thm2_growth", "gd_ball_radius", "initial_loss_bound",
    "BOOK_STEP_C", "book_step_size",
]


def _pos(name, v):
    return checks.positive_real(name, v)


def _pow(x: float, k: float) -> float:
    """``x ** k``, or infinity where that overflows a float (rho^100 does at moderate rho)."""
    try:
        return float(x) ** k
    except OverflowError:
        return math.inf


def _size(name, v):
    return checks.positive_int(name, v)


# ----------------------------------------------------------------------------------------------------------
# Section 2.1: the shorthands

def rho(n: int, L: int, d: int, m: int) -> float:
    """``rho = n L d log m`` (Section 2.1)."""
    return _size("n", n) * _size("L", L) * _size("d", d) * math.log(_size("m", m))


def varrho(n: int, L: int, d: int, delta: float, m: int, eps: float) -> float:
    """``varrho = n L d delta^{-1} log(m / eps)`` (Section 2.1; Lemmas C.7 and C.9 print ``n L d log m``,
    a typo)."""
    delta = checks.real_in("delta", delta, 0.0, 1.0, low_open=True)
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True)
    return _size("n", n) * _size("L", L) * _size("d", d) / delta * math.log(_size("m", m) / eps)


# ----------------------------------------------------------------------------------------------------------
# Appendix B: at random initialisation

def b3_upper(l: int) -> float:
    """Lemma B.3: ``||h_{i,l+1}|| <= 2 l + 4`` (and ``||g_{i,l+1}|| <= 4 l + 8``) for ``l = 0..L-1``."""
    return 2.0 * checks.int_at_least("l", l, 0) + 4.0


def b3_g_upper(l: int) -> float:
    """Lemma B.3: ``||g_{i,l+1}|| <= 4 l + 8`` for ``l = 0..L-1``."""
    return 4.0 * checks.int_at_least("l", l, 0) + 8.0


def b3_lower(l: int, L: int) -> float:
    """Lemma B.3 as printed: ``||h_{i,l+1}|| >= (1 - 1/(4L))^l`` for ``l = 0..L-1``."""
    return (1.0 - 1.0 / (4.0 * _size("L", L))) ** checks.int_at_least("l", l, 0)


def b6_threshold(L: int, m: int) -> float:
    """Lemma B.6: every fresh residual ``||(I - U_l U_l^T) h_{i,l+1}||`` is at least ``1 / (2 10^6 L^2 log^3 m)``."""
    return 1.0 / (2e6 * _size("L", L) ** 2 * math.log(_size("m", m)) ** 3)


def b6_step_loss(L: int) -> float:
    """The ``1/(4L)`` a step may lose of the fresh part besides ``2 alpha`` (proof of Lemma B.6, factor
    ``1 - 2 alpha - 1/(4L)``; also the recursion (B.10))."""
    return 1.0 / (4.0 * _size("L", L))


def b11_bound(L: int) -> float:
    """Lemma B.11: ``||D_{l2} W ... D_{l1} W||_2 <= L^3`` (the shape of its ``O(L^3)``)."""
    return float(_size("L", L)) ** 3


def b12_growth(L: int, span: int) -> float:
    """Claim B.12: a fixed vector grows by at most ``(1 + 1/L)^span`` through ``span`` masked factors."""
    return (1.0 + 1.0 / _size("L", L)) ** checks.int_at_least("span", span, 0)


def b15_bound(k: int, m: int) -> float:
    """Corollary B.15 for sparsity k: ``sqrt(k) log m / sqrt(m)`` (the main text's (4.5))."""
    return math.sqrt(_size("k", k)) * math.log(_size("m", m)) / math.sqrt(_size("m", m))


def b16_bound(rho_: float, m: int) -> float:
    """Corollary B.16: every entry of ``W D W ... D W`` is at most ``rho / sqrt(m)``."""
    return _pos("rho", rho_) / math.sqrt(_size("m", m))


def b19_bound(rho_: float) -> float:
    """Corollary B.19: ``|a^T B D W ... D W y| <= rho ||a|| ||y||`` for 1-sparse y."""
    return _pos("rho", rho_)


def b9_delta_max(L: int, m: int) -> float:
    """Lemma B.9 needs ``delta <= 1 / (10^6 L^2 log^3 m)``."""
    return 1.0 / (1e6 * _size("L", L) ** 2 * math.log(_size("m", m)) ** 3)


def b9_alpha(delta: float, m: int) -> float:
    """The ``alpha = 16 delta log m`` of the induction behind Lemma B.9 (Claim B.10: one step keeps a factor
    ``1 - 3 alpha`` of the separation)."""
    return 16.0 * _pos("delta", delta) * math.log(_size("m", m))


# ----------------------------------------------------------------------------------------------------------
# Appendix C: after an adversarial perturbation of spectral norm tau0 / sqrt(m)

def c2_flip_bound(L: int, tau0: float, m: int) -> float:
    """Lemma C.2(b): at most ``L^{10/3} tau0^{2/3} m^{2/3}`` ReLU signs flip at any (i, l)."""
    return _size("L", L) ** (10 / 3) * _pos("tau0", tau0) ** (2 / 3) * _size("m", m) ** (2 / 3)


def c2_forward_bound(L: int, tau0: float, m: int) -> float:
    """Lemma C.2(a): ``||g'_{i,l}||, ||h'_{i,l}|| <= L^6 tau0 / sqrt(m)``."""
    return _size("L", L) ** 6 * _pos("tau0", tau0) / math.sqrt(_size("m", m))


def c2_probability_exponent(L: int, tau0: float, m: int) -> float:
    """Lemmas C.2, C.7, C.9 hold with probability ``1 - exp(-Omega(L^6 tau0^{4/3} m^{1/3}))``: this exponent."""
    return _size("L", L) ** 6 * _pos("tau0", tau0) ** (4 / 3) * _size("m", m) ** (1 / 3)


# ----------------------------------------------------------------------------------------------------------
# Appendix D: indicator and backward coordinates

def beta_plus(delta: float, rho_: float) -> float:
    """Definition D.1: ``beta_+ = delta / rho^2`` (a coordinate is "large" when ``|g_k| >= beta_+ / sqrt(m)``)."""
    return _pos("delta", delta) / _pow(_pos("rho", rho_), 2)


def beta_minus(delta: float, rho_: float) -> float:
    """Definition D.1: ``beta_- = delta / rho^10`` (a coordinate is "small" when ``|g_k| <= beta_- / sqrt(m)``)."""
    return _pos("delta", delta) / _pow(_pos("rho", rho_), 10)


def d2_fraction(b_minus: float, L: int) -> float:
    """Lemma D.2: at least a fraction ``beta_- / (64 L)`` of the coordinates meet its three conditions."""
    return _pos("b_minus", b_minus) / (64.0 * _size("L", L))


def d7_threshold(loss_norm: float, d: int, n: int, L: int) -> float:
    """Lemma D.7: the backward coordinate is at least ``||loss_{i*,l*}|| / (6 sqrt(d) n L)`` ..."""
    return checks.real_in("loss_norm", loss_norm, 0.0, math.inf, high_open=True) / (
        6.0 * math.sqrt(_size("d", d)) * _size("n", n) * _size("L", L))


def d7_fraction(n: int, L: int) -> float:
    """... on all but a fraction ``1 / (2 n L)`` of the coordinates (Lemma D.7)."""
    return 1.0 / (2.0 * _size("n", n) * _size("L", L))


# ----------------------------------------------------------------------------------------------------------
# Theorems 5, 3, 4: the gradient bounds and semi-smoothness

def thm5_lower(delta: float, rho_: float) -> float:
    """Theorem 5 (and the lower half of Theorem 3 / Lemma F.1):
    ``||grad f||_F^2 >= (delta / rho^14) m max ||loss||^2``; this is the factor ``delta / rho^14``."""
    return _pos("delta", delta) / _pow(_pos("rho", rho_), 14)


def thm3_radius(varrho_: float, m: int) -> float:
    """Theorem 3 (Appendix F) holds for all ``||W'||_2 <= varrho^100 / sqrt(m)``."""
    return _pow(_pos("varrho", varrho_), 100) / math.sqrt(_size("m", m))


def thm3_lower(delta: float, rho_: float) -> float:
    """Theorem 3, lower bound: the same ``delta / rho^14`` as Theorem 5, near initialisation."""
    return thm5_lower(delta, rho_)


def thm3_upper(rho_: float) -> float:
    """Theorem 3, upper bound: ``||grad f||_F^2 <= rho^12 m max ||loss||^2``; this is ``rho^12``."""
    return _pow(_pos("rho", rho_), 12)


def thm3_upper_per_sample(rho_: float, n: int) -> float:
    """Theorem 3: ``||grad f_i||_F^2 <= (rho^12 / n^2) m max ||loss||^2``; this is ``rho^12 / n^2``."""
    return _pow(_pos("rho", rho_), 12) / _size("n", n) ** 2


def thm4_linear(rho_: float, tau0: float, m: int) -> float:
    """Theorem 4 (Appendix G): the coefficient ``rho^11 tau0^{1/3} m^{1/3}`` of ``||loss|| ||W'||_2``."""
    return _pow(_pos("rho", rho_), 11) * _pos("tau0", tau0) ** (1 / 3) * _size("m", m) ** (1 / 3)


def thm4_quadratic(L: int, n: int, m: int) -> float:
    """Theorem 4 (Appendix G): the coefficient ``L^18 n m`` of ``||W'||_2^2``."""
    return float(_size("L", L)) ** 18 * _size("n", n) * _size("m", m)


# ----------------------------------------------------------------------------------------------------------
# Theorems 1 and 2: gradient descent and SGD (Appendices H and I)

def thm1_step_size(delta: float, rho_: float, m: int) -> float:
    """Theorem 1 as restated in Appendix H: ``eta = delta / (rho^44 m)``."""
    return _pos("delta", delta) / (_pow(_pos("rho", rho_), 44) * _size("m", m))


def thm1_iterations(delta: float, rho_: float, varrho_: float, eps: float) -> tuple[float, float]:
    """Theorem 1 (Appendix H): ``f(W_T) <= eps`` for every T in
    ``[rho^59 / delta^2 log(1/eps), rho^59 varrho^28 / delta^2 log(1/eps)]``."""
    low = thm1_min_iterations(delta, rho_, eps)
    return low, low * _pow(_pos("varrho", varrho_), 28)


def thm1_min_iterations(delta: float, rho_: float, eps: float) -> float:
    """The lower end of Theorem 1's interval, ``rho^59 / delta^2 log(1/eps)`` (Appendix H)."""
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
    return _pow(_pos("rho", rho_), 59) / _pos("delta", delta) ** 2 * math.log(1 / eps)


def thm1_contraction(eta: float, delta: float, m: int, rho_: float) -> float:
    """Appendix H: one GD step gives ``f_{t+1} <= (1 - eta delta m / rho^15) f_t``; this is the factor."""
    return 1.0 - _pos("eta", eta) * _pos("delta", delta) * _size("m", m) / _pow(_pos("rho", rho_), 15)


def thm2_step_size(delta: float, rho_: float, m: int) -> float:
    """Theorem 2 as restated in Appendix I: ``eta = delta / (rho^42 m)``."""
    return _pos("delta", delta) / (_pow(_pos("rho", rho_), 42) * _size("m", m))


def thm2_iterations(delta: float, rho_: float, varrho_: float, eps: float) -> tuple[float, float]:
    """Theorem 2 (Appendix I): every T in ``[rho^57 / delta^2 log(1/eps), rho^57 varrho^28 / delta^2 log(1/eps)]``."""
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
    low = _pow(_pos("rho", rho_), 57) / _pos("delta", delta) ** 2 * math.log(1 / eps)
    return low, low * _pow(_pos("varrho", varrho_), 28)


def thm2_growth(eta: float, m: int, rho_: float) -> float:
    """Appendix I: the worst case of one SGD step, ``f_{t+1} <= (1 + rho^12 eta m) f_t``; this is the factor."""
    return 1.0 + _pow(_pos("rho", rho_), 12) * _pos("eta", eta) * _size("m", m)


def gd_ball_radius(varrho_: float, m: int) -> float:
    """Appendices H and I keep ``||W_t - W_0||_F <= varrho^50 / sqrt(m)`` (Frobenius norm)."""
    return _pow(_pos("varrho", varrho_), 50) / math.sqrt(_size("m", m))


def initial_loss_bound(n: int, rho_: float, L: int) -> float:
    """Appendix H: ``f(W_0) <= n rho^2 L^3`` with high probability."""
    return _size("n", n) * _pow(_pos("rho", rho_), 2) * float(_size("L", L)) ** 3


# ----------------------------------------------------------------------------------------------------------
# Appendix A: the probability tools (the chapter "Probability tools")

__all__ += [
    "a3_upper_threshold", "a3_lower_threshold", "a3_bound", "a4_bound", "a4_b_for_exponent", "a8_exponent",
    "a8_one_sided_bound", "a8_bound", "a9_bound", "a9_width_for", "b3_epsilon", "a17_linf_threshold",
    "a17_l2_bound", "a17_probability_exponent", "a18_bound", "a19_bound", "A19_OMEGA_MCDIARMID",
]


def a3_upper_threshold(k: int, t: float) -> float:
    """Lemma A.3 (Laurent-Massart), upper tail: ``Pr[X - k >= 2 sqrt(k t) + 2 t] <= e^{-t}`` for ``X ~ chi^2_k``;
    this is the level ``k + 2 sqrt(k t) + 2 t``."""
    k, t = _size("k", k), _pos("t", t)
    return k + 2.0 * math.sqrt(k * t) + 2.0 * t


def a3_lower_threshold(k: int, t: float) -> float:
    """Lemma A.3, lower tail: ``Pr[k - X >= 2 sqrt(k t)] <= e^{-t}``; this is the level ``k - 2 sqrt(k t)``
    (negative, an impossible event, once ``t > k/4``)."""
    k, t = _size("k", k), _pos("t", t)
    return k - 2.0 * math.sqrt(k * t)


def a3_bound(t: float) -> float:
    """Lemma A.3: each tail has probability at most ``e^{-t}``."""
    return math.exp(-_pos("t", t))


def a4_bound(n: int, b: float) -> float:
    """Lemma A.4: ``Pr[| ||x||^2 - n sigma^2 | >= n sigma^2 / b] <= 2 exp(-n / (8 b^2))`` for x with n i.i.d.
    ``N(0, sigma^2)`` entries."""
    return 2.0 * math.exp(-_size("n", n) / (8.0 * _pos("b", b) ** 2))


def a4_b_for_exponent(n: int, t: float) -> float:
    """The ``b`` at which Lemma A.4's exponent ``n / (8 b^2)`` equals ``t`` (so its bound is ``2 e^{-t}``)."""
    return math.sqrt(_size("n", n) / (8.0 * _pos("t", t)))


def a8_exponent(eps: float, n: int) -> float:
    """The exponent ``eps^2 n / 100`` of Lemmas A.6-A.8 (and, with n = m, of Corollary A.9)."""
    return checks.real_in("eps", eps, 0.0, 1.0, low_open=True, high_open=True) ** 2 * _size("n", n) / 100.0


def a8_one_sided_bound(eps: float, n: int) -> float:
    """Lemmas A.6 and A.7: each one-sided deviation of ``||phi(x)||`` from ``sqrt(n/2) sigma`` by a factor
    ``1 -+ eps`` has probability at most ``e^{-eps^2 n / 100}`` (A.7 prints the exponent without its minus sign)."""
    return math.exp(-a8_exponent(eps, n))


def a8_bound(eps: float, n: int) -> float:
    """Lemma A.8: ``||phi(x)|| in ((1 - eps), (1 + eps)) sqrt(n/2) sigma`` except with probability at most
    ``2 e^{-eps^2 n / 100}``."""
    return 2.0 * a8_one_sided_bound(eps, n)


def a9_bound(eps: float, m: int) -> float:
    """Corollary A.9: ``||phi(A x)|| in (1 +- eps) sigma ||x||`` except with probability at most
    ``2 e^{-eps^2 m / 100}`` (A with i.i.d. ``N(0, 2 sigma^2 / m)`` entries, x fixed)."""
    return a8_bound(eps, m)


def a9_width_for(eps: float, target: float) -> float:
    """The width at which Corollary A.9's bound ``2 e^{-eps^2 m / 100}`` equals ``target``:
    ``m = 100 log(2 / target) / eps^2``."""
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True, high_open=True)
    target = checks.real_in("target", target, 0.0, 2.0, low_open=True, high_open=True)
    return 100.0 * math.log(2.0 / target) / eps ** 2


def b3_epsilon(L: int) -> float:
    """The ``eps = 1/(4L)`` with which the proof of Lemma B.3 applies Corollaries A.9 and A.10 at every step."""
    return 1.0 / (4.0 * _size("L", L))


def a17_linf_threshold(m: int) -> float:
    """Lemma A.17: the l_inf part obeys ``||y_2||_inf <= (log m / sqrt(m)) ||x||``; this is ``log m / sqrt(m)``."""
    m = _size("m", m)
    return math.log(m) / math.sqrt(m)


def a17_l2_bound(s: int, m: int) -> float:
    """Lemma A.17: the l_2 part obeys ``||y_1|| <= (sqrt(s) log^2 m / sqrt(m)) ||x||`` (for ``d <= s <= m``)."""
    m = _size("m", m)
    s = _size("s", s)
    if s > m:
        raise ValueError(f"s must satisfy s <= m (Lemma A.17 needs d <= s <= m), got s={s}, m={m}")
    return math.sqrt(s) * math.log(m) ** 2 / math.sqrt(m)


def a17_probability_exponent(s: int, m: int) -> float:
    """Lemma A.17 holds with probability ``1 - e^{-Omega(s log^2 m)}``: this exponent ``s log^2 m``."""
    return _size("s", s) * math.log(_size("m", m)) ** 2


def a18_bound(N: int, c: float, t: float) -> float:
    """Lemma A.18 (McDiarmid), read with ``<=`` in the bounded-difference condition (the PDF prints ``>=``):
    if changing any one of N independent arguments moves f by at most c, ``Pr[f - E f <= -t] <= exp(-2 t^2 / (N c^2))``
    (and the same for the upper tail)."""
    return math.exp(-2.0 * _pos("t", t) ** 2 / (_size("N", N) * _pos("c", c) ** 2))


#: The constant in A.19's ``exp(-Omega(mu^2 / (N (c^2 + p))))`` at which, for p = 0, the bound is McDiarmid's
#: (Lemma A.18 with t = mu/2 gives exp(-mu^2 / (2 N c^2))). The paper hides this constant in its Omega.
A19_OMEGA_MCDIARMID = 0.5


def a19_bound(N: int, p: float, mu: float, c: float, omega: float = 1.0) -> float:
    """Lemma A.19: ``Pr[f < mu/2] <= N^2 sqrt(p) + exp(-omega mu^2 / (N (c^2 + p)))`` (``omega`` is the constant
    hidden in its ``Omega``; 1 by this module's convention, :data:`A19_OMEGA_MCDIARMID` to match McDiarmid at
    p = 0)."""
    N = _size("N", N)
    p = checks.real_in("p", p, 0.0, 1.0)
    mu = checks.real_in("mu", mu, 0.0, 1.0, low_open=True)
    c, omega = _pos("c", c), _pos("omega", omega)
    return N ** 2 * math.sqrt(p) + math.exp(-omega * mu ** 2 / (N * (c ** 2 + p)))


# ----------------------------------------------------------------------------------------------------------
# Appendices D, E, F: the sizes and bounds behind the gradient lower bound (Part IV)

__all__ += [
    "d2_min_set", "d7_min_set", "e2_frobenius", "e2_per_sample", "e2_row", "e3_theta_range", "E4_TAIL_PROBABILITY",
    "e4_u_inf_bound", "thm5_set_size", "f1_change_bound",
]


def d2_min_set(n: int, L: int, beta_minus_: float) -> float:
    """Lemma D.2 holds for a fixed set ``N_1`` of neurons with ``|N_1| >= n^2 L^2 / beta_-``: this size."""
    return _size("n", n) ** 2 * _size("L", L) ** 2 / _pos("beta_minus", beta_minus_)


def d7_min_set(rho_: float) -> float:
    """Lemma D.7 holds for a set ``N_4`` with ``|N_4| in [rho^4, varrho^100]``: the lower end ``rho^4``."""
    return _pow(_pos("rho", rho_), 4)


def e2_frobenius(n: int, L: int) -> float:
    """Lemma E.2: ``||fake grad f||_F <= O(n L^6 sqrt(m)) max ||loss||``; this is ``n L^6``."""
    return _size("n", n) * float(_size("L", L)) ** 6


def e2_per_sample(L: int) -> float:
    """Lemma E.2: ``||fake grad f_i||_F <= O(L^6 sqrt(m)) max ||loss||``; this is ``L^6``."""
    return float(_size("L", L)) ** 6


def e2_row(n: int, rho_: float, L: int) -> float:
    """Lemma E.2: every row ``||fake grad_k f|| <= O(n rho L^3) max ||loss||``; this is ``n rho L^3``."""
    return _size("n", n) * _pos("rho", rho_) * float(_size("L", L)) ** 3


def e3_theta_range(beta_minus_: float, beta_plus_: float, rho_: float) -> tuple[float, float]:
    """Definition E.3: ``theta`` may be any value in ``[rho^4 beta_-, beta_+ / rho^3]`` (an empty range unless
    ``beta_+ / beta_- >= rho^7``, which holds for the paper's ``beta_+ / beta_- = rho^8``)."""
    r = _pos("rho", rho_)
    return _pow(r, 4) * _pos("beta_minus", beta_minus_), _pos("beta_plus", beta_plus_) / _pow(r, 3)


#: Lemma E.4(c): ``Pr[u_k >= theta / (2 sqrt m)] >= 1/4`` and ``Pr[u_k <= -theta / (2 sqrt m)] >= 1/4``.
E4_TAIL_PROBABILITY = 0.25


def e4_u_inf_bound(theta: float, rho_: float, m: int) -> float:
    """Lemma E.4(d): ``||u||_inf <= 3 theta rho / (2 sqrt(m))`` with high probability."""
    return 3.0 * _pos("theta", theta) * _pos("rho", rho_) / (2.0 * math.sqrt(_size("m", m)))


def thm5_set_size(rho_: float, beta_minus_: float) -> float:
    """The proof of Theorem 5 (Appendix E.4) applies Lemma A.19 to sets of ``|N| = rho^22 / beta_-^2`` neurons."""
    return _pow(_pos("rho", rho_), 22) / _pos("beta_minus", beta_minus_) ** 2


def f1_change_bound(rho_: float, tau0: float, m: int) -> float:
    """Lemma F.1's key estimate: ``||fake grad f(W~ + W') - fake grad f(W~)||_F <= O(rho^8 tau0^{1/3} m^{1/3})
    max ||loss||``; this is ``rho^8 tau0^{1/3} m^{1/3}`` (against ``||fake grad f|| ~ sqrt(m)``)."""
    return _pow(_pos("rho", rho_), 8) * _pos("tau0", tau0) ** (1 / 3) * _size("m", m) ** (1 / 3)


# ----------------------------------------------------------------------------------------------------------
# Appendices G, H, I: semi-smoothness and the convergence proofs (Part V)

__all__ += ["thm4_bound", "thm1_rate", "thm1_proof_iterations", "thm2_azuma_deviation"]


def thm4_bound(rho_: float, tau0: float, L: int, n: int, m: int, loss_norm: float, Wp_norm: float) -> float:
    """Theorem 4 (Appendix G): ``f(W_breve + W') - f(W_breve) - <grad f(W_breve), W'> <= rho^11 tau0^{1/3}
    m^{1/3} ||loss_{i*,l*}|| ||W'||_2 + L^18 n m ||W'||_2^2``; this right-hand side (hidden constants 1)."""
    loss_norm = checks.real_in("loss_norm", loss_norm, 0.0, math.inf, high_open=True)
    Wp_norm = checks.real_in("Wp_norm", Wp_norm, 0.0, math.inf, high_open=True)
    return thm4_linear(rho_, tau0, m) * loss_norm * Wp_norm + thm4_quadratic(L, n, m) * Wp_norm ** 2


def thm1_rate(eta: float, delta: float, m: int, rho_: float) -> float:
    """Appendix H: the decrease ``eta delta m / rho^15`` of one GD step, ``f_{t+1} <= (1 - rate) f_t`` (the rate
    itself, which :func:`thm1_contraction` loses to rounding when it is below 1e-16)."""
    return _pos("eta", eta) * _pos("delta", delta) * _size("m", m) / _pow(_pos("rho", rho_), 15)


def thm1_proof_iterations(eta: float, delta: float, m: int, rho_: float, n: int, L: int, eps: float) -> float:
    """The proof of Theorem 1 (Appendix H, step 5): with the contraction ``1 - eta delta m / rho^15`` per step,
    ``T = rho^15 / (eta delta m) log(n L^2 / eps)`` steps reach ``f <= eps``; this T (for any eta)."""
    eps = checks.real_in("eps", eps, 0.0, 1.0, low_open=True)
    return _pow(_pos("rho", rho_), 15) / (_pos("eta", eta) * _pos("delta", delta) * _size("m", m)) * \
        math.log(_size("n", n) * _size("L", L) ** 2 / eps)


def thm2_azuma_deviation(t: int, eta: float, m: int, rho_: float) -> float:
    """The proof of Theorem 2 (Appendix I): after t SGD steps, ``log f(W_t)`` deviates from its expectation's
    bound by at most ``sqrt(t) rho^12 eta m rho`` (one-sided Azuma); this deviation."""
    t = checks.int_at_least("t", t, 0)
    return math.sqrt(t) * _pow(_pos("rho", rho_), 13) * _pos("eta", eta) * _size("m", m)


# ==========================================================================================================
# THE BOOK'S CHOICE, NOT THE PAPER'S
#
# The theorems' step sizes (delta / (rho^44 m), about 10^-100 at laptop sizes) would not move W in any
# number of steps we can run. The experiments use eta = c / (m n L): it scales like the theorem's 1/m in the
# width, and the 1/(n L) keeps the step stable as the number of loss terms (n sequences, L - 1 steps each)
# grows. c = BOOK_STEP_C unless an experiment says otherwise (and then it gives its own c).

#: The constant of the book's practical step size ``c / (m n L)``.
BOOK_STEP_C = 0.2


def book_step_size(m: int, n: int, L: int, c: float = BOOK_STEP_C) -> float:
    """The book's practical GD step size ``c / (m n L)`` (**not the paper's**; see the comment above)."""
    return _pos("c", c) / (_size("m", m) * _size("n", n) * _size("L", L))
