"""Timing helpers for the benchmark suite: interleaved medians, the machine's GEMM peak, and the table.

A noisy machine (shared cores, turbo, other jobs) biases any comparison that times one side and then the
other. Every comparison here runs the competing functions in *rounds*: each round calls every function
once, in a rotating order, and the reported time is the median over rounds. The same process, threads,
allocator state and machine load are seen by both sides.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, *, repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Median wall time (s) of each function, timed in interleaved rounds with rotating order.

    Returns ``{name: {"median": s, "min": s, "times": [...], "cpu": s}}``; ``cpu`` is the median CPU time
    of the process (all threads) over the same calls: with one thread it is much less sensitive to other
    jobs on the machine than the wall time (with several, it also counts threads waiting at barriers).
    """
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    sync(device)
    times = {k: [] for k in names}
    cpu = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"median": statistics.median(v), "min": min(v), "times": v, "cpu": statistics.median(cpu[k])}
            for k, v in times.items()}


def onednn_linear_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except Exception:  # noqa: BLE001
        return False


def gemm_peak(size: int, *, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    """The machine's dense square GEMM rate at ``size``: the best of the kernels torch offers.

    ``torch.mm`` (the BLAS torch is built with) and, on CPU in float32, oneDNN's linear kernel, which on
    some x86 CPUs is much faster than the BLAS. Both are timed interleaved; the peak is the faster median.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    fns = {"torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and dtype == torch.float32 and onednn_linear_available():
        bt = b.t().contiguous()
        lp = torch.ops.mkldnn._linear_pointwise
        fns["oneDNN linear"] = lambda: lp(a, bt, None, "none", [], "")
    t = interleaved(fns, repeats=repeats, device=device)
    flops = 2.0 * size ** 3
    rates = {k: flops / v["median"] / 1e9 for k, v in t.items()}
    best = max(rates, key=rates.get)
    return {"gflops": rates[best], "kernel": best, "rates": rates, "seconds": t[best]["median"],
            "other_seconds": {k: v["median"] for k, v in t.items()}}


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def fmt_s(s) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def table(entries: list) -> str:
    """A readable fixed-width table of the entries."""
    head = ("name", "ours", "baseline", "base time", "ratio", "cpu ratio", "GFLOP/s", "peak", "rel err", "load")
    rows = [head]
    for e in entries:
        rows.append((
            e["name"],
            fmt_s(e["ours_s"]),
            (e["baseline"] or "-")[:34],
            fmt_s(e["baseline_s"]) + ("*" if e.get("baseline_extrapolated") else ""),
            "-" if e["ratio"] is None else f"{e['ratio']:.2f}x",
            "-" if e.get("cpu_ratio") is None else f"{e['cpu_ratio']:.2f}x",
            "-" if e["gflops"] is None else f"{e['gflops']:.0f}",
            "-" if e["peak_fraction"] is None else f"{100 * e['peak_fraction']:.0f}%",
            "-" if e.get("rel_err") is None else f"{e['rel_err']:.1e}",
            "-" if e.get("load") is None else f"{e['load']:.1f}",
        ))
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) if c in (0, 2) else str(v).rjust(w) for c, (v, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
