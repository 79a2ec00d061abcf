import pytest
import torch


@pytest.fixture
def f64():
    """Small float64 CPU settings shared by the numerical tests."""
    return dict(device="cpu", dtype=torch.float64)
