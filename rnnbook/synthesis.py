"""The synthesis page: every measured exponent of the book beside the exponent its bound predicts.

A :class:`Row` names a result of the paper, the page that measured it, the glue key of the fitted exponent on
that page (the page glued ``key`` and ``key + "_err"`` with :func:`rnnbook.book.glue_fit`) and what the bound
says about that exponent. :func:`compare` turns a measurement into a verdict with the thresholds of
:func:`rnnbook.book.verdict`; :func:`measure` reads the values from the pages of the current build
(:func:`rnnbook.book.glued_by`), so the synthesis cannot drift from the chapters; :func:`constants` evaluates
the powers of rho and varrho that the theorems carry, at given sizes.

Which side of a predicted exponent contradicts a bound depends on the bound and on where its variable goes:

* ``"above"``: an upper bound ``q <= C x^p`` as x grows (a measured slope above p eventually breaks it), or a
  lower bound ``q >= C x^p`` as x shrinks (``delta -> 0``);
* ``"below"``: a lower bound as x grows, or an upper bound as x shrinks (``T <= C delta^-2``);
* ``None``: a predicted trend (a heuristic, or the exact rate of a limit), matched or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import checks, paper
from .book import FLOOR, N_SIGMA, format_with_error, glued_by

SIDES = ("above", "below", None)

#: A measurement within N_SIGMA standard errors of the prediction says the bound is tight only when those three
#: standard errors are at most RESOLUTION; wider, it is "unresolved" (it cannot tell tight from loose).
RESOLUTION = 0.5


@dataclass(frozen=True)
class Row:
    """One measured result: ``result`` ("Lemma B.3"), the ``page`` (a docname under ``chapters/``) and the glue
    ``key`` of its fitted exponent, the ``variable`` it is fitted against, the ``predicted`` exponent (a number,
    or the glue key of a number on the same page when the prediction depends on the sizes, as with a bound
    that carries ``log m``), and ``contradicted_by`` (see the module's docstring)."""
    result: str
    page: str
    key: str
    variable: str
    predicted: float | str
    contradicted_by: str | None

    def __post_init__(self):
        checks.choice("contradicted_by", self.contradicted_by, SIDES)
        if not isinstance(self.predicted, (int, float, str)) or isinstance(self.predicted, bool):
            raise TypeError(f"predicted must be a number or a glue key, got {self.predicted!r}")

    @property
    def name(self) -> str:
        """A short identifier for glue keys: the page and the key."""
        return f"{self.page}:{self.key}"


@dataclass(frozen=True)
class Comparison:
    """The verdict of one row: ``status`` is "tight", "loose", "contradicted", "unresolved" (bounds), "matches" or
    "differs" (trends), or "not fitted"; ``gap`` is measured minus predicted exponent, with ``gap_err`` its standard
    error (the measurement's; the prediction is exact; NaN when the fit had no bootstrap)."""
    status: str
    gap: float
    gap_err: float

    @property
    def text(self) -> str:
        """The verdict as a table cell: "tight", "loose by 2.5 ± 0.1", "contradicted (0.30 ± 0.05 above)"."""
        if self.status == "not fitted":
            return "not fitted"
        size = format_with_error(abs(self.gap), self.gap_err)
        if self.status == "loose":
            return f"loose by {size}"
        if self.status == "contradicted":
            return f"contradicted ({size} {'above' if self.gap > 0 else 'below'})"
        if self.status == "differs":
            return f"differs by {size}"
        if self.status == "unresolved":
            return f"unresolved (± {format_with_error(N_SIGMA * self.gap_err, math.nan)} at three standard errors)"
        return self.status


def compare(slope: float, err: float, predicted: float, contradicted_by: str | None) -> Comparison:
    """The verdict on a measured exponent ``slope ± err`` against a bound's exponent ``predicted``.

    Within ``max(N_SIGMA * err, FLOOR)`` of the prediction the bound is "tight" (a trend "matches"), or
    "unresolved" when ``N_SIGMA * err`` exceeds :data:`RESOLUTION`; beyond it on the side ``contradicted_by`` the
    measurement "contradicts" it, on the other side the bound is "loose". With
    ``contradicted_by=None`` the prediction is a trend, which a measurement "matches" or "differs" from. A NaN
    slope (nothing to fit) is "not fitted"."""
    checks.choice("contradicted_by", contradicted_by, SIDES)
    slope, err, predicted = float(slope), float(err), float(predicted)
    if not math.isfinite(predicted):
        raise ValueError(f"predicted must be a finite exponent, got {predicted}")
    if math.isnan(slope):
        return Comparison("not fitted", math.nan, math.nan)
    if math.isnan(err):         # a fit without a bootstrap (one pooled series): only the floor applies
        tol = FLOOR
    elif err >= 0:
        tol = max(N_SIGMA * err, FLOOR)
    else:
        raise ValueError(f"err must be a standard error >= 0 (or NaN when there is none), got {err}")
    gap = slope - predicted
    if abs(gap) <= tol:
        if N_SIGMA * err > RESOLUTION:       # NaN compares False: a floor-only fit is resolved
            return Comparison("unresolved", gap, err)
        return Comparison("matches" if contradicted_by is None else "tight", gap, err)
    if contradicted_by is None:
        return Comparison("differs", gap, err)
    against = (gap > 0) == (contradicted_by == "above")
    return Comparison("contradicted" if against else "loose", gap, err)


@dataclass(frozen=True)
class Measured:
    """A row with its measurement (``slope ± err``), the predicted exponent and the verdict."""
    row: Row
    slope: float
    err: float
    predicted: float
    comparison: Comparison


def measure(rows: list[Row]) -> list[Measured]:
    """Each row's fitted exponent and prediction as glued by its page in the current build, and the verdict.

    Raises a KeyError naming the page and key when a page did not glue what a row expects."""
    pages: dict[str, dict] = {}
    out = []
    for row in rows:
        if not isinstance(row, Row):
            raise TypeError(f"rows must be rnnbook.synthesis.Row, got {type(row).__name__}")
        if row.page not in pages:
            pages[row.page] = glued_by(f"chapters/{row.page}")
        values = pages[row.page]

        def number(key):
            if key not in values:
                raise KeyError(f"page chapters/{row.page} glued no {key!r} in this build")
            v = values[key]
            if isinstance(v, str):
                raise TypeError(f"chapters/{row.page}: {key!r} is glued as text ({v!r}), not as a number")
            return float(v)

        slope, err = number(row.key), number(f"{row.key}_err")
        predicted = number(row.predicted) if isinstance(row.predicted, str) else float(row.predicted)
        out.append(Measured(row, slope, err, predicted, compare(slope, err, predicted, row.contradicted_by)))
    return out


def constants(n: int, L: int, d: int, delta: float, m: int, eps: float) -> list[tuple[str, str, float]]:
    """The powers of rho = nLd log m and varrho = nLd delta^-1 log(m/eps) that the paper's results carry, as
    ``(where, formula, log10 of the value)``, at the given sizes (values overflow floats, hence log10)."""
    r = paper.rho(n, L, d, m)
    v = paper.varrho(n, L, d, delta, m, eps)
    lr, lv = math.log10(r), math.log10(v)
    ld = math.log10(delta)
    return [
        ("rho itself", "ρ = nLd log m", lr),
        ("varrho itself", "ϱ = nLd δ⁻¹ log(m/ε)", lv),
        ("Theorem 3, upper bound", "ρ¹²", 12 * lr),
        ("Theorems 5 and 3, lower bound", "δ/ρ¹⁴", ld - 14 * lr),
        ("Theorem 4, linear term", "ρ¹¹ (times τ₀^{1/3} m^{1/3})", 11 * lr),
        ("Appendix H, rate per step", "ηδm/ρ¹⁵ with η = δ/(ρ⁴⁴m)", 2 * ld - 59 * lr),
        ("Theorem 1, step size times m", "ηm = δ/ρ⁴⁴", ld - 44 * lr),
        ("Theorem 2, step size times m", "ηm = δ/ρ⁴²", ld - 42 * lr),
        ("Theorem 1, iterations", "ρ⁵⁹ δ⁻² log(1/ε)", 59 * lr - 2 * ld + math.log10(math.log(1 / eps))),
        ("Theorems 1 and 2, distance travelled", "√m‖W_T − W₀‖_F ≤ ϱ⁵⁰", 50 * lv),
        ("Theorem 3, radius", "√m‖W′‖₂ ≤ ϱ¹⁰⁰", 100 * lv),
    ]
