"""rnnbook.forward_stats (Lemma B.3) against explicit loops, the lemma's own indexing, and Monte Carlo."""
import math

import numpy as np
import pytest
import torch

import rnnbook as rb
from rnnbook import forward_stats as fs


def explicit_norms(p, x, e):
    """One network, one sequence at a time, with explicit matrices and Python loops."""
    W, A = p.W[e], p.A[e]
    act = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}[p.activation]
    n, L, _ = x.shape
    H = torch.zeros(n, L, dtype=torch.float64)
    G = torch.zeros(n, L, dtype=torch.float64)
    for i in range(n):
        h = torch.zeros(p.m, dtype=torch.float64)
        for l in range(1, L + 1):
            Wl = W if p.tied else W[l - 1]
            g = Wl @ h + A @ x[i, l - 1]
            h = act(g)
            H[i, l - 1], G[i, l - 1] = h.norm(), g.norm()
    return H, G


@pytest.mark.parametrize("activation,untied", [("relu", None), ("tanh", None), ("identity", None), ("relu", 6)])
def test_forward_norms_match_explicit_loop(f64, activation, untied):
    p = rb.init_params(24, 5, 2, ensemble=3, activation=activation, untied_steps=untied, seed=3, **f64)
    data = rb.make_data(2, 6, 5, 2, 0.2, seed=4, **f64)
    norms = fs.forward_norms(p, data.x)
    assert norms.h.shape == (3, 2, 6) and norms.g.shape == (3, 2, 6) and norms.L == 6
    np.testing.assert_array_equal(norms.steps, np.arange(1, 7))
    for e in range(3):
        H, G = explicit_norms(p, data.x, e)
        torch.testing.assert_close(norms.h[e], H)
        torch.testing.assert_close(norms.g[e], G)


def test_bounds_follow_the_lemmas_indexing():
    L = 7
    lo, hi, ghi = fs.b3_bounds(L)
    lo_s, hi_s, ghi_s = fs.b3_bounds(L, lower="shifted")
    for lp in range(L):  # the lemma's l' in {0..L-1} bounds step l' + 1, stored at position l'
        assert lo[lp] == pytest.approx((1 - 1 / (4 * L)) ** lp)
        assert lo_s[lp] == pytest.approx((1 - 1 / (4 * L)) ** (lp + 1))
        assert hi[lp] == hi_s[lp] == 2 * lp + 4
        assert ghi[lp] == ghi_s[lp] == 4 * lp + 8
    assert lo[0] == 1.0


def test_check_flags_exactly_the_violations():
    L = 4
    lo, hi, ghi = fs.b3_bounds(L)
    h = torch.tensor(np.tile((lo + hi) / 2, (2, 3, 1)))  # inside everywhere
    g = torch.tensor(np.tile(ghi / 2, (2, 3, 1)))
    h[0, 1, 0] = 0.99          # below the printed lower bound 1 at step 1, above the shifted one
    h[1, 2, 3] = hi[3] + 0.01  # above 2l+2 at step 4
    g[1, 0, 2] = ghi[2] + 0.5  # above 4l+4 at step 3
    chk = fs.b3_check(fs.ForwardNorms(h=h, g=g))
    assert chk.h_low.sum() == 1 and chk.h_low[0, 1, 0]
    assert chk.h_high.sum() == 1 and chk.h_high[1, 2, 3]
    assert chk.g_high.sum() == 1 and chk.g_high[1, 0, 2]
    assert chk.any.sum() == 3
    assert chk.per_seed.tolist() == [True, True]
    shifted = fs.b3_check(fs.ForwardNorms(h=h, g=g), lower="shifted")
    assert shifted.h_low.sum() == 0 and shifted.per_seed.tolist() == [False, True]


def test_recursion_is_the_cumulative_token_energy_for_relu_and_identity():
    x = torch.randn(3, 9, 4, dtype=torch.float64) * 0.3
    want = np.cumsum(x.square().sum(-1).numpy(), axis=-1)
    for act in ("relu", "identity"):
        np.testing.assert_allclose(fs.norm_recursion(x, 64, activation=act), want)
    np.testing.assert_allclose(fs.norm_recursion(x, None, activation="tanh"), want)
    # tanh at huge width acts linearly; at small width it saturates (strictly below the sum)
    np.testing.assert_allclose(fs.norm_recursion(x, 10**7, activation="tanh"), want, rtol=1e-5)
    assert np.all(fs.norm_recursion(x, 32, activation="tanh") < want)


def test_recursion_matches_monte_carlo(f64):
    """Step 1 is exact at any width; later steps of an untied network match to a few per cent."""
    m, L, S = 48, 4, 4000
    data = rb.make_data(1, L, 6, 1, 0.5, seed=0, **f64)
    for act in ("relu", "tanh"):
        p = rb.init_params(m, 6, 1, ensemble=S, activation=act, untied_steps=L, seed=1, **f64)
        mc = fs.forward_norms(p, data.x).h.square().mean(0)[0].numpy()  # E ||h_l||^2, (L,)
        pred = fs.norm_recursion(data.x, m, activation=act)[0]
        # standard error of the mean of ||h_1||^2 is about sqrt(5/m)/sqrt(S) relative: ~0.5%
        assert mc[0] == pytest.approx(pred[0], rel=0.02)
        np.testing.assert_allclose(mc, pred, rtol=0.06)


def test_bad_input_is_rejected(f64):
    p = rb.init_params(8, 3, 1, seed=0, **f64)
    with pytest.raises(ValueError, match="L"):
        fs.b3_bounds(0)
    with pytest.raises(TypeError, match="L"):
        fs.b3_bounds(2.5)
    with pytest.raises(ValueError, match="lower"):
        fs.b3_bounds(3, lower="loose")
    with pytest.raises(TypeError, match="params"):
        fs.forward_norms("not params", torch.zeros(1, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        fs.forward_norms(p, torch.zeros(1, 2, 4, dtype=torch.float64))  # wrong d_x
    with pytest.raises(TypeError, match="norms"):
        fs.b3_check(torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="activation"):
        fs.norm_recursion(np.ones((2, 3)), 8, activation="sigmoid")
    with pytest.raises(ValueError, match="m"):
        fs.norm_recursion(np.ones((2, 3)), 0, activation="tanh")
    with pytest.raises(ValueError, match="x"):
        fs.norm_recursion(np.ones(3), 8)
    with pytest.raises(ValueError, match="x"):
        fs.norm_recursion(np.array([[1.0, math.nan]]), 8)
