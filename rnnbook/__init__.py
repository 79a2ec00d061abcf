"""rnnbook: the support package of the executable book on Allen-Zhu, Li & Song (arXiv 1810.12065).

Every chapter imports it. The modules, in layers; each imports only from layers above it (a test checks):

1. configuration, checks, randomness, the paper's constants --
   :mod:`~rnnbook.config` (device ``$RNNBOOK_DEVICE``, profile ``$RNNBOOK_PROFILE``),
   :mod:`~rnnbook.checks` (argument validation), :mod:`~rnnbook.rng` (seeds derived from names, generators),
   :mod:`~rnnbook.paper` (every parameter and bound of the paper, and the book's step size),
   :mod:`~rnnbook.profiles` (experiment sizes of every chapter), :mod:`~rnnbook.stats` (medians, log-log slope
   fits with uncertainty), :mod:`~rnnbook.probability` (the Monte Carlo checks of Appendix A's tools),
   :mod:`~rnnbook.plotting` (the figure style);
2. the model and the data -- :mod:`~rnnbook.model` (the RNN, initialisation, forward pass, loss, BPTT),
   :mod:`~rnnbook.functional` (f(W) and the fake objective as functions of W, for autograd and ``torch.func``),
   :mod:`~rnnbook.data` (data meeting the paper's assumptions);
3. linear algebra and the random-initialisation quantities (Appendix B) -- :mod:`~rnnbook.linalg` (the one
   Lanczos), :mod:`~rnnbook.products` (masked products, backward operators), :mod:`~rnnbook.forward_stats`
   (B.3), :mod:`~rnnbook.projections` (B.6, B.9), :mod:`~rnnbook.kernels` (the infinite-width limit);
4. perturbations (Appendix C) -- :mod:`~rnnbook.perturb`;
5. gradients and smoothness (Appendices D-G) -- :mod:`~rnnbook.ntk` (Gram matrices of per-sample gradients and
   of output Jacobians), :mod:`~rnnbook.gradients` (indicator and backward coordinates, the fake gradient, the
   randomness decomposition of E), :mod:`~rnnbook.smoothness` (the D'' expansion and the remainder of Theorem 4);
6. training (Appendices H, I) -- :mod:`~rnnbook.training` (GD and SGD with recorders, the linearised model;
   ``rb.train`` is its loop), :mod:`~rnnbook.width` (batched sweeps over width for "how wide is wide enough");
7. the chapters' helpers -- :mod:`~rnnbook.book` (glue, verdicts, sweeps, the exercises' self-check),
   :mod:`~rnnbook.explorer` (explorers that work without a kernel), :mod:`~rnnbook.synthesis` (every measured
   exponent beside its bound's, read from the pages of the current build).

Private: :mod:`rnnbook._loops` (the fast forward and BPTT loops) and :mod:`rnnbook._gemm` (their matrix
kernels, chosen by measurement on the machine at hand).
"""
import os as _os
import sys as _sys
import warnings as _warnings

# OpenMP threads (torch's intra-op pool) must sleep, not spin, while they wait at the end of a parallel
# region: with spinning, a chapter that runs many small kernels slowed down 5-8x as soon as one other
# process competed for the cores (measured; tools/contention.py). libgomp reads the policy once, when torch
# is first imported, so it is set here, before rnnbook imports torch. The book's kernels and `make` set it
# too (tools/run_chapter.py, the Makefile, the venv's kernelspec).
if "OMP_WAIT_POLICY" not in _os.environ:
    if "torch" in _sys.modules:
        _warnings.warn("torch was imported before rnnbook and OMP_WAIT_POLICY is not set: OpenMP threads will "
                       "spin while waiting, which makes small kernels very slow on a busy machine. Import "
                       "rnnbook first, or set OMP_WAIT_POLICY=PASSIVE before starting Python.", RuntimeWarning,
                       stacklevel=2)
    else:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from . import _gemm  # noqa: E402
_gemm.keep_freed_memory()  # large buffers are reused instead of page-faulted in again (rnnbook/_gemm.py)

from .config import default_device, profile, describe  # noqa: E402
from .model import (Params, Forward, Backward, Gradient, init_params, forward, outputs, loss_vectors, objective,
                    backward, gradient, ACTIVATIONS)
from .data import SequenceData, make_data, hard_pair, check_assumptions, require_assumptions, min_first_token_distance
from .rng import seed
from .training import train, TrainHistory
from .stats import loglog_slope, loglog_slope_or_none, SlopeFit, median_band, fraction
from .profiles import sizes
from . import (book, checks, config, data, explorer, forward_stats, functional, gradients, kernels,  # noqa: E402
               linalg, model, ntk, paper, perturb, plotting, probability, products, profiles, projections, rng,
               smoothness, stats, synthesis, training, width)

__version__ = "0.1.0"
