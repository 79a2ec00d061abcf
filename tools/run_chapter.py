"""Execute one chapter headless, as the book build does, and report its run time and glued values.

    .venv/bin/python tools/run_chapter.py chapters/forward_stability.md [--profile quick|full]

Useful while writing a chapter: faster than a book build, and it prints every glue key with its value.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("chapter", type=Path)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    os.environ["RNNBOOK_PROFILE"] = args.profile
    nb = jupytext.read(args.chapter)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.chapter.parent.resolve())}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    print(f"{args.chapter}: executed in {elapsed:.1f} s (profile {args.profile})")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            if meta:
                data = out.get("data", {})
                value = data.get("application/papermill.record/text/plain", data.get("text/plain", ""))
                print(f"  glue {meta.get('name')} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
