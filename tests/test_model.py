"""The paper's model: initialisation, forward pass, loss and gradients, checked against independent code."""
import math

import pytest
import torch

import rnnbook as rb


def test_init_statistics_match_definition_2_3():
    m, d_x, d = 400, 50, 40
    p = rb.init_params(m, d_x, d, ensemble=2, seed=0, device="cpu", dtype=torch.float64)
    assert p.W.shape == (2, m, m) and p.A.shape == (2, m, d_x) and p.B.shape == (2, d, m)
    # variances 2/m, 2/m, 1/d within 2% (hundreds of thousands of entries each)
    assert p.W.var().item() == pytest.approx(2 / m, rel=0.02)
    assert p.A.var().item() == pytest.approx(2 / m, rel=0.02)
    assert p.B.var().item() == pytest.approx(1 / d, rel=0.02)
    assert abs(p.W.mean().item()) < 3 * math.sqrt(2 / m / p.W.numel())
    # independent across the ensemble
    corr = torch.corrcoef(torch.stack([p.W[0].flatten(), p.W[1].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.01


def test_other_activations_use_variance_one_over_m():
    for act in ("tanh", "identity"):
        p = rb.init_params(300, 8, 2, seed=1, activation=act, device="cpu", dtype=torch.float64)
        assert p.W.var().item() == pytest.approx(1 / 300, rel=0.03)


def test_same_seed_same_network_across_dtypes():
    a = rb.init_params(32, 4, 2, seed=7, device="cpu", dtype=torch.float64)
    b = rb.init_params(32, 4, 2, seed=7, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(a.W.float(), b.W)
    c = rb.init_params(32, 4, 2, seed=8, device="cpu", dtype=torch.float64)
    assert not torch.equal(a.W, c.W)


def test_forward_matches_torch_rnn():
    m, n, L, d_x = 48, 5, 9, 6
    p = rb.init_params(m, d_x, 2, seed=2, device="cpu", dtype=torch.float64)
    data = rb.make_data(n, L, d_x, 2, 0.2, seed=3, device="cpu", dtype=torch.float64)
    rnn = torch.nn.RNN(d_x, m, nonlinearity="relu", bias=False, batch_first=True).double()
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(p.W[0])
        rnn.weight_ih_l0.copy_(p.A[0])
        out, _ = rnn(data.x)
    fw = rb.forward(p, data.x)
    torch.testing.assert_close(fw.h[0, :, 1:], out, rtol=1e-12, atol=1e-12)
    assert torch.all(fw.h[0, :, 0] == 0)
    torch.testing.assert_close(fw.h, torch.relu(fw.g))
    # D_{i,l} g_{i,l} = h_{i,l} (Definition 2.2)
    torch.testing.assert_close(fw.D.to(fw.g.dtype) * fw.g, fw.h)


def _reference_objective(W, A, B, x, y):
    """Independent loop implementation of f(W) for one network (paper Section 2)."""
    total = 0.0
    for i in range(x.shape[0]):
        h = torch.zeros(W.shape[0], dtype=W.dtype)
        for l in range(x.shape[1]):
            h = torch.relu(W @ h + A @ x[i, l])
            if l >= 1:  # steps l = 2..L
                total = total + 0.5 * ((B @ h - y[i, l]) ** 2).sum()
    return total


def test_objective_is_sum_over_samples_from_step_two():
    p = rb.init_params(20, 5, 3, seed=4, device="cpu", dtype=torch.float64)
    data = rb.make_data(3, 6, 5, 3, 0.3, seed=5, device="cpu", dtype=torch.float64)
    f = rb.objective(p, rb.forward(p, data.x), data.y)
    ref = _reference_objective(p.W[0], p.A[0], p.B[0], data.x, data.y)
    assert f.item() == pytest.approx(ref.item(), rel=1e-12)
    # changing the step-1 label does not change f (footnote 6)
    y2 = data.y.clone()
    y2[:, 0] += 10.0
    assert rb.objective(p, rb.forward(p, data.x), y2).item() == pytest.approx(f.item(), rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("tied", [True, False])
def test_gradient_matches_autograd(activation, tied):
    L = 7
    p = rb.init_params(24, 5, 2, ensemble=3, seed=6, activation=activation, untied_steps=None if tied else L,
                       device="cpu", dtype=torch.float64)
    data = rb.make_data(4, L, 5, 2, 0.2, seed=7, device="cpu", dtype=torch.float64)
    r = rb.gradient(p, data.x, data.y); f, grad = r.f, r.grad
    W = p.W.clone().requires_grad_(True)
    f_auto = rb.objective(p, rb.forward(p.with_W(W), data.x), data.y)
    (g_auto,) = torch.autograd.grad(f_auto.sum(), W)
    torch.testing.assert_close(f, f_auto.detach())
    torch.testing.assert_close(grad, g_auto, rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences():
    p = rb.init_params(16, 4, 2, seed=8, device="cpu", dtype=torch.float64)
    data = rb.make_data(3, 5, 4, 2, 0.2, seed=9, device="cpu", dtype=torch.float64)
    grad = rb.gradient(p, data.x, data.y).grad
    gen = torch.Generator().manual_seed(0)
    eps = 1e-6
    for _ in range(4):
        V = torch.randn(p.W.shape, generator=gen, dtype=torch.float64)
        fp = rb.objective(p, rb.forward(p.with_W(p.W + eps * V), data.x), data.y)
        fm = rb.objective(p, rb.forward(p.with_W(p.W - eps * V), data.x), data.y)
        fd = ((fp - fm) / (2 * eps)).item()
        assert fd == pytest.approx((grad * V).sum().item(), rel=1e-6, abs=1e-8)


def test_backward_vectors_follow_fact_2_5():
    """u_{i,l} = sum_{a>l} Back_{i,l+1->a}^T loss_{i,a}, with Back formed explicitly."""
    m, L = 12, 5
    p = rb.init_params(m, 4, 2, seed=10, device="cpu", dtype=torch.float64)
    data = rb.make_data(2, L, 4, 2, 0.2, seed=11, device="cpu", dtype=torch.float64)
    fw = rb.forward(p, data.x)
    e = rb.loss_vectors(p, fw, data.y)
    bw = rb.backward(p, fw, e)
    W, B, D = p.W[0], p.B[0], fw.D[0].to(torch.float64)
    for i in range(2):
        for l in range(L):
            u = torch.zeros(m, dtype=torch.float64)
            for a in range(l + 1, L + 1):
                back = B.clone()  # Back_{l+1 -> a} = B D_a W ... D_{l+2} W
                for b in range(a, l + 1, -1):
                    back = back @ torch.diag(D[i, b]) @ W
                u += back.T @ e[0, i, a - 1]
            torch.testing.assert_close(bw.u[0, i, l], u)
            if l < L:
                torch.testing.assert_close(bw.Du[0, i, l], D[i, l + 1] * u)


def test_fake_gradient_is_linear_in_the_loss_vectors():
    p = rb.init_params(20, 4, 2, seed=12, device="cpu", dtype=torch.float64)
    data = rb.make_data(3, 5, 4, 2, 0.2, seed=13, device="cpu", dtype=torch.float64)
    fw = rb.forward(p, data.x)
    gen = torch.Generator().manual_seed(1)
    e1 = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    e2 = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    g = lambda e: rb.backward(p, fw, e).grad
    torch.testing.assert_close(g(2 * e1 - e2), 2 * g(e1) - g(e2))


def test_ensemble_equals_separate_networks():
    p = rb.init_params(24, 5, 2, ensemble=4, seed=14, device="cpu", dtype=torch.float64)
    data = rb.make_data(3, 6, 5, 2, 0.2, seed=15, device="cpu", dtype=torch.float64)
    r = rb.gradient(p, data.x, data.y); f, grad, fw = r.f, r.grad, r.fw
    for e in range(4):
        re = rb.gradient(p.member(e), data.x, data.y); fe, ge, fwe = re.f, re.grad, re.fw
        torch.testing.assert_close(fe[0], f[e])
        torch.testing.assert_close(ge[0], grad[e])
        torch.testing.assert_close(fwe.h[0], fw.h[e])


def test_per_network_data():
    p = rb.init_params(16, 4, 1, ensemble=2, seed=16, device="cpu", dtype=torch.float64)
    d0 = rb.make_data(2, 4, 4, 1, 0.2, seed=17, device="cpu", dtype=torch.float64)
    d1 = rb.make_data(2, 4, 4, 1, 0.2, seed=18, device="cpu", dtype=torch.float64)
    fw = rb.forward(p, torch.stack([d0.x, d1.x]))
    torch.testing.assert_close(fw.h[1], rb.forward(p.member(1), d1.x).h[0])


def test_bad_input_is_rejected_with_a_named_error():
    p = rb.init_params(16, 4, 2, seed=0, device="cpu", dtype=torch.float64)
    data = rb.make_data(2, 3, 4, 2, 0.2, seed=0, device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        rb.init_params(0, 4, 2, seed=0, device="cpu")
    with pytest.raises(TypeError, match="m must be a positive integer"):
        rb.init_params(3.5, 4, 2, seed=0, device="cpu")
    with pytest.raises(ValueError, match="activation"):
        rb.init_params(8, 4, 2, seed=0, activation="sigmoid", device="cpu")
    with pytest.raises(ValueError, match="seed"):
        rb.init_params(8, 4, 2, device="cpu")
    with pytest.raises(TypeError, match="dtype"):
        rb.init_params(8, 4, 2, seed=0, device="cpu", dtype=torch.int32)
    with pytest.raises(ValueError, match="x has last dimension 5"):
        rb.forward(p, torch.zeros(2, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have 3 or 4 dimensions"):
        rb.forward(p, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x has dtype torch.float32 but params"):
        rb.forward(p, data.x.float())
    with pytest.raises(ValueError, match="x contains NaN"):
        rb.forward(p, torch.full((2, 3, 4), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="x has ensemble dimension 3"):
        rb.forward(p, data.x.expand(3, -1, -1, -1))
    fw = rb.forward(p, data.x)
    with pytest.raises(ValueError, match="y must have n=2 sequences of L=3"):
        rb.loss_vectors(p, fw, data.y[:, :2])
    with pytest.raises(ValueError, match="y has last dimension"):
        rb.loss_vectors(p, fw, data.y[..., :1])
    with pytest.raises(ValueError, match="W must have shape"):
        p.with_W(torch.zeros(1, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="W has dtype"):
        p.with_W(p.W.float())
    with pytest.raises(ValueError, match="D masks are defined for ReLU"):
        q = rb.init_params(8, 4, 2, seed=0, activation="tanh", device="cpu", dtype=torch.float64)
        _ = rb.forward(q, data.x).D
    untied = rb.init_params(8, 4, 2, seed=0, untied_steps=2, device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="untied W has 2 steps but x has L=3"):
        rb.forward(untied, data.x)


def test_default_device_follows_environment(monkeypatch):
    monkeypatch.setenv("RNNBOOK_DEVICE", "cpu")
    assert rb.default_device() == torch.device("cpu")
    monkeypatch.setenv("RNNBOOK_DEVICE", "tpu")
    with pytest.raises((ValueError, RuntimeError)):
        rb.default_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("RNNBOOK_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            rb.default_device()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    p = rb.init_params(64, 6, 2, ensemble=2, seed=3, device="cpu", dtype=torch.float64)
    data = rb.make_data(4, 6, 6, 2, 0.2, seed=4, device="cpu", dtype=torch.float64)
    r = rb.gradient(p, data.x, data.y); f, g = r.f, r.grad
    rc = rb.gradient(p.to("cuda"), data.x.cuda(), data.y.cuda()); fc, gc = rc.f, rc.grad
    torch.testing.assert_close(fc.cpu(), f)
    torch.testing.assert_close(gc.cpu(), g)


@pytest.mark.parametrize("step,gram", [("onednn_packed", "onednn"), ("onednn", "mm"), ("mm", "mm")])
@pytest.mark.parametrize("layout", ["batched", "per_network"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("E", [1, 3])
def test_float32_fast_loops_match_autograd_on_every_kernel(act, E, layout, step, gram):
    """Every kernel the measurement in rnnbook._gemm can choose (oneDNN packed or plain, torch.mm; an
    ensemble batched or one network after another) against the reference recurrence with autograd, and
    against float64."""
    from rnnbook import _gemm
    if step != "mm" and not _gemm.onednn_works():
        pytest.skip("oneDNN's linear kernels are not available in this torch build")
    L = 6
    p = rb.init_params(48, 5, 2, ensemble=E, seed=12, activation=act, device="cpu", dtype=torch.float32)
    data = rb.make_data(4, L, 5, 2, 0.2, seed=13, device="cpu", dtype=torch.float32)
    with _gemm.forced(step=step, gram=gram, layout=layout):
        r = rb.gradient(p, data.x, data.y)
        edge = [rb.gradient(p, data.x[:, :l], data.y[:, :l]).grad for l in (1, 2)]
    W = p.W.clone().requires_grad_(True)
    fw_a = rb.forward(p.with_W(W), data.x)  # reference recurrence (autograd is recording)
    (g_a,) = torch.autograd.grad(rb.objective(p, fw_a, data.y).sum(), W)
    torch.testing.assert_close(r.fw.h, fw_a.h.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.grad, g_a, rtol=1e-4, atol=1e-5)
    p64, d64 = p.to(dtype=torch.float64), data.to(dtype=torch.float64)
    g64 = rb.gradient(p64, d64.x, d64.y).grad
    assert ((r.grad.double() - g64).norm() / g64.norm()).item() < 1e-5
    for l, gl in zip((1, 2), edge):  # L = 1 and 2: no step product, an empty weight-gradient GEMM
        W2 = p.W.clone().requires_grad_(True)
        (gla,) = torch.autograd.grad(rb.objective(p, rb.forward(p.with_W(W2), data.x[:, :l]), data.y[:, :l]).sum(), W2)
        torch.testing.assert_close(gl, gla, rtol=1e-4, atol=1e-5)


def test_kernel_choice_is_measured_and_cached(tmp_path, monkeypatch):
    """The first call measures and writes the choice to the cache file; a new process state reads it back."""
    from rnnbook import _gemm
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("RNNBOOK_GEMM_CACHE", "1")
    monkeypatch.setattr(_gemm, "_state", {})
    W = torch.randn(64, 64)
    mode = _gemm.step_mode(W, 8)
    assert mode in (_gemm.STEP_MODES if _gemm.onednn_works() else ("mm",))
    lay = _gemm.layout(torch.randn(3, 64, 64), 8)
    assert lay in _gemm.LAYOUTS
    files = list((tmp_path / "rnnbook").glob("gemm-*.json"))
    assert len(files) == 1 and "layout:m64:r8" in files[0].read_text()
    monkeypatch.setattr(_gemm, "_state", {"works": _gemm.onednn_works()})
    monkeypatch.setattr(_gemm, "_measure_layout", lambda m, r: pytest.fail("measured again despite the cache"))
    assert _gemm.layout(torch.randn(3, 64, 64), 8) == lay
    with pytest.raises(ValueError, match="forced"):
        with _gemm.forced(step="fastest"):
            pass
