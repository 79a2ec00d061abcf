"""rnnbook.gradients (Appendices D, E, F; Theorems 5 and 3) against independent computations: torch.func Jacobians
and Hessian-vector products, explicit loops over neurons and backward operators, Monte Carlo; float64 throughout
where precision matters."""
import math

import pytest
import torch
from torch.func import grad, jacrev, jvp, vmap

import rnnbook as rb
from rnnbook import functional, ntk, paper, products
from rnnbook import gradients as gr

F64 = dict(device="cpu", dtype=torch.float64)


def _net(m=24, n=3, L=6, d_x=5, d=2, E=2, seed=1, delta=0.2):
    p = rb.init_params(m, d_x, d, ensemble=E, seed=seed, **F64)
    data = rb.make_data(n, L, d_x, d, delta, seed=seed + 100, **F64)
    return p, data, rb.forward(p, data.x)


def _outputs_one(W, A, B, x):
    """An independent recurrence for ONE sample x (L, d_x): outputs B h_l for l = 2..L, flattened."""
    h = torch.zeros(A.shape[0], dtype=A.dtype)
    outs = []
    for l in range(x.shape[0]):
        h = torch.relu(W @ h + A @ x[l])
        outs.append(B @ h)
    return torch.stack(outs)[1:].reshape(-1)


def _jacobian_gram(p, x, e):
    """Gram matrix of d(B h_{i,a})_k / dW over (i, a >= 2, k) by torch.func: (N, N)."""
    J = vmap(jacrev(_outputs_one), in_dims=(None, None, None, 0))(p.W[e], p.A[e], p.B[e], x)  # (n, (L-1) d, m, m)
    J = J.reshape(-1, p.m * p.m)
    return J @ J.T


def _loss(n, L, d, E=None, seed=7):
    g = torch.Generator().manual_seed(seed)
    shape = (n, L, d) if E is None else (E, n, L, d)
    e = torch.randn(*shape, generator=g, dtype=torch.float64)
    e[..., 0, :] = 0.0
    return e


# ----------------------------------------------------------------------------------------------------------
# the loss NTK

def test_loss_ntk_matches_torch_func_jacobians_and_output_ntk():
    p, data, fw = _net()
    K = gr.loss_ntk(p, fw)
    n, L, d = data.n, data.L, p.d
    assert K.shape == (2, n * (L - 1) * d, n * (L - 1) * d) and K.dtype == torch.float64
    for e in range(2):
        R = _jacobian_gram(p, data.x, e)
        assert ((K[e] - R).norm() / R.norm()).item() < 1e-12
    K2 = ntk.output_ntk(p, fw)[:, :, 1:, :, :, 1:, :].reshape(K.shape)
    torch.testing.assert_close(K, K2, rtol=1e-12, atol=1e-12)


def test_fake_gradient_norm_is_the_quadratic_form_of_the_loss_ntk():
    p, data, fw = _net(m=40, n=4, L=5, d=2, E=3)
    K = gr.loss_ntk(p, fw)
    e = _loss(4, 5, 2, E=3)
    G = rb.backward(p, fw, e).grad
    q = gr.loss_to_vector(e)
    quad = torch.einsum("ei,eij,ej->e", q, K, q)
    torch.testing.assert_close(G.square().sum(dim=(1, 2)), quad, rtol=1e-12, atol=0)
    assert torch.equal(gr.vector_to_loss(q, 4, 5, 2), e)


def test_worst_loss_attains_lambda_min_and_beats_random_losses():
    p, data, fw = _net(m=32, n=3, L=5, d=1, E=2)
    v, lam = gr.worst_loss(p, fw)
    assert v.shape == (2, 3, 5, 1) and torch.all(v[:, :, 0] == 0)
    torch.testing.assert_close(gr.loss_to_vector(v).norm(dim=-1), torch.ones(2, **F64))
    G = rb.backward(p, fw, v).grad
    torch.testing.assert_close(G.square().sum(dim=(1, 2)), lam, rtol=1e-10, atol=0)
    lmin, lmax = gr.ntk_extreme_eigenvalues(gr.loss_ntk(p, fw))
    torch.testing.assert_close(lmin, lam)
    for s in range(5):
        e = _loss(3, 5, 1, E=2, seed=s)
        q2 = gr.loss_to_vector(e).square().sum(-1)
        r = rb.backward(p, fw, e).grad.square().sum(dim=(1, 2)) / q2
        assert torch.all(r >= lmin * (1 - 1e-10)) and torch.all(r <= lmax * (1 + 1e-10))


