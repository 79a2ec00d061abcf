"""Sphinx extension: ``{book-exec-table}``, the execution times of the book's pages in the order of the book.

myst-nb's ``nb-exec-table`` lists pages alphabetically and marks success with an emoji that shows as an
empty box where no emoji font is installed. This table reads the same execution data (myst-nb's metadata
collector) but lists the pages in the order of ``_toc.yml``, says "ok" or "failed" in words, and ends with
the total run time. (A page taken from the execution cache shows the time of the run that produced it.)
"""
from __future__ import annotations

import posixpath
from pathlib import Path

import yaml
from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.addnodes import pending_xref
from sphinx.transforms.post_transforms import SphinxPostTransform


class BookExecTableNode(nodes.General, nodes.Element):
    pass


class BookExecTable(Directive):
    has_content = False

    def run(self):
        return [BookExecTableNode()]


def _toc_order(app) -> list[str]:
    path = Path(getattr(app.config, "external_toc_path", "") or Path(app.srcdir) / "_toc.yml")
    if not path.is_absolute():
        path = Path(app.srcdir) / path
    try:
        toc = yaml.safe_load(path.read_text())
    except (OSError, ValueError):
        return []
    order = [toc.get("root", "")]
    for part in toc.get("parts", []) or [{"chapters": toc.get("chapters", [])}]:
        order += [c["file"] for c in part.get("chapters", [])]
    return [str(Path(f).with_suffix("")) for f in order]


def _row(cells):
    row = nodes.row()
    for c in cells:
        entry = nodes.entry()
        entry += c if isinstance(c, nodes.Node) else nodes.paragraph(text=str(c))
        row += entry
    return row


class BookExecTableTransform(SphinxPostTransform):
    default_priority = 8  # before the reference resolvers

    def run(self, **kwargs):
        from myst_nb.sphinx_ import NbMetadataCollector

        for node in list(self.document.findall(BookExecTableNode)):
            data = NbMetadataCollector.get_doc_data(self.env)
            order = _toc_order(self.app)
            docs = [d for d in order if data.get(d, {}).get("exec_data")]
            docs += sorted(d for d in data if data[d].get("exec_data") and d not in docs)
            table = nodes.table(classes=["colwidths-auto"])
            tgroup = nodes.tgroup(cols=3)
            table += tgroup
            for w in (60, 20, 20):
                tgroup += nodes.colspec(colwidth=w)
            thead = nodes.thead()
            thead += _row(["Page", "Run time (s)", "Result"])
            tgroup += thead
            body = nodes.tbody()
            total = 0.0
            for doc in docs:
                ex = data[doc]["exec_data"]
                link = pending_xref(refdoc=self.env.docname, reftype="doc", refdomain="std", refexplicit=True,
                                    reftarget=posixpath.relpath(doc, posixpath.dirname(self.env.docname)),
                                    refwarn=True, classes=["xref", "doc"])
                link += nodes.inline(text=self.env.titles[doc].astext() if doc in self.env.titles else doc)
                para = nodes.paragraph()
                para += link
                runtime = ex.get("runtime")
                total += runtime or 0.0
                body += _row([para, "-" if runtime is None else f"{runtime:.1f}",
                              "ok" if ex.get("succeeded") else "failed"])
            body += _row([nodes.paragraph(text="Total"), f"{total:.0f}", ""])
            tgroup += body
            node.replace_self(table)


def setup(app):
    app.add_node(BookExecTableNode)
    app.add_directive("book-exec-table", BookExecTable)
    app.add_post_transform(BookExecTableTransform)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
