"""rnnbook.width: padded width sweeps, the width threshold, its bootstrap fit, the paper's width for a chosen C,
data pinned at separation delta, and the bootstrap ratio of medians -- each against an independent computation."""
import math

import numpy as np
import pytest
import torch

import rnnbook as rb
from rnnbook import training as tr
from rnnbook import width as wd

DT = torch.float64


@pytest.mark.parametrize("activation,untied", [("relu", False), ("tanh", False), ("identity", False), ("relu", True)])
def test_padding_leaves_forward_loss_and_gradient_unchanged(activation, untied):
    data = rb.make_data(3, 4, 5, 2, 0.3, seed=1, dtype=DT)
    p = rb.init_params(6, 5, 2, ensemble=2, activation=activation, untied_steps=4 if untied else None, seed=2, dtype=DT)
    q = wd.pad_params(p, 11)
    assert q.W.shape[-2:] == (11, 11) and q.A.shape == (2, 11, 5) and q.B.shape == (2, 2, 11)
    fp, fq = rb.forward(p, data.x), rb.forward(q, data.x)
    torch.testing.assert_close(fq.h[..., :6], fp.h)
    assert torch.count_nonzero(fq.h[..., 6:]) == 0
    lp, lq = rb.loss_vectors(p, fp, data.y), rb.loss_vectors(q, fq, data.y)
    torch.testing.assert_close(lq, lp)
    gp, gq = rb.backward(p, fp, lp).grad, rb.backward(q, fq, lq).grad
    torch.testing.assert_close(gq[..., :6, :6], gp)
    assert torch.count_nonzero(gq[..., 6:, :]) == 0 and torch.count_nonzero(gq[..., :, 6:]) == 0


def test_padding_checks_its_arguments():
    p = rb.init_params(6, 5, 1, seed=0, dtype=DT)
    assert wd.pad_params(p, 6) is p
    with pytest.raises(ValueError, match="M must be at least"):
        wd.pad_params(p, 4)
    with pytest.raises(TypeError, match="params"):
        wd.pad_params("W", 8)


def test_group_widths():
    assert wd.group_widths([4, 6, 8, 11, 16, 23, 32], 2.0) == [[4, 6, 8], [11, 16], [23, 32]]
    assert wd.group_widths([4, 8], 1.0) == [[4], [8]]
    with pytest.raises(ValueError, match="increasing"):
        wd.group_widths([8, 4], 2.0)


def test_a_padded_sweep_follows_each_width_trained_alone():
    """Two data sets and three widths in padded, batched runs, against rb.train on each (width, data set) alone."""
    datas = [rb.make_data(3, 4, 6, 1, dl, seed=rb.seed("test_width", "data", k), dtype=DT)
             for k, dl in enumerate((0.3, 0.5))]
    widths, S, T, c = [5, 8, 12], 2, 40, 0.5
    seed_of = lambda m: rb.seed("test_width", "nets", m)  # noqa: E731
    sw = wd.gd_width_sweep(widths, datas, c=c, steps=T, seeds=S, seed_of=seed_of, record_every=10, pad_ratio=3.0)
    assert sw.loss.shape == (5, 2, 3, 2) and list(sw.widths) == widths
    for k, m in enumerate(widths):
        p = rb.init_params(m, 6, 1, ensemble=S, seed=seed_of(m), dtype=DT)
        for g, dat in enumerate(datas):
            h = rb.train(p, dat, eta=rb.paper.book_step_size(m, 3, 4, c=c), steps=T, record_every=10,
                         records={"loss": tr.record_loss, "dist_fro": tr.record_dist_fro, "flips": tr.record_flips})
            np.testing.assert_allclose(sw.loss[:, g, k], h.loss, rtol=1e-9)
            np.testing.assert_allclose(sw.dist[:, g, k], h.dist, rtol=1e-7, atol=1e-12)
            np.testing.assert_array_equal(sw.flips[:, g, k], h.flips)
    assert sw.eta[1] == pytest.approx(rb.paper.book_step_size(8, 3, 4, c=c))


