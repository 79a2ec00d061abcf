"""Build the whole book as CI and readers do: strict (-W -n), every chapter executed (quick profile),
fresh execution cache, and check that the HTML renders offline from the vendored assets."""
import re
import time
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CDN_HOSTS = ("cdn.jsdelivr", "cdnjs.cloudflare", "unpkg.com", "polyfill.io", "ajax.googleapis")


from conftest import toc_files  # noqa: E402  (the quick build itself is the session fixture `html`)


@pytest.mark.book
def test_every_chapter_is_built_and_executed(html):
    for f in toc_files():
        page = html / f"{f}.html"
        assert page.exists(), f"{page} missing"
        text = page.read_text()
        assert "Traceback" not in text, f"{f}: an executed cell shows a traceback"
    reports = html / "reports"
    assert not list(reports.glob("*.err.log")) if reports.exists() else True


@pytest.mark.book
def test_pages_use_only_vendored_assets(html):
    # every page of the book (theme templates shipped under _static/ are not pages)
    for page in (p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts):
        text = page.read_text()
        for host in CDN_HOSTS:
            assert host not in text, f"{page.relative_to(html)} references {host}"
        for src in re.findall(r'<script[^>]*src="([^"]+)"', text):
            if src.startswith(("http:", "https:", "//")):
                pytest.fail(f"{page.relative_to(html)} loads a remote script {src}")
            target = (page.parent / src.split("?")[0]).resolve()
            assert target.exists(), f"{page.relative_to(html)}: script {src} does not exist in the build"


@pytest.mark.book
def test_math_is_served_by_vendored_mathjax(html):
    page = (html / "chapters" / "model_and_data.html").read_text()
    assert "vendor/mathjax/tex-mml-chtml.js" in page
    assert (html / "vendor" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


@pytest.mark.book
def test_widget_state_is_embedded_for_the_static_page(html):
    pages_with_widgets = [p for p in html.rglob("*.html") if "application/vnd.jupyter.widget-view+json" in p.read_text()]
    assert pages_with_widgets, "no chapter embeds a widget view"
    for page in pages_with_widgets:
        text = page.read_text()
        assert "application/vnd.jupyter.widget-state+json" in text, f"{page.name}: widget view without its state"
        assert "vendor/html-manager/embed-amd.js" in text and "vendor/requirejs/require.js" in text


HUNG_PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A page whose second cell never returns

```{code-cell} ipython3
x = 1
```

```{code-cell} ipython3
import time
time.sleep(3600)  # the hung cell
```
"""


@pytest.mark.book
def test_a_hung_cell_fails_the_build_fast_and_names_the_page(tmp_path):
    """tools/build_book.py with a short per-cell timeout on a tiny book whose cell hangs: the build must fail
    within seconds of the timeout, and its message must name the page and show the cell."""
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text("title: hang\nexecute:\n  execute_notebooks: force\n  timeout: 3600\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: stuck\n")
    (book / "index.md").write_text("# Index\n")
    (book / "stuck.md").write_text(HUNG_PAGE)
    code = ("import sys; sys.path.insert(0, 'tools'); from pathlib import Path; import build_book as b; "
            f"sys.exit(b.build('quick', Path({str(tmp_path / 'out')!r}), [], root=Path({str(book)!r}), cell_timeout=5))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0, "a hung cell must fail the build"
    assert elapsed < 90, f"the build took {elapsed:.0f} s to notice a cell that timed out after 5 s"
    assert "executing page 'stuck' failed: a cell timed out" in proc.stderr
    assert "time.sleep(3600)" in proc.stderr  # the cell is shown
