"""Sphinx extension: offer every executed chapter as a notebook (.ipynb, with its outputs) from the page, and
say on the page how to run it.

myst-nb writes each executed page to ``<build>/jupyter_execute/<page>.ipynb``. We copy those notebooks next to
the page sources (``_sources/<page>.ipynb``) and tell sphinx-book-theme about them (``ipynb_source``), so the
download menu of every chapter offers ``.ipynb`` besides the MyST source. Below the title of every such page
goes a short note: the notebook link and the two commands that give it a kernel with ``rnnbook``
(``repository.url`` of ``_config.yml`` names the repository once). Pages that run no code (the API page, the
bibliography) have no notebook and get neither.
"""
from __future__ import annotations

import shutil
from pathlib import Path

OUTPUT_FOLDER = "jupyter_execute"  # myst-nb's folder for executed notebooks, next to the HTML output


def _executed(app) -> Path:
    return Path(app.outdir).parent / OUTPUT_FOLDER


NOTE = """<div class="admonition note run-this-chapter">
<p class="admonition-title">Run this chapter</p>
<p>Download <a class="reference download" href="{href}" download>the executed notebook (.ipynb)</a>, or open this
page's source. It imports the book's support package, <code>rnnbook</code>: clone <a class="reference external"
href="{repo}">the repository</a>, then <code>make lab</code> installs everything (Python 3.11) and opens the
chapters in JupyterLab. The figures and numbers on this page were computed when the book was built.</p>
</div>"""


def _offer_notebook(app, pagename, templatename, context, doctree):
    if not (_executed(app) / f"{pagename}.ipynb").exists():
        return
    context["ipynb_source"] = f"{pagename}.ipynb"
    body = context.get("body", "")
    end = body.find("</h1>")
    if end >= 0:
        repo = app.config.html_theme_options.get("repository_url", "") or "#"
        href = f"{context['pathto']('_sources', 1)}/{pagename}.ipynb"
        context["body"] = body[: end + 5] + NOTE.format(href=href, repo=repo) + body[end + 5:]


def _with_outputs(app, path: Path):
    """The executed notebook at ``path``, with its outputs. When a page is taken from the execution cache,
    myst-nb writes the notebook *without* outputs; they are then merged back from jupyter-cache."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.get("cell_type") == "code"]
    if not code or any(c.get("outputs") for c in code):
        return None  # nothing to merge: copy the file as it is
    cache_path = getattr(app.env.mystnb_config, "execution_cache_path", None)
    if not cache_path or not Path(cache_path).exists():
        return None
    from jupyter_cache import get_cache

    try:
        _, merged = get_cache(cache_path).merge_match_into_notebook(nb)
    except KeyError:
        return None
    return merged


def _copy_notebooks(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    import nbformat

    src = _executed(app)
    for nb in src.rglob("*.ipynb") if src.exists() else []:
        target = Path(app.outdir) / "_sources" / nb.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        merged = _with_outputs(app, nb)
        if merged is None:
            shutil.copyfile(nb, target)
        else:
            nbformat.write(merged, target)


def setup(app):
    # before sphinx-book-theme builds its download buttons (priority 501)
    app.connect("html-page-context", _offer_notebook, priority=400)
    app.connect("build-finished", _copy_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
