"""Fresh-randomness projections (Definitions B.1, B.2, B.8; Lemmas B.6, B.9) against explicit projectors."""
import math

import pytest
import torch

import rnnbook as rb
from rnnbook import projections as pj


@pytest.fixture
def net(f64):
    p = rb.init_params(48, 5, 2, ensemble=3, seed=0, **f64)
    data = rb.make_data(3, 6, 5, 2, 0.2, seed=1, **f64)
    fw = rb.forward(p, data.x)
    return p, fw, pj.fresh_decomposition(fw)


def states_up_to(fw, e, l):
    """m x (n l) matrix of h_{1,1..n,1}, ..., h_{1,l..n,l} in the order of Definition B.1."""
    h = fw.h[e].double()
    cols = [h[i, a] for a in range(1, l + 1) for i in range(h.shape[0])]
    return torch.stack(cols, dim=1) if cols else torch.zeros(h.shape[-1], 0, dtype=torch.float64)


def projector_qr(H):
    """I - Q Q^T from a reduced QR of the states (independent of the incremental Gram-Schmidt)."""
    m = H.shape[0]
    if H.shape[1] == 0:
        return torch.eye(m, dtype=torch.float64)
    Qr, _ = torch.linalg.qr(H)
    return torch.eye(m, dtype=torch.float64) - Qr @ Qr.T


def test_residuals_match_explicit_qr_and_lstsq(net):
    p, fw, dec = net
    E, n, L = 3, 3, 6
    assert dec.residual.shape == (E, n, L)
    for e in range(E):
        for l in range(L):
            H = states_up_to(fw, e, l)
            P = projector_qr(H)
            for i in range(n):
                h = fw.h[e, i, l + 1].double()
                ref = torch.linalg.vector_norm(P @ h)
                torch.testing.assert_close(dec.residual[e, i, l], ref, rtol=1e-10, atol=1e-12)
                if l > 0:  # a second, unrelated route: least squares
                    c = torch.linalg.lstsq(H, h.unsqueeze(1)).solution
                    torch.testing.assert_close(dec.residual[e, i, l], torch.linalg.vector_norm(h - (H @ c)[:, 0]),
                                               rtol=1e-9, atol=1e-12)
                torch.testing.assert_close(dec.projected[e, i, l + 1], P @ h, rtol=1e-9, atol=1e-12)


def test_basis_is_orthonormal_gram_schmidt_of_the_states(net):
    p, fw, dec = net
    n, L = 3, 6
    assert dec.rank.tolist() == [[n * l for l in range(L + 1)]] * 3
    for l in range(L + 1):
        U = dec.U(l)
        assert U.shape == (3, 48, n * l)
        torch.testing.assert_close(U.transpose(1, 2) @ U, torch.eye(n * l, dtype=torch.float64).expand(3, -1, -1),
                                   rtol=0, atol=1e-12)
        for e in range(3):
            H = states_up_to(fw, e, l)
            # same span as the states, and Gram-Schmidt orientation: the triangular factor has a positive diagonal
            torch.testing.assert_close(U[e] @ U[e].T, torch.eye(48, dtype=torch.float64) - projector_qr(H), atol=1e-11, rtol=0)
            T = U[e].T @ H
            torch.testing.assert_close(T, torch.triu(T), atol=1e-11, rtol=0)
            assert bool((T.diagonal() > 0).all())


def test_fresh_directions(net):
    p, fw, dec = net
    v = dec.v
    assert v.shape == (3, 3, 7, 48)
    assert torch.isnan(v[:, :, 0]).all()
    torch.testing.assert_close(v[:, :, 1:].norm(dim=-1), torch.ones(3, 3, 6, dtype=torch.float64))
    for l in range(1, 7):
        # v_{i,l} is orthogonal to U_{l-1} and proportional to (I - U U^T) h_{i,l}
        if l > 1:
            assert (v[:, :, l] @ dec.U(l - 1)).abs().max() < 1e-12
        e, i = 1, 2
        P = projector_qr(states_up_to(fw, e, l - 1))
        ref = P @ fw.h[e, i, l]
        torch.testing.assert_close(v[e, i, l], ref / ref.norm())


