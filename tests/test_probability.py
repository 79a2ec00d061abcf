"""rnnbook.probability (Appendix A) against independent computations: closed forms of the chi-square law,
quadrature, exact enumeration on tiny cases, brute force over single-coordinate changes, and Monte Carlo
estimates that must agree with the exact probabilities (so that the estimators are unbiased)."""
import itertools
import math

import pytest
import torch

from rnnbook import paper
from rnnbook import probability as pb
from rnnbook.rng import seed


def S(*names):
    return seed("test_probability", *names)


# ----------------------------------------------------------------------------------------------------------
# independent formulas

def chi2_cdf_closed(k: int, x: float) -> float:
    """P(chi^2_k <= x) without the incomplete gamma function: erf for k = 1, 1 - e^{-x/2} for k = 2, and the
    recurrence P_{k+2}(x) = P_k(x) - (x/2)^{k/2} e^{-x/2} / Gamma(k/2 + 1)."""
    if k % 2:
        P, j = math.erf(math.sqrt(x / 2)), 1
    else:
        P, j = 1 - math.exp(-x / 2), 2
    while j < k:
        P -= math.exp((j / 2) * math.log(x / 2) - x / 2 - math.lgamma(j / 2 + 1))
        j += 2
    return P


def log_chi2_sf_even(k: int, x: float) -> float:
    """log P(chi^2_k > x) for even k, exactly: e^{-x/2} sum_{j < k/2} (x/2)^j / j!, summed in log space."""
    terms = [j * math.log(x / 2) - math.lgamma(j + 1) for j in range(k // 2)]
    top = max(terms)
    return -x / 2 + top + math.log(sum(math.exp(t - top) for t in terms))


def simpson(f, a, b, n=20000):
    h = (b - a) / n
    s = f(a) + f(b)
    for i in range(1, n):
        s += (4 if i % 2 else 2) * f(a + i * h)
    return s * h / 3


# ----------------------------------------------------------------------------------------------------------
# exact laws

@pytest.mark.parametrize("k", [1, 2, 3, 7, 8, 64, 65])
def test_chi2_cdf_matches_the_closed_form(k):
    xs = [0.1, 0.5 * k, k, 1.5 * k + 3, 3 * k + 10]
    got = pb.chi2_cdf(k, torch.tensor(xs, dtype=torch.float64)).tolist()
    for x, g in zip(xs, got):
        # torch's incomplete gamma is accurate to about 1e-9 near the mode at k ~ 64 (checked against a 60-digit
        # series while writing this test); the tails keep their relative accuracy (the far-tail test below)
        assert g == pytest.approx(chi2_cdf_closed(k, x), abs=2e-9)
    assert float(pb.chi2_cdf(k, -1.0)) == 0.0 and float(pb.chi2_sf(k, 0.0)) == 1.0


def test_chi2_cdf_matches_quadrature_of_the_density():
    k, x = 5, 3.7
    dens = lambda u: u ** (k / 2 - 1) * math.exp(-u / 2) / (2 ** (k / 2) * math.gamma(k / 2))
    assert float(pb.chi2_cdf(k, x)) == pytest.approx(simpson(dens, 0.0, x), abs=1e-7)


@pytest.mark.parametrize("k,x", [(64, 200.0), (64, 384.0), (256, 800.0), (1024, 1600.0)])
def test_chi2_sf_keeps_its_relative_accuracy_in_the_far_tail(k, x):
    got = float(pb.chi2_sf(k, x))
    assert got > 0
    assert math.log(got) == pytest.approx(log_chi2_sf_even(k, x), abs=1e-8 * abs(log_chi2_sf_even(k, x)) + 1e-9)


def test_binomial_pmf_by_enumeration():
    n, p = 7, 0.3
    counts = [0.0] * (n + 1)
    for w in itertools.product([0, 1], repeat=n):
        counts[sum(w)] += p ** sum(w) * (1 - p) ** (n - sum(w))
    assert pb.binomial_pmf(n, p).tolist() == pytest.approx(counts, abs=1e-15)
    assert float(pb.binomial_pmf(4096, 0.5).sum()) == pytest.approx(1.0, abs=1e-10)


def test_relu_chi2_law_for_one_and_two_coordinates():
    for t in (0.3, 1.0, 4.0):
        # n = 1: phi(x)^2 is 0 with probability 1/2, else chi^2_1
        assert float(pb.relu_chi2_cdf(1, t)) == pytest.approx(0.5 + 0.5 * math.erf(math.sqrt(t / 2)), abs=1e-13)
    # n = 2: quadrature of the standard Gaussian density over {phi(x1)^2 + phi(x2)^2 <= t} (midpoint rule)
    t, L, n = 2.0, 7.0, 1400
    h = 2 * L / n
    g = torch.linspace(-L + h / 2, L - h / 2, n, dtype=torch.float64)
    X1, X2 = torch.meshgrid(g, g, indexing="ij")
    inside = (X1.clamp(min=0) ** 2 + X2.clamp(min=0) ** 2) <= t
    dens = torch.exp(-(X1 ** 2 + X2 ** 2) / 2) / (2 * math.pi)
    quad = float((dens * inside).sum() * h * h)
    assert float(pb.relu_chi2_cdf(2, t)) == pytest.approx(quad, abs=3e-3)
    assert float(pb.relu_chi2_cdf(2, t) + pb.relu_chi2_sf(2, t)) == pytest.approx(1.0, abs=1e-13)


def test_relu_chi2_tolerance_drops_only_negligible_terms():
    x = torch.linspace(1800, 2300, 50, dtype=torch.float64)
    full, fast = pb.relu_chi2_cdf(4096, x), pb.relu_chi2_cdf(4096, x, tol=1e-17)
    assert torch.allclose(full, fast, rtol=0, atol=4097e-17)


@pytest.mark.parametrize("n", [1, 5, 64, 1000])
def test_relu_chi2_moments_are_n_over_2_and_5n_over_4(n):
    # E chi^2_omega = E omega = n/2; Var = E[2 omega] + Var(omega) = n + n/4 (a derivation, not the code's sum)
    mean, var = pb.relu_chi2_moments(n)
    assert mean == pytest.approx(n / 2) and var == pytest.approx(5 * n / 4)


def test_a3_tails_are_below_the_bound_and_equal_the_chi2_law():
    for k in (16, 64, 1024):
        ts = torch.tensor([0.25, 1.0, 4.0, 16.0], dtype=torch.float64)
        up, lo = pb.a3_tails(k, ts)
        for t, u, l in zip(ts.tolist(), up.tolist(), lo.tolist()):
            assert 0 < u <= paper.a3_bound(t) and 0 <= l <= paper.a3_bound(t)
            assert u == pytest.approx(1 - chi2_cdf_closed(k, paper.a3_upper_threshold(k, t)), rel=1e-6, abs=1e-14)
            thr = paper.a3_lower_threshold(k, t)
            assert l == (pytest.approx(chi2_cdf_closed(k, thr), abs=2e-9) if thr > 0 else 0.0)


def test_a4_holds_for_b_at_least_one_and_fails_for_small_b():
    for n in (8, 64, 512):
        for b in (1.0, 1.5, 3.0, 10.0):
            assert float(pb.a4_tail(n, b)) <= paper.a4_bound(n, b)
    assert float(pb.a4_tail(64, 0.3)) > paper.a4_bound(64, 0.3)       # the inequality needs a range of b
    bc = pb.a4_b_critical()
    assert 0.5 < bc < 0.7
    assert 0.5 * (1 / bc - math.log1p(1 / bc)) == pytest.approx(1 / (8 * bc * bc), rel=1e-9)
    assert float(pb.a4_tail(1024, bc - 0.05)) > paper.a4_bound(1024, bc - 0.05)
    assert float(pb.a4_tail(1024, bc + 0.05)) <= paper.a4_bound(1024, bc + 0.05)


def test_a8_failure_is_the_sum_of_its_halves_and_below_the_bound():
    for n in (64, 1024):
        F = pb.a8_failure(n, torch.tensor([0.05, 0.1, 0.3]))
        assert torch.allclose(F.total, F.low + F.high)
        for e, p in zip((0.05, 0.1, 0.3), F.total.tolist()):
            assert p <= paper.a8_bound(e, n)
    # the one-sided halves are the relu-chi-square law at (1 -+ eps)^2 n / 2
    F = pb.a8_failure(64, 0.1)
    assert float(F.low) == pytest.approx(float(pb.relu_chi2_cdf(64, 0.81 * 32)))


def test_a9_width_for_failure_is_the_first_width_below_the_target():
    eps, target = 0.1, 0.05
    m = pb.a9_width_for_failure(eps, target)
    assert float(pb.a8_failure(m, eps).total) <= target < float(pb.a8_failure(m - 1, eps).total)
    assert m < paper.a9_width_for(eps, target)          # the exact law needs fewer neurons than the bound


def test_a17_row_certificate_failure_by_its_own_binomial():
    m, d, s = 512, 8, 8
    tau2 = paper.a17_linf_threshold(m) ** 2
    p_row = 1 - chi2_cdf_closed(d, m * tau2 / 2)
    direct = 1 - sum(math.comb(m, j) * p_row ** j * (1 - p_row) ** (m - j) for j in range(s + 1))
    assert pb.a17_row_certificate_failure(m, d, s) == pytest.approx(direct, rel=1e-9)


def test_ks_critical_is_the_kolmogorov_quantile():
    assert pb.ks_critical(10000, 0.01) * 100 == pytest.approx(1.6276, abs=2e-4)
    assert pb.ks_critical(10000, 0.05) * 100 == pytest.approx(1.3581, abs=2e-4)


# ----------------------------------------------------------------------------------------------------------
# Monte Carlo against the exact laws

def test_gaussian_norms_estimate_the_a3_and_a8_probabilities_without_bias():
    n, R, reps = 16, 400, 50
    t, eps = 1.0, 0.2
    up_exact, lo_exact = (float(v) for v in pb.a3_tails(n, t))
    a8_exact = float(pb.a8_failure(n, eps).total)
    ests = {"up": [], "lo": [], "a8": []}
    for r in range(reps):                                   # independent repetitions of the estimator
        g = pb.gaussian_norms(n, R, sigma=2.0, seed=S("norms", r))
        X = g.sq / 4.0
        ests["up"].append(pb.frequency(X >= paper.a3_upper_threshold(n, t)).estimate)
        ests["lo"].append(pb.frequency(X <= paper.a3_lower_threshold(n, t)).estimate)
        u = (g.relu_sq / 4.0).sqrt() / math.sqrt(n / 2)
        ests["a8"].append(pb.frequency((u <= 1 - eps) | (u >= 1 + eps)).estimate)
    for key, exact in (("up", up_exact), ("lo", lo_exact), ("a8", a8_exact)):
        mean = sum(ests[key]) / reps
        se = math.sqrt(exact * (1 - exact) / (R * reps))
        assert abs(mean - exact) < 4 * se, (key, mean, exact)


def test_gaussian_norms_relu_mean_and_chi2_law():
    g = pb.gaussian_norms(64, 20000, seed=S("law"))
    assert float(g.relu_sq.mean()) == pytest.approx(32.0, abs=4 * math.sqrt(80 / 20000))
    assert pb.ks_distance(g.sq, lambda x: pb.chi2_cdf(64, x)) < pb.ks_critical(20000, 0.001)
    assert pb.ks_distance(g.relu_sq, lambda x: pb.relu_chi2_cdf(64, x)) < pb.ks_critical(20000, 0.001)
    # the KS distance can fail: against the wrong law (chi^2_64 for ||phi(x)||^2) it is far above the level
    assert pb.ks_distance(g.relu_sq, lambda x: pb.chi2_cdf(64, x)) > 0.5


def test_a9_ratio_has_the_law_of_a8_and_does_not_depend_on_sigma():
    x = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    m, R = 32, 4000
    r1 = pb.a9_ratios(m, x, R, seed=S("a9"))
    r2 = pb.a9_ratios(m, x, R, sigma=3.0, seed=S("a9"))
    assert torch.allclose(r1, r2, rtol=1e-5)
    # ||phi(Ax)||^2 / (sigma^2 ||x||^2) * m / 2 is chi^2_omega, omega ~ Bin(m, 1/2)
    assert pb.ks_distance(r1 ** 2 * m / 2, lambda v: pb.relu_chi2_cdf(m, v)) < pb.ks_critical(R, 0.001)


def test_a11_law_holds_for_every_q_but_minus_h():
    m, R = 64, 3000
    h = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    perp = torch.tensor([2.0, -1.0, 3.0, 0.0], dtype=torch.float64)
    assert float(h @ perp) == 0
    perp = perp * h.norm() / perp.norm()
    qs = torch.stack([0 * h, -2 * h, perp, 10 * perp + 0.3 * h, -h])
    a = pb.a11_draws(m, h, qs, R, seed=S("a11"))
    crit = pb.ks_critical(R, 0.001)
    for j in range(4):
        assert pb.ks_distance(a.X[:, j], lambda v: pb.relu_chi2_cdf(m, v)) < crit, j
    assert pb.ks_distance(a.X[:, 4], lambda v: pb.relu_chi2_cdf(m, v)) > 0.5       # h + q = 0: omega = m
    assert torch.all(a.omega[:, 4] == m)
    assert torch.all(a.negative[:, 0] == 0)                 # q = 0: v = phi(Wh) >= 0
    assert torch.all(a.negative[:, 1] == a.omega[:, 1])     # q = -2h: v keeps only the negative <W_k, h>
    # q orthogonal with |q| = |h|: angle(h, h + q) = 45 degrees, so a quarter of the kept v_k are negative
    frac = a.negative[:, 2].sum().item() / a.omega[:, 2].sum().item()
    assert frac == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / a.omega[:, 2].sum().item()) + 0.01)


