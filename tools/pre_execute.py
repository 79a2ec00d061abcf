"""Execute the book's pages in parallel into the execution cache, before jupyter-book reads them.

myst-nb executes a page while Sphinx reads it, one page after another. Most of a chapter's time is Python
work on one core (small tensors, plotting, the kernel's start), so on a 2-core machine two chapters run side by
side in about the time of one (measured: two quick-profile chapters of 12 s each took 12.7 s together against
26 s one after the other). This module runs every page that is not yet in the cache in a pool of worker
processes, each executing one notebook exactly as myst-nb's cache mode does (the same reader, the same
``single_nb_execution``, the same working directory), and stores the results in the same jupyter-cache
database. The build that follows then finds every page cached.

Pages that must execute at read time (front matter ``mystnb: execution_mode: force``, such as the synthesis
page, which reads what the others glued) are left to the build. A page that fails here is not cached, so the
build executes it again and reports the failure as it always does, naming the page and the cell.

Each kernel gets ``cores // jobs`` torch threads (``OMP_NUM_THREADS``), so the pool never asks for more threads
than the machine has.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml


def front_matter(path: Path) -> dict:
    text = path.read_text("utf8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    return yaml.safe_load(text[3:end]) or {} if end > 0 else {}


def wants_pre_execution(path: Path) -> bool:
    """A page with code cells whose execution mode is the book's default (cache)."""
    fm = front_matter(path)
    mode = (fm.get("mystnb") or {}).get("execution_mode")
    return "kernelspec" in fm and mode in (None, "cache") and "```{code-cell}" in path.read_text("utf8")


def _execute(path: str, timeout: int, env: dict) -> tuple[str, str | None, float, str | None]:
    """In a worker: read the page as myst-nb does and execute it; (path, notebook JSON or None, seconds, error)."""
    os.environ.update(env)
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution
    from myst_nb.core.read import read_myst_markdown_notebook

    nb = read_myst_markdown_notebook(Path(path).read_text("utf8"), add_source_map=True, path=path)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), allow_errors=False, timeout=timeout,
                                 meta_override=True)
    if result.err is not None:
        return path, None, result.time, f"{type(result.err).__name__}"
    return path, nbformat.writes(nb), result.time, None


def pre_execute(pages: list[Path], cache_path: Path, *, env: dict, timeout: int, jobs: int) -> dict[str, float]:
    """Execute every page of ``pages`` that is not in the jupyter-cache at ``cache_path``, ``jobs`` at a time,
    and cache the results; return ``{page: seconds}`` of what ran (failures are reported and left uncached)."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    cache = get_cache(str(cache_path))
    todo = []
    for p in pages:
        if not wants_pre_execution(p):
            continue
        nb = read_myst_markdown_notebook(p.read_text("utf8"), add_source_map=True, path=str(p))
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append(p)
    if not todo:
        return {}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"pre-executing {len(todo)} pages, {jobs} at a time ({threads} torch thread(s) each)", flush=True)
    done: dict[str, float] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute, str(p), timeout, env) for p in todo]
        for fut in as_completed(futures):
            path, text, seconds, err = fut.result()
            if err is not None:
                print(f"pre-execution of {path} failed ({err}); the build will execute it again and report",
                      file=sys.stderr, flush=True)
                continue
            nb = nbformat.reads(text, as_version=4)
            cache.cache_notebook_bundle(CacheBundleIn(nb, path, data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            done[path] = seconds
            print(f"  {Path(path).name}: {seconds:.1f} s", flush=True)
    print(f"pre-executed {len(done)} of {len(todo)} pages in {time.perf_counter() - t0:.0f} s", flush=True)
    return done
