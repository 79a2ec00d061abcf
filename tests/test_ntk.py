"""rnnbook.ntk: the factored NTK Gram matrix against explicit per-sample gradients (torch.func), float64.

Also a float32 check of the fast (oneDNN) BPTT path of rnnbook.model, which the float64 tests elsewhere
never reach.
"""
import pytest
import torch
from torch.func import grad, jacrev, vmap

import rnnbook as rb
from rnnbook import ntk

F64 = dict(device="cpu", dtype=torch.float64)


def _rnn_outputs(W, A, B, x, act="relu"):
    """Independent recurrence for ONE sample x (L, d_x), tied or untied W: outputs B h_l, (L, d)."""
    phi = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}[act]
    h = torch.zeros(A.shape[0], dtype=A.dtype)
    outs = []
    for l in range(x.shape[0]):
        Wl = W if W.ndim == 2 else W[l]
        h = phi(Wl @ h + A @ x[l])
        outs.append(B @ h)
    return torch.stack(outs)


def _sample_loss(W, A, B, x, y, act="relu"):
    """Sample i's share of the paper's f: 1/2 sum_{l>=2} ||B h_l - y_l||^2."""
    return 0.5 * ((_rnn_outputs(W, A, B, x, act)[1:] - y[1:]) ** 2).sum()


def _fake_loss(W, A, B, x, e, act="relu"):
    """Linear functional whose gradient is the fake gradient for fixed loss vectors e: sum_{l>=2} <e_l, B h_l>."""
    return (_rnn_outputs(W, A, B, x, act)[1:] * e[1:]).sum()


def _explicit_gram(fn, W, A, B, x, t, act):
    G = vmap(grad(fn), in_dims=(None, None, None, 0, 0, None))(W, A, B, x, t, act)  # (n, *W.shape)
    G = G.reshape(G.shape[0], -1)
    return G @ G.T


def _rel(K, R):
    return ((K - R).norm() / R.norm()).item()


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_gram_matches_torch_func_per_sample_gradients(tied, act):
    n, L, m = 5, 6, 20
    p = rb.init_params(m, 4, 3, ensemble=2, seed=1, activation=act, untied_steps=None if tied else L, **F64)
    data = rb.make_data(n, L, 4, 3, 0.2, seed=2, **F64)
    K = ntk.empirical_ntk(p, data.x, data.y)
    assert K.shape == (2, n, n) and K.dtype == torch.float64
    for e in range(2):
        R = _explicit_gram(_sample_loss, p.W[e], p.A[e], p.B[e], data.x, data.y, act)
        assert _rel(K[e], R) < 1e-10
    # symmetric positive semi-definite
    torch.testing.assert_close(K, K.transpose(1, 2))
    assert torch.linalg.eigvalsh(K).min() > -1e-10 * K.diagonal(dim1=1, dim2=2).max()


def test_gram_with_fake_loss_vectors_and_reused_backward():
    n, L, m = 4, 5, 16
    p = rb.init_params(m, 4, 2, ensemble=3, seed=3, **F64)
    data = rb.make_data(n, L, 4, 2, 0.2, seed=4, **F64)
    e = torch.randn(n, L, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    K = ntk.empirical_ntk(p, data.x, loss=e)
    for k in range(3):
        R = _explicit_gram(_fake_loss, p.W[k], p.A[k], p.B[k], data.x, e, "relu")
        assert _rel(K[k], R) < 1e-10
    fw = rb.forward(p, data.x)
    bw = rb.backward(p, fw, e)
    torch.testing.assert_close(ntk.gram(p, fw, bw=bw), K, rtol=1e-13, atol=0)
    # the Gram of the summed gradient is the sum of K: <sum_i G_i, sum_j G_j> = sum_ij K_ij
    assert K.sum(dim=(1, 2)).tolist() == pytest.approx(bw.grad.square().sum(dim=(1, 2)).tolist(), rel=1e-10)


def test_gram_is_exact_at_the_benchmark_shape():
    n, L, m = 32, 10, 64
    p = rb.init_params(m, 8, 2, seed=6, **F64)
    data = rb.make_data(n, L, 8, 2, 0.2, seed=7, **F64)
    K = ntk.empirical_ntk(p, data.x, data.y)[0]
    R = _explicit_gram(_sample_loss, p.W[0], p.A[0], p.B[0], data.x, data.y, "relu")
    assert _rel(K, R) < 1e-10


def test_blocked_accumulation_matches_one_block(monkeypatch):
    p = rb.init_params(12, 4, 2, seed=8, **F64)
    data = rb.make_data(6, 7, 4, 2, 0.2, seed=9, **F64)
    K = ntk.empirical_ntk(p, data.x, data.y)
    monkeypatch.setattr(ntk, "_BLOCK_ENTRIES", 1)  # one position per block
    torch.testing.assert_close(ntk.empirical_ntk(p, data.x, data.y), K, rtol=1e-13, atol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_output_ntk_matches_jacobians(tied):
    n, L, m, d = 3, 4, 10, 2
    p = rb.init_params(m, 4, d, ensemble=2, seed=10, untied_steps=None if tied else L, **F64)
    data = rb.make_data(n, L, 4, d, 0.2, seed=11, **F64)
    K = ntk.output_ntk(p, rb.forward(p, data.x))
    assert K.shape == (2, n, L, d, n, L, d)
    for e in range(2):
        J = vmap(jacrev(_rnn_outputs), in_dims=(None, None, None, 0))(p.W[e], p.A[e], p.B[e], data.x)
        J = J.reshape(n * L * d, -1)
        assert _rel(K[e].reshape(n * L * d, n * L * d), J @ J.T) < 1e-10
    # outputs at step 1 do not depend on W
    assert K[:, :, 0].abs().max().item() == 0.0


def test_bad_input_is_rejected_with_a_named_error():
    p = rb.init_params(8, 4, 2, seed=0, **F64)
    data = rb.make_data(3, 4, 4, 2, 0.2, seed=0, **F64)
    fw = rb.forward(p, data.x)
    e = rb.loss_vectors(p, fw, data.y)
    with pytest.raises(ValueError, match="exactly one of loss= .* or bw="):
        ntk.gram(p, fw)
    with pytest.raises(ValueError, match="exactly one of loss="):
        ntk.gram(p, fw, e, bw=rb.backward(p, fw, e))
    with pytest.raises(TypeError, match="fw must be an rnnbook.Forward"):
        ntk.gram(p, fw.h, e)
    with pytest.raises(TypeError, match="params must be rnnbook.Params"):
        ntk.gram(p.W, fw, e)
    with pytest.raises(TypeError, match="bw must be an rnnbook.Backward"):
        ntk.gram(p, fw, bw=e)
    q = rb.init_params(8, 4, 2, ensemble=2, seed=0, **F64)
    with pytest.raises(ValueError, match="fw belongs to another network"):
        ntk.gram(q, fw, e)
    with pytest.raises(ValueError, match="loss must have n=3 sequences"):
        ntk.gram(p, fw, e[:, :2])
    with pytest.raises(ValueError, match="exactly one of y="):
        ntk.empirical_ntk(p, data.x)
    with pytest.raises(ValueError, match="Du_s and h_s must have the same shape"):
        ntk.gram_from_vectors(fw.h_by_step, fw.h_by_step[:, 1:])
    with pytest.raises(ValueError, match="Du_s must have 4 dimensions"):
        ntk.gram_from_vectors(fw.h_by_step[0], fw.h_by_step[0])
    with pytest.raises(TypeError, match="fw must be an rnnbook.Forward"):
        ntk.output_ntk(p, None)
