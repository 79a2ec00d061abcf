"""How much each chapter slows down when another program competes for the CPU.

    .venv/bin/python tools/contention.py                      # every chapter, quick profile
    .venv/bin/python tools/contention.py --profile full --chapters products,perturbation_backward

Each chapter is executed headless (as tools/run_chapter.py does) twice in a row: once on a quiet machine,
once while one CPU-bound competitor runs (a single-threaded busy loop in another process). On a machine
with c cores the competitor takes about 1/c of the CPU, so a chapter that only loses its share should slow
down by about c/(c-1) (2x on 2 cores); much more means the chapter's threads waste the time they are given
(spinning at barriers, oversubscription). Prints a table and writes it as JSON (``--out``).
Not part of ``make test``: it takes minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from stress_execute import toc_chapters  # noqa: E402


def run(chapter: Path, profile: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "tools" / "run_chapter.py"), str(chapter), "--profile", profile],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--chapters", default="all", help="'all' (the _toc.yml pages) or comma-separated stems")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "contention.json")
    args = ap.parse_args()
    chapters = toc_chapters() if args.chapters == "all" else [ROOT / "chapters" / f"{s.strip()}.md" for s in args.chapters.split(",")]
    cores = os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} cores, profile {args.profile}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)
    rows = []
    for ch in chapters:
        quiet = run(ch, args.profile)
        comp = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = run(ch, args.profile)
        finally:
            comp.kill()
            comp.wait()
        rows.append({"chapter": ch.stem, "quiet_s": quiet, "busy_s": busy, "ratio": busy / quiet})
        print(f"  {ch.stem:24s} quiet {quiet:6.1f} s   with a competitor {busy:6.1f} s   {busy / quiet:4.2f}x", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cores": cores, "profile": args.profile, "rows": rows}, indent=1))
    worst = max(rows, key=lambda r: r["ratio"])
    print(f"largest slowdown: {worst['chapter']} {worst['ratio']:.2f}x (fair share on {cores} cores: "
          f"{cores / max(cores - 1, 1):.2f}x); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