def test_min_residual_and_batching(net, f64):
    p, fw, dec = net
    torch.testing.assert_close(dec.min_residual(), dec.residual.amin(dim=(1, 2)))
    one = pj.fresh_decomposition(fw.h[1:2])
    torch.testing.assert_close(one.residual[0], dec.residual[1])
    # float32 input: computed in float64, agrees with the float64 run on the same float32 states
    d32 = pj.fresh_decomposition(fw.h.float())
    assert d32.residual.dtype == torch.float64
    torch.testing.assert_close(d32.residual, dec.residual, rtol=1e-5, atol=1e-6)


def explicit_sep(a, b):
    Pa = torch.eye(a.numel(), dtype=torch.float64) - torch.outer(a, a) / (a @ a)
    Pb = torch.eye(b.numel(), dtype=torch.float64) - torch.outer(b, b) / (b @ b)
    return torch.minimum(torch.linalg.vector_norm(Pb @ a), torch.linalg.vector_norm(Pa @ b))


def test_separation_definition_b8(f64):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 5, 20, generator=g, dtype=torch.float64)
    b = torch.randn(4, 5, 20, generator=g, dtype=torch.float64) * 3
    s = pj.separation(a, b)
    assert s.shape == (4, 5)
    for k in range(4):
        for j in range(5):
            torch.testing.assert_close(s[k, j], explicit_sep(a[k, j], b[k, j]))
    torch.testing.assert_close(pj.separation(b, a), s)
    # nearly parallel vectors: the separation is eps * min norm, kept accurately
    u = torch.randn(20, generator=g, dtype=torch.float64)
    w = torch.randn(20, generator=g, dtype=torch.float64)
    w = w - (w @ u) / (u @ u) * u
    w = w / w.norm()
    for eps in (1e-3, 1e-6):
        a1, b1 = u, 2 * (u + eps * u.norm() * w)
        exact = u.norm() * math.sin(math.atan(eps))  # min(|a|,|b|) sin(theta), tan(theta) = eps
        torch.testing.assert_close(pj.separation(a1, b1), exact, rtol=1e-8, atol=0)
    assert pj.separation(u, -3 * u).item() < 1e-12


def test_pair_separation_matches_explicit(net):
    p, fw, dec = net
    s = dec.separation(0, 2)
    assert s.shape == (3, 6)
    for e in range(3):
        for l in range(6):
            P = projector_qr(states_up_to(fw, e, l))
            ref = explicit_sep(P @ fw.h[e, 0, l + 1], P @ fw.h[e, 2, l + 1])
            torch.testing.assert_close(s[e, l], ref, rtol=1e-9, atol=1e-12)
    allpairs = torch.stack([dec.separation(i, j) for i in range(3) for j in range(3) if i != j]).amin(dim=0)
    torch.testing.assert_close(dec.min_separation(), allpairs)


def test_hard_pair_separation_is_delta_at_step_one(f64):
    # At l = 0 nothing is projected: the separation is min(|h1|,|h2|) sin(angle) of h_{1,1}, h_{2,1}.
    p = rb.init_params(64, 6, 1, ensemble=2, seed=5, **f64)
    data = rb.hard_pair(4, 6, 1, 0.05, seed=6, **f64)
    fw = rb.forward(p, data.x)
    s = pj.fresh_decomposition(fw).separation(0, 1)
    torch.testing.assert_close(s[:, 0], pj.separation(fw.h[:, 0, 1], fw.h[:, 1, 1]))


