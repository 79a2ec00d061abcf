"""Compare the values two builds of the book glued into their prose, and list those that moved.

    .venv/bin/python tools/glue_diff.py OLD_BUILD NEW_BUILD [--rel 0.2]

A build folder is what ``tools/build_book.py --path-output`` (or its default) was given: the glued values are
read from ``<build>/_build/jupyter_execute/**/*.glue.json``. A value with an uncertainty (a key ``<key>_err``)
moved when the change exceeds the larger of the two uncertainties; a value without one when it changed by more
than ``--rel`` (relative). Text values are compared for equality. Keys present in only one build are listed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def load(build: Path) -> dict[str, object]:
    out = {}
    for f in sorted((build / "_build" / "jupyter_execute").rglob("*.glue.json")):
        page = f.relative_to(build / "_build" / "jupyter_execute").as_posix().removesuffix(".glue.json")
        for key, cell in json.loads(f.read_text()).items():
            text = cell.get("data", {}).get("text/plain", "")
            try:
                value: object = float(text)
            except ValueError:
                value = text.strip("'\"")
            out[key] = (page, value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rel", type=float, default=0.2)
    args = ap.parse_args()
    old, new = load(args.old), load(args.new)
    moved, same = [], 0
    for key in sorted(set(old) & set(new)):
        if key.endswith("_err"):
            continue
        page, a = old[key]
        b = new[key][1]
        if isinstance(a, float) and isinstance(b, float):
            err = max(old.get(f"{key}_err", (0, math.nan))[1], new.get(f"{key}_err", (0, math.nan))[1])
            if isinstance(err, float) and math.isfinite(err):
                bad = abs(b - a) > err
                how = f"{abs(b - a) / err:.1f} x its uncertainty {err:.3g}" if err else "uncertainty 0"
            else:
                scale = max(abs(a), abs(b), 1e-300)
                bad = (math.isnan(a) != math.isnan(b)) or abs(b - a) / scale > args.rel
                how = f"relative change {abs(b - a) / scale:.0%}"
            if bad:
                moved.append(f"{page:32s} {key:40s} {a:.4g} -> {b:.4g} ({how})")
            else:
                same += 1
        elif a != b:
            moved.append(f"{page:32s} {key:40s} {a!r} -> {b!r}")
        else:
            same += 1
    print(f"{same} values unchanged within their uncertainty (or {args.rel:.0%}), {len(moved)} moved:")
    print("\n".join(moved))
    for name, only in (("only in the old build", set(old) - set(new)), ("only in the new build", set(new) - set(old))):
        keys = sorted(k for k in only if not k.endswith("_err"))
        if keys:
            print(f"{name}: {', '.join(keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
