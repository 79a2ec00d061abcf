"""Sphinx extension: a ``prf:claim`` directive for sphinx-proof.

The paper proves its lemmas through numbered *claims* (Claims B.4, B.5, B.10, B.12, ...). sphinx-proof 0.4
has no claim type, so we add one that behaves like ``prf:lemma`` (same counter when numbered, same
cross-referencing with ``{prf:ref}``) and is titled "Claim". Styled in ``_static/rnnbook.css``.
"""
from __future__ import annotations

from sphinx_proof import directive as prf_directive
from sphinx_proof import domain as prf_domain


class ClaimDirective(prf_directive.ElementDirective):
    """``{prf:claim}``: a step inside a lemma's proof, stated on its own."""

    name = "claim"


def setup(app):
    app.setup_extension("sphinx_proof")
    prf_directive.DEFAULT_REALTYP_TO_COUNTERTYP.setdefault("claim", "lemma")
    prf_domain.ProofDomain.directives.setdefault("claim", ClaimDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