def test_rank_deficient_cases_are_documented_behaviour(f64):
    # n l > m: U_3 already spans R^6, so the fresh parts of later steps are exactly zero and v is NaN.
    p = rb.init_params(6, 4, 1, seed=0, **f64)
    data = rb.make_data(2, 5, 4, 1, 0.2, seed=1, **f64)
    dec = pj.fresh_decomposition(rb.forward(p, data.x))
    assert dec.rank[0].tolist() == [0, 2, 4, 6, 6, 6]
    assert (dec.residual[0, :, 3:] == 0).all() and (dec.residual[0, :, :3] > 0).all()
    assert torch.isnan(dec.v[0, :, 4:]).all()
    U = dec.U(5)[0]
    torch.testing.assert_close(U @ U.T, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.isnan(dec.separation(0, 1)[0, 3:]).all()
    # two identical sequences: the second adds nothing to the span, and their separation is 0
    data = rb.make_data(2, 4, 4, 1, 0.2, seed=1, **f64)
    x = torch.stack([data.x[0], data.x[0]])
    p = rb.init_params(32, 4, 1, seed=0, **f64)
    dec = pj.fresh_decomposition(rb.forward(p, x))
    assert dec.rank[0].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(dec.residual[0, 0], dec.residual[0, 1])
    assert dec.separation(0, 1).abs().max() < 1e-12
    Q = dec.Q[0]
    assert (Q[1::2].abs().max() == 0) and torch.allclose(Q[0::2].norm(dim=-1), torch.ones(4, dtype=torch.float64))


def test_reused_part_norm_matches_svd(net):
    p, fw, dec = net
    r = pj.reused_part_norm(p.W, dec)
    assert r.shape == (3, 6)
    for e in range(3):
        for l in range(1, 7):
            ref = torch.linalg.matrix_norm(p.W[e] @ dec.U(l)[e], ord=2)
            torch.testing.assert_close(r[e, l - 1], ref)


def test_bad_input_is_rejected(net):
    p, fw, dec = net
    with pytest.raises(ValueError, match="h"):
        pj.fresh_decomposition(fw.h[:, :, 1:])  # steps 1..L only: h_0 missing
    with pytest.raises(ValueError, match="h"):
        pj.fresh_decomposition(fw.h[0])  # no ensemble dimension
    with pytest.raises(TypeError, match="h"):
        pj.fresh_decomposition(fw.h.numpy())
    with pytest.raises(TypeError, match="h"):
        pj.fresh_decomposition(fw.h.long())
    bad = fw.h.clone()
    bad[0, 0, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="h"):
        pj.fresh_decomposition(bad)
    with pytest.raises(ValueError, match="h"):
        pj.fresh_decomposition(fw.h[:, :, :1])
    with pytest.raises(ValueError, match="rtol"):
        pj.fresh_decomposition(fw, rtol=-1.0)
    with pytest.raises(ValueError, match="i and j"):
        dec.separation(1, 1)
    with pytest.raises(ValueError, match="j"):
        dec.separation(0, 3)
    with pytest.raises(ValueError, match="l"):
        dec.U(7)
    a = torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        pj.separation(a, a[:, :4])
    with pytest.raises(ValueError, match="zero"):
        pj.separation(a, torch.zeros_like(a))
    with pytest.raises(TypeError, match="dtype"):
        pj.separation(a, a.float())
    with pytest.raises(ValueError, match="W"):
        pj.reused_part_norm(p.W[:, :10, :10], dec)
    with pytest.raises(TypeError, match="dec"):
        pj.reused_part_norm(p.W, fw)
    single = pj.fresh_decomposition(fw.h[:, :1])
    with pytest.raises(ValueError, match="two samples"):
        single.min_separation()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(net):
    p, fw, dec = net
    d = pj.fresh_decomposition(fw.h.cuda())
    assert d.Q.device.type == "cuda"
    torch.testing.assert_close(d.residual.cpu(), dec.residual)
    torch.testing.assert_close(d.separation(0, 1).cpu(), dec.separation(0, 1))
    torch.testing.assert_close(pj.reused_part_norm(p.W.cuda(), d).cpu(), pj.reused_part_norm(p.W, dec))
