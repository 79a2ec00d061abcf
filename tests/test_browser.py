"""Every page of the quick build in a real browser (headless Chromium), at desktop and phone width.

Fails on a console error, a failed or off-host request, a MathJax error, a display formula wider than its
box at 1400 px (or, at 400 px, one that cannot be scrolled sideways), an explorer whose picture does not
change when a control moves, and a chapter page without a working .ipynb download. The checks themselves are
tested on deliberately broken pages (test_the_checks_catch_a_broken_page), so they can fail.
"""
import os
from pathlib import Path

import pytest

import browser
from conftest import toc_files

pytestmark = pytest.mark.book


@pytest.fixture(autouse=True)
def _chromium():
    """The browser is the distribution's Chromium. CI installs it (.ci/run) and sets RNNBOOK_REQUIRE_BROWSER, so
    there a missing browser fails; on a reader's machine without it the test is skipped, saying how to get it."""
    if browser.chromium_path() is None:
        msg = "no Chromium found: apt-get install chromium (Debian/Ubuntu), or set RNNBOOK_CHROMIUM to a Chromium binary"
        if os.environ.get("RNNBOOK_REQUIRE_BROWSER"):
            pytest.fail(msg)
        pytest.skip(msg)


def _problems(rep: dict, *, chapter_has_code: bool, explore_expected: bool) -> list[str]:
    out = []
    where = f"{rep['page']} at {rep['width']} px"
    out += [f"{where}: console error: {c}" for c in rep["console"]]
    out += [f"{where}: failed request: {f}" for f in rep["failed"]]
    out += [f"{where}: off-host request: {u}" for u in rep["offhost"]]
    math = rep["math"] or {}
    if math.get("errors"):
        out.append(f"{where}: {math['errors']} MathJax errors")
    for w in math.get("wide", []):
        if rep["width"] >= 1000 or not w["scrollable"]:
            out.append(f"{where}: display formula {w['width']} px wide in a {w['box']} px box: {w['tex']!r}")
    for e in rep["explorers"]:
        if not e["controls"]:
            out.append(f"{where}: explorer {e['explorer']} has no controls")
        for i, changed in enumerate(e["controls"]):
            if not changed:
                out.append(f"{where}: explorer {e['explorer']}: moving control {i} does not change the figure")
    if rep["width"] >= 1000 and explore_expected and not rep["explorers"]:
        out.append(f"{where}: the page has an Explore section but no static explorer")
    if rep["width"] >= 1000 and chapter_has_code:
        if not rep["ipynb_links"]:
            out.append(f"{where}: no .ipynb download")
        out += [f"{where}: {bad}" for bad in rep["ipynb"] if bad]
    return out


def test_every_page_in_the_browser(html):
    root = Path(__file__).resolve().parent.parent
    pages = toc_files()
    reports = browser.run(html, [f"{p}.html" for p in pages], widths=(1400, 400))
    problems = []
    for rep in reports:
        src = (root / rep["page"]).with_suffix(".md").read_text()
        problems += _problems(rep, chapter_has_code="{code-cell}" in src,
                              explore_expected="\n## Explore" in src)
    assert not problems, "\n".join(problems)


BROKEN = """<!doctype html><html><head>
<script>console.error("a deliberate console error");</script>
<script src="https://cdn.example.org/remote.js"></script>
</head><body><h1>Broken</h1>
<div style="width:200px"><mjx-container display="true"><mjx-math style="display:inline-block;width:900px">x</mjx-math></mjx-container></div>
<img src="missing.png">
<div class="rnnbook-explorer"><div class="widget-dropdown"><select><option>a</option><option>b</option></select></div>
<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="></div>
</body></html>"""


def test_the_checks_catch_a_broken_page(tmp_path):
    """A page with a console error, a remote script, a missing image, an over-wide formula and an explorer
    whose control changes nothing: every one of them must be reported."""
    (tmp_path / "broken.html").write_text(BROKEN)
    (rep,) = browser.run(tmp_path, ["broken.html"], widths=(1400,))
    found = "\n".join(_problems(rep, chapter_has_code=True, explore_expected=True))
    assert "a deliberate console error" in found
    assert "off-host request: https://cdn.example.org/remote.js" in found
    assert "missing.png" in found
    assert "display formula 900 px wide in a 200 px box" in found
    assert "moving control 0 does not change the figure" in found
    assert "no .ipynb download" in found

