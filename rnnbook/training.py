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

Divergence: by default a loss that stops being finite raises ``FloatingPointError`` naming the step and the
step size; with ``on_divergence="stop"`` the diverged networks of an ensemble are frozen instead (their later
records are NaN and :attr:`TrainHistory.diverged_at` says when), so that a batch of step sizes can look for
the largest stable one (:func:`stable_step_sizes`).

For the convergence proofs (Appendix H): :data:`CHAIN_RECORDS` records what each link of the proof's chain
needs at every step, and :func:`gd_chain` turns those records into the links (the semi-smoothness remainder of
each step, the gradient ratios of Theorem 3, the descent ratio).

The network linearised at initialisation (the book's comparison, not the paper's): for the squared loss,
GD on the first-order Taylor model ``out(W0) + J (W - W0)`` moves the residual ``e = out - y*`` (steps
``l >= 2``) by ``e_{t+1} = (I - eta K) e_t`` with ``K = J J^T`` the output NTK at W0
(:func:`rnnbook.ntk.output_ntk`), so ``f_t = 1/2 sum_j c_j^2 (1 - eta lambda_j)^{2t}`` in the eigenbasis of K:
exact, for every t at once (:func:`linearised_gd`). It is tested against GD on
:func:`rnnbook.functional.linearize` with autograd.

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

from . import checks, linalg, ntk, paper, perturb, rng
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
    return torch.linalg.vector_norm(s.grad.flatten(1), dim=1).square()


def record_max_loss_sq(s: StepState) -> torch.Tensor:
    """``max_{i,l} ||loss_{i,l}||^2`` at W_t: the ``||loss_{i*,l*}||^2`` of Theorems 3 and 4."""
    return s.loss.square().sum(dim=-1).flatten(1).amax(dim=1)


def record_eta(s: StepState) -> torch.Tensor:
    """The step size eta_t of each network (at the final record ``t = steps``, the last step's)."""
    return s.eta


DEFAULT_RECORDS: dict[str, Callable[[StepState], torch.Tensor]] = {
    "loss": record_loss, "dist_fro": record_dist_fro, "dist_spec": record_dist_spec, "flips": record_flips}

#: What the links of Appendix H's chain need at every step (see :func:`gd_chain`); every one of them is read off
#: the step's own forward and backward pass, so recording them at every step costs almost nothing.
CHAIN_RECORDS: dict[str, Callable[[StepState], torch.Tensor]] = {
    "loss": record_loss, "grad_norm_sq": record_grad_norm_sq, "max_loss_sq": record_max_loss_sq,
    "eta": record_eta, "dist_fro": record_dist_fro, "flips": record_flips}


@dataclass
class TrainHistory:
    """Records at ``steps`` (the iteration index t before its update): ``records[name]`` is an array of shape
    ``(len(steps), E, ...)``; ``records["loss"]`` etc. are also attributes (``hist.loss``). ``params``: the final
    weights; ``W0``: the initial W. ``diverged_at`` (E,): the step at which each network diverged (-1 if it did
    not; only with ``on_divergence="stop"``, else all -1); a diverged network's later records are NaN."""

    steps: np.ndarray
    records: dict
    params: Params
    W0: torch.Tensor = field(repr=False)
    diverged_at: np.ndarray | None = None

    def __getattr__(self, name):
        records = self.__dict__.get("records", {})
        if name in records:
            return records[name]
        raise AttributeError(f"TrainHistory has no attribute or record {name!r} (records: {sorted(records)})")

    @property
    def dist(self) -> np.ndarray:
        """``sqrt(m) ||W_t - W_0||_F`` (the record ``dist_fro``)."""
        return self.records["dist_fro"]

    @property
    def diverged(self) -> np.ndarray:
        """(E,) booleans: which networks diverged (``on_divergence="stop"``)."""
        E = self.records[next(iter(self.records))].shape[1] if self.records else self.params.ensemble
        return np.zeros(E, dtype=bool) if self.diverged_at is None else self.diverged_at >= 0

    def rate(self, start: int = 0) -> np.ndarray:
        """Per-network geometric rate r in ``f_t ~ f_0 (1 - r)^t``, from a log-linear fit over records >= start."""
        t = self.steps[start:].astype(np.float64)
        logf = np.log(np.maximum(self.records["loss"][start:], np.finfo(np.float64).tiny))
        slope = np.polyfit(t, logf, 1)[0]
        return 1.0 - np.exp(slope)

    def factor(self, start: int = 0) -> np.ndarray:
        """Per-network geometric factor per step between record ``start`` and the last record,
        ``(f_T / f_start)^{1 / (t_T - t_start)}`` (E,)."""
        f = self.records["loss"]
        span = float(self.steps[-1] - self.steps[start])
        if span <= 0:
            raise ValueError(f"start={start} leaves no steps to measure a factor over")
        return (f[-1] / f[start]) ** (1.0 / span)

    def first_below(self, eps: float, *, relative: bool = True) -> np.ndarray:
        """Per network, the first recorded step with ``f_t <= eps`` (``f_t / f_0 <= eps`` when ``relative``);
        NaN where the run never got there (E,)."""
        eps = checks.positive_real("eps", eps)
        f = self.records["loss"]
        g = f / f[0] if relative else f
        below = g <= eps
        hit = below.any(axis=0)
        first = self.steps[below.argmax(axis=0)].astype(np.float64)
        return np.where(hit, first, np.nan)


