"""Private: the matrix kernels behind the fast forward and BPTT loops of :mod:`rnnbook.model`, chosen by
measurement on the machine at hand.

The forward and backward passes of one network are dominated by L skinny products ``(n x m) @ (m x m)``
each ("step" products, ``x @ W^T`` forward and ``x @ W`` backward) and one weight-gradient GEMM ``(m x k) @ (k x m)`` with ``k = (L-1) n`` ("gram"). On CPU in
float32 torch offers two kernels for them: ``torch.mm``/``addmm`` (the BLAS torch is built with) and
oneDNN's linear kernel (``torch.ops.mkldnn._linear_pointwise``, torch-internal), optionally with W reordered
once per pass into oneDNN's blocked layout. Which is fastest depends on the CPU, m, n and the thread count
(seen here: oneDNN about twice as fast as ``torch.mm`` on one AMD CPU, slower at m = 256 on another), so
nothing is assumed: the first time a size is needed, each candidate is timed on a product of that size
(interleaved rounds, median) and the fastest is kept, in memory and in a small JSON file under
``$XDG_CACHE_HOME/rnnbook`` (``~/.cache/rnnbook``), keyed by CPU model, core and thread counts and torch
version, so later processes on the same machine do not measure again.

* ``RNNBOOK_NO_ONEDNN=1`` -- never use oneDNN (``torch.mm`` everywhere);
* ``RNNBOOK_GEMM_CACHE=0`` -- measure in every process, never read or write the file.

oneDNN is used only after a probe has checked its results against ``torch.mm`` on this machine. Every
choice gives the same product up to float32 rounding; :func:`choices` lists what was chosen.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

STEP_MODES = ("mm", "onednn", "onednn_packed")
GRAM_MODES = ("mm", "onednn")
LAYOUTS = ("batched", "per_network")
_STEPS_PER_PASS = 16  # a packed W is reused by this many step products in the timing (a pass has ~L of them)

_state: dict = {}


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system (called once when
    rnnbook is imported; ``RNNBOOK_NO_MALLOPT=1`` skips it).

    By default glibc hands every freed block above its mmap threshold back to the kernel, so the next pass's
    buffers (tens of MB for an ensemble) are page-faulted in again, about a millisecond per MB: measured here,
    it made one batched pass over 16 networks slower than 16 separate passes. Raising the mmap threshold to
    its maximum (32 MB) and the trim threshold to 1 GB keeps such buffers in the heap. Returns whether it was
    applied (only with glibc)."""
    if os.environ.get("RNNBOOK_NO_MALLOPT", "") not in ("", "0") or _state.get("mallopt"):
        return bool(_state.get("mallopt"))
    ok = False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        ok = False
    _state["mallopt"] = ok
    return ok


# ----------------------------------------------------------------------------------------------------------
# oneDNN availability

def onednn_works() -> bool:
    """Whether oneDNN's linear kernels exist here and agree with ``torch.mm`` (probed once per process)."""
    if "works" not in _state:
        ok = False
        try:
            if os.environ.get("RNNBOOK_NO_ONEDNN", "") not in ("", "0"):
                raise RuntimeError("disabled by RNNBOOK_NO_ONEDNN")
            if torch.backends.mkldnn.is_available():
                gen = torch.Generator().manual_seed(0)
                a, w, c = (torch.randn(s, generator=gen) for s in ((5, 7), (6, 7), (5, 6)))
                lp = torch.ops.mkldnn._linear_pointwise
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 5)
                r1 = lp.binary(a, c, packed, None, "add")
                r2 = lp(a, w, None, "none", [], "")
                ok = torch.allclose(r1, c + a @ w.T, atol=1e-5) and torch.allclose(r2, a @ w.T, atol=1e-5)
        except Exception:  # noqa: BLE001 -- any failure means: use torch.mm
            ok = False
        _state["works"] = ok
    return _state["works"]


# ----------------------------------------------------------------------------------------------------------
# the kernels, by mode

def prepare(W: torch.Tensor, rows: int, mode: str) -> torch.Tensor:
    """The operand for ``x @ W^T`` products in ``mode``: W itself, or reordered once for oneDNN."""
    if mode == "onednn_packed":
        return torch.ops.mkldnn._reorder_linear_weight(W.contiguous(), rows)
    return W


