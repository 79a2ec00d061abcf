"""Gradient descent and SGD on W only (Theorems 1 and 2, arXiv v4 Sections 3, H and I), for ensembles, with
hooks that record whatever a chapter's theorem tracks.

One loop serves every chapter. Each step computes its forward pass, loss vectors and gradient once; what is
recorded is a dict of *recorders*, functions of the step's :class:`StepState` (t, W_t, W_0, the forward pass,
the loss vectors, f, the gradient, the step size), each returning one value per network. The defaults are
what the convergence proofs track:

* ``loss``: f(W_t);
* ``dist_fro``: ``sqrt(m) ||W_t - W_0||_F`` (Appendices H and I keep ``||W_t - W_0||_F <= varrho^50 / sqrt(m)``);
* ``dist_spec``: ``sqrt(m) ||W_t - W_0||_2`` (the radius tau0 of Appendix C and Theorems 3, 4);
* ``flips``: ``max_{i,l} ||D_{i,l}(W_t) - D_{i,l}(W_0)||_0`` (Lemma C.2 bounds it by ~m^(2/3)).

Step sizes: a number, a tensor of one step size per network (E,) -- several step sizes in one batched run --,
a sequence with one entry per step, or a function ``t -> eta`` (a schedule).

GD (``batch_size=None``) steps along the full gradient. Mini-batch SGD (Theorem 2 as restated in Appendix I)
draws, for each network and step, a subset S_t of ``batch_size`` samples without replacement and steps along
the unbiased estimate ``(n / |S_t|) sum_{i in S_t} grad f_i`` (:func:`minibatch_gradient`); its recorders see
the full-batch forward pass and f, computed only at recorded steps.

Also here (because it needs training): :func:`gd_direction`, the displacement of a GD run as a perturbation
for Appendix C, and :func:`perturbations`, one W' of each of the book's three kinds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Callable

import numpy as np
import torch

from . import checks, linalg, paper, perturb, rng
from .data import SequenceData
from .model import Forward, Params, backward, forward, loss_vectors, objective_from_loss


# ----------------------------------------------------------------------------------------------------------
# what a recorder sees

class StepState:
    """The state of step ``t`` (before its update) for every network: ``W`` (E, m, m), ``W0``, ``params`` (at W),
    ``eta`` (E,), and, computed at most once and only when asked for, the full-batch ``fw`` (forward pass),
    ``loss`` (loss vectors), ``f`` (E,) and ``grad`` (the full gradient). ``step_direction`` is what the update
    uses (the full gradient for GD, the mini-batch estimate for SGD)."""

    def __init__(self, t: int, params: Params, W0: torch.Tensor, data: SequenceData, eta: torch.Tensor | None,
                 fw_init: Callable[[], Forward]):
        self.t, self.params, self.W0, self.data, self.eta = t, params, W0, data, eta
        self._fw_init = fw_init
        self._fw = self._loss = self._grad = None
        self.step_direction: torch.Tensor | None = None

    @property
    def W(self) -> torch.Tensor:
        return self.params.W

    @property
    def fw(self) -> Forward:
        if self._fw is None:
            self._fw = forward(self.params, self.data.x)
        return self._fw

    @property
    def loss(self) -> torch.Tensor:
        if self._loss is None:
            self._loss = loss_vectors(self.params, self.fw, self.data.y)
        return self._loss

    @property
    def f(self) -> torch.Tensor:
        return objective_from_loss(self.loss)

    @property
    def grad(self) -> torch.Tensor:
        if self._grad is None:
            self._grad = backward(self.params, self.fw, self.loss).grad
        return self._grad

    @property
    def fw_init(self) -> Forward:
        """The forward pass at W_0 (computed once per run and shared by every step)."""
        return self._fw_init()


# ----------------------------------------------------------------------------------------------------------
# the default recorders

def record_loss(s: StepState) -> torch.Tensor:
    """f(W_t)."""
    return s.f


def record_dist_fro(s: StepState) -> torch.Tensor:
    """``sqrt(m) ||W_t - W_0||_F``."""
    return math.sqrt(s.params.m) * (s.W - s.W0).flatten(1).norm(dim=1)


def record_dist_spec(s: StepState) -> torch.Tensor:
    """``sqrt(m) ||W_t - W_0||_2`` (Lanczos, relative precision ~1e-6)."""
    diff = s.W - s.W0
    if not bool(diff.any()):
        return torch.zeros(s.params.ensemble, dtype=torch.float64, device=s.W.device)
    return math.sqrt(s.params.m) * linalg.matrix_norm(diff, tol=1e-6)


def record_flips(s: StepState) -> torch.Tensor:
    """``max_{i,l} ||D_{i,l}(W_t) - D_{i,l}(W_0)||_0``, the most ReLU signs flipped at one (sample, step)."""
    flips = perturb.sign_flips(s.fw_init, s.fw)[:, :, 1:]
    return (flips != 0).sum(dim=-1).flatten(1).amax(dim=1)


def record_grad_norm_sq(s: StepState) -> torch.Tensor:
    """``||grad f(W_t)||_F^2`` (the full gradient, also for SGD)."""
    return s.grad.flatten(1).square().sum(dim=1)


DEFAULT_RECORDS: dict[str, Callable[[StepState], torch.Tensor]] = {
    "loss": record_loss, "dist_fro": record_dist_fro, "dist_spec": record_dist_spec, "flips": record_flips}


@dataclass
class TrainHistory:
    """Records at ``steps`` (the iteration index t before its update): ``records[name]`` is an array of shape
    ``(len(steps), E, ...)``; ``records["loss"]`` etc. are also attributes (``hist.loss``). ``params``: the final
    weights; ``W0``: the initial W."""

    steps: np.ndarray
    records: dict
    params: Params
    W0: torch.Tensor = field(repr=False)

    def __getattr__(self, name):
        records = self.__dict__.get("records", {})
        if name in records:
            return records[name]
        raise AttributeError(f"TrainHistory has no attribute or record {name!r} (records: {sorted(records)})")

    @property
    def dist(self) -> np.ndarray:
        """``sqrt(m) ||W_t - W_0||_F`` (the record ``dist_fro``)."""
        return self.records["dist_fro"]

    def rate(self, start: int = 0) -> np.ndarray:
        """Per-network geometric rate r in ``f_t ~ f_0 (1 - r)^t``, from a log-linear fit over records >= start."""
        t = self.steps[start:].astype(np.float64)
        logf = np.log(np.maximum(self.records["loss"][start:], np.finfo(np.float64).tiny))
        slope = np.polyfit(t, logf, 1)[0]
        return 1.0 - np.exp(slope)


# ----------------------------------------------------------------------------------------------------------
# step sizes

def _schedule(eta, steps: int, E: int, device) -> Callable[[int], torch.Tensor]:
    """``t -> eta_t`` as an (E,) float64 tensor, from a number, an (E,) tensor, a sequence or a function."""
    def as_vec(v, where):
        if isinstance(v, torch.Tensor):
            if v.ndim == 0:
                v = v.item()
            else:
                if v.shape != (E,):
                    raise ValueError(f"eta{where} must be a number or a tensor of one step size per network, shape "
                                     f"({E},), got shape {tuple(v.shape)}")
                if not bool(torch.isfinite(v).all()) or bool((v <= 0).any()):
                    raise ValueError(f"eta{where} must hold finite positive step sizes, got {v.tolist()}")
                return v.to(device=device, dtype=torch.float64)
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"eta{where} must be a finite positive step size, got {v!r}")
        return torch.full((E,), float(v), dtype=torch.float64, device=device)

    if callable(eta):
        return lambda t: as_vec(eta(t), f"({t})")
    if isinstance(eta, (list, tuple)):
        if len(eta) == 0:
            raise ValueError("eta is an empty schedule: give one step size per step, or a number")
        if len(eta) < steps:
            raise ValueError(f"eta has {len(eta)} step sizes but steps={steps}")
        vecs = [as_vec(v, f"[{t}]") for t, v in enumerate(eta[:steps])]
        return lambda t: vecs[t]
    vec = as_vec(eta, "")
    return lambda t: vec


# ----------------------------------------------------------------------------------------------------------
# the loop

def minibatch_gradient(params: Params, data: SequenceData, idx: torch.Tensor) -> torch.Tensor:
    """The unbiased SGD estimate ``(n / |S|) sum_{i in S} grad f_i(W)`` of Appendix I, for subsets ``idx``
    (E, |S|) of sample indices, one row per network. Its average over all subsets of a fixed size is grad f."""
    if not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32) or idx.ndim != 2:
        raise TypeError("idx must be an integer tensor of shape (E, batch_size)")
    if idx.shape[0] != params.ensemble or not 1 <= idx.shape[1] <= data.n:
        raise ValueError(f"idx must have shape ({params.ensemble}, b) with 1 <= b <= n={data.n}, got {tuple(idx.shape)}")
    if bool((idx < 0).any()) or bool((idx >= data.n).any()):
        raise ValueError(f"idx holds sample indices outside [0, {data.n})")
    idx = idx.to(data.x.device)
    xb, yb = data.x[idx], data.y[idx]  # (E, b, L, .): each network its own subset
    fw = forward(params, xb)
    return (data.n / idx.shape[1]) * backward(params, fw, loss_vectors(params, fw, yb)).grad


def train(params: Params, data: SequenceData, *, eta, steps: int, batch_size: int | None = None,
          record_every: int = 1, records: dict | None = None, extra_records: dict | None = None,
          seed: int | None = None, generator: torch.Generator | None = None) -> TrainHistory:
    """Run ``steps`` iterations of ``W <- W - eta_t * direction_t`` for every network of the ensemble at once.

    ``eta``: see the module docstring. ``batch_size=None`` (or ``n``): full gradient descent on f (Theorem 1).
    Otherwise mini-batch SGD (Theorem 2, Appendix I); then ``seed`` or ``generator`` is required.
    ``records`` replaces the default recorders (:data:`DEFAULT_RECORDS`), ``extra_records`` adds to them; each
    maps a name to a function of the :class:`StepState` returning one value (or row) per network. Records are
    taken at ``t = 0, record_every, 2 record_every, ...`` and at ``t = steps``.

    Raises ``FloatingPointError`` naming the step and the step size when the loss stops being finite (the step
    size diverges), and ``ValueError`` for a non-finite W, a batch size out of range or an empty schedule.
    """
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    if not isinstance(data, SequenceData):
        raise TypeError(f"data must be rnnbook.SequenceData, got {type(data).__name__}")
    steps = checks.int_at_least("steps", steps, 0)
    record_every = checks.positive_int("record_every", record_every)
    if params.activation not in ("relu", "tanh", "identity"):
        raise ValueError(f"unknown activation {params.activation!r}")
    checks.same_placement("params", params.A, x=data.x, y=data.y)
    if not bool(torch.isfinite(params.W).all()):
        raise ValueError("W contains NaN or infinite entries: training needs a finite starting point")
    n, E = data.n, params.ensemble
    eta_at = _schedule(eta, steps, E, params.device)
    sgd = batch_size is not None and batch_size != n
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    if sgd:
        gen = rng.generator(generator, seed)
    recs = dict(DEFAULT_RECORDS if records is None else records)
    recs.update(extra_records or {})
    if "flips" in recs and params.activation != "relu":
        recs.pop("flips")  # sign flips are defined for ReLU masks only
    for name, fn in recs.items():
        if not callable(fn):
            raise TypeError(f"record {name!r} must be a function of the step state, got {type(fn).__name__}")
    W0 = params.W.clone()
    init: dict = {}

    def fw_init():
        if "fw" not in init:
            init["fw"] = forward(params.with_W(W0), data.x)
        return init["fw"]

    rec_t, rec = [], {k: [] for k in recs}
    W = params.W.clone()
    view = (E,) + (1,) * (W.ndim - 1)
    for t in range(steps + 1):
        state = StepState(t, params.with_W(W), W0, data, eta_at(min(t, steps - 1)) if steps else None, fw_init)
        recording = t % record_every == 0 or t == steps
        if recording or not sgd:
            f = state.f
            if not bool(torch.isfinite(f).all()):
                bad = torch.nonzero(~torch.isfinite(f)).flatten().tolist()
                last = state.eta if state.eta is not None else eta_at(0)
                raise FloatingPointError(f"the loss diverged at step {t} (networks {bad}, step size eta = "
                                         f"{last[bad[0]].item():.3g}): the step size is too large for this width")
        if recording:
            rec_t.append(t)
            for name, fn in recs.items():
                rec[name].append(torch.as_tensor(fn(state)).detach().to("cpu", torch.float64))
        if t == steps:
            break
        if sgd:
            idx = torch.rand(E, n, generator=gen, device=gen.device).argsort(dim=1)[:, :batch_size]
            direction = minibatch_gradient(state.params, data, idx)
        else:
            direction = state.grad
        if not bool(torch.isfinite(direction).all()):
            raise FloatingPointError(f"the gradient diverged at step {t} (step size eta = {state.eta[0].item():.3g}): "
                                     "the step size is too large for this width")
        state.step_direction = direction
        W = W - state.eta.to(W.dtype).view(view) * direction
    stacked = {k: torch.stack(v).numpy() for k, v in rec.items()}
    return TrainHistory(steps=np.asarray(rec_t), records=stacked, params=params.with_W(W), W0=W0)


# ----------------------------------------------------------------------------------------------------------
# perturbations that need training (Appendix C)

def gd_direction(params: Params, data: SequenceData, tau0: float | None, *, eta: float, steps: int):
    """``W' = W_T - W_0`` after ``steps`` of full gradient descent from ``params``.

    Returns ``(Wp, tau_natural, history)``: ``tau_natural = sqrt(m) ||W_T - W_0||_2`` (E,) is the radius the
    run actually reached; with ``tau0`` given, ``Wp`` is rescaled to ``||Wp||_2 = tau0 / sqrt(m)`` exactly (the
    GD *direction* at the chapter's radius), with ``tau0=None`` it is returned as is.
    """
    if tau0 is not None:
        tau0 = checks.positive_real("tau0", tau0)
    steps = checks.positive_int("steps", steps)
    hist = train(params, data, eta=eta, steps=steps, record_every=steps, records={"loss": record_loss})
    delta = hist.params.W - params.W
    tau_nat = math.sqrt(params.m) * linalg.matrix_norm(delta)
    Wp = delta if tau0 is None else perturb.rescale(delta, tau0)
    return Wp, tau_nat, hist


def perturbations(params: Params, data: SequenceData, tau0: float, *, seed: int, gd_steps: int,
                  eta: float | None = None, kinds=perturb.KINDS) -> dict:
    """One perturbation of each kind in ``kinds`` (:data:`rnnbook.perturb.KINDS`), all with spectral norm
    ``tau0 / sqrt(m)``: ``{"random": ..., "adversarial": ..., "gd": ...}``. The random one uses ``seed``; the
    adversarial one aims at step 2 of sample 1; the GD one runs ``gd_steps`` steps of the book's step size
    (:func:`rnnbook.paper.book_step_size`) unless ``eta`` is given."""
    out = {}
    for kind in kinds:
        checks.choice("kind", kind, perturb.KINDS)
        if kind == "random":
            out[kind] = perturb.random_direction(params, tau0, seed=seed)
        elif kind == "adversarial":
            out[kind] = perturb.adversarial_rank_one(params, data.x, tau0).Wp
        else:
            step = paper.book_step_size(params.m, data.n, data.L) if eta is None else eta
            out[kind] = gd_direction(params, data, tau0, eta=step, steps=gd_steps)[0]
    return out