# ----------------------------------------------------------------------------------------------------------
# one data set per network

@dataclass(frozen=True)
class EnsembleData(SequenceData):
    """Data with one data set per network: ``x`` (E, n, L, d_x), ``y`` (E, n, L, d); ``delta`` is a tuple with
    each data set's separation. Made by :func:`stack_data`; :func:`train` and :func:`linearised_gd` accept it
    wherever they accept :class:`rnnbook.SequenceData` (network e trains on data set e)."""

    @property
    def n(self) -> int:
        return self.x.shape[1]

    @property
    def L(self) -> int:
        return self.x.shape[2]

    @property
    def d_x(self) -> int:
        return self.x.shape[3]

    @property
    def d(self) -> int:
        return self.y.shape[3]

    @property
    def ensemble(self) -> int:
        return self.x.shape[0]

    def to(self, device=None, dtype=None) -> "EnsembleData":
        return EnsembleData(self.x.to(device=device, dtype=dtype), self.y.to(device=device, dtype=dtype), self.delta)


def stack_data(datas, ensemble: int = 1) -> EnsembleData:
    """One data set per network for ``replicate(params, len(datas))`` of an ensemble of ``ensemble`` networks:
    member ``e * K + j`` (copy j of network e) gets ``datas[j]``. All data sets need the same n, L, d_x, d,
    device and dtype. E.g. K values of delta, each run by every seed, in one batched run."""
    datas = list(datas)
    if not datas or not all(isinstance(d, SequenceData) and not isinstance(d, EnsembleData) for d in datas):
        raise TypeError("datas must be a non-empty list of rnnbook.SequenceData")
    shapes = {(d.x.shape, d.y.shape, d.x.device, d.x.dtype) for d in datas}
    if len(shapes) != 1:
        raise ValueError("every data set must have the same n, L, d_x, d, device and dtype")
    E = checks.positive_int("ensemble", ensemble)
    x = torch.stack([d.x for d in datas]).repeat(E, 1, 1, 1)
    y = torch.stack([d.y for d in datas]).repeat(E, 1, 1, 1)
    return EnsembleData(x, y, tuple(d.delta for d in datas) * E)


def _check_data(params: Params, data) -> None:
    if not isinstance(data, SequenceData):
        raise TypeError(f"data must be rnnbook.SequenceData, got {type(data).__name__}")
    if isinstance(data, EnsembleData) and data.ensemble != params.ensemble:
        raise ValueError(f"data holds {data.ensemble} data sets but the ensemble has {params.ensemble} networks")


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
    if isinstance(data, EnsembleData):  # network e draws from its own data set e
        rows = torch.arange(params.ensemble, device=idx.device).unsqueeze(1)
        xb, yb = data.x[rows, idx], data.y[rows, idx]
    else:
        xb, yb = data.x[idx], data.y[idx]  # (E, b, L, .): each network its own subset
    fw = forward(params, xb)
    return (data.n / idx.shape[1]) * backward(params, fw, loss_vectors(params, fw, yb)).grad


