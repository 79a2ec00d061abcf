"""Execute one chapter headless, as the book build does, and report its run time and glued values.

    .venv/bin/python tools/run_chapter.py chapters/forward_stability.md [--profile quick|full]

Useful while writing a chapter: faster than a book build, and it prints every glue key with its value.
The kernel imports the ``rnnbook`` of *this* checkout (its folder is put first on the kernel's
``PYTHONPATH``), even when the environment's editable install points at another checkout.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kernel_env(**extra: str) -> dict:
    """The environment for a chapter's kernel: this checkout first on ``PYTHONPATH``, and OpenMP threads
    that sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``, see rnnbook/__init__.py)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def glued_values(nb) -> list[tuple[str, str]]:
    """(key, text) of every value the executed notebook glued."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook", {})
            if meta:
                data = o.get("data", {})
                out.append((meta.get("name"), data.get("application/papermill.record/text/plain", data.get("text/plain", ""))))
    return out


def main() -> int:
    import jupytext
    from nbclient import NotebookClient

    ap = argparse.ArgumentParser()
    ap.add_argument("chapter", type=Path)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--timeout", type=int, default=300, help="per-cell timeout in seconds")
    ap.add_argument("--cell-times", action="store_true", help="also print how long each code cell took")
    args = ap.parse_args()
    nb = jupytext.read(args.chapter)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(args.chapter.parent.resolve())}})
    t0 = time.perf_counter()
    client.execute(env=kernel_env(RNNBOOK_PROFILE=args.profile))
    elapsed = time.perf_counter() - t0
    print(f"{args.chapter}: executed in {elapsed:.1f} s (profile {args.profile})")
    if args.cell_times:
        from datetime import datetime
        for i, cell in enumerate(nb.cells):
            ex = cell.get("metadata", {}).get("execution", {})
            if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
                t = (datetime.fromisoformat(ex["shell.execute_reply"].rstrip("Z"))
                     - datetime.fromisoformat(ex["iopub.execute_input"].rstrip("Z"))).total_seconds()
                first = cell["source"].strip().splitlines()[0][:70] if cell["source"].strip() else ""
                print(f"  cell {i:3d}  {t:7.2f} s  {first}")
    for key, value in glued_values(nb):
        print(f"  glue {key} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
