"""Randomness: seeds derived from names, generators, and Gaussian draws that do not depend on the device.

Every random object of the book is drawn from a ``torch.Generator`` made from an explicit seed; nothing
draws unseeded randomness. Seeds are not typed as numbers: :func:`seed` derives one from names, e.g.
``rb.seed("perturbation_backward", "networks", m)`` and ``rb.seed("perturbation_backward", "a", m)``, so two
random objects of one experiment get different seeds by construction (with typed numbers, the vector ``a``
of an experiment once came out equal to the first entries of the networks' W, because both were seeded
with ``m``).
"""
from __future__ import annotations

import hashlib
from numbers import Integral

import torch

__all__ = ["seed", "generator", "randn"]


def seed(*names) -> int:
    """A seed in ``[0, 2**63)`` derived from ``names`` (strings or integers), stable across runs and machines.

    Different name tuples give unrelated seeds (a SHA-256 hash); the same tuple always gives the same seed.
    Floats are rejected, since their printed form is not a reliable name.
    """
    if not names:
        raise ValueError("seed() needs at least one name, e.g. seed('my_chapter', 'networks', m)")
    parts = []
    for n in names:
        if isinstance(n, bool) or not isinstance(n, (str, Integral)):
            raise TypeError(f"seed names must be strings or integers, got {n!r} ({type(n).__name__})")
        parts.append(f"{type(n).__name__[0]}:{n}")
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(gen=None, seed=None) -> torch.Generator:
    """A ``torch.Generator`` from either an existing one or an integer seed (exactly one is needed).

    Seeds make CPU generators, so that a seed gives the same draw whatever device the result ends on.
    """
    if gen is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    if gen is not None:
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(gen).__name__}")
        return gen
    if seed is None:
        raise ValueError("a seed (int) or generator (torch.Generator) is required: rnnbook never draws unseeded randomness")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def randn(shape, *, gen: torch.Generator, std: float, device, dtype) -> torch.Tensor:
    """``std * N(0, 1)`` of ``shape``, drawn on the generator's device in float64, then placed and cast.

    Drawing in float64 makes one seed give the same network in float32 and float64 (up to rounding) and on
    CPU and CUDA. The draw is made in chunks to keep the float64 copy small.
    """
    shape = tuple(shape)
    out = torch.empty(shape, device=device, dtype=dtype)
    flat = out.view(-1)
    chunk = 1 << 22  # 4M numbers (32 MB in float64) per draw: few calls, bounded temporary memory
    for start in range(0, flat.numel(), chunk):
        stop = min(start + chunk, flat.numel())
        z = torch.randn(stop - start, generator=gen, device=gen.device, dtype=torch.float64)
        flat[start:stop].copy_(z.mul_(std))
    return out
