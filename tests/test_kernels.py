"""The infinite-width recursion (rnnbook.kernels) against Monte Carlo, explicit loops and exact special cases."""
import math

import numpy as np
import pytest
import torch

import rnnbook as rb
from rnnbook import kernels as kn


@pytest.fixture
def data():
    return rb.make_data(3, 5, 6, 1, 0.3, seed=4, device="cpu", dtype=torch.float64)


def mc_arccos(S, samples=400_000, seed=0):
    """2 E[relu(u) relu(v)] for (u, v) ~ N(0, S) by plain Monte Carlo (numpy), for every pair of S."""
    rng = np.random.default_rng(seed)
    S = np.asarray(S, dtype=np.float64)
    n = S.shape[0]
    C = np.linalg.cholesky(S + 1e-12 * np.eye(n))
    z = rng.standard_normal((samples, n)) @ C.T
    r = np.maximum(z, 0.0)
    return 2.0 * r.T @ r / samples


def test_arccos_map_special_cases():
    # collinear (theta = 0): S itself; orthogonal (theta = pi/2): sqrt(S_ii S_jj)/pi; opposite (theta = pi): 0.
    S = torch.tensor([[4.0, 6.0, 0.0, -2.0], [6.0, 9.0, 0.0, -3.0], [0.0, 0.0, 1.0, 0.0], [-2.0, -3.0, 0.0, 1.0]],
                     dtype=torch.float64)
    K = kn.arccos_map(S)
    assert K[0, 1].item() == pytest.approx(6.0, rel=1e-12)
    assert K[0, 2].item() == pytest.approx(2.0 / math.pi, rel=1e-12)
    assert K[0, 3].item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(K.diagonal(), S.diagonal(), rtol=0, atol=0)
    assert K.dtype == torch.float64


def test_arccos_map_against_monte_carlo():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4, 3, generator=g, dtype=torch.float64)
    S = X @ X.T
    K = kn.arccos_map(S).numpy()
    mc = mc_arccos(S.numpy())
    scale = np.sqrt(np.outer(np.diag(K), np.diag(K)))
    assert np.max(np.abs(mc - K) / scale) < 0.01  # MC standard error ~ 1/sqrt(4e5) = 0.0016


def test_recursion_against_monte_carlo_recursion(data):
    """K_l from the closed form against the same recursion with each Gaussian expectation done by Monte Carlo."""
    K = kn.limit_gram(data.x)
    X = kn.input_gram(data.x).numpy()
    Kmc = np.zeros_like(X[0])
    for l in range(1, data.L + 1):
        Kmc = mc_arccos(Kmc + X[l - 1], seed=l)
        scale = np.sqrt(np.outer(np.diag(Kmc), np.diag(Kmc)))
        assert np.max(np.abs(Kmc - K[l].numpy()) / scale) < 0.02, f"step {l}"


