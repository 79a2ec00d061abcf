"""Self-checks for the exercises: the reader computes a number, the book says whether it is right."""
from __future__ import annotations

import math
from numbers import Real


def self_check(answer, expected: float, *, rtol: float = 0.05, atol: float = 0.0, name: str = "answer") -> bool:
    """Print whether ``answer`` matches ``expected`` within ``rtol``/``atol``, and return the verdict.

    ``expected`` is computed by the chapter (never typed in), so the check follows the chapter's sizes.
    """
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(float(answer)):
        print(f"{name}: expected a finite number, got {answer!r}")
        return False
    ok = math.isclose(float(answer), float(expected), rel_tol=rtol, abs_tol=atol)
    if ok:
        print(f"{name}: correct ({float(answer):.6g}).")
    else:
        print(f"{name}: not yet -- you gave {float(answer):.6g}, the book computes {float(expected):.6g} "
              f"(tolerance rtol={rtol}, atol={atol}).")
    return ok
