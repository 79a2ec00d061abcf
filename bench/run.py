"""Benchmark suite: rnnbook's kernels against plain-torch baselines, and the machine's GEMM peak.

    .venv/bin/python bench/run.py            # full suite (make bench), a few minutes on 2 cores
    .venv/bin/python bench/run.py --quick    # small sizes, under a minute (make bench-quick)
    .venv/bin/python bench/run.py --only ntk --repeats 9

Writes ``_build/bench.json`` (a list of entries, see README "Benchmarks") and prints a table.
``ratio = baseline_s / ours_s``: above 1 means rnnbook is faster. Each comparison runs both sides in the
same process, interleaved round by round, and reports medians (bench/harness.py). Runs on
``rnnbook.default_device()`` (``RNNBOOK_DEVICE``), so the same command benchmarks a GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rnnbook as rb  # noqa: E402  -- before torch: it sets torch's OpenMP wait policy (rnnbook/__init__.py)
import torch  # noqa: E402
from rnnbook import ntk  # noqa: E402
import harness as H  # noqa: E402

N, D_X, D_OUT, DELTA = 32, 16, 4, 0.1


class Suite:
    def __init__(self, quick: bool, repeats: int | None):
        self.quick = quick
        self.repeats = repeats
        self.device = rb.default_device()
        self.entries: list[dict] = []
        self.peak: dict[torch.dtype, dict] = {}

    def reps(self, full: int, quick: int) -> int:
        return self.repeats if self.repeats is not None else (quick if self.quick else full)

    def add_t(self, name, t, ours_key, base_key, baseline, flops, dtype, sizes, **extra):
        """add() from an interleaved() result, with the CPU times alongside the wall times."""
        return self.add(name, t[ours_key]["median"], baseline, t[base_key]["median"], flops, dtype, sizes,
                        ours_cpu_s=t[ours_key]["cpu"], baseline_cpu_s=t[base_key]["cpu"],
                        cpu_ratio=t[base_key]["cpu"] / t[ours_key]["cpu"], **extra)

    def add(self, name, ours_s, baseline, baseline_s, flops, dtype, sizes, **extra):
        gflops = None if flops is None else flops / ours_s / 1e9
        peak = self.peak.get(dtype)
        entry = {
            "name": name, "ours_s": ours_s, "baseline": baseline, "baseline_s": baseline_s,
            "ratio": None if baseline_s is None else baseline_s / ours_s,
            "gflops": gflops,
            "peak_fraction": None if gflops is None or peak is None else gflops / peak["gflops"],
            "device": H.device_label(self.device), "dtype": str(dtype).replace("torch.", ""), "sizes": sizes,
            "load": H.loadavg(),
        }
        entry.update(extra)
        self.entries.append(entry)
        r = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}x"
        print(f"  {name}: ours {H.fmt_s(ours_s)}, baseline {H.fmt_s(baseline_s)}, ratio {r}", flush=True)
        return entry

    # ------------------------------------------------------------------------------------------------
    def measure_peak(self, dtype: torch.dtype):
        size = 1024 if self.quick else 2048
        p = H.gemm_peak(size, dtype=dtype, device=self.device, repeats=self.reps(7, 3))
        old = self.peak.get(dtype)
        if old is None or p["gflops"] > old["gflops"]:
            self.peak[dtype] = p
        return p

    def add_peak_entries(self):
        for dtype, p in self.peak.items():
            size = 1024 if self.quick else 2048
            others = {k: v for k, v in p["other_seconds"].items() if k != p["kernel"]}
            base = next(iter(others), None)
            self.add(f"gemm_peak_{str(dtype)[6:]}", p["seconds"], base, others.get(base), 2.0 * size ** 3, dtype,
                     {"m": size}, kernel=p["kernel"], rates=p["rates"],
                     note="dense square GEMM; the peak every peak_fraction of this dtype is relative to "
                          "(best of start and end of the run)")

    # ------------------------------------------------------------------------------------------------
    def forward_backward(self):
        """One network, gradient of the paper's loss wrt W: rb.gradient vs torch.nn.RNN + autograd."""
        L, dt, dev = 20, torch.float32, self.device
        for m in ((256, 1024) if self.quick else (256, 1024, 2048)):
            p = rb.init_params(m, D_X, D_OUT, seed=0, device=dev, dtype=dt)
            data = rb.make_data(N, L, D_X, D_OUT, DELTA, seed=1, device=dev, dtype=dt)
            rnn = torch.nn.RNN(D_X, m, nonlinearity="relu", bias=False, batch_first=True).to(device=dev, dtype=dt)
            with torch.no_grad():
                rnn.weight_hh_l0.copy_(p.W[0])
                rnn.weight_ih_l0.copy_(p.A[0])
            rnn.weight_ih_l0.requires_grad_(False)  # only W is trained, as in the paper
            Bt = p.B[0].t().contiguous()

            def ours():
                return rb.gradient(p, data.x, data.y).grad

            def theirs():
                rnn.weight_hh_l0.grad = None
                out, _ = rnn(data.x)
                e = out[:, 1:] @ Bt - data.y[:, 1:]  # steps l = 2..L
                (0.5 * e.square().sum()).backward()
                return rnn.weight_hh_l0.grad

            g1, g2 = ours()[0], theirs()
            err = ((g1 - g2).norm() / g2.norm()).item()
            t = H.interleaved({"ours": ours, "torch": theirs}, repeats=self.reps(15, 5), device=dev)
            flops = 6.0 * N * L * m * m  # forward L, backward L skinny GEMMs (2 n m^2 each) + weight gradient
            self.add_t(f"fwd_bwd_m{m}", t, "ours", "torch", "torch.nn.RNN(relu) + autograd", flops, dt,
                       {"m": m, "n": N, "L": L, "d_x": D_X, "d": D_OUT}, rel_err=err,
                     baseline_gflops=flops / t["torch"]["median"] / 1e9)

    def ensemble(self):
        """16 seeds in one batched pass vs a Python loop over 16 single networks (same code per network)."""
        L, E, dt, dev = 20, 16, torch.float32, self.device
        for m in ((512,) if self.quick else (128, 512)):
            p = rb.init_params(m, D_X, D_OUT, ensemble=E, seed=2, device=dev, dtype=dt)
            data = rb.make_data(N, L, D_X, D_OUT, DELTA, seed=3, device=dev, dtype=dt)
            members = [p.member(e) for e in range(E)]

            def ours():
                return rb.gradient(p, data.x, data.y).grad

            def loop():
                return [rb.gradient(q, data.x, data.y).grad for q in members]

            g1, g2 = ours(), torch.cat(loop())
            err = ((g1 - g2).norm() / g2.norm()).item()
            t = H.interleaved({"ours": ours, "loop": loop}, repeats=self.reps(9, 3), device=dev)
            self.add_t(f"ensemble{E}_m{m}", t, "ours", "loop", f"loop over {E} rb.gradient calls",
                       6.0 * E * N * L * m * m, dt,
                     {"E": E, "m": m, "n": N, "L": L}, rel_err=err)

    def products(self):
        """All L(L+1)/2 spectral norms ||D_l2 W ... D_l1 W|| for one sample vs formed products + svdvals."""
        from rnnbook import products
        m, L = (256, 20) if self.quick else (1024, 50)
        dt, dev = torch.float32, self.device
        sizes = {"m": m, "L": L, "pairs": L * (L + 1) // 2}
        name = f"product_norms_m{m}_L{L}"
        if not hasattr(products, "all_product_norms"):
            print(f"  {name}: SKIPPED -- rnnbook.products.all_product_norms does not exist yet", flush=True)
            self.entries.append({"name": name, "ours_s": None, "baseline": "formed products + svdvals",
                                 "baseline_s": None, "ratio": None, "gflops": None, "peak_fraction": None,
                                 "device": H.device_label(dev), "dtype": "float32", "sizes": sizes,
                                 "skipped": "rnnbook.products.all_product_norms is missing"})
            return
        p = rb.init_params(m, D_X, D_OUT, seed=4, device=dev, dtype=dt)
        data = rb.make_data(2, L, D_X, D_OUT, DELTA, seed=5, device=dev, dtype=dt)
        with torch.no_grad():
            D = rb.forward(p, data.x).D[:, 0]  # sample 0: (1, L+1, m)
        W = p.W
        k = 4 if self.quick else 6  # products timed on the baseline side (one chain from l1 = 1)

        def chain(Wm, Dm, l1, count):
            """Explicit products D_l W ... D_l1 W for l = l1 .. l1+count-1, and their top singular values."""
            P = Dm[l1].unsqueeze(1) * Wm
            out = [torch.linalg.svdvals(P)[0]]
            for l in range(l1 + 1, l1 + count):
                P = (Dm[l].unsqueeze(1) * Wm) @ P
                out.append(torch.linalg.svdvals(P)[0])
            return torch.stack(out)

        Dm32 = D[0].to(dt)

        result = {}

        def ours():
            result["norms"] = products.all_product_norms(W, D)
            return result["norms"]

        def base():
            return chain(W[0], Dm32, 1, k)

        # a long call: no warm-up round (its effects are negligible against seconds of work)
        t = H.interleaved({"ours": ours, "base": base}, repeats=self.reps(2, 2), device=dev, warmup=0)
        npairs = L * (L + 1) // 2
        base_s = t["base"]["median"] / k * npairs  # one GEMM + one svdvals per product, for every pair
        # accuracy against float64 explicit products: the timed chain, a middle chain and the full span
        N_ = result["norms"][0]
        W64, D64 = W[0].double(), D[0].double()
        ref = {}
        for l1, cnt in ((1, k), (L // 2, 3)):
            for j, s in enumerate(chain(W64, D64, l1, cnt).tolist()):
                ref[(l1, l1 + j)] = s
        Pfull = D64[1].unsqueeze(1) * W64
        for l in range(2, L + 1):
            Pfull = (D64[l].unsqueeze(1) * W64) @ Pfull
        ref[(1, L)] = torch.linalg.svdvals(Pfull)[0].item()
        err = max(abs(N_[a - 1, b - 1].item() - s) / s for (a, b), s in ref.items())
        self.add(name, t["ours"]["median"], "formed products + torch.linalg.svdvals", base_s, None, dt, sizes,
                 rel_err=err, baseline_extrapolated=True, pairs_checked=len(ref),
                 ours_cpu_s=t["ours"]["cpu"], baseline_cpu_s=t["base"]["cpu"] / k * npairs,
                 cpu_ratio=t["base"]["cpu"] / k * npairs / t["ours"]["cpu"],
                 note=f"baseline time = median time of {k} chained products (one GEMM + svdvals each) / {k} "
                      f"x {npairs} pairs; rel_err = max over {len(ref)} pairs against float64 explicit SVD")

    def ntk(self):
        """Empirical NTK Gram of per-sample gradients wrt W: rnnbook.ntk vs torch.func (float64, both sides)."""
        from torch.func import grad, vmap
        L, dt, dev = 10, torch.float64, self.device

        def sample_loss(W, A, B, x, y):
            h = torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)
            f = 0.0
            for l in range(x.shape[0]):
                h = torch.relu(W @ h + A @ x[l])
                if l >= 1:
                    f = f + 0.5 * ((B @ h - y[l]) ** 2).sum()
            return f

        per_sample = vmap(grad(sample_loss), in_dims=(None, None, None, 0, 0))
        for m in ((256,) if self.quick else (256, 512, 1024)):
            p = rb.init_params(m, D_X, D_OUT, seed=6, device=dev, dtype=dt)
            data = rb.make_data(N, L, D_X, D_OUT, DELTA, seed=7, device=dev, dtype=dt)

            def ours():
                return ntk.empirical_ntk(p, data.x, data.y)[0]

            def theirs():
                G = per_sample(p.W[0], p.A[0], p.B[0], data.x, data.y).reshape(N, -1)
                return G @ G.T

            K1, K2 = ours(), theirs()
            err = ((K1 - K2).norm() / K2.norm()).item()
            t = H.interleaved({"ours": ours, "func": theirs}, repeats=self.reps(5, 3), device=dev)
            T = L - 1
            flops = 6.0 * N * L * m * m + 4.0 * (T * N) ** 2 * m  # BPTT + the two (T n)^2 Gram GEMMs
            self.add_t(f"ntk_gram_m{m}", t, "ours", "func", "torch.func vmap(grad) per-sample + Gram",
                       flops, dt, {"m": m, "n": N, "L": L}, rel_err=err,
                     note="float64 on both sides (time and error)")


def plugin_entries(suite) -> dict:
    """Entries defined in ``bench/entries_*.py``: each such module has ``ENTRIES = {name: function(suite)}``
    (a chapter family adds its benchmarks there, next to the others, without editing this file)."""
    import importlib

    out = {}
    for path in sorted(Path(__file__).resolve().parent.glob("entries_*.py")):
        mod = importlib.import_module(path.stem)
        for name, fn in getattr(mod, "ENTRIES", {}).items():
            if name in out:
                raise RuntimeError(f"bench entry {name!r} is defined twice ({path.name})")
            out[name] = (lambda fn=fn: fn(suite))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per comparison (default 15/9/5/3 full)")
    ap.add_argument("--only", default=None, help="comma-separated: fwd_bwd, ensemble, products, ntk, and those of "
                                                   "bench/entries_*.py")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "bench.json")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = Suite(args.quick, args.repeats)
    t0 = time.perf_counter()
    print(f"rnnbook bench ({'quick' if args.quick else 'full'}) on {H.device_label(s.device)}, "
          f"torch {torch.__version__}, load average {H.loadavg()}", flush=True)
    load, cores = H.loadavg(), os.cpu_count() or 1
    if load is not None and load > cores:
        print(f"  note: load average {load} exceeds the {cores} cores: timings are noisy (other jobs share the "
              f"cores); medians of interleaved rounds and --threads 1 (see cpu ratio) help, a quiet machine more",
              flush=True)
    s.measure_peak(torch.float32)
    todo = {"fwd_bwd": s.forward_backward, "ensemble": s.ensemble, "products": s.products, "ntk": s.ntk}
    todo.update(plugin_entries(s))
    only = set(args.only.split(",")) if args.only else set(todo)
    unknown = only - set(todo)
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}; choose from {sorted(todo)}")
    for k, fn in todo.items():
        if k in only:
            print(f"[{k}]", flush=True)
            if k == "ntk" or k.endswith("_f64"):
                s.measure_peak(torch.float64)
            fn()
    s.measure_peak(torch.float32)  # again at the end: the peak is the better of the two
    s.add_peak_entries()
    # peak fractions against the final peaks
    for e in s.entries:
        if e.get("gflops") is not None and not e["name"].startswith("gemm_peak"):
            e["peak_fraction"] = e["gflops"] / s.peak[getattr(torch, e["dtype"])]["gflops"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in e.items()} for e in s.entries]
    args.out.write_text(json.dumps(clean, indent=1))
    print()
    print(H.table(s.entries))
    print(f"\n* extrapolated (see the entry's note).  Wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
          f" in {time.perf_counter() - t0:.0f} s; load average now {H.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
