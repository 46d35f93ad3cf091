"""The MTL baseline: sum and mean, with loss weights."""

from __future__ import annotations

import torch

import gradsurgery


def test_sum_and_mean_by_hand():
    G = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    torch.testing.assert_close(gradsurgery.resolve(G, method="sum"), torch.tensor([4.0, -2.0]))
    torch.testing.assert_close(gradsurgery.resolve(G, method="mean"), torch.tensor([2.0, -1.0]))


def test_weights_are_honoured():
    G = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    expected = 0.7 * G[0] + 0.3 * G[1]
    torch.testing.assert_close(gradsurgery.resolve(G, method="sum", weights=[0.7, 0.3]), expected)
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="mean", weights=[0.7, 0.3]), expected / 2
    )


def test_weights_by_name():
    grads = {"asr": torch.tensor([1.0, 0.0]), "se": torch.tensor([0.0, 1.0])}
    d = gradsurgery.resolve(grads, method="sum", weights={"se": 0.3, "asr": 0.7})
    torch.testing.assert_close(d, torch.tensor([0.7, 0.3]))


def test_weights_apply_before_other_resolvers():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    weights = torch.tensor([0.7, 0.3], dtype=torch.float64)
    for method in ("gr", "pcgrad"):
        direct = gradsurgery.resolve(G * weights[:, None], method=method, primary=0)
        torch.testing.assert_close(
            gradsurgery.resolve(G, method=method, primary=0, weights=weights), direct
        )


def test_more_tasks_than_the_row_additions_serve_sum_the_same():
    # above _AXPY_MAX_TASKS rows, w^T G is one matrix-vector product
    G = torch.randn(12, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(G, method="sum"), G.sum(0))
    torch.testing.assert_close(gradsurgery.resolve(G, method="mean"), G.mean(0))
