"""Pages that compare other pages are re-read whenever any page is.

The synthesis page computes its verdicts from the values the chapters glued in the same build
(``rnnbook.book.glued_by``). Sphinx re-reads only changed sources, so after a chapter is re-executed the
synthesis page would keep verdicts computed from the chapter's old values. Listing it in
``rnnbook_compare_pages`` (a docname list in the Sphinx config) makes Sphinx re-read it, after the others
(pages are read in the order of their names, and the page says it must execute every time:
``mystnb: execution_mode: force`` in its front matter).
"""


def _also_outdated(app, env, added, changed, removed):
    pages = [p for p in app.config.rnnbook_compare_pages if p in env.found_docs]
    if (added | changed | removed) - set(pages):
        return [p for p in pages if p not in added]
    return []


def setup(app):
    app.add_config_value("rnnbook_compare_pages", [], "env")
    app.connect("env-get-outdated", _also_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