def test_pl_ratio_is_at_least_twice_lambda_min_over_m():
    """||grad f||^2 = loss^T K loss >= lambda_min ||loss||^2 = 2 lambda_min f: exact at any W."""
    p, data, fw = _net(m=32, n=3, L=5, d=1, E=3)
    pl = gr.pl_ratio(p, data.x, data.y)
    g = rb.gradient(p, data.x, data.y)
    torch.testing.assert_close(pl, g.grad.square().sum(dim=(1, 2)) / (p.m * g.f))
    lmin, _ = gr.ntk_extreme_eigenvalues(gr.loss_ntk(p, fw))
    assert torch.all(pl >= 2 * lmin / p.m * (1 - 1e-10))


def test_gradient_ratio():
    p, data, fw = _net(m=20, n=2, L=4, d=2, E=2)
    e = _loss(2, 4, 2)
    G = rb.backward(p, fw, e).grad
    mx = e[:, 1:].norm(dim=-1).max()
    torch.testing.assert_close(gr.gradient_ratio(G, e), G.square().sum(dim=(1, 2)) / (20 * mx ** 2))


# ----------------------------------------------------------------------------------------------------------
# Lemma D.2 and D.7

def test_indicator_coordinates_match_an_explicit_loop_over_neurons():
    p, data, fw = _net(m=64, n=3, L=6, d=1, E=2)
    i_star, l_star, bm, bp = 1, 2, 0.5, 0.3
    ic = gr.indicator_coordinates(fw, i_star, l_star, bm, bp)
    g = fw.g * math.sqrt(p.m)  # (E, n, L+1, m)
    for e in range(2):
        for k in range(p.m):
            small = abs(g[e, i_star, l_star + 1, k]) <= bm
            others = all(abs(g[e, i, l_star + 1, k]) >= bp for i in range(3) if i != i_star)
            later = all(abs(g[e, i, l + 1, k]) >= bp for i in range(3) for l in range(l_star + 1, 6))
            assert bool(ic.small[e, k]) == bool(small)
            assert bool(ic.others[e, k]) == bool(others)
            assert bool(ic.later[e, k]) == bool(later)
            assert bool(ic.good[e, k]) == bool(small and others and later)
    torch.testing.assert_close(ic.fraction(), ic.good.double().mean(-1))
    # the last admissible step has no later conditions
    assert bool(gr.indicator_coordinates(fw, 0, 5, bm, bp).later.all())


def test_d7_sum_is_the_sum_of_backward_operators_and_the_fraction_counts_below_threshold():
    p, data, fw = _net(m=48, n=3, L=6, d=2, E=2)
    e = _loss(3, 6, 2)
    i_star, l_star = 2, 3
    s = gr.d7_sum(p, fw, e, i_star, l_star)
    D = fw.D
    for k in range(2):
        ref = sum(products.back(p.B, p.W, D[:, i_star], l_star, a)[k].T @ e[i_star, a - 1]
                  for a in range(l_star, 7))
        torch.testing.assert_close(s[k], ref, rtol=1e-12, atol=1e-12)
    thr = paper.d7_threshold(float(e[i_star, l_star - 1].norm()), 2, 3, 6)
    frac = gr.backward_coordinate_fraction(p, fw, e, i_star, l_star)
    for k in range(2):
        assert frac[k].item() == pytest.approx(sum(abs(float(s[k, j])) < thr for j in range(48)) / 48)
    # shift=1 measures u_{i*,l*} (E.1's partner of the indicator at step l*+1): D.7's sum one step later
    s1 = gr.d7_sum(p, fw, e, i_star, l_star + 1)
    f1 = gr.backward_coordinate_fraction(p, fw, e, i_star, l_star, shift=1)
    torch.testing.assert_close(f1, (s1.abs() < thr).double().mean(-1))


