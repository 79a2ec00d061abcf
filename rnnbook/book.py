"""Helpers for the chapters themselves: glue, verdicts, sweeps and the exercises' self-checks.

Everything a chapter would otherwise write again:

* :func:`glue_fit` -- glue a fitted exponent and its uncertainty (or NaN when there was nothing to fit);
* :func:`verdict` -- the sentence that compares a fitted exponent with a predicted one, with the thresholds
  (:data:`N_SIGMA`, :data:`FLOOR`) in one place;
* :func:`sweep` -- run an experiment over a list of values and stack its per-network results into
  (seeds x values) arrays;
* :func:`expect` and :func:`check` -- the one self-check pattern of the exercises. A hidden cell registers the
  book's number for an exercise with ``expect(label, value)``; the reader's cell is
  ``your_answer = None`` followed by ``check(label, your_answer)``. The static page therefore shows neither
  the answer nor a failed comparison, only what to do; a reader who runs it with a number learns whether it
  matches (within the tolerance), and the solution in the dropdown says how to get it.

They need myst-nb (for glue), imported only when called.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

from . import checks
from .config import profile as _profile
from .stats import SlopeFit

#: A fitted exponent agrees with a prediction when it is within N_SIGMA standard errors of it (and never
#: closer than FLOOR is required, since a bootstrap error can be tiny).
N_SIGMA = 3.0
FLOOR = 0.02


def _glue(key: str, value) -> None:
    from myst_nb import glue

    glue(key, value, display=False)


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def format_number(value, sig: int = 2) -> str:
    """A number as a reader writes it: ``sig`` significant digits, and powers of ten for very large or small
    magnitudes ("5.7 × 10²²", "3.1 × 10⁻⁸", "3300", "0.047"); "not computed" for NaN."""
    v = float(value)
    if math.isnan(v):
        return "not computed"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    sig = checks.positive_int("sig", sig)
    exp = math.floor(math.log10(abs(v)))
    if -3 <= exp < 5:
        r = round(v, sig - 1 - exp)             # may round to tens or hundreds: 3293 -> 3300
        exp = math.floor(math.log10(abs(r))) if r else exp
        decimals = max(sig - 1 - exp, 0)
        text = f"{r:.{decimals}f}"
    else:
        mant = round(v / 10 ** exp, sig - 1)
        if abs(mant) >= 10:
            mant, exp = mant / 10, exp + 1
        text = f"{mant:.{sig - 1}f} × 10{str(exp).translate(_SUPERSCRIPT)}"
    return text.replace("-", "−")


def format_with_error(value, err) -> str:
    """``value ± err`` with as many decimals as the uncertainty supports (two significant digits of it when
    it starts with 1 or 2, else one): "0.63 ± 0.04", "−0.17 ± 0.12"; the value alone if err is NaN."""
    v, e = float(value), float(err)
    if math.isnan(v):
        return "not computed"
    if not math.isfinite(e) or e <= 0:
        return format_number(v, 3)
    lead = e / 10 ** math.floor(math.log10(e))
    digits = 2 if lead < 3 else 1
    decimals = max(digits - 1 - math.floor(math.log10(e)), 0)
    return f"{v:.{decimals}f} ± {e:.{decimals}f}".replace("-", "−")


def glue_number(key: str, value, sig: int = 2) -> None:
    """Glue ``value`` as text in a reader's format (:func:`format_number`), for a number quoted in the prose
    with the ``glue:text`` role and no format spec."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    _glue(key, format_number(value, sig))


def glue_fit(key: str, fit: SlopeFit | None) -> None:
    """Glue a fitted exponent as ``key`` and its bootstrap uncertainty as ``key + "_err"`` (plain floats; NaN
    when ``fit`` is None, i.e. there were too few positive points to fit), and both as text in a reader's
    format as ``key + "_pm"`` ("0.63 ± 0.04", :func:`format_with_error`), for the prose."""
    if fit is not None and not isinstance(fit, SlopeFit):
        raise TypeError(f"fit must be a rnnbook.stats.SlopeFit or None, got {type(fit).__name__}")
    slope = float(fit.slope) if fit is not None else math.nan
    err = float(fit.stderr) if fit is not None else math.nan
    _glue(key, slope)
    _glue(f"{key}_err", err)
    _glue(f"{key}_pm", format_with_error(slope, err))


def verdict(fit: SlopeFit | None, exponent: float, *, name: str, kind: str = "upper") -> str:
    """How a fitted exponent compares with a predicted one, as a sentence for the prose.

    ``kind="upper"``: the lemma bounds the quantity's growth by this exponent (a smaller slope is allowed, and
    means the bound is loose); ``kind="equal"``: a predicted trend that should be matched. ``name`` says what
    the exponent is, e.g. "the lemma's 2/3".
    """
    checks.choice("kind", kind, ("upper", "equal"))
    if fit is None:
        return "not fitted (too few non-zero values)"
    tol = max(N_SIGMA * fit.stderr, FLOOR)
    if fit.slope > exponent + tol:
        return f"above {name} by more than three standard errors" + (": a disagreement at these sizes" if kind == "upper" else "")
    if fit.slope < exponent - tol:
        return f"below {name} by more than three standard errors" + (": the bound is loose here" if kind == "upper" else "")
    return f"consistent with {name}"


