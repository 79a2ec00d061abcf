"""rnnbook: the support package of the executable book on Allen-Zhu, Li & Song (arXiv 1810.12065).

Every chapter imports it. Modules:

* :mod:`rnnbook.config`    -- device (``$RNNBOOK_DEVICE``) and experiment profile (``$RNNBOOK_PROFILE``)
* :mod:`rnnbook.model`     -- the paper's RNN, initialisation, forward pass, loss and BPTT gradient
* :mod:`rnnbook.data`      -- data meeting the paper's assumptions, and a checker for them
* :mod:`rnnbook.train`     -- GD / SGD runs recording loss, distance from init and ReLU sign flips
* :mod:`rnnbook.stats`     -- medians over seeds and log-log slope fits with uncertainty
* :mod:`rnnbook.plotting`  -- the book's figure style and measured-versus-predicted plots
* :mod:`rnnbook.profiles`  -- experiment sizes of every chapter (quick and full)
* :mod:`rnnbook.exercises` -- self-checks for exercises
* :mod:`rnnbook.book`      -- glue helpers for chapters (fitted exponents with their uncertainty)
* :mod:`rnnbook.forward_stats` -- hidden-state norms against Lemma B.3's bounds
* :mod:`rnnbook.projections` -- Gram-Schmidt bases, fresh residuals and projected separation (Lemmas B.6, B.9)
* :mod:`rnnbook.products`  -- masked products D W ... D W, their norms, sparse blocks, backward operators (B.11-B.19)
* :mod:`rnnbook.kernels`   -- the infinite-width (arc-cosine) recursion and empirical Gram matrices
* :mod:`rnnbook.perturb`   -- random, adversarial and GD perturbations and their effects (Appendix C)
* :mod:`rnnbook.ntk`       -- Gram matrix of per-sample gradients (empirical NTK) in factored form
"""
from .config import default_device, profile, describe
from .model import (Params, Forward, Backward, init_params, forward, outputs, loss_vectors, objective, backward,
                    gradient, ACTIVATIONS)
from .data import SequenceData, make_data, hard_pair, check_assumptions, require_assumptions, min_first_token_distance
from .train import train, TrainHistory
from .stats import loglog_slope, SlopeFit, median_band, fraction
from .profiles import sizes
from .exercises import self_check
from . import book, plotting, forward_stats, projections, products, kernels, perturb, ntk

__version__ = "0.1.0"
