"""Where the book's computations run and how big they are.

Two environment variables steer every chapter, so that a reader never edits code to switch:

* ``RNNBOOK_DEVICE`` -- ``cpu``, ``cuda`` or ``cuda:N``. Default: CUDA when it is available, else CPU.
* ``RNNBOOK_PROFILE`` -- ``quick`` (small sizes, for tests and CI) or ``full`` (what the published book
  shows). Default: ``full``.

Functions never pick a device behind the reader's back: they take ``device=`` and ``dtype=`` and fall
back to :func:`default_device` / :data:`DEFAULT_DTYPE` only when the caller passes ``None``.
"""
from __future__ import annotations

import os

import torch

PROFILES = ("quick", "full")
DEFAULT_DTYPE = torch.float32
_FLOAT_DTYPES = (torch.float32, torch.float64)


def default_device() -> torch.device:
    """The device chapters use: ``$RNNBOOK_DEVICE`` if set, else CUDA when present, else CPU."""
    name = os.environ.get("RNNBOOK_DEVICE", "").strip()
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"RNNBOOK_DEVICE={name!r} but CUDA is not available on this machine")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"RNNBOOK_DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
        return dev
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device) -> torch.device:
    """``None`` -> :func:`default_device`; a string or device -> that device (validated)."""
    if device is None:
        return default_device()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """``None`` -> :data:`DEFAULT_DTYPE` (float32); otherwise float32 or float64 only."""
    if dtype is None:
        return DEFAULT_DTYPE
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def profile() -> str:
    """The experiment profile: ``$RNNBOOK_PROFILE`` (``quick`` or ``full``), default ``full``."""
    name = os.environ.get("RNNBOOK_PROFILE", "full").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"RNNBOOK_PROFILE must be one of {PROFILES}, got {name!r}")
    return name


def describe() -> str:
    """One line for the top of a chapter: device, profile, torch version and threads."""
    dev = default_device()
    extra = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f" ({torch.get_num_threads()} threads)"
    return f"device={dev}{extra}, profile={profile()}, torch {torch.__version__}"
