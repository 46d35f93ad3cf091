"""One-sided PCGrad: hand-computed projections, the primary untouched, no auxiliary pairs."""

from __future__ import annotations

import torch
from hypothesis import given, settings

import gradsurgery
from gradsurgery.resolvers import OneSidedPCGrad, PCGrad
from tests.strategies import gradient_matrices


def onesided(rows, **options):
    G = torch.tensor(rows, dtype=torch.float64)
    return gradsurgery.resolve(G, method="pcgrad_onesided", **options)


def test_conflicting_auxiliary_loses_its_conflicting_component():
    # a = (-1, 1), p = (1, 0): a - (a.p / |p|^2) p = (0, 1); d = p + (0, 1).
    torch.testing.assert_close(
        onesided([[1.0, 0.0], [-1.0, 1.0]]), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )


def test_primary_is_never_projected():
    # Task 1 is primary: it conflicts with task 0, but only task 0 is projected.
    # a = (1, 0), p = (-1, 1): a.p = -1, |p|^2 = 2, a -> (1, 0) + (1/2)(-1, 1) = (0.5, 0.5).
    torch.testing.assert_close(
        onesided([[1.0, 0.0], [-1.0, 1.0]], primary=1),
        torch.tensor([-0.5, 1.5], dtype=torch.float64),
    )


def test_auxiliaries_are_not_projected_against_each_other():
    # a1 = (0, 1) and a2 = (1, -2) conflict with each other but not with p: plain sum.
    rows = [[1.0, 0.0], [0.0, 1.0], [1.0, -2.0]]
    torch.testing.assert_close(onesided(rows), torch.tensor([2.0, -1.0], dtype=torch.float64))
    # PCGrad with a primary projects them against each other: a1 -> (0.4, 0.2), a2 -> (1, 0).
    pcgrad = gradsurgery.resolve(torch.tensor(rows), method=PCGrad(order="fixed"), primary=0)
    torch.testing.assert_close(pcgrad, torch.tensor([2.4, 0.2]))


def test_three_tasks_by_hand():
    p, a1, a2 = (
        torch.tensor(v, dtype=torch.float64) for v in ([2.0, 0.0], [-1.0, 3.0], [1.0, -1.0])
    )
    projected_a1 = a1 - torch.dot(a1, p) / torch.dot(p, p) * p  # conflicts: (0, 3)
    expected = p + projected_a1 + a2  # a2 does not conflict
    torch.testing.assert_close(onesided([p.tolist(), a1.tolist(), a2.tolist()]), expected)


def test_zero_primary_is_never_projected_onto():
    torch.testing.assert_close(
        onesided([[0.0, 0.0], [-1.0, 2.0]]), torch.tensor([-1.0, 2.0], dtype=torch.float64)
    )


@settings(max_examples=40)
@given(G=gradient_matrices(min_tasks=2, max_tasks=2))
def test_two_tasks_equal_pcgrad_with_a_primary(G):
    expected = gradsurgery.resolve(G, method=PCGrad(order="fixed"), primary=0)
    torch.testing.assert_close(gradsurgery.resolve(G, method="pcgrad_onesided"), expected)


@settings(max_examples=40)
@given(G=gradient_matrices(min_tasks=2))
def test_direction_gains_at_least_the_primary_norm_along_it(G):
    d = gradsurgery.resolve(G, method="pcgrad_onesided")
    p = G[0]
    tolerance = 1e-9 * (1 + G.abs().max()) ** 2
    assert torch.dot(d, p) >= torch.dot(p, p) - tolerance


def test_per_tensor_blocks_are_projected_on_their_own():
    # Block 0 conflicts (a = -p), block 1 agrees: only block 0 changes.
    G = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    resolution = OneSidedPCGrad().resolve_blocks(G, (2, 1))
    torch.testing.assert_close(
        resolution.direction, torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    )
