"""Masked products against explicit matrices and exact SVDs."""
import pytest
import torch

import rnnbook as rb
from rnnbook import products


@pytest.fixture
def net():
    p = rb.init_params(40, 5, 3, ensemble=2, seed=0, device="cpu", dtype=torch.float64)
    data = rb.make_data(2, 6, 5, 3, 0.2, seed=1, device="cpu", dtype=torch.float64)
    return p, rb.forward(p, data.x)


def explicit(p, fw, e, i, l1, l2):
    M = torch.eye(p.m, dtype=torch.float64)
    for l in range(l1, l2 + 1):
        M = torch.diag(fw.D[e, i, l].double()) @ p.W[e] @ M
    return M


def test_product_matrix_and_applications(net):
    p, fw = net
    D = fw.D[:, 1]
    P = products.product_matrix(p.W, D, 2, 5)
    for e in range(2):
        torch.testing.assert_close(P[e], explicit(p, fw, e, 1, 2, 5))
    V = torch.randn(2, 3, p.m, dtype=torch.float64)
    torch.testing.assert_close(products.apply_product(p.W, D, V, 2, 5), V @ P.transpose(1, 2))
    torch.testing.assert_close(products.apply_product_T(p.W, D, V, 2, 5), V @ P)


def test_spectral_norm_matches_svd(net):
    p, fw = net
    D = fw.D[:, 0]
    for l1, l2 in [(1, 1), (2, 4), (1, 6)]:
        exact = torch.linalg.matrix_norm(products.product_matrix(p.W, D, l1, l2), ord=2)
        est = products.product_norm(p.W, D, l1, l2, iters=60)
        torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_back_follows_fact_2_5(net):
    """Back_{l->a} = B D_a W ... D_{l+1} W, for one sample (3-D masks) and for every sample (4-D masks)."""
    p, fw = net
    D = fw.D[:, 0]
    Back = products.back(p.B, p.W, D, 2, 5)
    for e in range(2):
        torch.testing.assert_close(Back[e], p.B[e] @ explicit(p, fw, e, 0, 3, 5))
    torch.testing.assert_close(products.back(p.B, p.W, D, 3, 3), p.B)
    all_samples = products.back(p.B, p.W, fw.D, 2, 5)
    assert all_samples.shape == (2, 2, 3, p.m)
    for i in range(2):
        torch.testing.assert_close(all_samples[:, i], products.back(p.B, p.W, fw.D[:, i], 2, 5))
    with pytest.raises(ValueError, match="0 <= l <= a"):
        products.back(p.B, p.W, D, 4, 3)


def test_four_dimensional_masks_are_every_sample_at_once(net):
    p, fw = net
    V = torch.randn(2, 2, 3, p.m, dtype=torch.float64)
    both = products.apply_product(p.W, fw.D, V, 2, 5)
    bothT = products.apply_product_T(p.W, fw.D, V, 2, 5)
    for i in range(2):
        torch.testing.assert_close(both[:, i], products.apply_product(p.W, fw.D[:, i], V[:, i], 2, 5))
        torch.testing.assert_close(bothT[:, i], products.apply_product_T(p.W, fw.D[:, i], V[:, i], 2, 5))
    N4 = products.all_product_norms(p.W, fw.D, tol=1e-9)
    assert N4.shape == (2, 2, 6, 6)
    for i in range(2):
        torch.testing.assert_close(N4[:, i], products.all_product_norms(p.W, fw.D[:, i], tol=1e-9), rtol=1e-5, atol=0, equal_nan=True)
    torch.testing.assert_close(products.product_norm(p.W, fw.D, 1, 6, tol=1e-9),
                               torch.stack([products.product_norm(p.W, fw.D[:, i], 1, 6, tol=1e-9) for i in range(2)], 1),
                               rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="V must have shape"):
        products.apply_product(p.W, fw.D, V[:, :1], 1, 2)


def test_bad_spans_are_rejected(net):
    p, fw = net
    with pytest.raises(ValueError, match="l1 <= l2"):
        products.apply_product(p.W, fw.D[:, 0], torch.zeros(2, 1, p.m, dtype=torch.float64), 4, 2)
    with pytest.raises(ValueError, match="V must have 4 dimensions"):
        products.apply_product(p.W, fw.D, torch.zeros(2, 1, p.m, dtype=torch.float64), 1, 2)
    with pytest.raises(ValueError, match="D must have shape"):
        products.apply_product(p.W, fw.D[:, 0, :, :5], torch.zeros(2, 1, p.m, dtype=torch.float64), 1, 2)


# ---------------------------------------------------------------------------------------------------------
# all_product_norms, sparse and backward quantities (Lemma B.11 ... Corollary B.19)

def exact_norms(W, D):
    L = D.shape[1] - 1
    out = torch.full((W.shape[0], L, L), float("nan"), dtype=torch.float64)
    for a in range(1, L + 1):
        for b in range(a, L + 1):
            out[:, a - 1, b - 1] = torch.linalg.svdvals(products.product_matrix(W, D, a, b).double())[:, 0]
    return out


