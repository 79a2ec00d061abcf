import os

# Before torch is imported (here, first): OpenMP threads sleep instead of spinning while they wait
# (see rnnbook/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files():
    """The book's pages in the order of _toc.yml (the root first)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


@pytest.fixture(scope="session")
def html(tmp_path_factory):
    """The whole book built as CI and readers build it: strict (-W -n), every chapter executed (quick profile),
    fresh execution cache. Shared by the build checks (test_book.py) and the browser test (test_browser.py)."""
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), "--profile", "quick",
                           "--path-output", str(out)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"book build failed (rc={proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return out / "_build" / "html"


@pytest.fixture
def f64():
    """Small float64 CPU settings shared by the numerical tests."""
    return dict(device="cpu", dtype=torch.float64)