def _to_numpy(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu", torch.float64).numpy()
    return np.asarray(v, dtype=np.float64)


def sweep(fn, values) -> dict:
    """Run ``fn(value)`` for each of ``values`` and stack the results over values.

    ``fn`` returns a dict of per-network results (tensors or arrays of shape (E,) or (E, ...)), possibly nested
    one level (``{kind: {quantity: (E,)}}``). The result has the same keys, each an array of shape
    ``(E, len(values), ...)``: seeds by values, ready for :func:`rnnbook.stats.loglog_slope`.
    """
    values = list(values)
    if not values:
        raise ValueError("sweep needs at least one value")
    rows = [fn(v) for v in values]
    if not isinstance(rows[0], dict):
        raise TypeError(f"fn must return a dict of per-network results, got {type(rows[0]).__name__}")

    def stack(items):
        return np.stack([_to_numpy(x) for x in items], axis=1)

    out = {}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = {q: stack([r[k][q] for r in rows]) for q in v}
        else:
            out[k] = stack([r[k] for r in rows])
    return out


# ----------------------------------------------------------------------------------------------------------
# values glued by other pages (for a page that compares chapters)

def glued_by(page: str) -> dict:
    """The values another page of this build glued, ``{key: value}`` (floats where they parse as numbers).

    ``page`` is a docname such as ``"chapters/forward_stability"``. The build (tools/build_book.py) tells its
    kernels where it writes executed pages (``$RNNBOOK_BUILD_DIR``); the page must have been executed earlier
    in the same build (Sphinx reads pages in the order of their names). Prose should paste values with
    myst-nb's cross-page glue (the ``glue:text`` role with ``page.md::key:s``) instead: this is for computations and figures.
    """
    import json
    import os
    from pathlib import Path

    build = os.environ.get("RNNBOOK_BUILD_DIR")
    if not build:   # a reader's kernel (make lab): the repository's last build of the active profile
        repo = Path(__file__).resolve().parent.parent
        guess = repo / "_build" if _profile() == "full" else repo / "_build" / _profile() / "_build"
        if not (guess / "jupyter_execute").is_dir():
            raise RuntimeError("glued_by() reads the values other pages glued in a build of the book: build it "
                               f"first (make book or make book-quick), or set RNNBOOK_BUILD_DIR to a build's _build "
                               f"folder (looked for {guess})")
        build = str(guess)
    path = Path(build) / "jupyter_execute" / f"{page}.glue.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: page {page!r} has not been executed in this build (yet)")
    out = {}
    for key, cell in json.loads(path.read_text()).items():
        text = cell.get("data", {}).get("text/plain", "")
        try:
            out[key] = float(text)
        except ValueError:
            out[key] = text.strip("'\"")
    return out


# ----------------------------------------------------------------------------------------------------------
# the exercises' self-check

_EXPECTED: dict[str, tuple[float, float, float]] = {}


def expect(label: str, value, *, rtol: float = 0.05, atol: float = 0.0) -> None:
    """Register the book's number for the exercise ``label`` (computed by the chapter, never typed in); it is
    what :func:`check` compares a reader's answer with, within ``rtol`` (relative) or ``atol``."""
    if not isinstance(label, str) or not label:
        raise ValueError(f"label must be the exercise's label, got {label!r}")
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"the expected value of {label} must be a finite number, got {value!r}")
    _EXPECTED[label] = (float(value), checks.real_in("rtol", rtol, 0.0, 1.0), checks.real_in("atol", atol, 0.0, math.inf, high_open=True))


def check(label: str, answer) -> None:
    """Say whether ``answer`` matches the book's number for exercise ``label`` (see :func:`expect`).

    Prints one line and returns nothing (so a notebook shows no stray ``True``/``False``). With ``answer=None``
    -- the state of the static page -- it only says what to do, and shows no number."""
    if label not in _EXPECTED:
        raise KeyError(f"no expected value registered for {label!r}: call rnnbook.book.expect({label!r}, value) first")
    if answer is None:
        print(f"{label}: replace None by your answer and run this cell to check it.")
        return
    if isinstance(answer, torch.Tensor):
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(float(answer)):
        print(f"{label}: the answer must be a finite number, got {answer!r}.")
        return
    value, rtol, atol = _EXPECTED[label]
    if math.isclose(float(answer), value, rel_tol=rtol, abs_tol=atol):
        print(f"{label}: correct.")
    else:
        side = "too large" if float(answer) > value else "too small"
        tol = f"{rtol:.0%}" if atol == 0 else f"{rtol:.0%} or {atol:g}"
        print(f"{label}: not yet -- your answer is {side} (it must agree with the book's value to within {tol}).")
