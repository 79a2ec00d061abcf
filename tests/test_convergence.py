"""rnnbook.training for Part V: the linearised network against autograd Jacobian-vector products, SGD's
unbiased estimate, batched runs (seeds, step sizes, SGD subsets) equal to single runs, divergence handling,
Appendix H's chain against Theorem 4's remainder, and bad input."""
import math

import numpy as np
import pytest
import torch

import rnnbook as rb
from rnnbook import functional as fn
from rnnbook import smoothness as sm
from rnnbook import training as tr


def small(m=32, E=2, n=3, L=4, d=2, seed=1):
    data = rb.make_data(n, L, 5, d, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(m, 5, d, ensemble=E, seed=seed, device="cpu", dtype=torch.float64)
    return data, p


# ----------------------------------------------------------------------------------------------------------
# the network linearised at W0

def test_output_kernel_is_the_gram_of_autograd_jacobians():
    data, p = small(m=16, E=1)
    K, e0 = tr.output_kernel(p, data)
    x4 = data.x.unsqueeze(0)
    outputs = lambda W: fn._outputs(p, W.unsqueeze(0), x4)[0, :, 1:].reshape(-1)  # noqa: E731 (steps l >= 2)
    J = torch.func.jacrev(outputs)(p.W[0]).reshape(-1, 16 * 16)
    torch.testing.assert_close(K[0], J @ J.T, rtol=1e-10, atol=1e-10)
    fw = rb.forward(p, data.x)
    torch.testing.assert_close(e0[0], rb.loss_vectors(p, fw, data.y)[0, :, 1:].reshape(-1))


def test_linearised_gd_equals_gd_on_the_taylor_model_through_jvp():
    data, p = small(m=24, E=2)
    eta = torch.tensor([0.02, 0.05], dtype=torch.float64)
    lin = tr.linearised_gd(p, data, eta=eta, steps=6)
    outputs_lin, f_lin = fn.linearize(p, data.x, data.y)
    W = p.W.clone()
    for t in range(7):
        np.testing.assert_allclose(lin.loss[t], f_lin(W).detach().numpy(), rtol=1e-10)
        Wg = W.clone().requires_grad_(True)
        g = torch.autograd.grad(f_lin(Wg).sum(), Wg)[0]   # through torch.func.jvp inside outputs_lin
        W = W - eta.view(2, 1, 1) * g
    # at t = 0 it is the network's f, and the weights of the modes add up to it
    f0 = rb.gradient(p, data.x, data.y).f.numpy()
    np.testing.assert_allclose(lin.loss[0], f0, rtol=1e-12)
    np.testing.assert_allclose(lin.weights.sum(1), f0, rtol=1e-12)
    assert np.all(np.diff(lin.eigenvalues, axis=1) >= 0)


def test_linearised_gd_stability_edge_and_tail():
    data, p = small(m=24, E=1)
    lin = tr.linearised_gd(p, data, eta=1e-3, steps=1)
    edge = float(lin.max_stable_eta[0])
    below = tr.linearised_gd(p, data, eta=0.98 * edge, steps=400, record_every=100)
    above = tr.linearised_gd(p, data, eta=1.02 * edge, steps=400, record_every=100)
    assert below.loss[-1, 0] < below.loss[0, 0] and above.loss[-1, 0] > 1e3 * above.loss[0, 0]
    slow = tr.linearised_gd(p, data, eta=0.5 * edge, steps=20000, record_every=1000)
    per_step = (slow.loss[-1, 0] / slow.loss[-2, 0]) ** (1 / 1000)
    assert per_step == pytest.approx(slow.tail_factor[0], rel=1e-6)   # only the slowest mode is left
    with pytest.raises(TypeError, match="constant step size"):
        tr.linearised_gd(p, data, eta=[0.1, 0.1], steps=2)


def test_network_and_linearised_model_agree_at_large_width_for_a_few_steps():
    data = rb.make_data(3, 4, 5, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(1024, 5, 1, ensemble=1, seed=2, device="cpu", dtype=torch.float64)
    eta = rb.paper.book_step_size(1024, 3, 4)
    net = rb.train(p, data, eta=eta, steps=30, record_every=10, records={"loss": tr.record_loss})
    lin = tr.linearised_gd(p, data, eta=eta, steps=30, record_every=10)
    np.testing.assert_allclose(net.loss / net.loss[0], lin.loss / lin.loss[0], rtol=0.05)


# ----------------------------------------------------------------------------------------------------------
# batched runs equal single runs

def test_a_batch_of_step_sizes_equals_single_runs():
    data, p = small(E=1)
    etas = [1e-3, 4e-3, 1.6e-2]
    rep = tr.replicate(p, 3)
    assert rep.ensemble == 3 and torch.equal(rep.W[2], p.W[0])
    both = rb.train(rep, data, eta=torch.tensor(etas, dtype=torch.float64), steps=12, record_every=4,
                    records=tr.CHAIN_RECORDS)
    for k, eta in enumerate(etas):
        one = rb.train(p, data, eta=eta, steps=12, record_every=4, records=tr.CHAIN_RECORDS)
        for name in ("loss", "grad_norm_sq", "max_loss_sq", "dist_fro", "flips"):
            np.testing.assert_allclose(both.records[name][:, k], one.records[name][:, 0], rtol=1e-12)
        torch.testing.assert_close(both.params.W[k], one.params.W[0], rtol=1e-13, atol=1e-15)


def test_batched_sgd_equals_single_runs_on_the_same_subsets():
    data, p = small(E=3, n=4)
    batches = tr.draw_batches(4, 2, 10, 3, seed=11)
    eta = rb.paper.book_step_size(p.m, 4, data.L)
    both = rb.train(p, data, eta=eta, steps=10, batch_size=2, batches=batches, record_every=2,
                    records={"loss": tr.record_loss})
    drawn = rb.train(p, data, eta=eta, steps=10, batch_size=2, seed=11, record_every=2,
                     records={"loss": tr.record_loss})
    np.testing.assert_array_equal(both.loss, drawn.loss)          # draw_batches draws what train draws
    for e in range(3):
        one = rb.train(p.member(e), data, eta=eta, steps=10, batch_size=2, batches=batches[:, e:e + 1],
                       record_every=2, records={"loss": tr.record_loss})
        np.testing.assert_allclose(both.loss[:, e], one.loss[:, 0], rtol=1e-12)
        torch.testing.assert_close(both.params.W[e], one.params.W[0])


def test_sgd_estimate_is_unbiased_over_random_subsets_too():
    """Monte Carlo over the subsets train draws: the mean of the step directions tends to grad f."""
    data, p = small(E=1, n=4, m=16)
    full = rb.gradient(p, data.x, data.y).grad
    idx = tr.draw_batches(4, 1, 4000, 1, seed=3)[:, 0]              # (4000, 1)
    counts = torch.bincount(idx.flatten(), minlength=4).double() / idx.numel()
    per = torch.stack([tr.minibatch_gradient(p, data, torch.tensor([[i]])) for i in range(4)])
    mc = (counts.view(4, 1, 1, 1) * per).sum(0)
    assert float((mc - full).norm() / full.norm()) < 0.05
    assert float((per.mean(0) - full).norm() / full.norm()) < 1e-12


# ----------------------------------------------------------------------------------------------------------
# divergence, stability and the proof's chain

def test_diverging_networks_stop_alone_and_are_reported():
    data, p = small(E=1)
    rep = tr.replicate(p, 2)
    eta = torch.tensor([1e-3, 80.0], dtype=torch.float64)
    hist = rb.train(rep, data, eta=eta, steps=40, record_every=5, records={"loss": tr.record_loss},
                    on_divergence="stop", diverge_factor=1e3)
    assert hist.diverged.tolist() == [False, True] and 0 < hist.diverged_at[1] <= 40
    assert np.isnan(hist.loss[-1, 1]) and np.isfinite(hist.loss[:, 0]).all()
    one = rb.train(p, data, eta=1e-3, steps=40, record_every=5, records={"loss": tr.record_loss})
    np.testing.assert_allclose(hist.loss[:, 0], one.loss[:, 0], rtol=1e-12)  # the other one is untouched
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+ \(networks \[1\], step size eta = 80"):
        rb.train(rep, data, eta=eta, steps=40, records={"loss": tr.record_loss}, diverge_factor=1e3)


def test_stable_step_sizes_brackets_the_edge():
    data, p = small(E=2, m=64)
    base = rb.paper.book_step_size(64, data.n, data.L)
    stable, _ = tr.stable_step_sizes(p, data, [base, 1e4 * base], steps=50)
    assert stable.shape == (2, 2) and stable[:, 0].all() and not stable[:, 1].any()
    with pytest.raises(ValueError, match="etas is empty"):
        tr.stable_step_sizes(p, data, [], steps=5)


def test_gd_chain_remainder_is_theorem_4s_remainder_at_the_iterate():
    data, p = small(E=2, m=64)
    eta = rb.paper.book_step_size(64, data.n, data.L, c=1.0)
    hist = rb.train(p, data, eta=eta, steps=3, records=tr.CHAIN_RECORDS)
    chain = tr.gd_chain(hist, 64)
    g = rb.gradient(p, data.x, data.y)
    V = sm.unit_direction(-g.grad)
    s = rb.linalg.matrix_norm(g.grad).numpy()
    for e in range(2):
        rem = sm.remainder(p.member(e), data.x, data.y, V[e:e + 1], [eta * s[e]])
        assert chain["remainder"][0, e] == pytest.approx(rem.R[0, 0], rel=1e-6)
    np.testing.assert_allclose(chain["factor"], hist.loss[1:] / hist.loss[:-1])
    assert np.all(chain["loss_ratio"] <= data.n * (data.L - 1) + 1e-12)   # f <= n (L-1) max ||loss||^2
    with pytest.raises(ValueError, match="record at every step"):
        tr.gd_chain(rb.train(p, data, eta=eta, steps=4, record_every=2, records=tr.CHAIN_RECORDS), 64)
    with pytest.raises(ValueError, match="CHAIN_RECORDS"):
        tr.gd_chain(rb.train(p, data, eta=eta, steps=2, records={"loss": tr.record_loss}), 64)


def test_history_helpers():
    data, p = small(E=2, m=256)
    hist = rb.train(p, data, eta=rb.paper.book_step_size(256, data.n, data.L, c=1.0), steps=60,
                    records={"loss": tr.record_loss})
    fac = hist.factor()
    np.testing.assert_allclose(fac ** 60, hist.loss[-1] / hist.loss[0])
    hit = hist.first_below(0.5)
    rows = hit.astype(int)
    assert np.all(hit >= 1)
    assert np.all(hist.loss[rows, [0, 1]] / hist.loss[0] <= 0.5) and np.all(hist.loss[rows - 1, [0, 1]] / hist.loss[0] > 0.5)
    assert np.isnan(hist.first_below(1e-300)).all()


def test_bad_input_is_named():
    data, p = small()
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        rb.train(p, data, eta=1e-3, steps=1, on_divergence="ignore")
    with pytest.raises(ValueError, match="diverge_factor"):
        rb.train(p, data, eta=1e-3, steps=1, diverge_factor=0.5)
    with pytest.raises(ValueError, match="batches= is for SGD"):
        rb.train(p, data, eta=1e-3, steps=2, batches=torch.zeros(2, 2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"batches must have shape \(steps, E, batch_size\) = \(2, 2, 1\)"):
        rb.train(p, data, eta=1e-3, steps=2, batch_size=1, batches=torch.zeros(3, 2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="either batches= or seed="):
        rb.train(p, data, eta=1e-3, steps=2, batch_size=1, seed=0, batches=torch.zeros(2, 2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch_size must be an integer in \\[1, n=3\\]"):
        tr.draw_batches(3, 4, 2, 1, seed=0)
    with pytest.raises(ValueError, match="empty schedule"):
        rb.train(p, data, eta=(), steps=2)
    with pytest.raises(ValueError, match="W contains NaN"):
        rb.train(p.with_W(p.W.clone().fill_(math.inf)), data, eta=1e-3, steps=1)
    with pytest.raises(FloatingPointError, match=r"step \d+ .*eta = 1e\+06"):
        rb.train(p, data, eta=1e6, steps=20, records={"loss": tr.record_loss})


def test_early_stop_and_one_data_set_per_network():
    data, p = small(E=2, m=128)
    eta = rb.paper.book_step_size(128, data.n, data.L, c=1.0)
    full = rb.train(p, data, eta=eta, steps=200, record_every=5, records={"loss": tr.record_loss})
    early = rb.train(p, data, eta=eta, steps=200, record_every=5, records={"loss": tr.record_loss}, stop_below=0.1)
    assert early.steps[-1] < 200 and np.all(early.loss[-1] <= 0.1 * early.loss[0])
    np.testing.assert_array_equal(early.first_below(0.1), full.first_below(0.1))
    # K data sets, each run by every network, in one batched run, equal to separate runs
    datas = [rb.hard_pair(4, 5, 2, dl, seed=3, device="cpu", dtype=torch.float64) for dl in (0.5, 0.1)]
    stacked = tr.stack_data(datas, ensemble=2)
    rep = tr.replicate(p, 2)
    both = rb.train(rep, stacked, eta=eta, steps=6, records={"loss": tr.record_loss})
    lin = tr.linearised_gd(rep, stacked, eta=eta, steps=6)
    for e in range(2):
        for k, dat in enumerate(datas):
            one = rb.train(p.member(e), dat, eta=eta, steps=6, records={"loss": tr.record_loss})
            np.testing.assert_allclose(both.loss[:, 2 * e + k], one.loss[:, 0], rtol=1e-12)
            one_lin = tr.linearised_gd(p.member(e), dat, eta=eta, steps=6)
            np.testing.assert_allclose(lin.loss[:, 2 * e + k], one_lin.loss[:, 0], rtol=1e-10)
    sgd = rb.train(rep, stacked, eta=eta, steps=4, batch_size=1, seed=0, records={"loss": tr.record_loss})
    assert np.all(np.isfinite(sgd.loss))
    with pytest.raises(ValueError, match="holds 4 data sets but the ensemble has 2"):
        rb.train(p, stacked, eta=eta, steps=1)
    with pytest.raises(ValueError, match="same n, L"):
        tr.stack_data([datas[0], rb.hard_pair(5, 5, 2, 0.1, seed=3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="stop_below"):
        rb.train(p, data, eta=eta, steps=1, stop_below=-1.0)
