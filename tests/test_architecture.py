"""The package's structure: dependencies run downwards only, private kernels stay private, and every chapter
has its sizes in both profiles."""
import ast
import re
from pathlib import Path

import yaml

from rnnbook import profiles

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "rnnbook"

#: configuration and checks -> model and data -> linear algebra and products -> perturbations -> gradients
#: -> training -> the chapters' helpers (rnnbook/__init__.py lists the same layers).
LAYERS = [
    {"config", "checks", "rng", "paper", "profiles", "stats", "probability", "plotting"},
    {"_gemm", "_loops", "model", "functional", "data"},
    {"linalg", "products", "forward_stats", "projections", "kernels"},
    {"perturb"},
    {"ntk", "gradients", "smoothness"},
    {"training", "width"},
    {"book", "explorer", "synthesis"},
]


def layer_of(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"rnnbook/{name}.py is in no layer of tests/test_architecture.py: add it where it belongs")


def internal_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_every_module_has_a_layer_and_imports_only_from_layers_below_or_its_own():
    modules = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    for name in modules:
        mine = layer_of(name)
        for dep in internal_imports(PKG / f"{name}.py"):
            assert layer_of(dep) <= mine, (f"rnnbook/{name}.py (layer {mine}) imports rnnbook.{dep} (layer "
                                           f"{layer_of(dep)}): dependencies must run downwards")


def test_onednn_internals_are_used_only_by_the_private_kernel_module():
    for path in PKG.glob("*.py"):
        if path.stem != "_gemm":
            assert "torch.ops.mkldnn" not in path.read_text(), f"{path.name} calls oneDNN directly; use rnnbook._gemm"


def chapters_with_experiments():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return [f for f in files if re.search(r"rb\.sizes\(", (ROOT / f"{f}.md").read_text())]


def test_every_chapter_has_quick_and_full_sizes_with_the_same_keys():
    chapters = chapters_with_experiments()
    assert chapters, "no chapter reads its sizes"
    for f in chapters:
        text = (ROOT / f"{f}.md").read_text()
        compares_pages = "rb.synthesis.measure(" in text or "glued_by(" in text   # reads other pages' results
        for key in set(re.findall(r"rb\.sizes\(\"([a-z_]+)\"\)", text)):
            assert key == Path(f).stem or compares_pages, (
                f"{f} reads the sizes of {key!r}: a chapter's sizes carry its own name")
            entry = profiles.SIZES[key]
            assert set(entry) == {"quick", "full"}, f"{key}: needs exactly a quick and a full profile"
            assert set(entry["quick"]) == set(entry["full"]), (
                f"{key}: quick and full sizes differ in their keys: {set(entry['quick']) ^ set(entry['full'])}")


def test_the_api_page_is_generated_from_the_current_docstrings():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "api_page.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
