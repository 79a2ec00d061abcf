"""A reader's browser on the built book: headless Chromium (Playwright) against a local server.

Used by tests/test_browser.py and by hand (``.venv/bin/python tests/browser.py _build/quick/_build/html``
prints what it finds on every page). Every request that does not go to the local server is blocked and
recorded. For each page it reports:

* console errors and uncaught exceptions, failed requests, off-host requests;
* MathJax: whether it typeset, TeX errors (``mjx-merror``), display formulas wider than their box;
* explorers (``.rnnbook-explorer``): whether the shown picture changes when each control is moved;
* the ``.ipynb`` download of a chapter page: its link, and whether the file is a notebook with outputs.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path


def chromium_path() -> str | None:
    """Debian's chromium (or ``$RNNBOOK_CHROMIUM``)."""
    env = os.environ.get("RNNBOOK_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


@contextmanager
def serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


VISIBLE_IMAGES = """(box) => [...box.querySelectorAll('img')].filter(i => i.offsetParent !== null).map(i => i.src)"""

MATH_REPORT = """async () => {
  const mj = window.MathJax;
  const present = !!(mj && mj.startup);
  if (present) {
    await mj.startup.promise;
    if (mj.typesetPromise) { await mj.typesetPromise(); }
  }
  const wide = [];
  for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
    const math = c.querySelector('mjx-math');
    if (!math || c.offsetParent === null) continue;
    const box = c.parentElement.getBoundingClientRect().width;
    const w = math.getBoundingClientRect().width;
    const style = getComputedStyle(c);
    if (w > box + 1) {
      wide.push({tex: (c.getAttribute('aria-label') || c.textContent || '').slice(0, 80), width: Math.round(w),
                 box: Math.round(box), scrollable: ['auto', 'scroll'].includes(style.overflowX)});
    }
  }
  return {present: present, containers: document.querySelectorAll('mjx-container').length,
          errors: document.querySelectorAll('mjx-merror').length, wide: wide};
}"""


def _move_control(page, box, index: int) -> bool:
    """Move control ``index`` of an explorer one step; returns False if it has no such control."""
    sliders = box.query_selector_all(".widget-slider .noUi-handle, .widget-hslider .noUi-handle")
    selects = box.query_selector_all(".widget-dropdown select")
    controls = [("slider", s) for s in sliders] + [("select", s) for s in selects]
    if index >= len(controls):
        return False
    kind, el = controls[index]
    if kind == "slider":
        el.focus()
        now = el.get_attribute("aria-valuenow")
        top = el.get_attribute("aria-valuemax")
        page.keyboard.press("ArrowLeft" if now is not None and now == top else "ArrowRight")
    else:
        n = len(el.query_selector_all("option"))
        current = el.evaluate("s => s.selectedIndex")
        el.select_option(index=(current + 1) % n)
    page.wait_for_timeout(300)
    return True


def check_page(page, base: str, rel: str, *, width: int, explorers: bool) -> dict:
    """Load one page at ``width`` px and return what a reader would meet."""
    report = {"page": rel, "console": [], "failed": [], "offhost": [], "explorers": [], "math": None}
    page.set_viewport_size({"width": width, "height": 1000})
    page.on("console", lambda m: report["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: report["console"].append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: report["failed"].append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: report["failed"].append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            report["offhost"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(f"{base}/{rel}", wait_until="load")
    page.wait_for_timeout(1500)  # the widget manager renders after load
    report["math"] = page.evaluate(MATH_REPORT)
    if explorers:
        for k, box in enumerate(page.query_selector_all(".rnnbook-explorer")):
            box.scroll_into_view_if_needed()
            entry = {"explorer": k, "controls": [], "images": len(page.evaluate(VISIBLE_IMAGES, box))}
            i = 0
            while True:
                before = page.evaluate(VISIBLE_IMAGES, box)
                if not _move_control(page, box, i):
                    break
                after = page.evaluate(VISIBLE_IMAGES, box)
                entry["controls"].append(bool(after) and after != before)
                i += 1
            report["explorers"].append(entry)
    links = page.evaluate("""() => [...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')
                             .filter(h => h.endsWith('.ipynb'))""")
    report["ipynb_links"] = sorted(set(links))
    page.unroute("**/*")
    return report


def ipynb_ok(html: Path, page_rel: str, link: str) -> str | None:
    """None if ``link`` (relative to the page) is a notebook with outputs, else what is wrong."""
    target = (html / page_rel).parent / link
    try:
        target = target.resolve()
        nb = json.loads(target.read_text())
    except (OSError, ValueError) as err:
        return f"{link}: not a readable notebook ({err})"
    cells = nb.get("cells", [])
    if not any(c.get("cell_type") == "code" for c in cells):
        return f"{link}: has no code cells"
    if not any(c.get("outputs") for c in cells if c.get("cell_type") == "code"):
        return f"{link}: has no outputs (not the executed notebook)"
    return None


def run(html: Path, pages: list[str], *, widths=(1400,), explorers_at=(1400,)) -> list[dict]:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("the browser test needs Chromium: `apt-get install chromium` (Debian), or set RNNBOOK_CHROMIUM")
    out = []
    with serve(html) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            for rel in pages:
                for w in widths:
                    ctx = browser.new_context()
                    page = ctx.new_page()
                    rep = check_page(page, base, rel, width=w, explorers=w in explorers_at)
                    rep["width"] = w
                    rep["ipynb"] = [ipynb_ok(html, rel, link) for link in rep["ipynb_links"]]
                    out.append(rep)
                    ctx.close()
        finally:
            browser.close()
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1])
    pages = sys.argv[2:] or sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                                   if "_static" not in p.parts and p.name not in ("search.html", "genindex.html"))
    for rep in run(root, pages, widths=(1400, 400)):
        print(json.dumps(rep, indent=1))
