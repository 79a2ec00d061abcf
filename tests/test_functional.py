"""The objective as a function of W (rnnbook.functional) against the fast BPTT and torch.func, in float64."""
import math

import pytest
import torch

import rnnbook as rb
from rnnbook import functional as fn

F64 = dict(device="cpu", dtype=torch.float64)


@pytest.fixture
def net():
    p = rb.init_params(20, 4, 2, ensemble=2, seed=0, **F64)
    data = rb.make_data(3, 5, 4, 2, 0.3, seed=1, **F64)
    return p, data


def test_objective_fn_equals_the_objective_and_its_gradient_the_bptt(net):
    p, data = net
    f = fn.objective_fn(p, data.x, data.y)
    r = rb.gradient(p, data.x, data.y)
    torch.testing.assert_close(f(p.W), r.f, rtol=1e-13, atol=0)
    grad = torch.func.grad(lambda W: f(W).sum())(p.W)  # the networks are independent: sum, then grad
    torch.testing.assert_close(grad, r.grad, rtol=1e-11, atol=1e-13)


def test_second_derivatives_through_torch_func(net):
    """A Hessian-vector product (forward over reverse) equals a central difference of the BPTT gradient."""
    p, data = net
    f = fn.objective_fn(p, data.x, data.y)
    V = torch.randn(p.W.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, hvp = torch.func.jvp(torch.func.grad(lambda W: f(W).sum()), (p.W,), (V,))
    eps = 1e-5
    g = lambda W: rb.gradient(p.with_W(W), data.x, data.y).grad
    fd = (g(p.W + eps * V) - g(p.W - eps * V)) / (2 * eps)
    assert ((hvp - fd).norm() / fd.norm()).item() < 1e-6
    one = p.member(0)
    H = torch.func.hessian(fn.objective_fn(one, data.x, data.y))(one.W[0])  # (m, m, m, m) for one network
    Hv = torch.einsum("ijkl,kl->ij", H, V[0])
    torch.testing.assert_close(Hv, hvp[0], rtol=1e-9, atol=1e-11)


def test_fake_objective_gradient_is_the_fake_gradient(net):
    p, data = net
    loss = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    F = fn.fake_objective_fn(p, data.x, loss)
    grad = torch.func.grad(lambda W: F(W).sum())(p.W)
    fake = rb.backward(p, rb.forward(p, data.x), loss).grad  # Definition E.1 by BPTT with fixed loss vectors
    torch.testing.assert_close(grad, fake, rtol=1e-11, atol=1e-13)
    # with the true loss vectors, the fake gradient is the gradient
    true_loss = rb.gradient(p, data.x, data.y).loss
    Ft = fn.fake_objective_fn(p, data.x, true_loss)
    torch.testing.assert_close(torch.func.grad(lambda W: Ft(W).sum())(p.W), rb.gradient(p, data.x, data.y).grad,
                               rtol=1e-11, atol=1e-13)


def test_linearised_model_is_the_first_order_taylor_model(net):
    p, data = net
    out_lin, f_lin = fn.linearize(p, data.x, data.y)
    torch.testing.assert_close(f_lin(p.W), rb.gradient(p, data.x, data.y).f, rtol=1e-13, atol=0)
    V = torch.randn(p.W.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = 1e-6
    # d/dt outputs(W + t V) at t = 0, by autograd (reverse mode on each output would be costlier): a jvp
    _, jvp = torch.func.jvp(lambda W: fn._outputs(p, W, data.x.unsqueeze(0)), (p.W,), (V,))
    torch.testing.assert_close(out_lin(p.W + t * V) - out_lin(p.W), t * jvp, rtol=1e-9, atol=1e-15)
    # linear in W: the model's second difference vanishes
    second = out_lin(p.W + V) - 2 * out_lin(p.W) + out_lin(p.W - V)
    assert second.abs().max().item() < 1e-12
    # its gradient at W0 is the network's gradient
    g_lin = torch.func.grad(lambda W: f_lin(W).sum())(p.W)
    torch.testing.assert_close(g_lin, rb.gradient(p, data.x, data.y).grad, rtol=1e-11, atol=1e-13)


def test_one_network_takes_an_m_by_m_W_and_bad_shapes_are_named(net):
    p, data = net
    one = p.member(1)
    f = fn.objective_fn(one, data.x, data.y)
    assert f(one.W[0]).ndim == 0
    assert f(one.W[0]).item() == pytest.approx(rb.gradient(one, data.x, data.y).f.item(), rel=1e-13)
    with pytest.raises(ValueError, match="W must have shape"):
        fn.objective_fn(p, data.x, data.y)(p.W[0])
    with pytest.raises(ValueError, match="loss must have the n=3 sequences"):
        fn.fake_objective_fn(p, data.x, torch.zeros(3, 4, 2, **F64))
    with pytest.raises(ValueError, match="y has last dimension"):
        fn.objective_fn(p, data.x, data.y[..., :1])
