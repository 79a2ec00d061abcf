"""Benchmarks of rnnbook.training (Part V): an ensemble of GD runs in one batched call against a loop of
single-network runs with the same code, step sizes and recorders.

Discovered by bench/run.py (``ENTRIES``); run alone with ``bench/run.py --only gd_ensemble``.
"""
from __future__ import annotations

import harness as H
import torch

import rnnbook as rb
from rnnbook import training as tr

E, N, L, D_X, D = 16, 8, 10, 8, 1


def gd_ensemble(suite) -> None:
    """16 seeds, n = 8, L = 10, GD with the recorders of the convergence chapter (f, ||grad||^2,
    max ||loss||^2, eta, distance, flips at every step): ``rb.train`` on the ensemble of 16 against a
    Python loop of 16 ``rb.train`` calls on single networks. The issue's size is m = 256, 200 steps; the
    neighbouring widths are shown too (the batched path must not be slower at any of them)."""
    dt, dev = torch.float32, suite.device
    steps = 50 if suite.quick else 200
    widths = (256,) if suite.quick else (128, 256, 512)
    data = rb.make_data(N, L, D_X, D, 0.2, seed=rb.seed("bench", "gd_ensemble", "data"), device=dev, dtype=dt)
    for m in widths:
        p = rb.init_params(m, D_X, D, ensemble=E, seed=rb.seed("bench", "gd_ensemble", "networks", m),
                           device=dev, dtype=dt)
        members = [p.member(e) for e in range(E)]
        eta = rb.paper.book_step_size(m, N, L)
        out = {}

        def ours():
            out["ours"] = rb.train(p, data, eta=eta, steps=steps, records=tr.CHAIN_RECORDS)

        def loop():
            out["loop"] = [rb.train(q, data, eta=eta, steps=steps, records=tr.CHAIN_RECORDS) for q in members]

        ours()
        loop()
        a = out["ours"].loss
        b = torch.tensor([h.loss[:, 0] for h in out["loop"]]).T.numpy()
        err = float(abs(a - b).max() / abs(b).max())
        t = H.interleaved({"ours": ours, "loop": loop}, repeats=suite.reps(3, 2), device=dev, warmup=0)
        flops = steps * 6.0 * E * N * L * m * m  # forward + backward per step (L skinny GEMMs each, + gradient)
        suite.add_t(f"gd_ensemble{E}_m{m}_T{steps}", t, "ours", "loop", f"loop over {E} single-network rb.train",
                    flops, dt, {"E": E, "m": m, "n": N, "L": L, "steps": steps}, rel_err=err,
                    note="records=training.CHAIN_RECORDS at every step; rel_err: max |f_t| difference / max f")


ENTRIES = {"gd_ensemble": gd_ensemble}
