"""Helpers for the chapters themselves (they need myst-nb, imported only when called)."""
from __future__ import annotations

from .stats import SlopeFit


def glue_fit(key: str, fit: SlopeFit) -> None:
    """Glue a fitted exponent as ``key`` and its bootstrap uncertainty as ``key + "_err"`` (plain floats)."""
    from myst_nb import glue

    if not isinstance(fit, SlopeFit):
        raise TypeError(f"fit must be a rnnbook.stats.SlopeFit, got {type(fit).__name__}")
    glue(key, float(fit.slope), display=False)
    glue(f"{key}_err", float(fit.stderr), display=False)