def add_product_(out: torch.Tensor, x: torch.Tensor, W: torch.Tensor, mode: str) -> torch.Tensor:
    """In place ``out += x @ W^T`` for one network (2-D tensors); ``W`` from :func:`prepare`. Returns ``out``."""
    if mode == "mm":
        return out.addmm_(x, W.t())
    out.copy_(torch.ops.mkldnn._linear_pointwise.binary(x, out, W, None, "add"))
    return out


def gram(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """``a^T b`` for row blocks ``a, b`` of shape (k, m): the weight-gradient GEMM of one network."""
    if mode == "mm":
        return torch.mm(a.t(), b)
    return torch.ops.mkldnn._linear_pointwise(a.t(), b.t(), None, "none", [], "")  # X @ Y^T, X = a^T, Y = b^T


# ----------------------------------------------------------------------------------------------------------
# choosing by measurement

def _bucket(v: int) -> int:
    """Sizes are measured at the nearest power of two (nearest in log scale)."""
    return 1 << max(0, round(math.log2(max(v, 1))))


#: Bumped when what is measured changes, so that choices cached by an older rnnbook are measured again.
_CACHE_VERSION = "2"


def _machine_key() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [_CACHE_VERSION, cpu, str(os.cpu_count()), str(torch.get_num_threads()), torch.__version__,
             os.environ.get("OMP_WAIT_POLICY", "")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cache_file() -> Path | None:
    if os.environ.get("RNNBOOK_GEMM_CACHE", "1") in ("0", ""):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnbook"
    return base / f"gemm-{_machine_key()}.json"


def _load() -> dict:
    if "choices" not in _state:
        _state["choices"] = {}
        path = _cache_file()
        if path is not None and path.exists():
            try:
                _state["choices"] = {k: v for k, v in json.loads(path.read_text()).items()
                                     if v in STEP_MODES + GRAM_MODES + LAYOUTS}
            except (OSError, ValueError):
                pass
    return _state["choices"]


def _save(key: str, mode: str) -> None:
    path = _cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        current = json.loads(path.read_text()) if path.exists() else {}
        current[key] = mode
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(current, fh, indent=0, sort_keys=True)
        os.replace(tmp, path)  # atomic: concurrent kernels never read half a file
    except (OSError, ValueError):
        pass  # an unwritable cache only costs a new measurement next time


def _median_times(fns: dict, rounds: int = 5) -> dict:
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _work(m: int, rows: int) -> tuple[int, int]:
    """(steps, rounds) of a measurement: enough to time reliably, bounded in cost at large m."""
    flops = 2.0 * rows * m * m * _STEPS_PER_PASS
    if flops > 4e9:
        return max(2, int(_STEPS_PER_PASS * 4e9 / flops)), 3
    return _STEPS_PER_PASS, 5


def _measure_step(m: int, rows: int, orient: str) -> str:
    """The step products of a pass, ``x @ W^T`` (forward) or ``x @ W`` (backward, where oneDNN needs W^T
    reordered: that copy is part of what is timed), each mode with its one-off preparation per pass."""
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(m, m, generator=gen)
    x = torch.randn(rows, m, generator=gen)
    out = torch.zeros(rows, m)
    steps, rounds = _work(m, rows)
    M = W if orient == "fwd" else W.t()

    def run(mode):
        def f():
            P = prepare(M, rows, mode)
            for _ in range(steps):
                add_product_(out, x, P, mode)
        return f

    t = _median_times({mode: run(mode) for mode in STEP_MODES}, rounds)
    return min(t, key=t.get)


def _measure_gram(m: int, k: int) -> str:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(k, m, generator=gen), torch.randn(k, m, generator=gen)
    t = _median_times({mode: (lambda mode=mode: gram(a, b, mode)) for mode in GRAM_MODES})
    return min(t, key=t.get)


#: The batched layout must beat one network after another by this factor to be chosen: the two are often within
#: a few percent, where a choice measured on a busy machine can come out the wrong way round (measured: a
#: "batched" choice cached under load ran 0.96x against the per-network loop later, 1.13x when re-measured).
LAYOUT_MARGIN = 1.05


def _measure_layout(m: int, rows: int, E: int) -> str:
    """An ensemble of E networks: one batched product per step over all of them, or one network after another
    (each W stays in cache for all its steps, and gets its own fastest kernel). Measured at the ensemble's
    size, since whether E matrices fit in the cache is the question, on the products of both passes (forward
    ``x @ W^T`` and backward ``z @ W``); "batched" only when it is faster by :data:`LAYOUT_MARGIN`."""
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(E, m, m, generator=gen)
    x = torch.randn(E, rows, m, generator=gen)
    out = torch.zeros(E, rows, m)
    mode, mode_T = step_mode(W[0], rows), step_T_mode(W[0], rows)
    WT = W.transpose(1, 2)
    steps, rounds = _work(m, rows * E)

    def batched():
        for _ in range(steps):
            out.baddbmm_(x, WT)      # forward
            out.baddbmm_(x, W)       # backward

    def per_network():
        for e in range(E):
            P, P_T = prepare(W[e], rows, mode), prepare(W[e].t(), rows, mode_T)
            for _ in range(steps):
                add_product_(out[e], x[e], P, mode)
                add_product_(out[e], x[e], P_T, mode_T)

    t = _median_times({"batched": batched, "per_network": per_network}, rounds)
    return "batched" if t["batched"] * LAYOUT_MARGIN < t["per_network"] else "per_network"


@contextlib.contextmanager
def forced(**modes):
    """Within the block, use the given kernels instead of measuring, e.g. ``forced(step="onednn_packed",
    layout="per_network")`` (for the tests, which check every path against autograd)."""
    allowed = {"step": STEP_MODES, "step_T": STEP_MODES, "gram": GRAM_MODES, "layout": LAYOUTS}
    for op, mode in modes.items():
        if op not in allowed or mode not in allowed[op]:
            raise ValueError(f"forced() takes step in {STEP_MODES}, gram in {GRAM_MODES}, layout in {LAYOUTS}; "
                             f"got {op}={mode!r}")
    old = _state.get("forced", {})
    _state["forced"] = {**old, **modes}
    try:
        yield
    finally:
        _state["forced"] = old


def _choose(op: str, t: torch.Tensor, m: int, rows: int, E: int = 1) -> str:
    forced = _state.get("forced", {})
    if op in forced or (op == "step_T" and "step" in forced):
        return forced.get(op, forced.get("step"))
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return "batched" if op == "layout" else "mm"  # float64 and CUDA: one kernel, nothing to choose
    if op != "layout" and not onednn_works():
        return "mm"
    key = f"{op}:m{_bucket(m)}:r{_bucket(rows)}" + (f":E{_bucket(E)}" if op == "layout" else "") + \
        f":t{torch.get_num_threads()}"
    choices = _load()
    if key not in choices:
        if op == "step":
            choices[key] = _measure_step(_bucket(m), _bucket(rows), "fwd")
        elif op == "step_T":
            choices[key] = _measure_step(_bucket(m), _bucket(rows), "bwd")
        elif op == "gram":
            choices[key] = _measure_gram(_bucket(m), _bucket(rows))
        else:
            choices[key] = _measure_layout(_bucket(m), _bucket(rows), max(2, _bucket(E)))
        _save(key, choices[key])
    return choices[key]


def step_mode(W: torch.Tensor, rows: int) -> str:
    """How to compute the forward step products ``(rows x m) @ W^T`` of a pass with this ``W`` (m x m)."""
    return _choose("step", W, W.shape[-1], rows)


def step_T_mode(W: torch.Tensor, rows: int) -> str:
    """How to compute the backward step products ``(rows x m) @ W`` (with ``prepare(W.t(), ...)``)."""
    return _choose("step_T", W, W.shape[-1], rows)


def gram_mode(a: torch.Tensor) -> str:
    """How to compute the weight-gradient GEMM ``a^T b`` for row blocks of shape ``a.shape[-2:]`` = (k, m)."""
    return _choose("gram", a, a.shape[-1], a.shape[-2])


def layout(W: torch.Tensor, rows: int) -> str:
    """``"batched"`` or ``"per_network"``: how an ensemble of tied networks (``W`` (E, m, m)) runs its steps."""
    return _choose("layout", W, W.shape[-1], rows, W.shape[0])


def choices() -> dict:
    """The kernel chosen for each (operation, m, rows, threads) measured so far, e.g. for a status page."""
    return dict(_load())