def test_a17_statistics_against_brute_force_over_many_x():
    g = torch.Generator().manual_seed(S("a17 brute"))
    r, m, d, s = 6, 64, 3, 3
    W = torch.randn(r, m, d, generator=g, dtype=torch.float64) * math.sqrt(2 / m)
    st = pb.a17_statistics(W, s)
    tau = paper.a17_linf_threshold(m)
    x = torch.randn(20000, d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    Y = (W @ x.T).abs()                                      # (r, m, X)
    srt = torch.sort(Y, dim=1, descending=True).values
    # sup_x ||Wx||_inf / ||x|| is the largest row norm, attained at the row's direction
    assert torch.allclose(st.max_row, W.norm(dim=2).max(dim=1).values)
    assert torch.all(srt[:, 0].max(dim=1).values <= st.max_row + 1e-12)
    # certificates are upper bounds over every x; the search is a lower bound on the sup
    assert torch.all(srt[:, s].max(dim=1).values <= st.level_cert + 1e-12)
    assert torch.all((Y > tau).sum(dim=1).max(dim=1).values <= st.count_cert)
    assert torch.all(srt[:, :s].pow(2).sum(dim=1).sqrt().max(dim=1).values <= st.l2_cert + 1e-12)
    assert torch.all(st.level_found <= st.level_cert + 1e-12) and torch.all(st.count_found <= st.count_cert)
    assert torch.all(st.l2_found <= st.l2_cert + 1e-12)
    # in d = 3 a dense random search nearly attains the sup; the book's search must do at least as well
    # as 95% of it
    assert torch.all(st.level_found >= 0.95 * srt[:, s].max(dim=1).values)


def test_a17_certificate_frequency_matches_the_exact_binomial():
    m, d, s, R = 512, 8, 8, 1500
    tau = paper.a17_linf_threshold(m)
    g = torch.Generator().manual_seed(S("a17 freq"))
    W = torch.randn(R, m, d, generator=g, dtype=torch.float64) * math.sqrt(2 / m)
    big = (W.norm(dim=2) > tau).sum(dim=1)
    f = pb.frequency(big > s)                                # the row-norm certificate fails
    exact = pb.a17_row_certificate_failure(m, d, s)
    assert abs(f.estimate - exact) < 4 * math.sqrt(exact * (1 - exact) / R) + 1e-3
    st = pb.a17_statistics(W[:200], s, search_steps=0)
    assert torch.all(st.count_cert <= big[:200].to(torch.float64))
    # and a17_draws gives the same law of the certificate (its own draws)
    dr = pb.a17_draws(m, d, s, 600, seed=S("a17 draws"), search_steps=0)
    rows = (dr.level_cert > tau) & (dr.count_cert > s)      # both certificates fail
    assert pb.frequency(rows).estimate <= exact + 4 * math.sqrt(exact * (1 - exact) / 600) + 1e-3


def toy_literal(w, T):
    N = len(w)
    return sum(w) / N if sum(w) < T else 0.0


def test_a19_condition_and_exact_law_by_enumeration():
    N, q, T = 10, 0.3, 5
    mu = p = 0.0
    fvals = []
    for w in itertools.product([0, 1], repeat=N):
        weight = q ** sum(w) * (1 - q) ** (N - sum(w))
        f = toy_literal(w, T)
        worst = max(abs(f - toy_literal(w[:i] + (1 - w[i],) + w[i + 1:], T)) for i in range(N))
        literal_ok = worst <= 1 / N + 1e-12
        assert bool(pb.a19_toy_condition(torch.tensor(sum(w)), N, T)) == literal_ok
        mu += weight * f
        p += weight * (not literal_ok)
        fvals.append((f, weight))
    e = pb.a19_toy_exact(N, q, T)
    assert e.mu == pytest.approx(mu, abs=1e-14) and e.p == pytest.approx(p, abs=1e-14)
    assert e.failure == pytest.approx(sum(wt for f, wt in fvals if f < mu / 2), abs=1e-14)


def test_a19_monte_carlo_is_unbiased():
    N, q = 64, 0.5
    T = pb.a19_toy_threshold(N, q, 2.0)
    e = pb.a19_toy_exact(N, q, T)
    d = pb.a19_toy_draws(N, q, T, 20000, seed=S("a19"))
    for est, exact in ((pb.frequency(~d.condition).estimate, e.p), (pb.frequency(d.f < e.mu / 2).estimate, e.failure)):
        assert abs(est - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000)
    assert float(d.f.mean()) == pytest.approx(e.mu, abs=4 * float(d.f.std()) / math.sqrt(20000))


def test_frequency_and_its_upper_bound():
    f = pb.frequency(torch.zeros(1000, dtype=torch.bool))
    assert f.estimate == 0 and 0.002 < f.upper < 0.005      # about 3.8/R for no hit (Wilson)
    f = pb.frequency(torch.tensor([True, False, True, True]))
    assert f.estimate == 0.75 and f.stderr == pytest.approx(math.sqrt(0.75 * 0.25 / 4))


# ----------------------------------------------------------------------------------------------------------
# the Appendix A constants of rnnbook.paper

def test_appendix_a_constants():
    assert paper.a3_upper_threshold(100, 4.0) == pytest.approx(100 + 40 + 8)
    assert paper.a3_lower_threshold(100, 4.0) == pytest.approx(60)
    assert paper.a4_bound(64, paper.a4_b_for_exponent(64, 3.0)) == pytest.approx(2 * math.exp(-3))
    assert paper.a9_bound(0.1, int(round(paper.a9_width_for(0.1, 0.01)))) == pytest.approx(0.01, rel=1e-3)
    assert paper.a8_bound(0.1, 1000) == pytest.approx(2 * paper.a8_one_sided_bound(0.1, 1000))
    assert paper.b3_epsilon(10) == pytest.approx(0.025)
    assert paper.a17_l2_bound(4, 1024) == pytest.approx(2 * math.log(1024) ** 2 / 32)
    # A.19 with p = 0 and the McDiarmid constant is McDiarmid's inequality at t = mu / 2
    assert paper.a19_bound(100, 0.0, 0.4, 0.01, paper.A19_OMEGA_MCDIARMID) == pytest.approx(
        paper.a18_bound(100, 0.01, 0.2))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        pb.gaussian_norms(0, 10, seed=1)
    with pytest.raises(ValueError, match="seed"):
        pb.gaussian_norms(4, 10)
    with pytest.raises(ValueError, match="eps"):
        pb.a8_failure(64, 1.0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        pb.chi2_cdf(2.5, 1.0)
    with pytest.raises(ValueError, match="d <= s"):
        pb.a17_draws(64, 8, 4, 10, seed=1)
    with pytest.raises(ValueError, match="T must satisfy"):
        pb.a19_toy_exact(10, 0.5, 11)
    with pytest.raises(ValueError, match="qs must have shape"):
        pb.a11_draws(16, torch.ones(3), torch.ones(2, 4), 10, seed=1)
    with pytest.raises(ValueError, match="h must be non-zero"):
        pb.a11_draws(16, torch.zeros(3), torch.ones(2, 3), 10, seed=1)
    with pytest.raises(TypeError, match="event"):
        pb.frequency(torch.ones(3))
    with pytest.raises(TypeError, match="dtype"):
        pb.gaussian_norms(4, 10, seed=1, dtype=torch.int64)
    with pytest.raises(ValueError, match="b must be positive"):
        pb.a4_tail(10, 0.0)
    with pytest.raises(ValueError, match="s must satisfy s <= m"):
        paper.a17_l2_bound(20, 10)
    with pytest.raises(ValueError, match="p must lie"):
        paper.a19_bound(10, 1.5, 0.5, 0.1)