def test_argmax_loss():
    e = torch.zeros(3, 5, 2, dtype=torch.float64)
    e[:, 0] = 100.0  # step 1 never counts
    e[2, 3] = torch.tensor([3.0, 4.0])
    e[1, 1] = torch.tensor([1.0, 0.0])
    assert gr.argmax_loss(e) == (2, 4)


# ----------------------------------------------------------------------------------------------------------
# Definition E.1 / Lemma E.2

def test_fake_gradient_norms_against_torch_func_per_sample_gradients():
    p, data, fw = _net(m=20, n=3, L=5, d=2, E=2)
    e = _loss(3, 5, 2, E=2)
    nrm = gr.fake_gradient_norms(p, fw, e)

    def fake_one(W, A, B, x, ee):
        return (_outputs_one(W, A, B, x).reshape(-1, B.shape[0]) * ee[1:]).sum()

    for k in range(2):
        Gs = vmap(grad(fake_one), in_dims=(None, None, None, 0, 0))(p.W[k], p.A[k], p.B[k], data.x, e[k])
        mx = e[k, :, 1:].norm(dim=-1).max()
        G = Gs.sum(0)
        assert nrm.frobenius[k].item() == pytest.approx((G.norm() / mx).item(), rel=1e-10)
        assert nrm.max_row[k].item() == pytest.approx((G.norm(dim=1).max() / mx).item(), rel=1e-10)
        torch.testing.assert_close(nrm.per_sample[k], Gs.flatten(1).norm(dim=1) / mx, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------------------------------------
# Proposition 6.1 / Lemma E.4 and the thought experiment

def test_fresh_direction_is_orthogonal_to_earlier_states():
    p, data, fw = _net(m=40, n=3, L=5, d=1, E=2)
    v = gr.fresh_direction(fw, 1, 3)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2, **F64))
    earlier = fw.h[:, :, 1:3].reshape(2, -1, 40)
    assert torch.einsum("ekm,em->ek", earlier, v).abs().max() < 1e-12
    assert torch.all(torch.einsum("em,em->e", fw.h[:, 1, 3], v) > 0)


def test_randomness_decomposition_is_exact_and_its_pieces_are_gaussian():
    m, E, theta = 256, 24, 0.3
    p = rb.init_params(m, 5, 1, ensemble=E, seed=3, **F64)
    data = rb.make_data(3, 5, 5, 1, 0.2, seed=4, **F64)
    fw = rb.forward(p, data.x)
    dec = gr.randomness_decomposition(p, fw, 0, 3, theta, seed=5)
    # (b) W = W2 + u v^T exactly, and W2 v = g1 while W2 agrees with W off v
    torch.testing.assert_close(dec.W2 + dec.u.unsqueeze(-1) * dec.v.unsqueeze(-2), p.W, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.einsum("eij,ej->ei", dec.W2, dec.v), dec.g1, rtol=0, atol=1e-13)
    # W v = sqrt(1 - theta^2) g1 + theta g2 = g1 + u
    w = torch.einsum("eij,ej->ei", p.W, dec.v)
    torch.testing.assert_close(w, math.sqrt(1 - theta ** 2) * dec.g1 + theta * dec.g2, rtol=0, atol=1e-13)
    # (a) g1, g2 ~ N(0, 2/m) i.i.d. (Monte Carlo over E m coordinates): KS distance and uncorrelated
    for g in (dec.g1, dec.g2):
        D, crit = gr.ks_distance_normal(g, math.sqrt(2 / m))
        assert D < crit
    corr = (dec.g1 * dec.g2).mean() / (2 / m)
    assert abs(corr.item()) < 4 / math.sqrt(E * m)
    # (c) u_k = theta g2 - (1 - sqrt(1 - theta^2)) g1: both tails above 1/4
    t = theta / (2 * math.sqrt(m))
    assert (dec.u >= t).double().mean().item() >= paper.E4_TAIL_PROBABILITY
    assert (dec.u <= -t).double().mean().item() >= paper.E4_TAIL_PROBABILITY
    torch.testing.assert_close(dec.u, theta * dec.g2 - (1 - math.sqrt(1 - theta ** 2)) * dec.g1, rtol=0, atol=1e-13)


