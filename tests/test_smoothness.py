"""rnnbook.smoothness: the exact identities of Appendix G (Proposition G.3, Claim G.2, (7.2)) to float64
precision, and the remainder's split against independent computations (two objectives and autograd)."""
import numpy as np
import pytest
import torch

import rnnbook as rb
from rnnbook import functional as fn
from rnnbook import smoothness as sm


def setup(activation="relu", m=48, E=2, seed=1):
    data = rb.make_data(3, 5, 6, 2, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(m, 6, 2, ensemble=E, activation=activation, seed=seed, device="cpu", dtype=torch.float64)
    V = sm.unit_direction(rb.perturb.random_direction(rb.init_params(m, 6, 2, ensemble=E, seed=seed + 7,
                                                                     dtype=torch.float64), 1.0, seed=3))
    return data, p, V


def autograd_remainder(f, W, Wp):
    """f(W + W') - f(W) - <grad f(W), W'> with autograd's gradient (independent of rnnbook's BPTT)."""
    Wg = W.clone().requires_grad_(True)
    g = torch.autograd.grad(f(Wg).sum(), Wg)[0]
    return (f(W + Wp) - f(W) - (g * Wp).flatten(1).sum(1)).detach()


def test_prop_g3_is_exact_and_d_double_prime_lives_on_sign_changes():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(10_000, generator=gen, dtype=torch.float64)
    b = a + 0.3 * torch.randn(10_000, generator=gen, dtype=torch.float64)
    b[:5] = a[:5]                                        # equal entries: D'' must be 0 there
    D, Dpp = sm.prop_g3(a, b)
    torch.testing.assert_close((D + Dpp) * (a - b), torch.relu(a) - torch.relu(b), rtol=0, atol=1e-15)
    assert torch.equal(D, (a >= 0).double())
    assert Dpp.abs().max() <= 1.0
    differ = (a >= 0) != (b >= 0)
    assert differ.sum() > 100                            # the test exercises sign changes
    assert torch.all(Dpp[~differ] == 0) and torch.all(Dpp[differ] != 0)
    assert torch.all(Dpp[differ & (a >= 0)] < 0) and torch.all(Dpp[differ & (a < 0)] > 0)
    assert torch.all((D + Dpp) >= 0) and torch.all((D + Dpp) <= 1)


@pytest.mark.parametrize("t", [1e-2, 0.3, 2.0])
def test_claim_g2_expansion_equals_the_change_of_the_hidden_states(t):
    data, p, V = setup()
    exp, actual, Dpp = sm.g2_expansion(p, data.x, t * V)
    err = (exp - actual).norm(dim=-1)[:, :, 2:] / actual.norm(dim=-1)[:, :, 2:]
    assert float(err.max()) < 1e-11
    assert torch.all(exp[:, :, :2] == 0) and torch.all(actual[:, :, :2] == 0)  # h_1 does not depend on W
    if t >= 0.3:
        assert (Dpp != 0).sum() > 0                      # sign changes happened, and the expansion holds anyway
    assert Dpp.abs().max() <= 1


@pytest.mark.parametrize("t", [0.05, 0.5])
def test_identity_72_matches_two_objectives_and_autograd(t):
    data, p, V = setup()
    Wp = t * V
    lhs, rhs = sm.identity_72(p, data.x, data.y, Wp)
    f = fn.objective_fn(p, data.x, data.y)
    ref = autograd_remainder(f, p.W, Wp)
    torch.testing.assert_close(lhs, ref, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(rhs, ref, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_remainder_recursion_equals_the_definition_and_splits_exactly(activation):
    data, p, V = setup(activation)
    ts = np.array([0.03, 0.2, 1.0])
    rem = sm.remainder(p, data.x, data.y, V, ts)
    f = fn.objective_fn(p, data.x, data.y)
    for j, t in enumerate(ts):
        ref = autograd_remainder(f, p.W, t * V).numpy()
        np.testing.assert_allclose(rem.R[:, j], ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(rem.R, rem.kink + rem.cross + rem.square, rtol=1e-13)
    np.testing.assert_allclose(rem.Wp_norm, np.outer(np.ones(2), ts), rtol=1e-6)   # unit direction
    grad = rb.gradient(p, data.x, data.y).grad
    np.testing.assert_allclose(rem.linear, np.outer((grad * V).sum((1, 2)).numpy(), ts), rtol=1e-12)
    assert np.all(rem.square >= 0)
    if activation == "identity":
        assert np.all(rem.kink == 0)
    else:
        assert np.all(rem.kink != 0)


def test_no_sign_flip_means_no_kink_part_and_a_pure_second_order_remainder():
    data, p, V = setup(m=64)
    ts = np.geomspace(1e-9, 1e-6, 4)
    rem = sm.remainder(p, data.x, data.y, V, ts)
    assert np.all(rem.flips == 0) and np.all(rem.kink == 0)
    slopes = np.diff(np.log(np.abs(rem.R)), axis=1) / np.diff(np.log(ts))
    np.testing.assert_allclose(slopes, 2.0, atol=1e-3)  # R ~ t^2, computed without cancellation
    # the direct definition cannot see this (it subtracts nearly equal numbers): the recursion is the point
    f = fn.objective_fn(p, data.x, data.y)
    direct = autograd_remainder(f, p.W, ts[0] * V).numpy()
    assert np.all(np.abs(direct - rem.R[:, 0]) > 0.1 * np.abs(rem.R[:, 0]))


def test_frozen_pattern_remainder_is_that_of_the_frozen_network():
    data, p, V = setup()
    ts = np.array([0.1, 1.0])
    fr = sm.remainder(p, data.x, data.y, V, ts, frozen=True)
    free = sm.remainder(p, data.x, data.y, V, ts)
    f_fr = sm.frozen_objective(p, data.x, data.y)
    f = fn.objective_fn(p, data.x, data.y)
    torch.testing.assert_close(f_fr(p.W), f(p.W))        # same value at W_breve ...
    for j, t in enumerate(ts):
        np.testing.assert_allclose(fr.R[:, j], autograd_remainder(f_fr, p.W, t * V).numpy(), rtol=1e-8, atol=1e-12)
    assert np.all(fr.kink == 0) and np.all(fr.flips > 0)  # flips are counted but do not act
    assert not np.allclose(fr.R[:, -1], free.R[:, -1])


def test_remainder_at_a_gd_iterate_and_ensemble_members_are_independent():
    data, p, V = setup(E=3)
    hist = rb.train(p, data, eta=rb.paper.book_step_size(p.m, data.n, data.L), steps=5,
                    records={"loss": rb.training.record_loss})
    q = hist.params
    rem = sm.remainder(q, data.x, data.y, V, [0.1, 0.5])
    for e in range(3):
        one = sm.remainder(q.member(e), data.x, data.y, V[e:e + 1], [0.1, 0.5])
        np.testing.assert_allclose(one.R[0], rem.R[e], rtol=1e-12)
        np.testing.assert_allclose(one.kink[0], rem.kink[e], rtol=1e-12, atol=1e-15)


def test_bad_input_is_named():
    data, p, V = setup()
    with pytest.raises(ValueError, match="t must hold positive"):
        sm.remainder(p, data.x, data.y, V, [0.1, -1.0])
    with pytest.raises(ValueError, match="t must hold positive"):
        sm.remainder(p, data.x, data.y, V, [])
    with pytest.raises(ValueError, match="V must have shape"):
        sm.remainder(p, data.x, data.y, V[:1], [0.1])
    with pytest.raises(ValueError, match="V contains NaN"):
        sm.remainder(p, data.x, data.y, torch.full_like(V, float("nan")), [0.1])
    tanh = rb.init_params(48, 6, 2, ensemble=2, activation="tanh", seed=1, dtype=torch.float64)
    with pytest.raises(ValueError, match="ReLU masks"):
        sm.g2_expansion(tanh, data.x, V)
    with pytest.raises(ValueError, match="all-zero"):
        sm.unit_direction(torch.zeros(1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        sm.prop_g3(torch.zeros(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
