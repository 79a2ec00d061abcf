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
}


def sizes(chapter: str, which: str | None = None) -> dict:
    """The sizes of ``chapter`` for profile ``which`` (default: the active profile)."""
    if chapter not in SIZES:
        raise KeyError(f"no sizes for chapter {chapter!r}; known: {sorted(SIZES)}")
    which = profile() if which is None else which
    if which not in SIZES[chapter]:
        raise KeyError(f"chapter {chapter!r} has no {which!r} profile")
    return dict(SIZES[chapter][which])
