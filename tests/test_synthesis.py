"""rnnbook.synthesis: the verdicts of the synthesis page, its reading of other pages' glue, the constants."""
import json
import math
import re
from pathlib import Path

import pytest

from rnnbook import paper, synthesis
from rnnbook.synthesis import Row, compare

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("slope, err, pred, side, status", [
    (0.45, 0.05, 1.0, "above", "loose"),           # an upper bound in m, measured well below it
    (1.40, 0.05, 1.0, "above", "contradicted"),    # ... and well above it
    (1.08, 0.05, 1.0, "above", "tight"),           # within 3 standard errors
    (-1.6, 0.05, -2.0, "below", "loose"),          # iterations <= C delta^-2 as delta -> 0: slope below -2 breaks it
    (-2.4, 0.05, -2.0, "below", "contradicted"),
    (0.6, 0.05, 0.0, "below", "loose"),            # a lower bound flat in m, measured growing
    (-0.47, 0.1, -0.5, None, "matches"),
    (0.3, 0.3, 0.0, "above", "unresolved"),        # within 3 errors, but they span +-0.9: no verdict
    (-0.3, 0.3, -0.5, None, "unresolved"),
    (-0.9, 0.1, -0.5, None, "differs"),
    (0.01, math.nan, 0.0, "above", "tight"),       # no bootstrap: only the floor
    (0.1, math.nan, 0.0, "above", "contradicted"),
    (math.nan, math.nan, 0.0, "above", "not fitted"),
])
def test_compare_classifies_by_side_and_three_standard_errors(slope, err, pred, side, status):
    assert compare(slope, err, pred, side).status == status


def test_compare_reports_the_gap_and_rejects_bad_input():
    c = compare(0.5, 0.05, 3.0, "above")
    assert c.status == "loose" and c.gap == pytest.approx(-2.5)
    assert c.text == "loose by 2.50 ± 0.05"
    assert compare(1.4, 0.05, 1.0, "above").text == "contradicted (0.40 ± 0.05 above)"
    assert compare(0.3, 0.3, 0.0, "above").text == "unresolved (± 0.900 at three standard errors)"
    with pytest.raises(ValueError, match="contradicted_by"):
        compare(0.5, 0.1, 0.0, "sideways")
    with pytest.raises(ValueError, match="err"):
        compare(0.5, -0.1, 0.0, "above")
    with pytest.raises(ValueError, match="predicted"):
        compare(0.5, 0.1, math.inf, "above")
    with pytest.raises(ValueError, match="contradicted_by"):
        Row("Lemma X", "page", "key", "m", 0.0, "up")


def _fake_build(tmp_path, page, values):
    folder = tmp_path / "jupyter_execute" / "chapters"
    folder.mkdir(parents=True, exist_ok=True)
    cells = {k: {"data": {"text/plain": repr(v)}} for k, v in values.items()}
    (folder / f"{page}.glue.json").write_text(json.dumps(cells))


def test_measure_reads_the_glued_fit_and_a_glued_prediction(tmp_path, monkeypatch):
    _fake_build(tmp_path, "one", {"a_exp": 0.5, "a_exp_err": 0.02, "bound_exp": -0.3, "label": "text"})
    monkeypatch.setenv("RNNBOOK_BUILD_DIR", str(tmp_path))
    rows = [Row("Lemma A", "one", "a_exp", "m", 3.0, "above"), Row("Lemma B", "one", "a_exp", "m", "bound_exp", "above")]
    got = synthesis.measure(rows)
    assert [g.comparison.status for g in got] == ["loose", "contradicted"]
    assert got[1].predicted == pytest.approx(-0.3) and got[0].slope == pytest.approx(0.5)
    with pytest.raises(KeyError, match="glued no 'missing'"):
        synthesis.measure([Row("Lemma C", "one", "missing", "m", 0.0, "above")])
    with pytest.raises(TypeError, match="as text"):
        synthesis.measure([Row("Lemma D", "one", "a_exp", "m", "label", "above")])
    with pytest.raises(FileNotFoundError, match="has not been executed"):
        synthesis.measure([Row("Lemma E", "two", "a_exp", "m", 0.0, "above")])


def test_constants_are_the_powers_of_rho_and_varrho():
    n, L, d, delta, m, eps = 4, 5, 1, 0.2, 512, 0.01
    table = {where: v for where, _, v in synthesis.constants(n, L, d, delta, m, eps)}
    r, v = paper.rho(n, L, d, m), paper.varrho(n, L, d, delta, m, eps)
    assert table["rho itself"] == pytest.approx(math.log10(n * L * d * math.log(m)))
    assert table["Theorem 1, step size times m"] == pytest.approx(math.log10(paper.thm1_step_size(delta, r, m) * m))
    assert table["Theorem 2, step size times m"] == pytest.approx(math.log10(paper.thm2_step_size(delta, r, m) * m))
    assert table["Theorems 5 and 3, lower bound"] == pytest.approx(math.log10(paper.thm5_lower(delta, r)))
    assert table["Theorem 1, iterations"] == pytest.approx(math.log10(paper.thm1_min_iterations(delta, r, eps)))
    eta = paper.thm1_step_size(delta, r, m)
    assert table["Appendix H, rate per step"] == pytest.approx(math.log10(paper.thm1_rate(eta, delta, m, r)))
    assert table["Theorems 1 and 2, distance travelled"] == pytest.approx(50 * math.log10(v))


def test_the_synthesis_table_and_its_rows_agree():
    """Row i of the page's table pastes the key of ROWS[i] from the same page, next to the prediction and the
    verdict computed for ROWS[i], and links that page: the table and the verdicts describe one measurement."""
    text = (ROOT / "chapters" / "synthesis.md").read_text()
    rows = re.findall(r'Row\("[^"]+", "(\w+)", "(\w+)", "[^"]+", [^,]+, (?:None|"above"|"below")\)', text)
    table = re.findall(r"^\| (\d+) \|.*\| \{glue:text\}`syn_(\d+)_pred` \| \{glue:text\}`(\w+)\.md::(\w+)_pm:s` \| "
                       r"\{glue:text\}`syn_(\d+)_verdict` \| \{doc\}`(\w+)` \|$", text, flags=re.M)
    assert len(rows) == len(table) > 20
    for i, ((page, key), (num, pnum, tpage, tkey, vnum, link)) in enumerate(zip(rows, table), 1):
        assert int(num) == int(pnum) == int(vnum) == i
        assert (page, key) == (tpage, tkey) and link == page, f"row {i}: table {tpage}::{tkey}, ROWS {page}::{key}"