def draw_batches(n: int, batch_size: int, steps: int, ensemble: int, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The subsets S_t that :func:`train` draws for SGD: ``(steps, ensemble, batch_size)`` sample indices, each
    row ``batch_size`` distinct samples of ``[0, n)`` chosen uniformly (the same draws, in the same order, as
    ``train(..., batch_size=batch_size, seed=seed)``). Pass them back with ``train(..., batches=...)`` to run one
    network of an ensemble alone on exactly its subsets."""
    n = checks.positive_int("n", n)
    steps = checks.int_at_least("steps", steps, 0)
    E = checks.positive_int("ensemble", ensemble)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    gen = rng.generator(generator, seed)
    out = torch.empty(steps, E, batch_size, dtype=torch.int64)
    for t in range(steps):
        out[t] = torch.rand(E, n, generator=gen, device=gen.device).argsort(dim=1)[:, :batch_size].cpu()
    return out


def _record_value(v) -> torch.Tensor:
    """A recorder's result as a CPU float64 tensor that shares no memory with the training state (W is
    updated in place)."""
    t = torch.as_tensor(v).detach()
    out = t.to("cpu", torch.float64)
    if out.data_ptr() == t.data_ptr():
        out = out.clone()
    return out


def train(params: Params, data: SequenceData, *, eta, steps: int, batch_size: int | None = None,
          record_every: int = 1, records: dict | None = None, extra_records: dict | None = None,
          seed: int | None = None, generator: torch.Generator | None = None, batches: torch.Tensor | None = None,
          on_divergence: str = "raise", diverge_factor: float | None = None,
          stop_below: float | None = None) -> TrainHistory:
    """Run ``steps`` iterations of ``W <- W - eta_t * direction_t`` for every network of the ensemble at once.

    ``eta``: see the module docstring. ``batch_size=None`` (or ``n``): full gradient descent on f (Theorem 1).
    Otherwise mini-batch SGD (Theorem 2, Appendix I); then ``seed`` or ``generator`` is required, or ``batches``,
    the subsets themselves ((steps, E, batch_size) sample indices, see :func:`draw_batches`).
    ``records`` replaces the default recorders (:data:`DEFAULT_RECORDS`), ``extra_records`` adds to them; each
    maps a name to a function of the :class:`StepState` returning one value (or row) per network. Records are
    taken at ``t = 0, record_every, 2 record_every, ...`` and at ``t = steps``.

    Divergence: a network diverges when its f (or its step direction) stops being finite, or, with
    ``diverge_factor``, when ``f_t > diverge_factor * f_0``. With ``on_divergence="raise"`` (the default) that
    raises ``FloatingPointError`` naming the step and the step size; with ``"stop"`` the network is frozen at
    that step, its later records are NaN and ``TrainHistory.diverged_at`` holds the step (the others go on).
    For SGD, f is only known at recorded steps, so a finite but growing f is noticed there.

    ``stop_below``: stop early, at the first recorded step where every network (that has not diverged) has
    ``f_t <= stop_below * f_0`` (for "iterations to reach eps" experiments); the history then ends there.

    Raises ``ValueError`` for a non-finite W, a batch size out of range or an empty schedule.
    """
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    _check_data(params, data)
    steps = checks.int_at_least("steps", steps, 0)
    record_every = checks.positive_int("record_every", record_every)
    checks.choice("on_divergence", on_divergence, ("raise", "stop"))
    if diverge_factor is not None:
        diverge_factor = checks.real_in("diverge_factor", diverge_factor, 1.0, math.inf, high_open=True)
    if stop_below is not None:
        stop_below = checks.positive_real("stop_below", stop_below)
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
    if batches is not None:
        if not sgd:
            raise ValueError("batches= is for SGD: give batch_size < n as well")
        if not isinstance(batches, torch.Tensor) or batches.dtype not in (torch.int64, torch.int32):
            raise TypeError("batches must be an integer tensor of shape (steps, E, batch_size)")
        if tuple(batches.shape) != (steps, E, batch_size):
            raise ValueError(f"batches must have shape (steps, E, batch_size) = ({steps}, {E}, {batch_size}), "
                             f"got {tuple(batches.shape)}")
        if seed is not None or generator is not None:
            raise ValueError("pass either batches= or seed=/generator=, not both")
    elif sgd:
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

    stop = on_divergence == "stop"
    diverged_at = np.full(E, -1, dtype=np.int64)
    alive = torch.ones(E, dtype=torch.bool, device=params.device)
    f0 = None

    def diverge(bad: torch.Tensor, t: int, what: str, eta_t: torch.Tensor) -> None:
        """Networks ``bad`` (E,) bool diverged at step t: raise, or freeze them."""
        bad = bad & alive
        if not bool(bad.any()):
            return
        idx = torch.nonzero(bad).flatten().tolist()
        if not stop:
            raise FloatingPointError(f"the {what} diverged at step {t} (networks {idx}, step size eta = "
                                     f"{eta_t[idx[0]].item():.3g}): the step size is too large for this width")
        diverged_at[idx] = t
        alive[bad] = False

    rec_t, rec = [], {k: [] for k in recs}
    W = params.W.clone()  # updated in place
    view = (E,) + (1,) * (W.ndim - 1)
    for t in range(steps + 1):
        eta_t = eta_at(min(t, steps - 1)) if steps else None
        state = StepState(t, params.with_W(W), W0, data, eta_t, fw_init)
        recording = t % record_every == 0 or t == steps
        if recording or not sgd:
            f = state.f
            bad = ~torch.isfinite(f)
            if f0 is None:
                f0 = f.detach().clone()
            if diverge_factor is not None:
                bad = bad | (f > diverge_factor * f0)
            diverge(bad, t, "loss", eta_t if eta_t is not None else eta_at(0))
        if recording:
            rec_t.append(t)
            dead = None if bool(alive.all()) else ~alive.cpu()
            for name, fn in recs.items():
                v = _record_value(fn(state))
                if dead is not None and v.ndim >= 1 and v.shape[0] == E:
                    v[dead] = math.nan
                rec[name].append(v)
            if stop_below is not None and bool((~alive | (state.f <= stop_below * f0)).all()):
                break
        if t == steps:
            break
        if sgd:
            if batches is not None:
                idx = batches[t].to(torch.int64)
            else:
                idx = torch.rand(E, n, generator=gen, device=gen.device).argsort(dim=1)[:, :batch_size]
            direction = minibatch_gradient(state.params, data, idx)
        else:
            direction = state.grad
        finite = torch.isfinite(direction.flatten(1).sum(dim=1))  # NaN and inf survive a sum: one cheap pass
        diverge(~finite, t, "gradient", eta_t)
        state.step_direction = direction
        step = eta_t.to(W.dtype)
        if not bool(alive.all()):
            step = torch.where(alive, step, torch.zeros_like(step))
            direction = torch.where(alive.view(view), direction, torch.zeros((), dtype=W.dtype, device=W.device))
        # W <- W - eta * direction, in place and with the rounding of that expression (the direction is this
        # step's own tensor, not used afterwards)
        W.sub_(direction.mul_(step.view(view)))
    stacked = {k: torch.stack(v).numpy() for k, v in rec.items()}
    return TrainHistory(steps=np.asarray(rec_t), records=stacked, params=params.with_W(W), W0=W0,
                        diverged_at=diverged_at)


# ----------------------------------------------------------------------------------------------------------
# Appendix H's chain along a run

def gd_chain(hist: TrainHistory, m: int) -> dict:
    """The links of the proof of Theorem 1 (Appendix H) at every step of a GD run recorded with
    :data:`CHAIN_RECORDS` and ``record_every=1``. Returns (T, E) arrays for steps t = 0..T-1:

    * ``"remainder"``: ``R_t = f(W_{t+1}) - f(W_t) - <grad f(W_t), W_{t+1} - W_t> = f_{t+1} - f_t + eta ||grad_t||_F^2``,
      Theorem 4's remainder at ``W_breve = W_t`` and ``W' = -eta grad f(W_t)`` (step 1 of the chain);
    * ``"remainder_share"``: ``R_t / (eta ||grad_t||_F^2)``, the share of the first-order decrease that the
      remainder takes back (the chain needs it below 1; the choice of eta makes it small, step 4);
    * ``"grad_ratio"``: ``||grad_t||_F^2 / (m max_{i,l} ||loss_{i,l}||^2)``, which Theorem 3 bounds below by
      ``delta / rho^14`` (step 3, the PL inequality) and above by ``rho^12`` (step 2);
    * ``"loss_ratio"``: ``f_t / max_{i,l} ||loss_{i,l}||^2``, at most ``n (L-1)`` (step 5's ``f <= n L ||loss||^2``);
    * ``"factor"``: ``f_{t+1} / f_t``, the contraction the chain ends with.
    """
    m = checks.positive_int("m", m)
    missing = {"loss", "grad_norm_sq", "max_loss_sq", "eta"} - set(hist.records)
    if missing:
        raise ValueError(f"gd_chain needs the records {sorted(missing)}: train with records=CHAIN_RECORDS")
    if len(hist.steps) < 2 or np.any(np.diff(hist.steps) != 1):
        raise ValueError("gd_chain needs a record at every step: train with record_every=1")
    f, g2 = hist.records["loss"], hist.records["grad_norm_sq"]
    eta, lmax = hist.records["eta"], hist.records["max_loss_sq"]
    first = eta[:-1] * g2[:-1]
    R = f[1:] - f[:-1] + first
    return {"remainder": R, "remainder_share": R / first, "grad_ratio": g2[:-1] / (m * lmax[:-1]),
            "loss_ratio": f[:-1] / lmax[:-1], "factor": f[1:] / f[:-1]}


# ----------------------------------------------------------------------------------------------------------
# several step sizes at once

def replicate(params: Params, k: int) -> Params:
    """Each network of ``params`` repeated ``k`` times (network-major: member ``e * k + j`` is copy j of network
    e), e.g. to run k step sizes from the same initialisations in one batched run."""
    k = checks.positive_int("k", k)
    rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
    return params.__class__(W=rep(params.W), A=rep(params.A), B=rep(params.B), activation=params.activation)


def stable_step_sizes(params: Params, data: SequenceData, etas, *, steps: int, diverge_factor: float = 1e3,
                      target: float = 1.0, records: dict | None = None):
    """Which of the step sizes ``etas`` (K values) keep full-batch GD stable, for every network of ``params``,
    in one batched run of ``E * K`` networks. A run counts as stable when it never diverges (``f`` finite and
    at most ``diverge_factor * f_0`` at every step) and ends below ``target`` times its start,
    ``f_T < target * f_0``. Returns ``(stable, hist)`` with ``stable`` an (E, K) boolean array (member
    ``e * K + k`` of ``hist`` is network e with ``etas[k]``); ``records`` adds recorders (default: f only)."""
    target = checks.positive_real("target", target)
    etas = [checks.positive_real("eta", float(e)) for e in etas]
    if not etas:
        raise ValueError("etas is empty: give at least one step size")
    K = len(etas)
    rep = replicate(params, K)
    eta_vec = torch.tensor(etas * params.ensemble, dtype=torch.float64, device=params.device)
    hist = train(rep, data, eta=eta_vec, steps=steps, record_every=steps,
                 records={"loss": record_loss, **(records or {})}, on_divergence="stop", diverge_factor=diverge_factor)
    f = hist.records["loss"]
    ok = ~hist.diverged & np.isfinite(f[-1]) & (f[-1] < target * f[0])
    return ok.reshape(params.ensemble, K), hist


# ----------------------------------------------------------------------------------------------------------
# GD on the network linearised at initialisation (the book's comparison)

def output_kernel(params: Params, data: SequenceData):
    """``(K0, e0)``: the output NTK at ``params.W`` restricted to the outputs in the objective (steps
    ``l >= 2``), flattened over (i, l, k) to (E, N, N) with ``N = n (L-1) d``, and the residuals
    ``e0 = B h_{i,l} - y*_{i,l}`` in the same order, (E, N); both float64."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be rnnbook.Params, got {type(params).__name__}")
    _check_data(params, data)
    if data.L < 2:
        raise ValueError("the objective needs L >= 2 steps")
    with torch.no_grad():
        fw = forward(params, data.x)
        K = ntk.output_ntk(params, fw)[:, :, 1:, :, :, 1:, :]
        e = loss_vectors(params, fw, data.y)[:, :, 1:].to(torch.float64)
    E, N = params.ensemble, data.n * (data.L - 1) * params.d
    return K.reshape(E, N, N), e.reshape(E, N)


