"""Experiment sizes for every chapter, in one place.

``sizes("forward_stability")`` returns the dict for the active profile (``$RNNBOOK_PROFILE``: ``quick``
for tests and CI, ``full`` for the published book). Each chapter owns one entry; keep quick sizes small
enough that the whole quick build stays under a few minutes on 2 CPU cores.
"""
from __future__ import annotations

from .config import profile

SIZES: dict[str, dict[str, dict]] = {
    # Chapter "The model and the data": gradient check and a first GD run.
    "model_and_data": {
        # gd_c: eta = gd_c / (m n L); gd_record: record every this many GD steps.
        "quick": dict(check_m=16, check_n=3, check_L=5, d_x=6, d=2, gd_n=5, gd_L=6, gd_d=1, gd_delta=0.2,
                      gd_steps=200, gd_record=10, gd_seeds=3, gd_c=2.0, gd_widths=(4, 64, 256)),
        "full": dict(check_m=32, check_n=4, check_L=8, d_x=8, d=2, gd_n=5, gd_L=6, gd_d=1, gd_delta=0.2,
                     gd_steps=300, gd_record=10, gd_seeds=4, gd_c=3.0, gd_widths=(4, 16, 64, 256, 1024)),
    },
    # Chapter "Forward stability at initialisation" (Lemma B.3).
    "forward_stability": {
        # norms: one ensemble per width at length L; grid: failure rates over (m, L) with m^2 L <= grid_cost;
        # cmp: ReLU / tanh / identity, tied and untied, at one width.
        "quick": dict(n=3, d_x=8, L=16, widths=(32, 64, 128, 256), seeds=8,
                      grid_L=(8, 16), grid_m=(8, 16, 32, 64), grid_seeds=16, grid_cost=2**12 * 16,
                      cmp_m=64, cmp_L=16, cmp_seeds=8, widget_seeds=4),
        "full": dict(n=4, d_x=8, L=50, widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=24,
                     grid_L=(10, 20, 40, 80), grid_m=(8, 16, 32, 64, 128, 256, 512, 1024), grid_seeds=48,
                     grid_cost=2**19 * 20, cmp_m=256, cmp_L=50, cmp_seeds=24, widget_seeds=8),
    },
    # Part II: fresh randomness and separation (Lemmas B.6, B.9).
    "fresh_randomness": {
        "quick": dict(d_x=8, d=2, res_n=4, res_L=10, res_widths=(128, 256, 512), res_seeds=4,
                      col_m=64, col_ns=(2, 4), col_seeds=4,
                      sep_m=256, sep_L=12, sep_deltas=(0.2, 0.05, 0.02, 0.01), sep_fit_max=0.05, sep_seeds=6,
                      widget_m=64, widget_n=3, widget_Lmax=24),
        "full": dict(d_x=8, d=2, res_n=4, res_L=32, res_widths=(256, 512, 1024, 2048), res_seeds=8,
                     col_m=256, col_ns=(4, 8), col_seeds=8,
                     sep_m=1024, sep_L=32, sep_deltas=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005), sep_fit_max=0.05,
                     sep_seeds=16,
                     widget_m=128, widget_n=4, widget_Lmax=32),
    },
    # Part II: intermediate and backward products (Lemma B.11 ... Corollary B.19).
    "products": {
        "quick": dict(widths=(64, 128, 256), L=10, seeds=3, start_every=4, d_x=8, d=2, fixed_vectors=4,
                      act_m=128, act_L=12, sparse_span=4, block_m=128, block_ks=(1, 2, 4, 8, 16), block_draws=4,
                      widget_m=64, widget_L=8),
        "full": dict(widths=(128, 256, 512, 1024), L=48, seeds=4, start_every=12, d_x=8, d=2, fixed_vectors=8,
                     act_m=256, act_L=48, sparse_span=8, block_m=512, block_ks=(1, 2, 4, 8, 16, 32, 64), block_draws=8,
                     widget_m=128, widget_L=12),
    },
    # Part II: infinite-width limit (not in the paper).
    "infinite_width": {
        "quick": dict(n=4, d_x=8, L=8, widths=(32, 64, 128, 256, 512), seeds=6,
                      untied_L=8, untied_widths=(32, 64, 128, 256), untied_seeds=6,
                      sep_deltas=(1.0, 0.5, 0.25, 0.1), sep_horizon=3000, sep_L=8, sep_m=256, sep_seeds=4,
                      widget_m=128),
        "full": dict(n=4, d_x=8, L=32, widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=12,
                     untied_L=16, untied_widths=(64, 128, 256, 512, 1024), untied_seeds=8,
                     sep_deltas=(1.0, 0.5, 0.25, 0.1, 0.02), sep_horizon=10000, sep_L=32, sep_m=1024, sep_seeds=8,
                     widget_m=256),
    },
    # Part III: stability under adversarial perturbation (Appendix C).
    "perturbation_forward": {
        "quick": dict(widths=(64, 128, 256), seeds=4, n=3, L=6, d_x=8, d=2, delta=0.2, tau0=1.0,
                      taus=(0.3, 1.0, 3.0), tau_m=128, Ls=(2, 4, 8), L_m=128, gd_steps=10, widget_m=128),
        "full": dict(widths=(128, 256, 512, 1024, 2048), seeds=6, n=4, L=8, d_x=8, d=2, delta=0.2, tau0=1.0,
                     taus=(0.1, 0.3, 1.0, 3.0, 10.0), tau_m=512, Ls=(2, 4, 8, 16), L_m=512, gd_steps=20,
                     widget_m=256),
    },
    # Part III, second chapter: intermediate and backward stability (Lemmas C.7, C.9, C.10, C.11).
    "perturbation_backward": {
        "quick": dict(widths=(64, 128, 256), seeds=4, n=3, L=6, d_x=8, d=2, delta=0.2, tau0=1.0, gd_steps=10,
                      N=4, widget_m=128),
        "full": dict(widths=(128, 256, 512, 1024, 2048), seeds=6, n=4, L=8, d_x=8, d=2, delta=0.2, tau0=1.0,
                     gd_steps=20, N=8, widget_m=256),
    },
    # Part VI: the probability tools of Appendix A (Lemmas A.3, A.4, A.8, Corollary A.9, Fact A.11, Lemmas A.17,
    # A.19). vec_draws: Gaussian vectors per width (A.3, A.4, A.8); mat_draws: matrices per width (A.9, A.11);
    # d_x: columns of those matrices; ts: the t of A.3 (and A.4's exponent) run by Monte Carlo; eps: the eps of
    # A.8/A.9; b3_L: the L whose eps = 1/(4L) Lemma B.3 needs (forward_stability's L); a17_d = s of A.17;
    # a19_kappas: the toy's cliff, in standard deviations, run by Monte Carlo; explorer_widths: its static grid.
    "probability_tools": {
        "quick": dict(widths=(64, 256, 1024), vec_draws=3000, mat_draws=300, d_x=8, ts=(0.5, 1.0, 2.0, 4.0),
                      t_glue=2.0, eps=(0.025, 0.05, 0.1, 0.2), b3_L=16, a17_d=8, a17_draws=150,
                      a19_draws=3000, a19_kappas=(2.0, 3.0), explorer_widths=(64, 1024), explorer_draws=1000),
        "full": dict(widths=(64, 128, 256, 512, 1024, 2048, 4096), vec_draws=8000, mat_draws=1000, d_x=8,
                     ts=(0.5, 1.0, 2.0, 4.0), t_glue=2.0, eps=(0.025, 0.05, 0.1, 0.2), b3_L=50, a17_d=8,
                     a17_draws=400, a19_draws=8000, a19_kappas=(2.0, 3.0), explorer_widths=(64, 256, 1024, 4096),
                     explorer_draws=2000),
    },
    # Part IV: indicator and backward coordinates (Lemmas D.2-D.5, D.7). (i_star, l_star): the fixed pair (0-based
    # sample, paper's step); b_minus_grid: the b_- swept (units of 1/sqrt(m)) at fixed b_plus; b_minus/b_plus: the
    # fixed thresholds of the width and delta sweeps; hard_*: the hard pair (two sequences, first tokens delta
    # apart); d7_Ls: the lengths of the D.7 sweep at width d7_m; explorer_*: the static explorer's grid.
    "gradient_coordinates": {
        "quick": dict(n=3, L=6, d_x=8, d=1, delta=0.2, i_star=0, l_star=2, widths=(256, 512, 1024), seeds=8,
                      b_minus_grid=(0.02, 0.05, 0.1, 0.2), b_minus=0.1, b_plus=0.1,
                      hard_deltas=(0.5, 0.2, 0.1, 0.05, 0.02), hard_m=1024, hard_seeds=8,
                      d7_Ls=(4, 8), d7_m=1024, explorer_m=1024, explorer_deltas=(0.5, 0.1, 0.02),
                      explorer_b_plus=(0.05, 0.1, 0.3)),
        "full": dict(n=4, L=8, d_x=8, d=1, delta=0.2, i_star=0, l_star=2, widths=(256, 512, 1024, 2048), seeds=16,
                     b_minus_grid=(0.01, 0.02, 0.05, 0.1, 0.2), b_minus=0.1, b_plus=0.1,
                     hard_deltas=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01), hard_m=2048, hard_seeds=8,
                     d7_Ls=(4, 8, 16), d7_m=1024, explorer_m=1024, explorer_deltas=(0.5, 0.1, 0.02),
                     explorer_b_plus=(0.05, 0.1, 0.3)),
    },
    # Part IV: the fake gradient at initialisation (Definition E.1, Lemma E.2, Theorem 5, Proposition 6.1 / Lemma
    # E.4, Section 6.2). widths/seeds: random data; hard_*: the hard pair (float64), fitted for delta >=
    # delta_fit_min; delta_fixed: its delta in the width sweep; e4_*: the Monte Carlo of Lemma E.4 (theta as in
    # Def. E.3); kick_*: the thought experiment (good neurons by b_minus/b_plus, kicks of size t / sqrt(m) for t in
    # kick_sizes, kick_t the glued one).
    "gradient_at_init": {
        "quick": dict(n=3, L=5, d_x=8, d=1, delta=0.2, widths=(128, 256, 512), seeds=4,
                      hard_L=5, hard_deltas=(0.5, 0.2, 0.1, 0.05, 0.02), hard_widths=(256, 512, 1024), hard_seeds=4,
                      delta_fixed=0.1, delta_fit_min=0.02, e4_m=512, e4_seeds=8, e4_l_star=2, theta=0.3,
                      i_star=0, l_star=2, b_minus=0.03, b_plus=0.3, kicks=32, kick_sizes=(0.01, 0.03, 0.1, 0.3, 1.0),
                      kick_t=0.1, kick_m=1024, kick_seeds=6, explorer_m=512, explorer_deltas=(0.5, 0.1, 0.02)),
        "full": dict(n=4, L=8, d_x=8, d=1, delta=0.2, widths=(256, 512, 1024, 2048), seeds=6,
                     hard_L=6, hard_deltas=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005),
                     hard_widths=(256, 512, 1024, 2048), hard_seeds=6, delta_fixed=0.1, delta_fit_min=0.02,
                     e4_m=1024, e4_seeds=16, e4_l_star=2, theta=0.3, i_star=0, l_star=2, b_minus=0.03, b_plus=0.3,
                     kicks=48, kick_sizes=(0.01, 0.03, 0.1, 0.3, 1.0), kick_t=0.1, kick_m=1024, kick_seeds=8,
                     explorer_m=1024, explorer_deltas=(0.5, 0.1, 0.02)),
    },
    # Part IV: gradient bounds near initialisation (Lemma F.1, Theorem 3). tau0: the radius of the width sweep;
    # adv_steps/mask_width: the book's adversary (projected gradient on lambda_min, surrogate width in units of
    # 1/sqrt(m)); gd_steps: the GD run whose displacement is rescaled; taus/tau_m: the radius sweep; pl_*: the GD
    # run whose PL ratio is followed (step 1/lambda_max(K0)), at the largest width; explorer_*: the static explorer.
    "gradient_near_init": {
        "quick": dict(n=3, L=5, d_x=8, d=1, delta=0.2, widths=(128, 256, 512), seeds=3, tau0=1.0, adv_steps=5,
                      mask_width=0.3, gd_steps=10, taus=(0.3, 1.0, 3.0), tau_m=256, pl_m=512, pl_steps=100,
                      pl_record=5, explorer_m=128, explorer_taus=(0.3, 1.0, 3.0)),
        "full": dict(n=3, L=6, d_x=8, d=1, delta=0.2, widths=(128, 256, 512, 1024), seeds=5, tau0=1.0, adv_steps=8,
                     mask_width=0.3, gd_steps=20, taus=(0.3, 1.0, 3.0, 10.0), tau_m=512, pl_m=1024, pl_steps=300,
                     pl_record=5, explorer_m=256, explorer_taus=(0.3, 1.0, 3.0)),
    },
    # Part V: semi-smoothness (Appendix G, Theorem 4). taus: sqrt(m) ||W'||_2 from tau_min to tau_max (n_taus
    # values); tau_fix: the moderate step of the width fits; gd_c, gd_steps: the GD iterate W_breve.
    "semi_smoothness": {
        "quick": dict(n=4, L=5, d_x=8, d=1, delta=0.2, widths=(64, 128, 256), seeds=3, tau_min=1e-7, tau_max=10.0,
                      n_taus=14, tau_fix=1.0, gd_c=0.5, gd_steps=30, check_m=64, act_m=128),
        "full": dict(n=4, L=5, d_x=8, d=1, delta=0.2, widths=(128, 256, 512, 1024), seeds=4, tau_min=1e-7,
                     tau_max=10.0, n_taus=18, tau_fix=1.0, gd_c=0.5, gd_steps=50, check_m=256, act_m=512),
    },
    # Part V: gradient descent (Theorem 1, Appendix H). c: eta = c / (m n L) (the book's choice); delta_*: the
    # hard pair at several delta; sweep_*: iterations against n and L; stable_*: the largest stable step.
    "gd_convergence": {
        "quick": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(32, 64, 128), seeds=3, steps=300,
                      eps=1e-2, delta_m=32, delta_L=4, deltas=(0.4, 0.2, 0.1), delta_seeds=2, delta_steps=2000,
                      delta_c=1.0, sweep_m=32, ns=(2, 3, 4), Ls=(2, 3, 4), sweep_seeds=2, sweep_steps=800,
                      sweep_c=0.5, stable_widths=(32, 64, 128), stable_cs=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
                      stable_seeds=2, stable_steps=30, explorer_widths=(32, 128), explorer_cs=(0.25, 0.5, 4.0),
                      explorer_steps=120, explorer_seeds=2),
        "full": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(64, 128, 256, 512), seeds=4, steps=600,
                     eps=1e-2, delta_m=128, delta_L=4, deltas=(0.4, 0.28, 0.2, 0.14, 0.1), delta_seeds=3, delta_steps=4000,
                     delta_c=1.0, sweep_m=128, ns=(2, 4, 8), Ls=(3, 4, 6), sweep_seeds=3, sweep_steps=2500,
                     sweep_c=0.5, stable_widths=(64, 128, 256, 512), stable_cs=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
                     stable_seeds=2, stable_steps=50, explorer_widths=(64, 256), explorer_cs=(0.25, 0.5, 4.0),
                     explorer_steps=200, explorer_seeds=2),
    },
    # Part V: stochastic gradient descent (Theorem 2, Appendix I). Same eta rule as GD; epochs of n / b steps;
    # spread_*: many sampling sequences from one initialisation (the Azuma part).
    "sgd_convergence": {
        "quick": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(32, 64, 128), seeds=3, epochs=60,
                      batch_sizes=(1, 2), spread_m=32, spread_copies=8, explorer_widths=(32, 128)),
        "full": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(64, 128, 256, 512), seeds=4, epochs=120,
                     batch_sizes=(1, 2), spread_m=256, spread_copies=10, explorer_widths=(64, 256)),
    },
    # Part VI: how wide is wide enough. c: eta = c / (m n L) (the book's choice); success: f_T / f_0 < target within
    # budget steps; threshold: the smallest grid width from which on >= quantile of the seeds succeed. (n, L, delta):
    # the base problem, one fresh data draw per seed; ns / Ls / deltas: the sweeps (deltas: one pair pinned at
    # exactly delta, on the grid delta_widths); hard_*: the hard pair; kernel_wide_m: a much wider width whose kernel
    # alone is computed (no training); explorer_*:
    # the static explorer's budgets (fractions of budget) and targets.
    "width_needed": {
        "quick": dict(n=3, L=4, d_x=8, d=1, delta=0.2, c=2.0, target=1e-3, quantile=0.75, budget=200, seeds=4,
                      widths=(4, 8, 16, 32), delta_widths=(8, 16, 32, 64), record_every=10, ns=(2, 3), Ls=(3, 4),
                      deltas=(0.4, 0.1),
                      hard_L=4, hard_deltas=(0.4, 0.1), kernel_wide_m=256, n_boot=200,
                      explorer_budgets=(0.25, 0.5, 1.0), explorer_targets=(1e-2, 1e-3)),
        "full": dict(n=3, L=4, d_x=8, d=1, delta=0.2, c=2.0, target=1e-3, quantile=0.75, budget=500, seeds=8,
                     widths=(4, 6, 8, 11, 16, 23, 32, 45, 64), delta_widths=(8, 11, 16, 23, 32, 45, 64, 90, 128),
                     record_every=10, ns=(2, 3, 4, 6), Ls=(3, 4, 6),
                     deltas=(0.4, 0.1, 0.025), hard_L=4, hard_deltas=(0.4, 0.2, 0.1), kernel_wide_m=1024,
                     n_boot=200, explorer_budgets=(0.25, 0.5, 1.0), explorer_targets=(1e-2, 1e-3)),
    },
    # Part VI: beyond the paper's model (tanh, identity, untied ReLU), with Part V's protocol (gd_convergence: n, L,
    # d_x, d, delta, c). widths/steps: the width sweep (success as in width_needed: target, quantile); ratio_m: the
    # width of the glued rate ratios; Ls/L_m/L_steps: the length sweep at one width (GD and the kernel at init).
    "beyond_the_model": {
        "quick": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(16, 32, 64), seeds=3, steps=300,
                      record_every=10, target=1e-3, quantile=0.75, ratio_m=64, Ls=(5, 10), L_m=32, L_steps=100,
                      n_boot=200),
        "full": dict(n=4, L=5, d_x=8, d=1, delta=0.2, c=0.5, widths=(8, 16, 32, 64, 128), seeds=6, steps=800,
                     record_every=10, target=1e-3, quantile=0.75, ratio_m=128, Ls=(5, 10, 20), L_m=64, L_steps=200,
                     n_boot=200),
    },
}


def sizes(chapter: str, which: str | None = None) -> dict:
    """The sizes of ``chapter`` for profile ``which`` (default: the active profile)."""
    if chapter not in SIZES:
        raise KeyError(f"no sizes for chapter {chapter!r}; known: {sorted(SIZES)}")
    which = profile() if which is None else which
    if which not in SIZES[chapter]:
        raise KeyError(f"chapter {chapter!r} has no {which!r} profile")
    return dict(SIZES[chapter][which])
