"""Argument validation: every error names the argument and what was expected.

Used by all public functions of rnnbook so that bad input fails loudly and early. (Random numbers live in
:mod:`rnnbook.rng`.)
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def int_at_least(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def real_in(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> float:
    """Check ``value`` is a finite real in the interval; open ends with ``low_open``/``high_open``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    v = float(value)
    bad_low = v <= low if low_open else v < low
    bad_high = v >= high if high_open else v > high
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")
    return v


def positive_real(name: str, value) -> float:
    return real_in(name, value, 0.0, math.inf, low_open=True, high_open=True)


def choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def tensor(name: str, t, *, ndim=None, shape=None, dtype=None, device=None, floating: bool = True,
           finite: bool = False) -> torch.Tensor:
    """Check a tensor's type, rank, shape (``None`` entries are free), dtype, device and (if ``finite``)
    that it holds no NaN/inf (a full pass over the data, so off by default for large weights)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(t.shape)}")
    if shape is not None:
        if t.ndim != len(shape) or any(s is not None and s != ts for s, ts in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {dtype} is required (cast it with .to({dtype}))")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on device {t.device} but {device} is required (move it with .to('{device}'))")
    if finite and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return t


def same_placement(ref_name: str, ref: torch.Tensor, **others: torch.Tensor) -> None:
    """All tensors must share ``ref``'s device and dtype; the error names the first that does not."""
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}: put them on one device")
        if t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}: use one dtype")
