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
        "quick": dict(check_m=16, check_n=3, check_L=5, d_x=6, d=2, gd_m=256, gd_n=4, gd_L=5, gd_steps=150,
                      gd_seeds=2, gd_widths=(64, 256)),
        "full": dict(check_m=32, check_n=4, check_L=8, d_x=8, d=2, gd_m=1024, gd_n=6, gd_L=8, gd_steps=600,
                     gd_seeds=4, gd_widths=(64, 256, 1024)),
    },
    # Chapter "Forward stability at initialisation" (Lemma B.3).
    "forward_stability": {"quick": dict(), "full": dict()},
    # Part II: fresh randomness and separation (Lemmas B.6, B.9).
    "fresh_randomness": {"quick": dict(), "full": dict()},
    # Part II: intermediate and backward products (Lemma B.11 ... Corollary B.19).
    "products": {"quick": dict(), "full": dict()},
    # Part II: infinite-width limit (not in the paper).
    "infinite_width": {"quick": dict(), "full": dict()},
    # Part III: stability under adversarial perturbation (Appendix C).
    "perturbation": {"quick": dict(), "full": dict()},
}


def sizes(chapter: str, which: str | None = None) -> dict:
    """The sizes of ``chapter`` for profile ``which`` (default: the active profile)."""
    if chapter not in SIZES:
        raise KeyError(f"no sizes for chapter {chapter!r}; known: {sorted(SIZES)}")
    which = profile() if which is None else which
    if which not in SIZES[chapter]:
        raise KeyError(f"chapter {chapter!r} has no {which!r} profile")
    return dict(SIZES[chapter][which])
