"""Sphinx extension: an author-year bibliography that matches the author-year citations in the text.

The book cites in author-year form (``bibtex_reference_style: author_year``), but pybtex's styles label the
list alphabetically ([AZLS19]): the list and the text did not match. This registers a pybtex formatting style
``rnnbook`` (pybtex's ``unsrt``, sorted by author and year) whose labels are "Allen-Zhu et al., 2019b", the
same text a citation shows; ``_config.yml`` selects it with ``bibtex_default_style``. Two works of the same
authors and year are told apart by the year field itself (``2019a``, ``2019b`` in references.bib).
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _last(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabels(BaseLabelStyle):
    """"Cho and Saul, 2009", "Allen-Zhu et al., 2019b": the author-year citation text, as a label."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [_last(p) for p in people]
            if not names:
                who = entry.fields.get("key", entry.key)
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class RnnbookStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = SortingStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "rnnbook", RnnbookStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
