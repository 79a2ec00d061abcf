"""rnnbook.paper: the paper's constants, computed in one place (and typed nowhere else)."""
import math
import re
from pathlib import Path

import pytest

from rnnbook import paper

ROOT = Path(__file__).resolve().parent.parent


def test_shorthands_and_thresholds():
    assert paper.rho(4, 6, 1, 1024) == pytest.approx(24 * math.log(1024))
    assert paper.varrho(4, 6, 1, 0.5, 1024, 0.01) == pytest.approx(48 * math.log(1024 / 0.01))
    assert paper.b6_threshold(10, 256) == pytest.approx(1 / (2e6 * 100 * math.log(256) ** 3))
    assert paper.b9_delta_max(10, 256) == pytest.approx(2 * paper.b6_threshold(10, 256))
    assert paper.b3_upper(0) == 4 and paper.b3_g_upper(3) == 20 and paper.b3_lower(0, 7) == 1
    assert paper.d7_fraction(2, 5) == pytest.approx(0.05)
    assert paper.d2_fraction(paper.beta_minus(0.5, 10.0), 4) == pytest.approx(0.5 / 1e10 / 256)


def test_theorem_step_sizes_and_iterations():
    r = paper.rho(4, 6, 1, 1024)
    assert paper.thm1_step_size(0.1, r, 1024) == pytest.approx(0.1 / (r ** 44 * 1024))
    lo, hi = paper.thm1_iterations(0.1, r, 100.0, 0.01)
    assert lo == pytest.approx(r ** 59 / 0.01 * math.log(100)) and hi == pytest.approx(lo * 100.0 ** 28)
    lo2, _ = paper.thm2_iterations(0.1, r, 100.0, 0.01)
    assert lo2 == pytest.approx(lo / r ** 2)
    assert paper.thm1_contraction(1e-3, 0.1, 100, 2.0) == pytest.approx(1 - 1e-3 * 0.1 * 100 / 2 ** 15)
    assert paper.thm2_growth(1e-3, 100, 2.0) == pytest.approx(1 + 2 ** 12 * 0.1)


def test_the_books_step_size_is_labelled_and_separate():
    assert paper.book_step_size(256, 4, 8) == pytest.approx(paper.BOOK_STEP_C / (256 * 4 * 8))
    assert "NOT THE PAPER'S" in Path(paper.__file__).read_text()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="delta"):
        paper.varrho(4, 6, 1, 0.0, 1024, 0.01)
    with pytest.raises(ValueError, match="eps"):
        paper.thm1_iterations(0.1, 10.0, 10.0, 1.5)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        paper.rho(4, 6, 1, 0)
    with pytest.raises(ValueError, match="tau0"):
        paper.c2_flip_bound(4, -1.0, 100)


#: Literal forms of the paper's constants that must not be typed outside rnnbook/paper.py.
TYPED = [r"\b[12]e6\s*\*", r"\*\*\s*4[24]\b", r"\*\*\s*5[79]\b", r"0\.2\s*/\s*\(", r"\blog\(m\)\s*\*\*\s*3"]


def test_no_chapter_test_or_module_types_the_papers_constants():
    files = [p for p in (ROOT / "rnnbook").glob("*.py") if p.name != "paper.py"]
    files += list((ROOT / "chapters").glob("*.md")) + [ROOT / "intro.md"]
    files += [p for p in (ROOT / "tests").glob("*.py") if p.name != "test_paper.py"]
    for path in files:
        text = path.read_text()
        code = "\n".join(re.findall(r"```\{code-cell\}.*?\n(.*?)```", text, re.S)) if path.suffix == ".md" else text
        for pattern in TYPED:
            hit = re.search(pattern, code)
            assert hit is None, f"{path.relative_to(ROOT)} types a constant of the paper ({hit.group(0)!r}): use rnnbook.paper"
