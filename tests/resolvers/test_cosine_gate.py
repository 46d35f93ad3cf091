"""Cosine gating: hand-computed gates, the weighted variant, degenerate and per-block cases."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import CosineGate


def gate(rows, **options):
    G = torch.tensor(rows, dtype=torch.float64)
    return gradsurgery.resolve(G, method="cosine_gate", **options)


def test_only_auxiliaries_with_positive_cosine_are_added():
    # a1 = (-1, 1): cos < 0, dropped; a2 = (1, 1): cos > 0, added; a3 = (0, 5): cos = 0, dropped.
    rows = [[1.0, 0.0], [-1.0, 1.0], [1.0, 1.0], [0.0, 5.0]]
    torch.testing.assert_close(gate(rows), torch.tensor([2.0, 1.0], dtype=torch.float64))


def test_weighted_variant_scales_by_the_cosine():
    # cos(p, (1, 1)) = 1/sqrt(2); cos(p, (3, 4)) = 0.6; (-1, 1) is dropped.
    rows = [[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [-1.0, 1.0]]
    c = 2**-0.5
    expected = torch.tensor([1.0 + c + 1.8, c + 2.4], dtype=torch.float64)
    torch.testing.assert_close(gate(rows, weighted=True), expected)


def test_primary_is_always_kept_and_chosen_by_index():
    # Task 1 is the main task; task 0 conflicts with it and is dropped.
    rows = [[1.0, 0.0], [-1.0, 1.0]]
    torch.testing.assert_close(
        gate(rows, primary=1), torch.tensor([-1.0, 1.0], dtype=torch.float64)
    )


def test_zero_main_gradient_drops_every_auxiliary():
    torch.testing.assert_close(gate([[0.0, 0.0], [1.0, 2.0]]), torch.zeros(2, dtype=torch.float64))


def test_gate_is_decided_per_block():
    # Block 0: the auxiliary conflicts (dropped); block 1: it agrees (added).
    G = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 1.0, 2.0]], dtype=torch.float64)
    d = CosineGate().resolve_blocks(G, (2, 1)).direction
    torch.testing.assert_close(d, torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64))
    # Over the whole vector the cosine is (-1 + 2) / ... > 0: the auxiliary is added.
    torch.testing.assert_close(gradsurgery.resolve(G, method="cosine_gate"), G.sum(0))


def test_backward_with_tensor_granularity_gates_each_tensor():
    a = torch.tensor([1.0, 0.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    main = a[0] + b[0]  # gradient (1, 0 | 1)
    auxiliary = -a[0] + a[1] + 2 * b[0]  # gradient (-1, 1 | 2)
    gradsurgery.backward([main, auxiliary], [a, b], resolver="cosine_gate", granularity="tensor")
    torch.testing.assert_close(a.grad, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([3.0]))


def test_invalid_weighted():
    with pytest.raises(TypeError, match="weighted"):
        CosineGate(weighted=1)  # type: ignore[arg-type]
