"""Gradient descent and SGD on W only (Theorems 1 and 2, arXiv v4 Sections 3, H and I), for ensembles.

Each run records what the convergence proofs track: the objective f(W_t), the distance from
initialisation ``sqrt(m) * ||W_t - W_0||_F`` (the proofs keep it below poly(rho)), and the largest number
of flipped ReLU signs ``max_{i,l} ||D_{i,l}(W_t) - D_{i,l}(W_0)||_0`` (Lemma C.2 bounds it by ~m^(2/3)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import checks
from .data import SequenceData
from .model import Params, forward, loss_vectors, backward


@dataclass
class TrainHistory:
    """Records at ``steps`` (the iteration index t before its update): arrays of shape ``(len(steps), E)``."""

    steps: np.ndarray
    loss: np.ndarray
    dist: np.ndarray
    flips: np.ndarray
    params: Params  # the final weights

    def rate(self, start: int = 0) -> np.ndarray:
        """Per-network geometric rate r in f_t ~ f_0 * (1 - r)^t, from a log-linear fit over records >= start."""
        t = self.steps[start:].astype(np.float64)
        logf = np.log(np.maximum(self.loss[start:], np.finfo(np.float64).tiny))
        slope = np.polyfit(t, logf, 1)[0]
        return 1.0 - np.exp(slope)


def _record(params: Params, W0: torch.Tensor, D0: torch.Tensor, data: SequenceData):
    fw = forward(params, data.x)
    e = loss_vectors(params, fw, data.y)
    f = 0.5 * e.square().sum(dim=(1, 2, 3))
    diff = (params.W - W0).flatten(1)
    dist = math.sqrt(params.m) * diff.norm(dim=1)
    flips = (fw.g[:, :, 1:] >= 0).ne(D0).sum(dim=-1).flatten(1).amax(dim=1)
    return f, dist, flips


def train(params: Params, data: SequenceData, *, eta: float, steps: int, batch_size: int | None = None,
          record_every: int = 1, seed: int | None = None, generator: torch.Generator | None = None) -> TrainHistory:
    """Run ``steps`` iterations of ``W <- W - eta * grad`` for every network of the ensemble at once.

    ``batch_size=None`` (or ``n``): full gradient descent on f (Theorem 1). Otherwise mini-batch SGD
    (Theorem 2, App. I): each step each network draws its own random subset S_t of ``batch_size`` samples
    without replacement and steps along the unbiased estimate ``(n / |S_t|) * sum_{i in S_t} grad f_i``;
    then ``seed`` or ``generator`` is required. Raises ``FloatingPointError`` if the loss diverges.
    """
    checks.real_in("eta", eta, 0.0, math.inf, low_open=True, high_open=True)
    steps = checks.int_at_least("steps", steps, 0)
    record_every = checks.positive_int("record_every", record_every)
    if params.activation != "relu" or not params.tied:
        raise ValueError("train() trains the paper's model: a weight-tied ReLU network")
    checks.same_placement("params", params.A, x=data.x, y=data.y)
    n, E = data.n, params.ensemble
    sgd = batch_size is not None and batch_size != n
    if sgd:
        checks.positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"batch_size must be at most n={n}, got {batch_size}")
        gen = checks.generator(generator, seed)
    W0 = params.W.clone()
    D0 = forward(params, data.x).g[:, :, 1:] >= 0
    rec_t, rec_f, rec_dist, rec_flips = [], [], [], []
    W = params.W.clone()
    for t in range(steps + 1):
        cur = params.with_W(W)
        if t % record_every == 0 or t == steps:
            f, dist, flips = _record(cur, W0, D0, data)
            if not torch.isfinite(f).all():
                raise FloatingPointError(f"loss diverged at step {t} (eta={eta} too large)")
            rec_t.append(t)
            rec_f.append(f.cpu())
            rec_dist.append(dist.cpu())
            rec_flips.append(flips.cpu())
        if t == steps:
            break
        if sgd:
            idx = torch.rand(E, n, generator=gen, device=gen.device).argsort(dim=1)[:, :batch_size].to(data.x.device)
            xb, yb = data.x[idx], data.y[idx]  # (E, b, L, .)
            scale = n / batch_size
        else:
            xb, yb, scale = data.x, data.y, 1.0
        fw = forward(cur, xb)
        e = loss_vectors(cur, fw, yb)
        if not torch.isfinite(e).all():  # checked every step, not only at recorded ones
            raise FloatingPointError(f"loss diverged at step {t} (eta={eta} too large)")
        W = W - (eta * scale) * backward(cur, fw, e).grad
    stack = lambda rows: torch.stack(rows).to(torch.float64).numpy()
    return TrainHistory(steps=np.asarray(rec_t), loss=stack(rec_f), dist=stack(rec_dist), flips=stack(rec_flips),
                        params=params.with_W(W))
