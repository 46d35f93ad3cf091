"""MGDA: hand cases, non-conflict, exactness against TorchJD's Frank-Wolfe, normalisations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import gradsurgery
from gradsurgery.resolvers import MGDA
from tests.strategies import gradient_matrices


def mgda(rows, **kwargs):
    return gradsurgery.resolve(torch.tensor(rows, dtype=torch.float64), method="mgda", **kwargs)


def test_two_tasks_by_hand():
    # w1 = (g2 - g1).g2 / |g1 - g2|^2 = 3/5: d = 0.6 (1, 0) + 0.4 (-1, 1).
    torch.testing.assert_close(
        mgda([[1.0, 0.0], [-1.0, 1.0]]), torch.tensor([0.2, 0.4], dtype=torch.float64)
    )


def test_dominated_direction_is_the_shorter_gradient():
    # (1, 0) and (3, 0): the hull's min-norm point is (1, 0).
    torch.testing.assert_close(
        mgda([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )


def test_pareto_stationary_gives_zero():
    d = mgda([[1.0, 2.0], [-2.0, -4.0], [0.5, 0.0]])
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


@given(G=gradient_matrices(min_tasks=2))
def test_non_conflicting(G):
    d = gradsurgery.resolve(G, method="mgda")
    scale = float((G * G).sum(1).max())
    assert (G @ d >= torch.dot(d, d) - 1e-9 * scale).all()


def test_never_longer_than_torchjd_frank_wolfe():
    from torchjd.aggregation import MGDA as TorchJDMGDA

    generator = torch.Generator().manual_seed(0)
    longer = 0
    for trial in range(40):
        T = 2 + trial % 4
        J = torch.randn(T, 6, generator=generator, dtype=torch.float64)
        if trial % 2:
            J[1] = -0.99 * J[0] + 0.01 * torch.randn(6, generator=generator, dtype=torch.float64)
        ours = gradsurgery.resolve(J, method="mgda").norm()
        theirs = TorchJDMGDA()(J).norm()
        assert ours <= theirs * (1 + 1e-9) + 1e-12
        longer += bool(theirs > 1.05 * ours)
    assert longer > 0  # the capped Frank-Wolfe is measurably off on nearly opposed tasks


def test_l2_normalisation_weights_apply_to_raw_gradients():
    # Unit gradients (1, 0) and (0, 1): w = (1/2, 1/2), applied to (2, 0) and (0, 1).
    d = mgda([[2.0, 0.0], [0.0, 1.0]], normalization="l2")
    torch.testing.assert_close(d, torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_loss_normalisations():
    losses = torch.tensor([2.0, 1.0])
    d = mgda([[2.0, 0.0], [0.0, 1.0]], normalization="loss", losses=losses)
    torch.testing.assert_close(d, torch.tensor([1.0, 0.5], dtype=torch.float64))
    # loss+: (2, 0) / (2 * 2) and (0, 3) / (1 * 3): (1/2, 0) and (0, 1) give w = (4/5, 1/5).
    d = mgda([[2.0, 0.0], [0.0, 3.0]], normalization="loss+", losses=losses)
    torch.testing.assert_close(d, torch.tensor([1.6, 0.6], dtype=torch.float64))


def test_loss_normalisation_needs_positive_losses():
    with pytest.raises(ValueError, match="losses"):
        mgda([[1.0, 0.0], [0.0, 1.0]], normalization="loss")
    with pytest.raises(ValueError, match="positive losses"):
        mgda([[1.0, 0.0], [0.0, 1.0]], normalization="loss", losses=torch.tensor([1.0, -1.0]))


def test_per_tensor_blocks_are_solved_independently():
    G = torch.tensor([[1.0, 0.0, 1.0, 0.0], [-1.0, 1.0, 3.0, 0.0]], dtype=torch.float64)
    resolution = MGDA().resolve_blocks(G, (2, 2))
    expected = torch.cat([MGDA()(G[:, :2]), MGDA()(G[:, 2:])])
    torch.testing.assert_close(resolution.direction, expected)


def test_invalid_normalization():
    with pytest.raises(ValueError, match="normalization"):
        MGDA(normalization="l1")
