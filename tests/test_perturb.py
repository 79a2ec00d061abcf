"""rnnbook.perturb (Appendix C) against exact SVDs, explicit matrices and a direct recount of the forward pass."""
import math

import pytest
import torch

import rnnbook as rb
from rnnbook import perturb as pt
from rnnbook import products

F64 = dict(device="cpu", dtype=torch.float64)


@pytest.fixture
def net():
    p = rb.init_params(48, 5, 3, ensemble=3, seed=0, **F64)
    data = rb.make_data(3, 6, 5, 3, 0.2, seed=1, **F64)
    return p, data


def exact_norm(M):
    return torch.linalg.matrix_norm(M, ord=2)


def recount(p, Wp, x, e):
    """Direct, unbatched forward passes of network e with W~ and W~+W': h', g', flip counts, ||D'g||."""
    W0, W1, A = p.W[e], p.W[e] + Wp[e], p.A[e]
    n, L, _ = x.shape
    hn, gn, fl, dg = (torch.zeros(n, L, dtype=torch.float64) for _ in range(4))
    for i in range(n):
        h0 = torch.zeros(p.m, dtype=torch.float64)
        h1 = torch.zeros(p.m, dtype=torch.float64)
        for l in range(L):
            g0 = W0 @ h0 + A @ x[i, l]
            g1 = W1 @ h1 + A @ x[i, l]
            h0, h1 = torch.clamp(g0, min=0), torch.clamp(g1, min=0)
            flips = [k for k in range(p.m) if (g0[k] >= 0) != (g1[k] >= 0)]
            hn[i, l], gn[i, l] = (h1 - h0).norm(), (g1 - g0).norm()
            fl[i, l] = len(flips)
            dg[i, l] = g1[flips].norm() if flips else 0.0
    return hn, gn, fl, dg


@pytest.mark.parametrize("kind", pt.KINDS)
def test_norm_budget_is_exact(net, kind):
    p, data = net
    for tau0 in (0.3, 2.0):
        Wp = rb.training.perturbations(p, data, tau0, seed=4, gd_steps=5, kinds=(kind,))[kind]
        assert Wp.shape == p.W.shape
        torch.testing.assert_close(exact_norm(Wp), torch.full((3,), tau0 / math.sqrt(p.m), **F64), rtol=1e-8, atol=0)


def test_gd_direction_is_the_training_displacement(net):
    p, data = net
    eta = rb.paper.book_step_size(p.m, data.n, data.L)
    raw, tau_nat, hist = rb.training.gd_direction(p, data, None, eta=eta, steps=4)
    torch.testing.assert_close(raw, hist.params.W - p.W)
    torch.testing.assert_close(tau_nat, math.sqrt(p.m) * exact_norm(raw), rtol=1e-9, atol=0)
    scaled, _, _ = rb.training.gd_direction(p, data, 1.5, eta=eta, steps=4)
    cos = (scaled * raw).sum((1, 2)) / (scaled.norm(dim=(1, 2)) * raw.norm(dim=(1, 2)))
    torch.testing.assert_close(cos, torch.ones(3, **F64))


def test_adversarial_is_rank_one_and_flips_what_it_plans(net):
    p, data = net
    r = pt.adversarial_rank_one(p, data.x, 1.0, sample=1, step=1)
    torch.testing.assert_close(r.Wp, r.y[:, :, None] * r.z[:, None, :])
    assert (torch.linalg.matrix_rank(r.Wp) == 1).all()
    torch.testing.assert_close(r.z.norm(dim=1), torch.ones(3, **F64))
    torch.testing.assert_close(r.y.norm(dim=1), torch.full((3,), 1 / math.sqrt(p.m), **F64))
    st = pt.perturbation_stats(pt.perturbed(p, r.Wp, data.x))
    # step 1 does not depend on W, so every planned flip at g_{i,2} happens, and nothing else moves there
    assert torch.equal(st.flips[:, 1, 1], r.planned)
    assert (st.flips[:, :, 0] == 0).all()
    # a larger budget flips more
    big = pt.adversarial_rank_one(p, data.x, 4.0, sample=1, step=1)
    assert (big.planned >= r.planned).all() and (big.planned > r.planned).any()


def test_stats_match_a_direct_recount(net):
    p, data = net
    for Wp in (pt.random_direction(p, 3.0, seed=2), pt.adversarial_rank_one(p, data.x, 2.0).Wp):
        pert = pt.perturbed(p, Wp, data.x)
        st = pt.perturbation_stats(pert)
        for e in range(p.ensemble):
            hn, gn, fl, dg = recount(p, Wp, data.x, e)
            torch.testing.assert_close(st.h_norm[e], hn)
            torch.testing.assert_close(st.g_norm[e], gn)
            assert torch.equal(st.flips[e].to(torch.float64), fl)
            torch.testing.assert_close(st.Dg_norm[e], dg)
        assert (st.flips.sum() > 0)
        torch.testing.assert_close(st.max("flips"), st.flips.flatten(1).amax(1))
        assert set(pert.D_prime.unique().tolist()) <= {-1, 0, 1}
        torch.testing.assert_close(pert.W, p.W + Wp)


