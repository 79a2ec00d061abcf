"""Data meeting Section 2.1 / Assumption 2.1, and the checker that reports violations."""
import math

import pytest
import torch

import rnnbook as rb


@pytest.mark.parametrize("delta", [1.0, 0.5, 0.05])
def test_make_data_meets_every_assumption(delta):
    data = rb.make_data(6, 5, 8, 2, delta, seed=1, device="cpu", dtype=torch.float64)
    rep = rb.check_assumptions(data.x, delta)
    assert rep.ok, str(rep)
    assert rep.min_distance >= delta * (1 - 1e-12)
    norms = data.x.norm(dim=-1)
    assert torch.allclose(norms[:, 0], torch.ones(6, dtype=torch.float64))
    assert torch.all(norms <= 1 + 1e-12)
    assert torch.allclose(data.x[:, 0, -1], torch.full((6,), 1 / math.sqrt(2), dtype=torch.float64))
    assert data.y.shape == (6, 5, 2)


def test_token_norm_is_respected():
    data = rb.make_data(3, 4, 5, 1, 0.1, token_norm=0.5, seed=2, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(data.x[:, 1:].norm(dim=-1), torch.full((3, 3), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("delta", [1.0, 0.1, 0.001])
def test_hard_pair_is_exactly_delta_apart_with_identical_tails(delta):
    data = rb.hard_pair(6, 5, 1, delta, seed=3, device="cpu", dtype=torch.float64)
    assert rb.min_first_token_distance(data.x) == pytest.approx(delta, rel=1e-9)
    assert torch.equal(data.x[0, 1:], data.x[1, 1:])
    assert rb.check_assumptions(data.x, delta).ok


def test_checker_names_each_violation():
    data = rb.make_data(4, 3, 5, 1, 0.1, seed=4, device="cpu", dtype=torch.float64)
    x = data.x.clone()
    x[1, 2] *= 3.0  # token norm > 1
    rep = rb.check_assumptions(x, 0.1)
    assert not rep.ok and any("<= 1 fails" in v for v in rep.violations)
    x = data.x.clone()
    x[0, 0] *= 0.9  # first token not unit, last coordinate off
    rep = rb.check_assumptions(x, 0.1)
    assert any("||x_(i,1)|| = 1 fails" in v for v in rep.violations)
    assert any("1/sqrt(2)" in v for v in rep.violations)
    x = data.x.clone()
    x[1, 0] = x[0, 0]  # duplicate first tokens
    rep = rb.check_assumptions(x, 0.1)
    assert any("delta-separability fails" in v for v in rep.violations)
    with pytest.raises(ValueError, match="delta-separability fails"):
        rb.require_assumptions(x, 0.1)


def test_impossible_separation_raises():
    with pytest.raises(ValueError, match="could not place"):
        rb.make_data(50, 2, 2, 1, 1.0, seed=0, device="cpu")


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_delta_outside_unit_interval_is_rejected(bad):
    with pytest.raises((ValueError, TypeError), match="delta"):
        rb.make_data(3, 2, 4, 1, bad, seed=0, device="cpu")
    with pytest.raises((ValueError, TypeError), match="delta"):
        rb.hard_pair(2, 4, 1, bad, seed=0, device="cpu")


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        rb.make_data(0, 2, 4, 1, 0.1, seed=0, device="cpu")
    with pytest.raises(ValueError, match="d_x must be an integer >= 2"):
        rb.make_data(2, 2, 1, 1, 0.1, seed=0, device="cpu")
    with pytest.raises(ValueError, match="token_norm"):
        rb.make_data(2, 2, 4, 1, 0.1, token_norm=1.5, seed=0, device="cpu")
