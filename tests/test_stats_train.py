import math
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
    hist = rb.train(p, data, eta=rb.paper.book_step_size(512, 3, 4), steps=200, record_every=20)
    assert hist.loss.shape == (11, 2) and hist.steps[-1] == 200
    assert np.all(hist.loss[-1] < 0.2 * hist.loss[0])
    assert np.all(np.diff(hist.dist, axis=0) >= 0)  # drifts away from W_0 monotonically here
    assert np.all(hist.rate() > 0)
    assert hist.flips[0].sum() == 0


def test_one_gd_step_is_exactly_W_minus_eta_grad():
    data = rb.make_data(3, 5, 4, 2, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(32, 4, 2, ensemble=2, seed=1, device="cpu", dtype=torch.float64)
    eta = torch.tensor([1e-3, 3e-3], dtype=torch.float64)  # one step size per network, in one batched run
    hist = rb.train(p, data, eta=eta, steps=1)
    grad = rb.gradient(p, data.x, data.y).grad
    torch.testing.assert_close(hist.params.W, p.W - eta.view(2, 1, 1) * grad, rtol=0, atol=0)
    # the recorded f is the objective at each recorded W
    assert hist.loss[0] == pytest.approx(rb.gradient(p, data.x, data.y).f.numpy())
    assert hist.loss[1] == pytest.approx(rb.gradient(hist.params, data.x, data.y).f.numpy())


def test_batched_training_equals_single_runs():
    data = rb.make_data(3, 4, 5, 1, 0.3, seed=2, device="cpu", dtype=torch.float64)
    p = rb.init_params(48, 5, 1, ensemble=3, seed=3, device="cpu", dtype=torch.float64)
    eta = rb.paper.book_step_size(48, 3, 4)
    both = rb.train(p, data, eta=eta, steps=15, record_every=5)
    for e in range(3):
        one = rb.train(p.member(e), data, eta=eta, steps=15, record_every=5)
        np.testing.assert_allclose(both.loss[:, e], one.loss[:, 0], rtol=1e-12)
        np.testing.assert_allclose(both.dist_spec[:, e], one.dist_spec[:, 0], rtol=1e-6)
        torch.testing.assert_close(both.params.W[e], one.params.W[0])


def test_records_are_hooks_of_the_step_state():
    data = rb.make_data(3, 4, 5, 1, 0.3, seed=4, device="cpu", dtype=torch.float64)
    p = rb.init_params(40, 5, 1, seed=5, device="cpu", dtype=torch.float64)
    seen = []

    def grad_sq(state):
        seen.append(state.t)
        return state.grad.flatten(1).square().sum(1)

    schedule = lambda t: 1e-3 / (1 + t)
    hist = rb.train(p, data, eta=schedule, steps=6, record_every=3, extra_records={"grad_sq": grad_sq,
                    "eta": lambda s: s.eta})
    assert seen == [0, 3, 6] and set(hist.records) >= {"loss", "dist_fro", "dist_spec", "flips", "grad_sq", "eta"}
    np.testing.assert_allclose(hist.eta[:, 0], [1e-3, 1e-3 / 4, 1e-3 / 6])  # t = 6 reports the last step's eta
    g0 = rb.gradient(p, data.x, data.y).grad
    assert hist.grad_sq[0, 0] == pytest.approx(float(g0.square().sum()))
    # the spectral distance is the norm of W_t - W_0 in spectral norm, times sqrt(m)
    d = hist.params.W - p.W
    assert hist.dist_spec[-1, 0] == pytest.approx(math.sqrt(40) * float(torch.linalg.matrix_norm(d, ord=2)[0]), rel=1e-5)
    assert hist.dist[-1, 0] == pytest.approx(math.sqrt(40) * float(d.norm()))
    with pytest.raises(AttributeError, match="no attribute or record 'nothing'"):
        hist.nothing
    only = rb.train(p, data, eta=1e-3, steps=2, records={"loss": rb.training.record_loss})
    assert set(only.records) == {"loss"}


def test_the_sgd_estimate_averaged_over_all_subsets_is_the_gradient():
    """Appendix I's unbiased step: the mean of (n/|S|) sum_{i in S} grad f_i over every S of size b is grad f."""
    from itertools import combinations
    data = rb.make_data(4, 4, 5, 2, 0.3, seed=6, device="cpu", dtype=torch.float64)
    p = rb.init_params(24, 5, 2, seed=7, device="cpu", dtype=torch.float64)
    full = rb.gradient(p, data.x, data.y).grad
    for b in (1, 2, 3):
        subsets = list(combinations(range(4), b))
        est = sum(rb.training.minibatch_gradient(p, data, torch.tensor([S])) for S in subsets) / len(subsets)
        torch.testing.assert_close(est, full, rtol=1e-12, atol=1e-14)
        single = rb.training.minibatch_gradient(p, data, torch.tensor([subsets[0]]))
        assert not torch.allclose(single, full)  # any one subset is a noisy estimate


def test_sgd_is_reproducible_and_rejects_bad_input():
    data = rb.make_data(4, 3, 5, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(128, 5, 1, seed=1, device="cpu", dtype=torch.float64)
    a = rb.train(p, data, eta=0.1 / (128 * 12), steps=30, batch_size=1, seed=5)
    b = rb.train(p, data, eta=0.1 / (128 * 12), steps=30, batch_size=1, seed=5)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert a.loss[-1, 0] < a.loss[0, 0]
    with pytest.raises(ValueError, match="seed"):
        rb.train(p, data, eta=0.1, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an integer in \\[1, n=4\\]"):
        rb.train(p, data, eta=0.1, steps=1, batch_size=9, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        rb.train(p, data, eta=0.1, steps=1, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="eta"):
        rb.train(p, data, eta=-1.0, steps=1)
    with pytest.raises(ValueError, match="empty schedule"):
        rb.train(p, data, eta=[], steps=3)
    with pytest.raises(ValueError, match="eta has 2 step sizes but steps=3"):
        rb.train(p, data, eta=[0.1, 0.1], steps=3)
    with pytest.raises(ValueError, match="one step size per network"):
        rb.train(p, data, eta=torch.ones(3, dtype=torch.float64), steps=1)
    with pytest.raises(ValueError, match="W contains NaN"):
        rb.train(p.with_W(torch.full_like(p.W, float("nan"))), data, eta=0.1, steps=1)


def test_divergence_is_reported_with_the_step_and_the_step_size():
    data = rb.make_data(3, 4, 5, 1, 0.3, seed=0, device="cpu", dtype=torch.float64)
    p = rb.init_params(64, 5, 1, seed=1, device="cpu", dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+ .*eta = 50"):
        rb.train(p, data, eta=50.0, steps=50)
    # divergence between two recorded steps is caught too
    with pytest.raises(FloatingPointError, match="diverged"):
        rb.train(p, data, eta=50.0, steps=50, record_every=1000)


def test_glue_fit_rejects_anything_but_a_fit():
    with pytest.raises(TypeError, match="SlopeFit"):
        rb.book.glue_fit("key", 0.5)


def test_slope_or_none_fits_only_where_every_seed_is_positive():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    Y = np.vstack([x ** 0.5, 2 * x ** 0.5])
    Y[1, 0] = 0.0
    fit = rb.loglog_slope_or_none(x, Y)
    assert fit.slope == pytest.approx(0.5)
    Y[:, 1:3] = 0.0
    assert rb.loglog_slope_or_none(x, Y) is None


def test_verdicts_and_sweeps():
    fit = rb.SlopeFit(slope=0.66, stderr=0.01, intercept=0.0)
    assert rb.book.verdict(fit, 2 / 3, name="2/3") == "consistent with 2/3"
    assert rb.book.verdict(fit, 1.0, name="1").startswith("below 1 by more than three standard errors: the bound is loose")
    assert rb.book.verdict(fit, 0.5, name="1/2", kind="equal") == "above 1/2 by more than three standard errors"
    assert rb.book.verdict(None, 0.5, name="x").startswith("not fitted")
    out = rb.book.sweep(lambda v: {"a": torch.full((3,), float(v)), "k": {"b": np.arange(3) * v}}, [1, 2])
    assert out["a"].shape == (3, 2) and out["k"]["b"].shape == (3, 2)
    np.testing.assert_array_equal(out["a"][:, 1], [2, 2, 2])


def test_exercise_self_check_shows_no_answer_until_one_is_given(capsys):
    rb.book.expect("ex-test", 5.0, rtol=0.1)
    rb.book.check("ex-test", None)
    out = capsys.readouterr().out
    assert "replace None" in out and "5" not in out
    assert rb.book.check("ex-test", 5.2) is None
    assert "correct" in capsys.readouterr().out
    rb.book.check("ex-test", 25.0)
    out = capsys.readouterr().out
    assert "not yet" in out and "too large" in out and "5" not in out.replace("ex-test", "")
    with pytest.raises(KeyError, match="no expected value"):
        rb.book.check("ex-unknown", 1.0)
    with pytest.raises(ValueError, match="finite number"):
        rb.book.expect("ex-nan", float("nan"))


def test_seeds_are_derived_from_names():
    a, b = rb.seed("chapter", "networks", 256), rb.seed("chapter", "a", 256)
    assert a != b and a == rb.seed("chapter", "networks", 256)
    assert 0 <= a < 2 ** 63 and rb.seed("x", 1) != rb.seed("x", "1")
    with pytest.raises(TypeError, match="strings or integers"):
        rb.seed("x", 0.5)
    with pytest.raises(ValueError, match="at least one name"):
        rb.seed()


def test_numbers_are_glued_in_a_readers_format():
    f = rb.book.format_number
    assert f(5.668e22) == "5.7 × 10²²" and f(3.9e-8) == "3.9 × 10⁻⁸"
    assert f(3293.05) == "3300" and f(0.047) == "0.047" and f(-0.17) == "−0.17" and f(0.99999) == "1.0"
    assert f(float("nan")) == "not computed"
    g = rb.book.format_with_error
    assert g(0.6312, 0.0283) == "0.631 ± 0.028" and g(-0.172, 0.121) == "−0.17 ± 0.12"
    assert g(0.5189, 0.149) == "0.52 ± 0.15"


def test_ticks_at_labels_exact_values_or_the_125_steps_of_the_range():
    import matplotlib.pyplot as plt
    from rnnbook import plotting

    fig, ax = plt.subplots()
    ax.loglog([3, 40], [1, 2])
    lim = ax.get_xlim()
    plotting.ticks_at(ax, [4, 8, 16, 32])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8", "16", "32"]
    assert ax.get_xlim() == pytest.approx(lim)              # the limits are kept
    plotting.ticks_at(ax, axis="y")                          # 1-2-5 steps inside the y range
    ys = ax.get_yticks()
    assert all(ax.get_ylim()[0] <= y <= ax.get_ylim()[1] for y in ys) and 1.0 in ys and 2.0 in ys
    with pytest.raises(ValueError, match="axis"):
        plotting.ticks_at(ax, [1], axis="z")
    fig2, ax2 = plt.subplots()
    ax2.plot([-1, 1], [0, 1])
    with pytest.raises(ValueError, match="positive"):
        plotting.ticks_at(ax2)
    plt.close("all")


def test_legend_below_shows_each_label_once_across_panels():
    import matplotlib.pyplot as plt
    from rnnbook import plotting

    fig, axes = plt.subplots(1, 2)
    axes[0].plot([0, 1], label="network")
    axes[0].plot([0, 1], label="_hidden")
    axes[1].plot([0, 1], label="network")
    axes[1].plot([0, 1], label="linearised")
    leg = plotting.legend_below(fig, axes, ncol=2)
    assert [t.get_text() for t in leg.get_texts()] == ["network", "linearised"]
    plt.close("all")
