"""Masked products against explicit matrices and exact SVDs."""
import pytest
import torch

import rnnbook as rb
from rnnbook import products


@pytest.fixture
def net():
    p = rb.init_params(40, 5, 3, ensemble=2, seed=0, device="cpu", dtype=torch.float64)
    data = rb.make_data(2, 6, 5, 3, 0.2, seed=1, device="cpu", dtype=torch.float64)
    return p, rb.forward(p, data.x)


def explicit(p, fw, e, i, l1, l2):
    M = torch.eye(p.m, dtype=torch.float64)
    for l in range(l1, l2 + 1):
        M = torch.diag(fw.D[e, i, l].double()) @ p.W[e] @ M
    return M


def test_product_matrix_and_applications(net):
    p, fw = net
    D = fw.D[:, 1]
    P = products.product_matrix(p.W, D, 2, 5)
    for e in range(2):
        torch.testing.assert_close(P[e], explicit(p, fw, e, 1, 2, 5))
    V = torch.randn(2, 3, p.m, dtype=torch.float64)
    torch.testing.assert_close(products.apply_product(p.W, D, V, 2, 5), V @ P.transpose(1, 2))
    torch.testing.assert_close(products.apply_product_T(p.W, D, V, 2, 5), V @ P)


def test_spectral_norm_matches_svd(net):
    p, fw = net
    D = fw.D[:, 0]
    for l1, l2 in [(1, 1), (2, 4), (1, 6)]:
        exact = torch.linalg.matrix_norm(products.product_matrix(p.W, D, l1, l2), ord=2)
        est = products.product_norm(p.W, D, l1, l2, iters=60)
        torch.testing.assert_close(est, exact, rtol=1e-6, atol=0)


def test_backward_rows(net):
    p, fw = net
    D = fw.D[:, 0]
    Back = products.backward_rows(p.B, p.W, D, 2, 5)
    for e in range(2):
        torch.testing.assert_close(Back[e], p.B[e] @ explicit(p, fw, e, 0, 3, 5))
    torch.testing.assert_close(products.backward_rows(p.B, p.W, D, 3, 3), p.B)


def test_bad_spans_are_rejected(net):
    p, fw = net
    with pytest.raises(ValueError, match="l1 <= l2"):
        products.apply_product(p.W, fw.D[:, 0], torch.zeros(2, 1, p.m, dtype=torch.float64), 4, 2)
    with pytest.raises(ValueError, match="D must have shape"):
        products.apply_product(p.W, fw.D, torch.zeros(2, 1, p.m, dtype=torch.float64), 1, 2)
