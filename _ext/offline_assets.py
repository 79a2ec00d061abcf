"""Sphinx extension: keep every page loadable offline, and free of console errors.

* Jupyter Book 1 always enables sphinx-thebe, which writes the address of its JavaScript on a CDN into every
  page (loaded only if a reader starts a live kernel, which this book does not offer). We drop those two
  scripts, and we fail the build if any page would still load a script or stylesheet from the network, so
  that a CDN default sneaking in through an upgrade is caught at build time.
* The vendored widget manager (@jupyter-widgets/html-manager) finds its icon fonts next to the URL that
  RequireJS gives its module, ``@jupyter-widgets/html-manager/dist/...``, which by default is relative to the
  page (three missing fonts on every widget page). A RequireJS ``paths`` entry, per page, points that module
  name at the vendored folder.
* The widget manager typesets widget labels with the MathJax 2 API (``MathJax.Hub.Queue``) whenever a
  ``window.MathJax`` exists, while the book serves MathJax 3: each call threw a TypeError. We give the
  MathJax 3 object a ``Hub.Queue`` that forwards to MathJax 3's ``typesetPromise``, before and after startup.
* The pydata theme logs "Got invalid theme mode" when no default colour mode is configured (Jupyter Book 1
  sets none): we default it to ``auto`` (follow the reader's system setting).
"""
from __future__ import annotations

from sphinx.builders.html._assets import _JavaScript
from sphinx.errors import ExtensionError

REMOTE = ("http://", "https://", "//")


MATHJAX2_QUEUE = """(function () {
  function queue(job) {
    var el = job && job[2];
    if (el && window.MathJax && window.MathJax.typesetPromise) { window.MathJax.typesetPromise([el]).catch(function () {}); }
  }
  var mj = window.MathJax = window.MathJax || {};
  mj.Hub = mj.Hub || {Queue: queue};
  mj.startup = mj.startup || {};
  var ready = mj.startup.ready;
  mj.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = window.MathJax.Hub || {Queue: queue};
  };
})();"""


def _drop_thebe_and_check(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept = []
    for js in scripts:
        name = str(getattr(js, "filename", js) or "")
        body = getattr(js, "attributes", {}).get("body", "") if hasattr(js, "attributes") else ""
        if "sphinx-thebe" in name or "THEBE_JS_URL" in body:
            continue
        if name.startswith(REMOTE):
            raise ExtensionError(f"page {pagename!r} would load the remote script {name}; vendor it instead")
        kept.append(js)
    manager = [i for i, js in enumerate(kept) if "html-manager" in str(getattr(js, "filename", js) or "")]
    if manager:
        folder = context["pathto"]("vendor/html-manager", 1)
        paths = f'require.config({{paths: {{"@jupyter-widgets/html-manager/dist": {folder!r}}}}});'
        kept.insert(manager[0], _JavaScript("", body=paths))  # after require.js, before the manager
    if any("mathjax" in str(getattr(js, "filename", js) or "") for js in kept):
        kept.append(_JavaScript("", body=MATHJAX2_QUEUE))
    scripts[:] = kept
    for css in context.get("css_files", []):
        name = str(getattr(css, "filename", css) or "")
        if name.startswith(REMOTE):
            raise ExtensionError(f"page {pagename!r} would load the remote stylesheet {name}; vendor it instead")


def setup(app):
    app.connect("html-page-context", _drop_thebe_and_check, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