@dataclass
class LinearisedGD:
    """GD on the network linearised at W0 (the book's comparison): ``loss[t, e] = f_lin(W_t)`` at ``steps``,
    with the eigenvalues ``eigenvalues`` (E, N) of the output NTK K0 (ascending), the initial loss carried by
    each eigenmode ``weights`` (E, N) (``1/2 c_j^2``, summing to f_0) and the step sizes ``eta`` (E,)."""

    steps: np.ndarray
    loss: np.ndarray
    eigenvalues: np.ndarray
    weights: np.ndarray
    eta: np.ndarray

    @property
    def lambda_min(self) -> np.ndarray:
        return self.eigenvalues[:, 0]

    @property
    def lambda_max(self) -> np.ndarray:
        return self.eigenvalues[:, -1]

    @property
    def max_stable_eta(self) -> np.ndarray:
        """``2 / lambda_max(K0)``: the linearised model converges for every mode iff ``eta < 2 / lambda_max``."""
        return 2.0 / self.lambda_max

    @property
    def tail_factor(self) -> np.ndarray:
        """``(1 - eta lambda_min)^2``: the per-step factor of f once only the slowest mode is left."""
        return (1.0 - self.eta * self.lambda_min) ** 2


def linearised_gd(params: Params, data: SequenceData, *, eta, steps: int, record_every: int = 1) -> LinearisedGD:
    """Full-batch GD on the first-order Taylor model of the network in W at ``params.W``, in closed form.

    With ``K0 = J J^T = V diag(lambda) V^T`` and ``c = V^T e0``, GD in W gives
    ``e_{t+1} = (I - eta K0) e_t`` and ``f_t = sum_j 1/2 c_j^2 (1 - eta lambda_j)^{2t}`` exactly. ``eta``: a
    number or one step size per network (E,) (a schedule is not supported here). Records at
    ``t = 0, record_every, ..., steps``."""
    steps = checks.int_at_least("steps", steps, 0)
    record_every = checks.positive_int("record_every", record_every)
    E = params.ensemble
    if callable(eta) or isinstance(eta, (list, tuple)):
        raise TypeError("linearised_gd takes a constant step size: a number or an (E,) tensor")
    eta_vec = _schedule(eta, max(steps, 1), E, "cpu")(0).numpy()
    K, e0 = output_kernel(params, data)
    lam, V = torch.linalg.eigh(K)
    lam = lam.clamp_min(0.0).cpu().numpy()
    c = (V.transpose(1, 2) @ e0.unsqueeze(-1)).squeeze(-1).cpu().numpy()
    w = 0.5 * c ** 2
    ts = np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])
    q = np.abs(1.0 - eta_vec[:, None] * lam)  # (E, N): |1 - eta lambda_j|
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        logq = np.log(np.maximum(q, np.finfo(np.float64).tiny))
        loss = np.einsum("en,ten->te", w, np.exp(2.0 * ts[:, None, None] * logq[None]))
    return LinearisedGD(steps=ts, loss=loss, eigenvalues=lam, weights=w, eta=eta_vec)


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