def test_ks_distance_normal_detects_a_wrong_variance():
    g = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    D, crit = gr.ks_distance_normal(g, 1.0)
    assert D < crit
    D2, _ = gr.ks_distance_normal(g, 1.2)
    assert D2 > crit


def test_kick_flips_match_explicit_forward_passes():
    p, data, fw = _net(m=48, n=3, L=6, d=1, E=2, seed=5)
    i_star, l_star = 1, 2
    v = gr.fresh_direction(fw, i_star, l_star)
    ic = gr.indicator_coordinates(fw, i_star, l_star, 0.6, 0.05)
    neurons, ok = gr.sample_neurons(ic.small, 5, seed=1)
    amps = torch.randn(2, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5 / math.sqrt(48)
    res = gr.kick_flips(p, data.x, fw, i_star, l_star, neurons, amps, v)
    for e in range(2):
        for j in range(5):
            k = int(neurons[e, j])
            Wk = p.W[e] + amps[e, j] * torch.outer(torch.eye(48, dtype=torch.float64)[k], v[e])
            q = rb.Params(W=Wk[None], A=p.A[e:e + 1], B=p.B[e:e + 1])
            flips = (rb.forward(q, data.x).D[0] != fw.D[e])[:, 1:]  # (n, L, m)
            intended = bool(flips[i_star, l_star, k])
            at_k = flips[:, :, k].clone()
            at_k[i_star, l_star] = False
            assert bool(res.intended[e, j]) == intended
            assert int(res.others[e, j]) == int(at_k.sum())
            assert int(res.elsewhere[e, j]) == int(flips.sum() - flips[:, :, k].sum())
            assert not bool(flips[:, :l_star].any())  # nothing changes up to step l*


def test_sample_neurons_picks_only_masked_neurons():
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, [2, 5]] = True
    mask[2, 7] = True
    idx, ok = gr.sample_neurons(mask, 50, seed=0)
    assert ok.tolist() == [True, False, True]
    assert set(idx[0].tolist()) == {2, 5} and set(idx[2].tolist()) == {7}


# ----------------------------------------------------------------------------------------------------------
# Lemma F.1 / Theorem 3: derivatives and the adversary

