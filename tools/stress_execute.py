"""Stress test of notebook execution: run every chapter many times, headless, and report hangs and failures.

    .venv/bin/python tools/stress_execute.py                  # 10 rounds of every chapter, quick profile
    .venv/bin/python tools/stress_execute.py --rounds 20 --synthetic 300 --chapters none

Each execution goes through nbclient, as the book build does (myst-nb executes with nbclient), with a
short per-cell timeout: a kernel that stops answering shows up as a *hang* (the cell's timeout expired),
named by chapter, round and cell, instead of blocking for the build's whole timeout. ``--synthetic K``
adds a notebook of K tiny cells: every cell is one request/reply round trip on the kernel's shell channel,
which is where the ipykernel 7 hangs were (see README, "Reliability"), so it exercises that path far more
often per second than a chapter does. Not part of ``make test``; it takes minutes.

Exit status: 0 when no execution hung or failed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from run_chapter import kernel_env  # noqa: E402  (the checkout's own rnnbook on the kernel's path)


def toc_chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    return [ROOT / f"{f}.md" for f in files if (ROOT / f"{f}.md").read_text().find("kernelspec") >= 0]


def synthetic(k: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import time")] + [
        nbformat.v4.new_code_cell(f"x = {i}\nprint(x)") for i in range(k)]
    return nb


def run_once(name: str, nb, cwd: Path, timeout: int) -> tuple[str, str, float]:
    """Execute ``nb``; return (status, detail, seconds) with status in ok / hang / fail / dead."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    except CellTimeoutError as err:
        cell = next((i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code" and c.get("execution_count") is None), "?")
        return "hang", f"{name}: no reply within {timeout} s at code cell {cell} ({str(err).splitlines()[0][:120]})", time.perf_counter() - t0
    except DeadKernelError as err:
        return "dead", f"{name}: kernel died ({err})", time.perf_counter() - t0
    except CellExecutionError as err:
        return "fail", f"{name}: {str(err).strip().splitlines()[-1][:200]}", time.perf_counter() - t0
    return "ok", "", time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=120, help="per-cell timeout in seconds (default 120)")
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--chapters", default="all", help="'all' (the _toc.yml pages), 'none', or comma-separated stems")
    ap.add_argument("--synthetic", type=int, default=0, help="also run a notebook of this many tiny cells")
    args = ap.parse_args()
    os.environ["RNNBOOK_PROFILE"] = args.profile
    if args.chapters == "all":
        chapters = toc_chapters()
    elif args.chapters == "none":
        chapters = []
    else:
        chapters = [ROOT / "chapters" / f"{s.strip()}.md" for s in args.chapters.split(",")]
    versions = {p: md.version(p) for p in ("ipykernel", "jupyter_client", "pyzmq", "tornado", "nbclient")}
    print("kernel stack:", ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    jobs = [(c.stem, lambda c=c: jupytext.read(c), c.parent) for c in chapters]
    if args.synthetic:
        jobs.append((f"synthetic{args.synthetic}", lambda: synthetic(args.synthetic), ROOT))
    counts = {name: {"ok": 0, "hang": 0, "fail": 0, "dead": 0, "seconds": []} for name, _, _ in jobs}
    problems = []
    t_start = time.perf_counter()
    for r in range(1, args.rounds + 1):
        for name, make, cwd in jobs:
            status, detail, secs = run_once(name, make(), cwd, args.timeout)
            counts[name][status] += 1
            counts[name]["seconds"].append(secs)
            if status != "ok":
                problems.append(f"round {r}: {status}: {detail}")
                print(f"  round {r}: {status.upper()} {detail}", flush=True)
        print(f"round {r}/{args.rounds} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    print(f"\n{'notebook':28s} {'ok':>4s} {'hang':>5s} {'fail':>5s} {'dead':>5s} {'median s':>9s} {'max s':>7s}")
    for name, c in counts.items():
        s = sorted(c["seconds"])
        print(f"{name:28s} {c['ok']:4d} {c['hang']:5d} {c['fail']:5d} {c['dead']:5d} {s[len(s) // 2]:9.1f} {s[-1]:7.1f}")
    total = sum(sum(c[k] for k in ("ok", "hang", "fail", "dead")) for c in counts.values())
    bad = len(problems)
    print(f"\n{total} executions in {args.rounds} rounds, {bad} hung or failed "
          f"({time.perf_counter() - t_start:.0f} s; {', '.join(f'{k} {v}' for k, v in versions.items())})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
