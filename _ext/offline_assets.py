"""Sphinx extension: keep every page loadable offline.

Jupyter Book 1 always enables sphinx-thebe, which writes the address of its JavaScript on a CDN into every
page (loaded only if a reader starts a live kernel, which this book does not offer). We drop those two
scripts, and we fail the build if any page would still load a script or stylesheet from the network, so
that a CDN default sneaking in through an upgrade is caught at build time.
"""
from __future__ import annotations

from sphinx.errors import ExtensionError

REMOTE = ("http://", "https://", "//")


def _drop_thebe_and_check(app, pagename, templatename, context, doctree):
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
    scripts[:] = kept
    for css in context.get("css_files", []):
        name = str(getattr(css, "filename", css) or "")
        if name.startswith(REMOTE):
            raise ExtensionError(f"page {pagename!r} would load the remote stylesheet {name}; vendor it instead")


def setup(app):
    app.connect("html-page-context", _drop_thebe_and_check, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