def test_aimed_sparse_rank_one_targets_the_smallest_preactivations(net):
    p, data = net
    fw = rb.forward(p, data.x)
    r = pt.aimed_sparse_rank_one(p, fw, 4, 1.0, sample=1, step=2)
    g = fw.g[:, 1, 3]
    for e in range(p.ensemble):
        support = torch.nonzero(r.y[e]).flatten()
        smallest = g[e].abs().argsort()[:4]
        assert set(support.tolist()) == set(smallest.tolist())
        assert (torch.sign(r.y[e, support]) == -torch.sign(g[e, support])).all()  # pushes each across zero
    torch.testing.assert_close(r.z, fw.h[:, 1, 2] / fw.h[:, 1, 2].norm(dim=1, keepdim=True))


def test_sparse_rank_one_structure():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 30, generator=g, dtype=torch.float64)
    r = pt.sparse_rank_one(z, 5, 0.7, seed=1)
    assert ((r.y != 0).sum(dim=1) == 5).all()
    nz = r.y[r.y != 0].abs()
    torch.testing.assert_close(nz, torch.full_like(nz, 0.7 / math.sqrt(30)))
    torch.testing.assert_close(r.Wp, r.y[:, :, None] * (z / z.norm(dim=1, keepdim=True))[:, None, :])
    torch.testing.assert_close(exact_norm(r.Wp), torch.full((2,), math.sqrt(5) * 0.7 / math.sqrt(30), dtype=torch.float64))
    sup = torch.tensor([[0, 4], [7, 2]])
    r2 = pt.sparse_rank_one(z, 2, 1.0, support=sup, signs=torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64))
    assert r2.y[0, 0] > 0 and r2.y[0, 4] < 0 and r2.y[1, 7] < 0 and r2.y[1, 2] < 0


def test_forward_coordinate_change_explicit(net):
    p, data = net
    Wp = pt.random_direction(p, 1.0, seed=5)
    pert = pt.perturbed(p, Wp, data.x)
    got = pt.forward_coordinate_change(pert)
    for e in range(p.ensemble):
        dh = pert.fw.h[e, :, 1:-1] - pert.fw_tilde.h[e, :, 1:-1]  # (n, L-1, m)
        want = (dh @ (p.W[e] + Wp[e]).T).abs().max()
        torch.testing.assert_close(got[e], want)


def test_backward_rows_match_products(net):
    p, data = net
    Wp = pt.adversarial_rank_one(p, data.x, 3.0).Wp
    pert = pt.perturbed(p, Wp, data.x)
    a = torch.nn.functional.normalize(torch.randn(p.ensemble, p.d, generator=torch.Generator().manual_seed(1),
                                                  dtype=torch.float64), dim=1)
    W = pert.W
    r = products.backward_rows(a, p.B, W, pert.fw.D)                    # [e, i, l1 - 1, l2 - 1]
    L = data.L
    for i in range(data.n):
        for l2 in range(1, L + 1):
            for l1 in range(1, l2 + 1):
                Back = products.back(p.B, W, pert.fw.D[:, i], l1 - 1, l2)  # a^T B P(l1, l2) = a^T Back_{l1-1 -> l2}
                torch.testing.assert_close(r[:, i, l1 - 1, l2 - 1], torch.bmm(a[:, None], Back)[:, 0])
    ch = pt.backward_change(pert, a)
    rows = {"tt": products.backward_rows(a, p.B, p.W, pert.fw_tilde.D), "DW": r,
            "Dt": products.backward_rows(a, p.B, p.W, pert.fw.D), "tW": products.backward_rows(a, p.B, W, pert.fw_tilde.D)}
    mask = torch.ones(L, L, dtype=torch.bool).triu()
    vmax = lambda t: t[:, :, mask].flatten(1).amax(1)
    for part, (x, y) in {"a": ("tt", "Dt"), "b": ("Dt", "DW"), "c": ("tt", "tW"), "d": ("tW", "DW"),
                         "full": ("tt", "DW")}.items():  # Lemma C.9 (a)-(d) and the whole change
        torch.testing.assert_close(ch.abs[part], vmax((rows[x] - rows[y]).norm(dim=-1)))
    assert (ch.abs["full"] <= ch.abs["c"] + ch.abs["d"] + 1e-12).all()  # the triangle inequality of C.9
    torch.testing.assert_close(ch.size, vmax(rows["tt"].norm(dim=-1)))
    assert (ch.rel["full"] > 0).all() and (ch.coord["a"] >= 0).all()


