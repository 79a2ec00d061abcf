import os

# Before torch is imported (here, first): OpenMP threads sleep instead of spinning while they wait
# (see rnnbook/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture
def f64():
    """Small float64 CPU settings shared by the numerical tests."""
    return dict(device="cpu", dtype=torch.float64)