def test_per_seed_data_sets_train_each_network_on_its_own():
    """An entry of per-seed data sets: network s of every width trains on data set s, as rb.train alone does."""
    S, T = 3, 30
    own = [rb.make_data(2, 3, 6, 1, 0.3, seed=rb.seed("test_width", "own", s), dtype=DT) for s in range(S)]
    shared = rb.make_data(2, 3, 6, 1, 0.3, seed=rb.seed("test_width", "shared"), dtype=DT)
    seed_of = lambda m: rb.seed("test_width", "nets", m)  # noqa: E731
    sw = wd.gd_width_sweep([4, 7], [own, shared], c=1.0, steps=T, seeds=S, seed_of=seed_of, record_every=10)
    for k, m in enumerate((4, 7)):
        p = rb.init_params(m, 6, 1, ensemble=S, seed=seed_of(m), dtype=DT)
        for s in range(S):
            for g, dat in enumerate((own[s], shared)):
                h = rb.train(p.member(s), dat, eta=rb.paper.book_step_size(m, 2, 3, c=1.0), steps=T, record_every=10,
                             records={"loss": tr.record_loss})
                np.testing.assert_allclose(sw.loss[:, g, k, s], h.loss[:, 0], rtol=1e-9)
    with pytest.raises(ValueError, match="one per seed"):
        wd.gd_width_sweep([4], [own[:2]], c=1.0, steps=5, seeds=S, seed_of=seed_of)


def test_sweep_success_first_below_and_final():
    data = rb.make_data(2, 3, 6, 1, 0.3, seed=5, dtype=DT)
    sw = wd.gd_width_sweep([4, 64], data, c=1.0, steps=200, seeds=3, seed_of=lambda m: rb.seed("t", m), record_every=10,
                           stop_below=1e-3)
    first = sw.first_below(1e-3)[0]
    ok = sw.success(1e-3)[0]
    rel = sw.loss[:, 0] / sw.loss[0, 0]
    for k in range(2):
        for s in range(3):
            hit = np.nonzero(rel[:, k, s] <= 1e-3)[0]
            assert ok[k, s] == (hit.size > 0)
            if hit.size:
                assert first[k, s] == sw.steps[hit[0]]
    assert ok[1].all()                                 # a wide network fits two sequences
    fin = sw.final("loss")[0]
    assert np.all(np.isfinite(fin))
    assert np.all(sw.success(1e-3, budget=10) <= ok)  # a smaller budget can only lose successes
    with pytest.raises(ValueError, match="exceeds"):
        sw.success(1e-3, budget=400)


def test_sweep_rate_matches_train_history_rate():
    data = rb.make_data(3, 4, 6, 1, 0.3, seed=7, dtype=DT)
    seed_of = lambda m: rb.seed("test_width", "rate", m)  # noqa: E731
    sw = wd.gd_width_sweep([16, 32], data, c=0.5, steps=60, seeds=2, seed_of=seed_of, record_every=5)
    for k, m in enumerate((16, 32)):
        p = rb.init_params(m, 6, 1, ensemble=2, seed=seed_of(m), dtype=DT)
        h = rb.train(p, data, eta=rb.paper.book_step_size(m, 3, 4, c=0.5), steps=60, record_every=5,
                     records={"loss": tr.record_loss})
        np.testing.assert_allclose(sw.rate()[0, k], h.rate(start=6), rtol=1e-8)   # records t >= 30
    with pytest.raises(ValueError, match="fewer than two"):
        sw.rate(start=60)


def _threshold_loop(widths, success, q):
    """Reference: the smallest grid width from which on every width has a success fraction >= q."""
    frac = success.mean(axis=1)
    for k in range(len(widths)):
        if all(frac[j] >= q for j in range(k, len(widths))):
            return float(widths[k])
    return math.inf


def test_smallest_width_against_a_loop():
    gen = np.random.default_rng(0)
    widths = np.array([4, 8, 16, 32, 64.0])
    for _ in range(200):
        p = np.sort(gen.uniform(0, 1, size=5))
        succ = gen.uniform(size=(5, 8)) < p[:, None]
        for q in (0.5, 0.75, 1.0):
            assert wd.smallest_width(widths, succ, quantile=q) == _threshold_loop(widths, succ, q)
    # a failure at a large width pushes the threshold past it
    succ = np.ones((5, 4), bool)
    succ[3, :2] = False
    assert wd.smallest_width(widths, succ) == 64.0
    succ[4, :] = False
    assert wd.smallest_width(widths, succ) == math.inf
    with pytest.raises(ValueError, match="shape"):
        wd.smallest_width(widths, np.ones((4, 4), bool))