def test_product_norms_match_explicit(net):
    p, data = net
    Wp = pt.random_direction(p, 5.0, seed=7)
    st = pt.perturbed(p, Wp, data.x)
    got = pt.product_norms(st, 2, 5, tol=1e-10)
    W = p.W + Wp
    for e in range(p.ensemble):
        Pt = [products.product_matrix(p.W, st.fw_tilde.D[:, i], 2, 5)[e] for i in range(data.n)]
        P = [products.product_matrix(W, st.fw.D[:, i], 2, 5)[e] for i in range(data.n)]
        torch.testing.assert_close(got["tilde"][e], max(exact_norm(M) for M in Pt), rtol=1e-6, atol=0)
        torch.testing.assert_close(got["full"][e], max(exact_norm(M) for M in P), rtol=1e-6, atol=0)
        torch.testing.assert_close(got["diff"][e], max(exact_norm(a - b) for a, b in zip(P, Pt)), rtol=1e-6, atol=0)


def test_bad_input_is_rejected(net):
    p, data = net
    with pytest.raises(ValueError, match="tau0"):
        pt.random_direction(p, 0.0, seed=0)
    with pytest.raises(ValueError, match="tau0"):
        pt.adversarial_rank_one(p, data.x, -1.0)
    with pytest.raises(TypeError, match="tau0"):
        pt.rescale(p.W, float("nan"))
    with pytest.raises(ValueError, match="Wp"):
        pt.perturbed(p, torch.zeros(3, p.m, p.m + 1, **F64), data.x)
    with pytest.raises(ValueError, match="Wp"):
        pt.perturbed(p, torch.zeros(2, p.m, p.m, **F64), data.x)
    with pytest.raises(TypeError, match="pert must be"):
        pt.perturbation_stats(p)
    with pytest.raises(ValueError, match="N must be at most"):
        pt.sparse_rank_one(torch.ones(2, 10, dtype=torch.float64), 11, 1.0, seed=0)
    with pytest.raises(ValueError, match="N"):
        pt.sparse_rank_one(torch.ones(2, 10, dtype=torch.float64), 0, 1.0, seed=0)
    with pytest.raises(ValueError, match="zero row"):
        pt.sparse_rank_one(torch.zeros(2, 10, dtype=torch.float64), 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="distinct"):
        pt.sparse_rank_one(torch.ones(1, 10, dtype=torch.float64), 2, 1.0, support=torch.tensor([[3, 3]]), seed=0)
    with pytest.raises(ValueError, match="signs"):
        pt.sparse_rank_one(torch.ones(1, 10, dtype=torch.float64), 2, 1.0, signs=torch.tensor([[1.0, 0.5]], dtype=torch.float64), seed=0)
    with pytest.raises(ValueError, match="sample"):
        pt.adversarial_rank_one(p, data.x, 1.0, sample=3)
    with pytest.raises(ValueError, match="step"):
        pt.adversarial_rank_one(p, data.x, 1.0, step=data.L)
    with pytest.raises(ValueError, match="kind"):
        rb.training.perturbations(p, data, 1.0, seed=0, gd_steps=1, kinds=("worst",))
    with pytest.raises(ValueError, match="zero matrix"):
        pt.rescale(torch.zeros(1, 4, 4, dtype=torch.float64), 1.0)
    st = pt.perturbed(p, pt.random_direction(p, 1.0, seed=0), data.x)
    with pytest.raises(ValueError, match="a must have shape"):
        pt.backward_change(st, torch.ones(p.d + 1, **F64))
    with pytest.raises(ValueError, match="l1 <= l2"):
        pt.product_norms(st, 4, 2)
    with pytest.raises(ValueError, match="N must be at most"):
        pt.aimed_sparse_rank_one(p, st.fw_tilde, p.m + 1, 1.0)
    with pytest.raises(ValueError, match="weight-tied ReLU"):
        pt.random_direction(rb.init_params(8, 3, 2, seed=0, activation="tanh", **F64), 1.0, seed=0)


def test_the_fixed_vector_a_is_independent_of_the_networks():
    """The backward experiments draw a with its own named seed. With the networks' seed it would repeat their
    draw: the latent bug the named seeds remove (once E d >= 16, a equals the first entries of W[0])."""
    E, d, m = 8, 2, 64
    same = 12345
    p = rb.init_params(m, 5, d, ensemble=E, seed=same, **F64)
    W0 = p.W[0].flatten()[: E * d].view(E, d)
    bug = pt.unit_vectors(E, d, seed=same, **F64)
    torch.testing.assert_close(bug, W0 / W0.norm(dim=1, keepdim=True))  # the coincidence
    p = rb.init_params(m, 5, d, ensemble=E, seed=rb.seed("perturbation_backward", "networks", m), **F64)
    a = pt.unit_vectors(E, d, seed=rb.seed("perturbation_backward", "a", m), **F64)
    W0 = p.W[0].flatten()[: E * d].view(E, d)
    assert (a - W0 / W0.norm(dim=1, keepdim=True)).abs().max() > 0.1  # no longer the networks' own draw
    torch.testing.assert_close(a.norm(dim=1), torch.ones(E, **F64))