def test_diagonal_identity_symmetry_and_psd(data):
    K = kn.limit_gram(data.x)
    assert K.shape == (data.L + 1, data.n, data.n)
    assert torch.all(K[0] == 0)
    sq = data.x.square().sum(-1).cumsum(1)  # (n, L): sum_{a<=l} ||x_{i,a}||^2
    torch.testing.assert_close(K[1:].diagonal(dim1=-2, dim2=-1), sq.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(K, K.transpose(-1, -2), rtol=0, atol=0)
    assert torch.linalg.eigvalsh(K[1:]).min() > -1e-10


def test_batched_inputs_match_single(data):
    other = rb.make_data(3, 5, 6, 1, 0.3, seed=5, device="cpu", dtype=torch.float64)
    Kb = kn.limit_gram(torch.stack([data.x, other.x]))
    torch.testing.assert_close(Kb[0], kn.limit_gram(data.x))
    torch.testing.assert_close(Kb[1], kn.limit_gram(other.x))
    # float32 inputs are promoted: same answer up to the inputs' rounding
    torch.testing.assert_close(kn.limit_gram(data.x.float()), kn.limit_gram(data.x), rtol=1e-6, atol=1e-6)


def test_empirical_gram_against_explicit_recurrence(data):
    p = rb.init_params(30, data.d_x, 1, ensemble=2, seed=1, device="cpu", dtype=torch.float64)
    G = kn.empirical_gram(p, data.x)
    assert G.shape == (2, data.L + 1, data.n, data.n) and G.dtype == torch.float64
    for e in range(2):
        W, A = p.W[e].numpy(), p.A[e].numpy()
        for i in range(data.n):
            for j in range(data.n):
                hi, hj = np.zeros(30), np.zeros(30)
                for l in range(1, data.L + 1):
                    hi = np.maximum(W @ hi + A @ data.x[i, l - 1].numpy(), 0)
                    hj = np.maximum(W @ hj + A @ data.x[j, l - 1].numpy(), 0)
                    assert G[e, l, i, j].item() == pytest.approx(hi @ hj, rel=1e-10, abs=1e-12)


def test_relative_error_against_loops(data):
    K = kn.limit_gram(data.x)
    g = torch.Generator().manual_seed(3)
    G = K + 0.1 * torch.randn(4, *K.shape, generator=g, dtype=torch.float64)
    G = (G + G.transpose(-1, -2)) / 2
    G[:, 0] = 0
    err = kn.gram_relative_error(G, K)
    assert err.shape == (4, data.L + 1)
    assert torch.all(err[:, 0] == 0)
    for e in range(4):
        for l in range(1, data.L + 1):
            best = max(abs(G[e, l, i, j] - K[l, i, j]).item() / math.sqrt(K[l, i, i] * K[l, j, j])
                       for i in range(data.n) for j in range(data.n))
            assert err[e, l].item() == pytest.approx(best, rel=1e-12)
    bad = G.clone()
    bad[0, 0, 0, 0] = 1.0  # G nonzero where K has a zero diagonal
    assert math.isinf(kn.gram_relative_error(bad, K)[0, 0].item())


def test_distance_and_separation_against_vectors():
    g = torch.Generator().manual_seed(7)
    h = torch.randn(3, 2, 10, generator=g, dtype=torch.float64)  # 3 batches of two vectors
    G = h @ h.transpose(-1, -2)
    torch.testing.assert_close(kn.gram_distance(G, 0, 1), (h[:, 0] - h[:, 1]).norm(dim=-1))
    a, b = h[:, 0], h[:, 1]
    def off_line(u, v):
        return (u - (u * v).sum(-1, keepdim=True) / (v * v).sum(-1, keepdim=True) * v).norm(dim=-1)
    torch.testing.assert_close(kn.gram_separation(G, 1, 0), torch.minimum(off_line(a, b), off_line(b, a)))


@pytest.mark.parametrize("untied,m", [(False, 8192), (True, 2048)])
def test_network_converges_to_limit_at_large_width(untied, m):
    """Monte Carlo over networks: at large m the Gram matrices sit within the 1/sqrt(m) fluctuation of K_l
    (tied: the paper's model, at m = 8192; untied, which needs L weight matrices, at m = 2048)."""
    L = 3
    d = rb.make_data(3, L, 6, 1, 0.3, seed=2, device="cpu", dtype=torch.float32)
    K = kn.limit_gram(d.x)
    p = rb.init_params(m, 6, 1, ensemble=2, seed=11, untied_steps=L if untied else None, device="cpu",
                       dtype=torch.float32)
    G = kn.empirical_gram(p, d.x)
    err = kn.gram_relative_error(G, K)
    # per-entry relative fluctuations are about 2 sqrt(l / m) (measured in the chapter); allow 4x that.
    tol = 8.0 * torch.sqrt(torch.arange(L + 1, dtype=torch.float64) / m)
    assert torch.all(err <= tol), (err, tol)
    # and far closer than at m = 64
    small = rb.init_params(64, 6, 1, ensemble=2, seed=12, untied_steps=L if untied else None, device="cpu",
                           dtype=torch.float32)
    assert err[:, L].max() < kn.gram_relative_error(kn.empirical_gram(small, d.x), K)[:, L].max()


def test_first_step_within_monte_carlo_error():
    """At l = 1, <h_i, h_j> is a sum of m i.i.d. neuron terms: its deviation from K_1 must be within 5 standard errors."""
    m = 2048
    d = rb.make_data(4, 1, 6, 1, 0.3, seed=8, device="cpu", dtype=torch.float64)
    p = rb.init_params(m, 6, 1, seed=9, device="cpu", dtype=torch.float64)
    h = rb.forward(p, d.x).h[0, :, 1]  # (n, m)
    K1 = kn.limit_gram(d.x)[1]
    terms = h.unsqueeze(1) * h.unsqueeze(0)  # (n, n, m): per-neuron products
    se = math.sqrt(m) * terms.std(dim=-1)
    assert torch.all((terms.sum(-1) - K1).abs() <= 5 * se)


def test_bad_input_is_rejected(data):
    with pytest.raises(ValueError, match="x must have shape"):
        kn.limit_gram(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        kn.limit_gram(torch.zeros(2, 3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        kn.limit_gram(np.zeros((2, 3, 4)))
    nan = data.x.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        kn.limit_gram(nan)
    with pytest.raises(ValueError, match="S must be a square"):
        kn.arccos_map(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="S must be positive semi-definite"):
        kn.arccos_map(-torch.eye(2, dtype=torch.float64))
    K = kn.limit_gram(data.x)
    with pytest.raises(ValueError, match="K must end in G's shape"):
        kn.gram_relative_error(K[None], K[:-1])
    with pytest.raises(ValueError, match="G must have shape"):
        kn.gram_relative_error(K[0], K)
    with pytest.raises(ValueError, match="i must be an integer index"):
        kn.gram_distance(K[1], 5, 0)
    with pytest.raises(ValueError, match="i and j must be different"):
        kn.gram_separation(K[1], 1, 1)
    with pytest.raises(ValueError, match="zero diagonal"):
        kn.gram_separation(K[0], 0, 1)
    with pytest.raises(TypeError, match="params must be rnnbook.Params"):
        kn.empirical_gram(data.x, data.x)
    with pytest.raises(TypeError, match="fw must be an rnnbook.Forward"):
        kn.hidden_gram(data.x)
    p = rb.init_params(8, data.d_x + 1, 1, seed=0, device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="input dimension d_x"):
        kn.empirical_gram(p, data.x)