def test_all_product_norms_match_svd(net):
    p, fw = net
    D = fw.D[:, 1]
    est, it = products.all_product_norms(p.W, D, return_iters=True, tol=1e-9)
    ex = exact_norms(p.W, D)
    assert est.shape == (2, 6, 6)
    assert torch.isnan(est[:, 3, 1]).all() and torch.isnan(ex[:, 3, 1]).all()
    upper = ~torch.isnan(ex)
    torch.testing.assert_close(est[upper], ex[upper], rtol=1e-4, atol=0)
    assert (it[upper[0]] >= 1).all() and (it[~upper[0]] == 0).all()


def test_all_product_norms_float32_and_bigger_m():
    p = rb.init_params(160, 4, 2, ensemble=2, seed=5, device="cpu", dtype=torch.float32)
    data = rb.make_data(1, 5, 4, 2, 0.2, seed=2, device="cpu", dtype=torch.float32)
    fw = rb.forward(p, data.x)
    est = products.all_product_norms(p.W, fw.D[:, 0])
    ex = exact_norms(p.W.double(), fw.D[:, 0])
    upper = ~torch.isnan(ex)
    rel = ((est[upper] - ex[upper]) / ex[upper]).abs().max()
    assert rel < 1e-3


def test_all_product_norms_untied_and_slopes():
    # untied W (E, L, m, m) and a non-binary diagonal (tanh slopes)
    p = rb.init_params(30, 4, 2, ensemble=2, seed=7, untied_steps=4, activation="tanh", device="cpu",
                       dtype=torch.float64)
    data = rb.make_data(1, 4, 4, 2, 0.2, seed=2, device="cpu", dtype=torch.float64)
    fw = rb.forward(p, data.x)
    D = fw.slope[:, 0]
    for e in range(2):  # explicit product with the right W_l at each step
        M = torch.eye(30, dtype=torch.float64)
        for l in range(2, 5):
            M = torch.diag(D[e, l]) @ p.W[e, l - 1] @ M
        torch.testing.assert_close(products.product_matrix(p.W, D, 2, 4)[e], M)
    est = products.all_product_norms(p.W, D, tol=1e-9)
    ex = exact_norms(p.W, D)
    upper = ~torch.isnan(ex)
    torch.testing.assert_close(est[upper], ex[upper], rtol=1e-4, atol=0)


def test_by_span(net):
    p, fw = net
    N = exact_norms(p.W, fw.D[:, 0])
    med, mx = products.by_span(N, "median"), products.by_span(N, "max")
    for s in (1, 2, 6):
        vals = torch.stack([N[:, a, a + s - 1] for a in range(0, 6 - s + 1)], dim=1)
        torch.testing.assert_close(mx[:, s - 1], vals.max(dim=1).values)
        torch.testing.assert_close(med[:, s - 1], torch.quantile(vals, 0.5, dim=1))
    with pytest.raises(ValueError, match="reduce"):
        products.by_span(N, "min")
    # rows that were not computed (NaN) are ignored
    N2 = N.clone()
    N2[:, 1] = float("nan")
    vals = torch.stack([N[:, a, a + 1] for a in (0, 2, 3, 4)], dim=1)
    torch.testing.assert_close(products.by_span(N2, "max")[:, 1], vals.max(dim=1).values)
    torch.testing.assert_close(products.by_span(N2, "mean")[:, 1], vals.mean(dim=1))
    N2[:, 0] = float("nan")
    assert torch.isnan(products.by_span(N2, "max")[:, 5]).all()


def test_fixed_vector_growth(net):
    p, fw = net
    D = fw.D[:, 0]
    z = torch.randn(2, 3, p.m, dtype=torch.float64)
    g = products.fixed_vector_growth(p.W, D, z, l1=2)
    assert g.shape == (2, 3, 5)
    for j, l2 in enumerate(range(2, 7)):
        P = products.product_matrix(p.W, D, 2, l2)
        ref = (z @ P.transpose(1, 2)).norm(dim=-1) / z.norm(dim=-1)
        torch.testing.assert_close(g[..., j], ref)
    with pytest.raises(ValueError, match="zero row"):
        products.fixed_vector_growth(p.W, D, torch.zeros(2, 1, p.m, dtype=torch.float64))


