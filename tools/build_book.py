"""Build the book strictly (-W -n: warnings and broken references are errors) in one profile.

* ``--profile full`` builds the published book into ``_build/html``;
  ``--profile quick`` builds the test-sized book into ``_build/quick/_build/html`` (its own cache).
* The execution cache (jupyter-cache) is keyed on code cells only, so a change to the rnnbook package, the
  pinned requirements or the profile would silently reuse stale outputs. We key it ourselves: the cache is
  cleared whenever the hash of those inputs changes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def inputs_key(profile: str) -> str:
    h = hashlib.sha256(profile.encode())
    for path in sorted((ROOT / "rnnbook").rglob("*.py")) + [ROOT / "requirements.txt"]:
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def output_dir(profile: str, base: Path | None = None) -> Path:
    """The --path-output for a profile: the repository root for full (-> _build/html), else _build/<profile>."""
    if base is not None:
        return base
    return ROOT if profile == "full" else ROOT / "_build" / profile


def build(profile: str, out: Path, extra_args: list[str]) -> int:
    build_dir = out / "_build"
    cache = build_dir / ".jupyter_cache"
    key_file = build_dir / ".rnnbook-inputs"
    key = inputs_key(profile)
    if cache.exists() and (not key_file.exists() or key_file.read_text() != key):
        print(f"rnnbook, requirements or profile changed: clearing the execution cache {cache}")
        shutil.rmtree(cache)
    if not (ROOT / "_extra" / "vendor" / "mathjax").exists():
        print("vendored JavaScript missing: run `make assets` (tools/vendor_assets.sh) first", file=sys.stderr)
        return 2
    env = dict(os.environ, RNNBOOK_PROFILE=profile)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "-W", "-n", "--keep-going",
           "--path-output", str(out), *extra_args]
    print("+", " ".join(cmd), f"(RNNBOOK_PROFILE={profile})", flush=True)
    rc = subprocess.call(cmd, env=env, cwd=ROOT)
    if rc == 0:
        build_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)
    else:
        reports = build_dir / "html" / "reports"
        for log in sorted(reports.glob("*.err.log")) if reports.exists() else []:
            print(f"--- {log.name}\n{log.read_text()[-4000:]}", file=sys.stderr)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="full")
    ap.add_argument("--path-output", type=Path, default=None, help="build folder (default depends on the profile)")
    args, extra = ap.parse_known_args()
    return build(args.profile, output_dir(args.profile, args.path_output), extra)


if __name__ == "__main__":
    sys.exit(main())
