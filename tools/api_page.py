"""Write the book's API reference page, chapters/api.md, from rnnbook's docstrings.

    .venv/bin/python tools/api_page.py            # (re)write chapters/api.md
    .venv/bin/python tools/api_page.py --check    # exit 1 if chapters/api.md is out of date

tools/build_book.py runs it before every build, and a test checks that the committed page is current. One
section per module, in the package's layers (rnnbook/__init__.py); for every public function and class: its
signature, its docstring (which names the lemma or equation it computes) and the chapters that call it,
found by reading the chapters.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "chapters" / "api.md"

#: The public modules in the order of rnnbook/__init__.py's layers (private _loops and _gemm are left out).
MODULES = ["config", "checks", "rng", "paper", "profiles", "stats", "probability", "plotting", "model", "functional",
           "data", "linalg", "products", "forward_stats", "projections", "kernels", "perturb", "ntk", "gradients",
           "smoothness", "training", "width", "book", "explorer", "synthesis"]

#: How chapters refer to modules (``import rnnbook.products as pr`` and the like).
ALIASES = {"products": ["pr", "products"], "perturb": ["pt", "perturb"], "forward_stats": ["fs", "forward_stats"],
           "kernels": ["kn", "kernels"], "projections": ["projections", "proj"], "ntk": ["ntk"],
           "training": ["training"], "functional": ["functional", "fn"], "linalg": ["linalg"], "paper": ["paper"],
           "book": ["book"], "plotting": ["plotting"], "stats": ["stats"], "rng": ["rng"], "model": ["model"],
           "probability": ["pb", "probability"], "gradients": ["gr", "gradients"], "smoothness": ["sm", "smoothness"],
           "explorer": ["ex", "explorer"], "width": ["width", "wd"], "synthesis": ["synthesis"]}


def _markdown(doc: str) -> str:
    """A docstring as MyST Markdown: Sphinx roles and double backticks become code spans, ``::`` a colon,
    dollar signs are escaped (the book enables $-math); indented blocks stay code blocks."""
    doc = inspect.cleandoc(doc or "")
    doc = re.sub(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`", r"`\1`", doc)
    doc = re.sub(r"``([^`]+)``", r"`\1`", doc)
    doc = doc.replace("::\n", ":\n")
    # escape $ outside code spans only (inside one, a backslash would show)
    parts = re.split(r"(`[^`]*`)", doc)
    return "".join(p if p.startswith("`") else p.replace("$", "\\$") for p in parts)


def _chapters() -> dict[str, str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return {f: (ROOT / f"{f}.md").read_text() for f in files if (ROOT / f"{f}.md").exists() and not f.endswith("api")}


def _used_in(module: str, name: str, chapters: dict[str, str], exported: set[str]) -> list[str]:
    pats = [rf"\b{a}\.{name}\b" for a in ALIASES.get(module, [module])] + [rf"\brb\.{module}\.{name}\b",
                                                                          rf"\brnnbook\.{module}\.{name}\b"]
    if name in exported:
        pats.append(rf"\brb\.{name}\b")
    rx = re.compile("|".join(pats))
    return [f for f, text in chapters.items() if rx.search(text)]


def _public(mod) -> list[tuple[str, object]]:
    names = getattr(mod, "__all__", None)
    out = []
    for name, obj in vars(mod).items():
        if name.startswith("_") or (names is not None and name not in names):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == mod.__name__:
            out.append((name, obj))
    return out


def render() -> str:
    sys.path.insert(0, str(ROOT))
    import importlib

    rb = importlib.import_module("rnnbook")
    chapters = _chapters()
    exported = {n for n in dir(rb) if not n.startswith("_")}
    parts = ["(chap-api)=", "# The rnnbook API", "",
             "Every public function and class of the support package, generated from its docstring by "
             "`tools/api_page.py` when the book is built. The modules are listed in the package's layers: each "
             "imports only from the layers above it. *Used in* names the chapters that call a function, so a "
             "reader who wants to extend the book finds the code before writing it again. Shapes follow "
             "{doc}`model_and_data`: a leading ensemble dimension E (one network per seed), then samples, steps, "
             "width.", ""]
    failed = []
    for name in MODULES:
        try:
            mod = importlib.import_module(f"rnnbook.{name}")
        except Exception as err:  # noqa: BLE001 -- reported below; --check (the test) fails on it
            failed.append(f"rnnbook.{name}: {type(err).__name__}: {err}")
            continue
        parts += [f"## `rnnbook.{name}`", "", _markdown((mod.__doc__ or "").split("\n\n")[0]), ""]
        for obj_name, obj in _public(mod):
            try:
                sig = str(inspect.signature(obj))
            except (TypeError, ValueError):
                sig = "(...)"
            kind = "class" if inspect.isclass(obj) else "def"
            parts += [f"### `{obj_name}`", "", "```python", f"{kind} {obj_name}{sig}", "```", "",
                      _markdown(obj.__doc__ or "(no docstring)"), ""]
            used = _used_in(name, obj_name, chapters, exported)
            if used:
                parts += ["*Used in:* " + ", ".join(f"{{doc}}`/{u}`" for u in used), ""]
    render.failed = failed
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that chapters/api.md is current")
    args = ap.parse_args()
    text = render()
    for f in render.failed:
        print(f"api_page: could not import {f}", file=sys.stderr)
    if args.check and render.failed:
        return 1
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run tools/api_page.py", file=sys.stderr)
            return 1
        return 0
    if not OUT.exists() or OUT.read_text() != text:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