def test_fake_gradient_jvp_matches_torch_func_and_its_factored_form():
    p, data, fw = _net(m=20, n=3, L=5, d=2, E=2)
    e = _loss(3, 5, 2, E=2)
    C = torch.randn(2, 20, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    F = functional.fake_objective_fn(p, data.x, e)
    _, ref = jvp(grad(lambda W: F(W).sum()), (p.W,), (C,))
    out = gr.fake_gradient_jvp(p, fw, e, C)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-12
    Pf = torch.randn(2, 4, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    Rf = torch.randn(2, 4, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    dense = gr.fake_gradient_jvp(p, fw, e, Pf.transpose(1, 2) @ Rf)
    rows, cols = gr.fake_gradient_jvp(p, fw, e, (Pf, Rf), factored=True)
    torch.testing.assert_close(rows.transpose(1, 2) @ cols, dense, rtol=1e-12, atol=1e-12)


def test_lambda_min_gradient_matches_torch_func_grad_of_grad():
    p, data, fw = _net(m=24, n=3, L=5, d=1, E=2)
    v, lam = gr.worst_loss(p, fw)
    lam2, g = gr.lambda_min_gradient(p, data.x, v)
    torch.testing.assert_close(lam2, lam, rtol=1e-10, atol=0)
    F = functional.fake_objective_fn(p, data.x, v)
    ref = grad(lambda W: grad(lambda V: F(V).sum())(W).square().sum())(p.W)
    assert ((g - ref).norm() / ref.norm()).item() < 1e-12
    _, (rows, cols) = gr.lambda_min_gradient(p, data.x, v, factored=True)
    torch.testing.assert_close(rows.transpose(1, 2) @ cols, g, rtol=1e-12, atol=1e-12)


def test_mask_surrogate_is_the_gradient_of_the_smoothed_indicator_term():
    """Independent autograd check: with G, u, h held fixed and g_{i,l+1}(W) = W h_{i,l} + A x_{i,l+1}, the
    surrogate is grad_W of sum_{i,l,k} 2 <G_k, h_{i,l}> u_{i,l,k} S(g_{i,l+1,k}(W)), S the Gaussian CDF of width
    width / sqrt(m)."""
    p, data, fw = _net(m=16, n=2, L=4, d=1, E=2)
    v, _ = gr.worst_loss(p, fw)
    width = 0.4
    rows, cols = gr.mask_surrogate(p, fw, v, width)
    bw = rb.backward(p, fw, v)
    G = bw.grad
    m, L = p.m, 4
    W = p.W.clone().requires_grad_(True)
    total = 0.0
    for l in range(1, L):
        h = fw.h_by_step[:, l]  # (E, n, m), fixed
        g = torch.einsum("ekj,eij->eik", W, h) + torch.einsum("ekj,ij->eik", p.A, data.x[:, l])  # g_{i,l+1}
        S = 0.5 * (1 + torch.erf(math.sqrt(m) * g / (width * math.sqrt(2))))
        Gh = torch.einsum("ekj,eij->eik", G, h)  # <G_k, h_{i,l}>
        total = total + (2 * Gh * bw.u_by_step[:, l] * S).sum()
    ref, = torch.autograd.grad(total, W)
    torch.testing.assert_close(rows.transpose(1, 2) @ cols, ref, rtol=1e-10, atol=1e-12)


def test_adversary_stays_in_the_ball_lowers_lambda_min_and_reports_it_exactly():
    p = rb.init_params(48, 5, 1, ensemble=3, seed=11, **F64)
    data = rb.make_data(3, 5, 5, 1, 0.2, seed=12, **F64)
    tau0 = 1.0
    res = gr.adversarial_min_eig(p, data.x, tau0, steps=4)
    norms = torch.linalg.matrix_norm(res.Wp, ord=2) * math.sqrt(48)
    assert torch.all(norms <= tau0 * (1 + 1e-9))
    q = p.with_W(p.W + res.Wp)
    lmin, _ = gr.ntk_extreme_eigenvalues(gr.loss_ntk(q, rb.forward(q, data.x)))
    torch.testing.assert_close(res.lam, lmin, rtol=1e-10, atol=0)
    lmin0, _ = gr.ntk_extreme_eigenvalues(gr.loss_ntk(p, rb.forward(p, data.x)))
    torch.testing.assert_close(res.lam0, lmin0, rtol=1e-10, atol=0)
    assert torch.all(res.trace[:, 1:] <= res.trace[:, :-1])
    assert torch.all(res.ratio < 1)
    # W' acts only on the span of the initial hidden states h_{i,l}, l < L
    H = rb.forward(p, data.x).h[:, :, 1:5].reshape(3, -1, 48)
    Qb, _ = torch.linalg.qr(H.transpose(1, 2))
    off = res.Wp - res.Wp @ Qb @ Qb.transpose(1, 2)
    assert off.norm() < 1e-10 * res.Wp.norm()


# ----------------------------------------------------------------------------------------------------------
# the paper's constants of Appendices D-F

def test_the_appendix_constants():
    r = paper.rho(4, 8, 1, 1024)
    bm, bp = paper.beta_minus(0.1, r), paper.beta_plus(0.1, r)
    assert paper.d2_min_set(4, 8, bm) == pytest.approx(16 * 64 / bm)
    assert paper.d7_min_set(r) == pytest.approx(r ** 4)
    assert paper.e2_frobenius(4, 8) == 4 * 8 ** 6 and paper.e2_per_sample(8) == 8 ** 6
    assert paper.e2_row(4, r, 8) == pytest.approx(4 * r * 512)
    lo, hi = paper.e3_theta_range(bm, bp, r)
    assert lo == pytest.approx(r ** 4 * bm) and hi == pytest.approx(bp / r ** 3) and lo < hi
    assert paper.e4_u_inf_bound(0.1, r, 100) == pytest.approx(0.3 * r / 20)
    assert paper.thm5_set_size(r, bm) == pytest.approx(r ** 22 / bm ** 2, rel=1e-9)
    assert paper.f1_change_bound(r, 8.0, 1000) == pytest.approx(r ** 8 * 2 * 10)


# ----------------------------------------------------------------------------------------------------------
# bad input is named

def test_bad_input_names_the_argument():
    p, data, fw = _net(m=16, n=3, L=5, d=2, E=2)
    e = _loss(3, 5, 2)
    with pytest.raises(ValueError, match="loss"):
        gr.d7_sum(p, fw, e[:, :4], 0, 2)
    with pytest.raises(ValueError, match="loss"):
        gr.fake_gradient_norms(p, fw, e[..., :1])
    with pytest.raises(ValueError, match="b_minus"):
        gr.indicator_coordinates(fw, 0, 2, 0.0, 0.1)
    with pytest.raises(ValueError, match="b_plus"):
        gr.indicator_coordinates(fw, 0, 2, 0.1, -1.0)
    with pytest.raises(ValueError, match="i_star"):
        gr.indicator_coordinates(fw, 3, 2, 0.1, 0.1)
    with pytest.raises(ValueError, match="l_star"):
        gr.indicator_coordinates(fw, 0, 5, 0.1, 0.1)  # needs l* <= L - 1
    with pytest.raises(ValueError, match="l_star"):
        gr.d7_sum(p, fw, e, 0, 1)  # needs l* >= 2
    with pytest.raises(ValueError, match="i_star"):
        gr.backward_coordinate_fraction(p, fw, e, -1, 2)
    with pytest.raises(ValueError, match="l_star"):
        gr.kick_flips(p, data.x, fw, 0, 0, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, **F64),
                      torch.zeros(2, 16, **F64))
    with pytest.raises(ValueError, match="tau0"):
        gr.adversarial_min_eig(p, data.x, 0.0)
    with pytest.raises(ValueError, match="tau0"):
        gr.adversarial_min_eig(p, data.x, -2.0)
    with pytest.raises(TypeError, match="i_star"):
        gr.fresh_direction(fw, 0.5, 2)
    with pytest.raises(ValueError, match="theta"):
        gr.randomness_decomposition(p, fw, 0, 2, 1.5, seed=0)
    with pytest.raises(ValueError, match="params"):
        q = rb.init_params(16, 5, 2, ensemble=2, seed=1, activation="tanh", **F64)
        gr.loss_ntk(q, rb.forward(q, data.x))


def test_fixed_loss_vectors_put_the_largest_loss_at_the_chosen_pair():
    e = gr.fixed_loss_vectors(5, 3, 6, 2, 1, 4, seed=3, dtype=torch.float64)
    assert e.shape == (5, 3, 6, 2) and torch.all(e[:, :, 0] == 0)
    for k in range(5):
        assert gr.argmax_loss(e[k]) == (1, 4)
        assert e[k, 1, 3].norm().item() == pytest.approx(1.0)
    assert torch.equal(e, gr.fixed_loss_vectors(5, 3, 6, 2, 1, 4, seed=3, dtype=torch.float64))
    with pytest.raises(ValueError, match="l_star"):
        gr.fixed_loss_vectors(5, 3, 6, 2, 1, 1, seed=3)