def test_threshold_fit_recovers_a_planted_exponent():
    """Thresholds planted at x^(1/2) on a fine grid; the bootstrap spread is zero when success is noise-free."""
    widths = 2.0 ** np.arange(2, 12, 0.25)
    x = np.array([1, 4, 16, 64.0])
    true = 8 * np.sqrt(x)
    succ = np.broadcast_to((widths[None, :] >= true[:, None])[:, :, None], (4, widths.size, 6))
    res = wd.threshold_fit(x, widths, succ, seed=1)
    assert res.fit.slope == pytest.approx(0.5, abs=0.03)
    assert res.fit.stderr == pytest.approx(0.0, abs=1e-12) and res.kept == 1.0
    # noisy cells: the slope stays near 1/2 and the bootstrap error becomes positive
    gen = np.random.default_rng(3)
    noisy = succ & (gen.uniform(size=succ.shape) > 0.1)
    res2 = wd.threshold_fit(x, widths, noisy, quantile=0.5, seed=1)
    assert res2.fit.slope == pytest.approx(0.5, abs=0.1) and res2.fit.stderr > 0
    # infinite thresholds are left out of the fit
    none = succ.copy()
    none[-1] = False
    res3 = wd.threshold_fit(x, widths, none, seed=1)
    assert math.isinf(res3.thresholds[-1]) and res3.fit.slope == pytest.approx(0.5, abs=0.05)
    assert wd.threshold_fit(x, widths, np.zeros_like(succ), seed=1).fit is None


def test_threshold_bootstrap_matches_a_direct_resampling():
    """The vectorised bootstrap against resampling each cell by hand with the same random numbers."""
    gen = np.random.default_rng(7)
    widths = np.array([4, 8, 16, 32.0])
    x = np.array([2, 4, 8.0])
    succ = gen.uniform(size=(3, 4, 5)) < np.linspace(0.3, 1.0, 4)[None, :, None]
    res = wd.threshold_fit(x, widths, succ, n_boot=20, seed=11)
    pick = np.random.default_rng(11).integers(0, 5, size=(20, 3, 4, 5))
    for b in range(20):
        for j in range(3):
            cell = np.stack([succ[j, k, pick[b, j, k]] for k in range(4)])
            assert res.boot[b, j] == _threshold_loop(widths, cell, 0.75)
    # paired: one set of resampled seeds per width, shared by every x
    resp = wd.threshold_fit(x, widths, succ, n_boot=20, seed=11, paired=True)
    pick = np.random.default_rng(11).integers(0, 5, size=(20, 1, 4, 5))
    for b in range(20):
        for j in range(3):
            cell = np.stack([succ[j, k, pick[b, 0, k]] for k in range(4)])
            assert resp.boot[b, j] == _threshold_loop(widths, cell, 0.75)


def test_paper_width_is_the_smallest_width_meeting_the_condition():
    for C in (1.0, 2.0):
        m = wd.paper_width(C, 4, 5, 1, 0.2, 1e-3)
        need = lambda w: C * rb.paper.varrho(4, 5, 1, 0.2, w, 1e-3) ** C  # noqa: E731
        assert m >= need(m) and m - 1 < need(m - 1)
    assert wd.paper_width(2.0, 4, 5, 1, 0.2, 1e-3) > wd.paper_width(1.0, 4, 5, 1, 0.2, 1e-3)


def test_pinned_data_has_separation_exactly_delta():
    for delta in (0.5, 0.1, 0.02):
        dat = wd.pinned_data(5, 4, 8, 1, delta, seed=3)
        assert rb.min_first_token_distance(dat.x) == pytest.approx(delta, rel=1e-9)
        assert torch.linalg.vector_norm(dat.x[1, 0] - dat.x[0, 0]).item() == pytest.approx(delta, rel=1e-9)
        assert rb.check_assumptions(dat.x, delta).ok
    a, b = wd.pinned_data(5, 4, 8, 1, 0.1, seed=3), wd.pinned_data(5, 4, 8, 1, 0.1, seed=3)
    assert torch.equal(a.x, b.x)


def test_ratio_of_medians():
    gen = np.random.default_rng(0)
    a, b = 2.0 + 0.1 * gen.standard_normal(41), 1.0 + 0.05 * gen.standard_normal(41)
    r, err = wd.ratio_of_medians(a, b, seed=2)
    assert r == pytest.approx(np.median(a) / np.median(b))
    assert 0 < err < 0.2
    r2, _ = wd.ratio_of_medians(np.r_[a, np.nan], b, seed=2)
    assert r2 == pytest.approx(r)
    with pytest.raises(ValueError, match="median of b"):
        wd.ratio_of_medians(a, np.zeros(3), seed=2)
