"""Aligned-MTL: TorchJD as an oracle (T times larger), and the aligned-rows property."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import AlignedMTL


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_matches_torchjd_times_t(scale_mode):
    from torchjd.aggregation import AlignedMTL as TorchJDAlignedMTL

    generator = torch.Generator().manual_seed(0)
    for trial in range(30):
        T, P = 1 + trial % 6, 1 + trial % 8  # T > P (rank-deficient) included
        J = torch.randn(T, P, generator=generator, dtype=torch.float64)
        expected = T * TorchJDAlignedMTL(scale_mode=scale_mode)(J)
        actual = gradsurgery.resolve(J, method=AlignedMTL(scale_mode))
        torch.testing.assert_close(actual, expected, rtol=1e-8, atol=1e-10)


def test_aligned_gradients_are_orthogonal_with_norm_sigma():
    # For full row rank, B J has orthogonal rows of squared norm lambda_min, so
    # d = 1^T B J has |d|^2 = T lambda_min and d . (B J)_i = lambda_min for each i.
    generator = torch.Generator().manual_seed(1)
    J = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    smallest = torch.linalg.eigvalsh(J @ J.T)[0]
    d = gradsurgery.resolve(J, method="aligned_mtl")
    torch.testing.assert_close(torch.dot(d, d), 3 * smallest)


def test_single_task_passes_through():
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(g, method="aligned_mtl"), g[0])


def test_invalid_scale_mode():
    with pytest.raises(ValueError, match="scale_mode"):
        AlignedMTL(scale_mode="max")
