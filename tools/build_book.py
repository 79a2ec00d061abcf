"""Build the book strictly (-W -n: warnings and broken references are errors) in one profile.

* ``--profile full`` builds the published book into ``_build/html``;
  ``--profile quick`` builds the test-sized book into ``_build/quick/_build/html`` (its own cache).
* ``--page chapters/products`` builds that page alone (with the introduction and the bibliography), afresh
  (``--all``) and strictly except for references to pages outside the build (any other warning fails it),
  into ``_build/page/<profile>/<name>``: a check of one chapter in well under a minute at the quick profile.
* ``--jobs N`` executes up to N pages at once before the build reads them (tools/pre_execute.py; default:
  the number of cores, at most 4; ``--jobs 1`` executes them one by one while Sphinx reads them).
* ``--cell-timeout S`` overrides the per-cell execution timeout of ``_config.yml``. A cell that runs longer
  fails the build, and the report names the page and shows the cell.
* The execution cache (jupyter-cache) is keyed on code cells only, so a change to the rnnbook package, the
  pinned requirements or the profile would silently reuse stale outputs. We key it ourselves: the cache is
  cleared whenever the hash of those inputs changes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from run_chapter import kernel_env  # noqa: E402
from pre_execute import pre_execute  # noqa: E402

#: Warnings a single-page build raises only because the other pages are absent (references into them). Not
#: every extension gives its warnings a type that ``suppress_warnings`` could silence (sphinx-proof does not),
#: so a page build runs without -W and fails on any warning *not* matching these.
OTHER_PAGES = [r"label '[^']+' not found", r"undefined label", r"unknown document", r"term not in glossary",
               r"Failed to create a cross reference", r"reference target not found", r"unknown target",
               r"glue key .* not found", r"Could not find key .* in any notebook"]


def inputs_key(profile: str, root: Path = ROOT) -> str:
    h = hashlib.sha256(profile.encode())
    for path in sorted((ROOT / "rnnbook").rglob("*.py")) + [ROOT / "requirements.txt"]:
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def output_dir(profile: str, base: Path | None = None, page: str | None = None) -> Path:
    """The --path-output for a build: the repository root for full (-> _build/html), else _build/<profile>."""
    if base is not None:
        return base
    if page is not None:
        return ROOT / "_build" / "page" / profile / Path(page).stem   # a quick and a full page build never share a cache
    return ROOT if profile == "full" else ROOT / "_build" / profile


def derived_files(root: Path, out: Path, *, cell_timeout: int | None, page: str | None) -> list[str]:
    """Write a configuration (and table of contents) derived from the book's own, when a build needs one;
    return the extra jupyter-book arguments that select them."""
    if cell_timeout is None and page is None:
        return []
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    # paths in the configuration are relative to the file that holds it: make them absolute for the copy
    sph = cfg.setdefault("sphinx", {})
    if "local_extensions" in sph:
        sph["local_extensions"] = {k: str((root / v).resolve()) for k, v in sph["local_extensions"].items()}
    if "bibtex_bibfiles" in cfg:
        cfg["bibtex_bibfiles"] = [str((root / b).resolve()) for b in cfg["bibtex_bibfiles"]]
    if "html_extra_path" in sph.get("config", {}):
        sph["config"]["html_extra_path"] = [str((root / b).resolve()) for b in sph["config"]["html_extra_path"]]
    if cell_timeout is not None:
        cfg.setdefault("execute", {})["timeout"] = int(cell_timeout)
    args = []
    if page is not None:
        page = Path(page).with_suffix("").as_posix()
        if not (root / f"{page}.md").exists():
            raise SystemExit(f"--page {page}: no such page {root / (page + '.md')}")
        toc = yaml.safe_load((root / "_toc.yml").read_text())
        chapters = [page] + (["chapters/bibliography"] if page != "chapters/bibliography" else [])
        toc["parts"] = [{"caption": "One page", "chapters": [{"file": c} for c in chapters]}]
        if page == toc["root"]:
            toc["parts"][0]["chapters"] = toc["parts"][0]["chapters"][1:]
        tmp_toc = out / "_build" / "_toc.derived.yml"
        tmp_toc.parent.mkdir(parents=True, exist_ok=True)
        tmp_toc.write_text(yaml.safe_dump(toc, sort_keys=False))
        args += ["--toc", str(tmp_toc)]
    tmp_cfg = out / "_build" / "_config.derived.yml"
    tmp_cfg.parent.mkdir(parents=True, exist_ok=True)
    tmp_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return args + ["--config", str(tmp_cfg)]


_FAILED = re.compile(r"(\S+\.(?:md|ipynb)): WARNING: Executing notebook failed: (\w+)")
_RAISED = re.compile(r"myst_nb\.core\.execute\.base\.ExecutionError: (\S+\.(?:md|ipynb))")
_TIMEOUT = re.compile(r"A cell timed out while it was being executed, after (\d+) seconds")


def run_streaming(cmd, *, env, cwd):
    """Run the build, passing its output through, and collect which pages failed to execute and how."""
    failures: dict[str, str] = {}
    warnings: list[str] = []
    timeout_s = None
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "WARNING:" in plain:
            warnings.append(plain.strip())
        if (t := _TIMEOUT.search(plain)):
            timeout_s = t.group(1)
        for rx in (_FAILED, _RAISED):
            if (hit := rx.search(plain)):
                page = Path(hit.group(1)).with_suffix("").as_posix()
                page = page[len(str(cwd)) + 1:] if page.startswith(str(cwd)) else page
                kind = hit.group(2) if rx is _FAILED else failures.get(page, "CellExecutionError")
                failures[page] = kind
    rc = proc.wait()
    for page, kind in failures.items():
        if kind == "CellTimeoutError" or (timeout_s and kind != "CellExecutionError"):
            failures[page] = f"a cell timed out (no result within {timeout_s or '?'} s)"
        else:
            failures[page] = f"a cell raised an error ({kind}); the traceback above shows the cell"
    return rc, failures, warnings


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def toc_pages(root: Path) -> list[Path]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    files += [c["file"] for c in toc.get("chapters", [])]
    return [root / f"{f}.md" for f in files if (root / f"{f}.md").exists()]


def build(profile: str, out: Path, extra_args: list[str], *, root: Path = ROOT, cell_timeout: int | None = None,
          page: str | None = None, jobs: int | None = None) -> int:
    build_dir = out / "_build"
    cache = build_dir / ".jupyter_cache"
    key_file = build_dir / ".rnnbook-inputs"
    key = inputs_key(profile, root)
    if cache.exists() and (not key_file.exists() or key_file.read_text() != key):
        print(f"rnnbook, requirements or profile changed: clearing the execution cache {cache}")
        shutil.rmtree(cache)
    if not (ROOT / "_extra" / "vendor" / "mathjax").exists():
        print("vendored JavaScript missing: run `make assets` (tools/vendor_assets.sh) first", file=sys.stderr)
        return 2
    if root == ROOT:  # the API page is generated from the docstrings before every build of the book
        subprocess.run([sys.executable, str(ROOT / "tools" / "api_page.py")], check=True, env=kernel_env())
    extra_args = derived_files(root, out, cell_timeout=cell_timeout, page=page) + list(extra_args)
    # pages that compare chapters read the values the others glued in this build (rnnbook.book.glued_by)
    env = kernel_env(RNNBOOK_PROFILE=profile, RNNBOOK_BUILD_DIR=str((out / "_build").resolve()))
    jobs = default_jobs() if jobs is None else jobs
    t0 = time.perf_counter()
    if page is None and jobs > 1:
        timeout = cell_timeout or int(yaml.safe_load((root / "_config.yml").read_text()).get("execute", {}).get("timeout", 300))
        pre_execute(toc_pages(root), cache, env=env, timeout=timeout, jobs=jobs)
    strict = ["-W", "-n", "--keep-going"] if page is None else ["-n", "--all"]  # a page: see OTHER_PAGES
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), *strict,
           "--path-output", str(out), *extra_args]
    print("+", " ".join(cmd), f"(RNNBOOK_PROFILE={profile})", flush=True)
    rc, failures, warnings = run_streaming(cmd, env=env, cwd=root)
    if page is not None:
        own = [w for w in warnings if not any(re.search(p, w) for p in OTHER_PAGES)]
        for w in own:
            print(f"--- warning on the page: {w}", file=sys.stderr)
        if own and rc == 0:
            rc = 1
    if rc == 0:
        build_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)
        print(f"built in {time.perf_counter() - t0:.0f} s")
        return rc
    reports = build_dir / "html" / "reports"
    for log in sorted(reports.rglob("*.err.log")) if reports.exists() else []:
        print(f"--- report {log}, last lines:\n{log.read_text()[-3000:]}", file=sys.stderr)
    for page, what in failures.items():
        print(f"--- executing page {page!r} failed: {what} (after {time.perf_counter() - t0:.0f} s of building)",
              file=sys.stderr)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=("quick", "full"), default="full")
    ap.add_argument("--path-output", type=Path, default=None, help="build folder (default depends on the profile)")
    ap.add_argument("--page", default=None, help="build only this page, e.g. chapters/products")
    ap.add_argument("--cell-timeout", type=int, default=None, help="per-cell timeout in seconds")
    ap.add_argument("--jobs", type=int, default=None, help="pages executed at once (default: cores, at most 4)")
    args, extra = ap.parse_known_args()
    profile = args.profile if args.page is None or "--profile" in sys.argv else "quick"
    return build(profile, output_dir(profile, args.path_output, args.page), extra, cell_timeout=args.cell_timeout,
                 page=args.page, jobs=args.jobs)


if __name__ == "__main__":
    sys.exit(main())
