"""Explorers that work on the static page, without a kernel, and the same explorer live when there is one.

An explorer is a function ``draw(**controls) -> matplotlib Figure`` and a small grid of values for each
control. :func:`static_explorer` draws every combination once, at build time, and returns a widget in which
the controls switch between the pictures *in the browser*: each control is an ipywidgets slider or dropdown
linked (``ipywidgets.jslink``, a client-side link) to the ``selected_index`` of a ``Stack`` of ``Image``
widgets -- nested, one level per control. The vendored widget manager renders all of it offline from the
widget state saved in the page; no code of ours runs in the browser. :func:`live_explorer` is the usual
``ipywidgets.interact`` over the same controls, for readers who run the notebook (the static page shows
nothing for it: the chapters tag that cell ``remove-output``).

Keep grids small: every combination is a PNG saved in the page (a 4 x 4 grid of figures is about 1 MB).
"""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass

import matplotlib.pyplot as plt

from . import checks

#: Most combinations one static explorer may precompute (page size and build time).
MAX_VIEWS = 36


@dataclass(frozen=True)
class Control:
    """One control of an explorer: its ``name`` (the keyword of ``draw``), the ``values`` it takes on the
    static page, the ``default`` value shown first, a ``label`` (what the reader sees) and, for the live
    explorer, an optional ipywidgets widget (``live``) with a wider range."""

    name: str
    values: tuple
    default: object = None
    label: str | None = None
    live: object = None

    def __post_init__(self):
        if not self.values:
            raise ValueError(f"control {self.name!r} needs at least one value")
        if self.default is not None and self.default not in self.values:
            raise ValueError(f"control {self.name!r}: default {self.default!r} is not one of its values {self.values}")


def control(name: str, values, *, default=None, label: str | None = None, live=None) -> Control:
    """A :class:`Control`; ``values`` is any sequence (numbers, strings, booleans)."""
    return Control(name=name, values=tuple(values), default=default, label=label, live=live)


def _png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _widget_for(c: Control):
    import ipywidgets as widgets

    options = [(_fmt(v), i) for i, v in enumerate(c.values)]
    index = c.values.index(c.default) if c.default is not None else 0
    desc = c.label or c.name
    style = {"description_width": "initial"}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c.values):
        w = widgets.SelectionSlider(options=options, value=index, description=desc, continuous_update=True,
                                    style=style, layout=widgets.Layout(width="min(100%, 28em)"))
    else:
        w = widgets.Dropdown(options=options, value=index, description=desc, style=style)
    return w


def static_explorer(draw, controls, *, dpi: int = 80):
    """Precompute ``draw(**combination)`` for every combination of the controls' values and return a widget
    that switches between them in the browser (see the module docstring). ``draw`` returns a matplotlib
    figure (it is closed here)."""
    import ipywidgets as widgets

    if not callable(draw):
        raise TypeError("draw must be a function of the controls returning a matplotlib figure")
    controls = list(controls)
    if not controls or not all(isinstance(c, Control) for c in controls):
        raise TypeError("controls must be a non-empty list of rnnbook.explorer.control(...)")
    names = [c.name for c in controls]
    if len(set(names)) != len(names):
        raise ValueError(f"control names must be distinct, got {names}")
    views = 1
    for c in controls:
        views *= len(c.values)
    if views > MAX_VIEWS:
        raise ValueError(f"{views} combinations exceed MAX_VIEWS={MAX_VIEWS}: use fewer values per control")
    dpi = checks.positive_int("dpi", dpi)
    selectors = [_widget_for(c) for c in controls]
    images = {}
    for combo in itertools.product(*[range(len(c.values)) for c in controls]):
        kwargs = {c.name: c.values[i] for c, i in zip(controls, combo)}
        fig = draw(**kwargs)
        if fig is None or not hasattr(fig, "savefig"):
            raise TypeError("draw must return a matplotlib figure")
        images[combo] = widgets.Image(value=_png(fig, dpi), format="png",
                                      layout=widgets.Layout(width="100%", max_width="100%", height="auto"))

    def stack(depth: int, prefix: tuple):
        c, sel = controls[depth], selectors[depth]
        if depth == len(controls) - 1:
            children = [images[prefix + (i,)] for i in range(len(c.values))]
        else:
            children = [stack(depth + 1, prefix + (i,)) for i in range(len(c.values))]
        st = widgets.Stack(children=children, selected_index=sel.value)
        widgets.jslink((sel, "index"), (st, "selected_index"))
        return st

    note = widgets.HTML("<small>Precomputed views: move the controls to switch between them (no kernel needed).</small>")
    box = widgets.VBox([widgets.HBox(selectors, layout=widgets.Layout(flex_flow="row wrap")), stack(0, ()), note])
    box.add_class("rnnbook-explorer")  # the browser test finds explorers by this class
    return box


def live_explorer(draw, controls):
    """``ipywidgets.interact`` over the same controls (their ``live`` widgets where given, else the static
    values), redrawing with a kernel. Returns the interact widget."""
    import ipywidgets as widgets
    from IPython.display import display

    kwargs = {}
    for c in controls:
        if c.live is not None:
            kwargs[c.name] = c.live
        else:
            kwargs[c.name] = widgets.Dropdown(options=[(_fmt(v), v) for v in c.values],
                                              value=c.default if c.default is not None else c.values[0],
                                              description=c.label or c.name)

    def show(**kw):
        fig = draw(**kw)
        display(fig)
        plt.close(fig)

    return widgets.interactive(show, **kwargs)
