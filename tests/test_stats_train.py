"""Slope fits, plotting helpers, self-checks, profiles and the GD/SGD trainer."""
import numpy as np
import pytest
import torch

import rnnbook as rb


def test_loglog_slope_recovers_a_known_exponent_with_sensible_error():
    rng = np.random.default_rng(0)
    x = np.array([64, 128, 256, 512, 1024.0])
    samples = x ** -0.5 * np.exp(0.05 * rng.standard_normal((40, x.size)))
    fit = rb.loglog_slope(x, samples)
    assert fit.slope == pytest.approx(-0.5, abs=0.03)
    assert 0 < fit.stderr < 0.05
    assert fit.consistent_with(-0.5) and not fit.consistent_with(-0.3)
    single = rb.loglog_slope(x, samples[0])
    assert single.stderr > 0


def test_loglog_slope_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        rb.loglog_slope([1, 2, 3], [1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        rb.loglog_slope([1, 2, 3], np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        rb.loglog_slope([1], [1.0])


def test_self_check(capsys):
    assert rb.self_check(1.02, 1.0, rtol=0.05)
    assert not rb.self_check(2.0, 1.0, rtol=0.05)
    assert "not yet" in capsys.readouterr().out
    assert not rb.self_check("x", 1.0)


def test_profiles_come_from_one_place(monkeypatch):
    monkeypatch.setenv("RNNBOOK_PROFILE", "quick")
    quick = rb.sizes("model_and_data")
    monkeypatch.setenv("RNNBOOK_PROFILE", "full")
    assert rb.sizes("model_and_data") != quick
    monkeypatch.setenv("RNNBOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="RNNBOOK_PROFILE"):
        rb.profile()
    with pytest.raises(KeyError, match="no sizes"):
        rb.sizes("nonexistent")


def test_plot_trend_draws_median_band_and_reference():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rb.plotting.use_style()
    fig, ax = plt.subplots()
    x = np.array([1, 2, 4, 8.0])
    rb.plotting.plot_trend(ax, x, np.vstack([x ** 0.5, 1.1 * x ** 0.5]), exponent=0.5, bound=2 * x + 4)
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"
    plt.close(fig)


def test_gd_on_a_wide_network_decreases_the_loss_geometrically():
    data = rb.make_data(3, 4, 6, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(512, 6, 1, ensemble=2, seed=1, device="cpu", dtype=torch.float64)
    hist = rb.train(p, data, eta=0.2 / (512 * 3 * 4), steps=200, record_every=20)
    assert hist.loss.shape == (11, 2) and hist.steps[-1] == 200
    assert np.all(hist.loss[-1] < 0.2 * hist.loss[0])
    assert np.all(np.diff(hist.dist, axis=0) >= 0)  # drifts away from W_0 monotonically here
    assert np.all(hist.rate() > 0)
    assert hist.flips[0].sum() == 0


def test_sgd_batches_are_unbiased_and_reproducible():
    data = rb.make_data(4, 3, 5, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(128, 5, 1, seed=1, device="cpu", dtype=torch.float64)
    a = rb.train(p, data, eta=0.1 / (128 * 12), steps=30, batch_size=1, seed=5)
    b = rb.train(p, data, eta=0.1 / (128 * 12), steps=30, batch_size=1, seed=5)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert a.loss[-1, 0] < a.loss[0, 0]
    with pytest.raises(ValueError, match="seed"):
        rb.train(p, data, eta=0.1, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be at most"):
        rb.train(p, data, eta=0.1, steps=1, batch_size=9, seed=0)
    with pytest.raises(ValueError, match="eta"):
        rb.train(p, data, eta=-1.0, steps=1)


def test_divergence_is_reported():
    data = rb.make_data(3, 4, 5, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(64, 5, 1, seed=1, device="cpu", dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="diverged"):
        rb.train(p, data, eta=50.0, steps=50)
    # divergence between two recorded steps is caught too
    with pytest.raises(FloatingPointError, match="diverged"):
        rb.train(p, data, eta=50.0, steps=50, record_every=1000)


def test_glue_fit_rejects_anything_but_a_fit():
    with pytest.raises(TypeError, match="SlopeFit"):
        rb.book.glue_fit("key", 0.5)