def test_sparse_quantities(net):
    p, fw = net
    D = fw.D[:, 0]
    M = p.W @ products.product_matrix(p.W, D, 2, 5)
    torch.testing.assert_close(products.sandwich_matrix(p.W, D, 2, 5), M)
    torch.testing.assert_close(products.largest_entry(p.W, D, 2, 5), M.abs().flatten(1).max(dim=1).values)
    rows, cols = torch.tensor([0, 5, 7]), torch.tensor([[1, 2, 3, 4], [9, 8, 7, 6]])
    got = products.sparse_block_norm(p.W, D, 2, 5, rows, cols)
    for e in range(2):
        ref = torch.linalg.matrix_norm(M[e][rows][:, cols[e]], ord=2)
        torch.testing.assert_close(got[e], ref)
    # S x S block by default
    torch.testing.assert_close(products.sparse_block_norm(p.W, D, 2, 5, rows),
                               torch.linalg.matrix_norm(M[:, rows][:, :, rows], ord=2))
    r = products.random_sparse_block_norm(p.W, D, 2, 5, 4, seed=0)
    w1 = products.worst_sparse_block_norm(p.W, D, 2, 5, 1)
    torch.testing.assert_close(w1, products.largest_entry(p.W, D, 2, 5))
    w4, R, C = products.worst_sparse_block_norm(p.W, D, 2, 5, 4, return_support=True)
    assert R.shape == (2, 4) and C.shape == (2, 4)
    full = torch.linalg.matrix_norm(M, ord=2)
    assert (w4 >= w1 - 1e-12).all() and (w4 <= full + 1e-12).all() and (r <= full + 1e-12).all()
    # the whole matrix: truncation keeps everything, so this is the power method on M
    torch.testing.assert_close(products.worst_sparse_block_norm(p.W, D, 2, 5, p.m, iters=300), full, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="k must be at most"):
        products.random_sparse_block_norm(p.W, D, 2, 5, p.m + 1, seed=0)
    with pytest.raises(ValueError, match="rows"):
        products.sparse_block_norm(p.W, D, 2, 5, torch.tensor([p.m]))


def test_backward_quantities(net):
    p, fw = net
    D = fw.D[:, 0]
    P = products.product_matrix(p.W, D, 2, 5)
    BP = p.B @ P
    torch.testing.assert_close(products.backward_product(p.B, p.W, D, 2, 5), BP)
    torch.testing.assert_close(products.backward_product(p.B, p.W, D, 2, 5), products.back(p.B, p.W, D, 1, 5))
    rows = products.backward_rows(torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64), p.B, p.W, D)
    assert rows.shape == (2, 6, 6, p.m)  # [e, l1 - 1, l2 - 1]
    torch.testing.assert_close(rows[:, 1, 4], torch.einsum("d,edm->em", torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64), BP))
    assert (rows[:, 4, 1] == 0).all()
    torch.testing.assert_close(products.backward_column_norms(p.B, p.W, D, 2, 5), BP.norm(dim=1))
    a = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)
    torch.testing.assert_close(products.backward_entries(p.B, p.W, D, 2, 5, a), torch.einsum("d,edm->em", a, BP))
    torch.testing.assert_close(products.backward_norm(p.B, p.W, D, 2, 5), torch.linalg.matrix_norm(BP, ord=2))
    with pytest.raises(ValueError, match="a must have shape"):
        products.backward_entries(p.B, p.W, D, 2, 5, torch.ones(4, dtype=torch.float64))


def test_all_product_norms_rejects_bad_input(net):
    p, fw = net
    with pytest.raises(ValueError, match="tol"):
        products.all_product_norms(p.W, fw.D[:, 0], tol=0.0)
    with pytest.raises(TypeError, match="iters"):
        products.all_product_norms(p.W, fw.D[:, 0], iters=2.5)
    with pytest.raises(ValueError, match="D must have shape"):
        products.all_product_norms(p.W, fw.D[:, 0, :, :5])
    with pytest.raises(ValueError, match="untied W"):
        products.all_product_norms(p.W[:, None].expand(-1, 2, -1, -1), fw.D[:, 0])


def test_all_product_norms_starts(net):
    p, fw = net
    D = fw.D[:, 0]
    full = products.all_product_norms(p.W, D, tol=1e-9)
    part = products.all_product_norms(p.W, D, starts=[2, 5], tol=1e-9)
    for a in range(6):
        if a + 1 in (2, 5):
            torch.testing.assert_close(part[:, a, a:], full[:, a, a:], rtol=1e-4, atol=0)
        else:
            assert torch.isnan(part[:, a]).all()
    with pytest.raises(ValueError, match="starts"):
        products.all_product_norms(p.W, D, starts=[7])


def test_free_product_edge():
    import math
    assert abs(products.free_product_edge(1) - (1 + math.sqrt(2))) < 1e-12
    for s in (1, 2, 5, 30):
        assert abs(products.free_product_edge(s, 1.0) - math.sqrt((s + 1) ** (s + 1) / s ** s)) < 1e-9
    # Monte Carlo: s = 3 independent half-masked Gaussian factors, variance 2/m, at m = 800
    g = torch.Generator().manual_seed(0)
    m = 800
    X = torch.eye(m, dtype=torch.float64)
    for _ in range(3):
        Wl = torch.randn(m, m, generator=g, dtype=torch.float64) * math.sqrt(2 / m)
        mask = (torch.rand(m, generator=g) < 0.5).double()
        X = mask[:, None] * (Wl @ X)
    top = torch.linalg.matrix_norm(X, ord=2).item()
    assert abs(top / products.free_product_edge(3) - 1) < 0.05
    with pytest.raises(ValueError, match="s must be"):
        products.free_product_edge(0)
