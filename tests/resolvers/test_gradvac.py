"""GradVac: the first step is PCGrad, TorchJD as an oracle, targets reached, per-block state."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import GradVac, PCGrad


def random_matrices(seed, count, T=3, P=6):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(T, P, generator=generator, dtype=torch.float64) for _ in range(count)]


def test_first_step_is_pcgrad():
    # With all targets at 0 the vaccine is exactly PCGrad's projection.
    for T in (2, 3, 4):
        for G in random_matrices(T, 5, T=T):
            torch.testing.assert_close(
                gradsurgery.resolve(G, method=GradVac(order="fixed")),
                gradsurgery.resolve(G, method=PCGrad(order="fixed")),
            )


def test_matches_torchjd_over_several_steps():
    from torchjd.aggregation import GradVac as TorchJDGradVac

    ours, theirs = GradVac(), TorchJDGradVac()
    for step, G in enumerate(random_matrices(0, 6, T=4)):
        torch.manual_seed(step)
        expected = theirs(G)
        torch.manual_seed(step)
        actual = gradsurgery.resolve(G, method=ours)
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-8)  # TorchJD adds 1e-8


def test_similarity_is_raised_to_the_target():
    resolver = GradVac(beta=1.0, order="fixed")
    gradsurgery.resolve(
        torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64), method=resolver
    )
    target = resolver.targets[0, 0, 1]  # beta = 1: the last similarity, cos 45 degrees
    torch.testing.assert_close(target, torch.tensor(0.5**0.5, dtype=torch.float64))
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weights = resolver.resolve_blocks(G, (2,)).weights
    # Orthogonal now (cos 0 < target): each task gains w times the other, with
    # cos((1, w), (0, 1)) = w / sqrt(1 + w^2) = sqrt(1/2), so w = 1 and the weights are (2, 2).
    torch.testing.assert_close(weights, torch.tensor([[2.0, 2.0]], dtype=torch.float64))


def test_per_block_targets_and_exact_resume():
    generator = torch.Generator().manual_seed(5)
    G = [torch.randn(3, 7, generator=generator, dtype=torch.float64) for _ in range(3)]
    resolver = GradVac(seed=0)
    resolver.resolve_blocks(G[0], (3, 4))
    assert resolver.targets.shape == (2, 3, 3)
    assert not torch.equal(resolver.targets[0], resolver.targets[1])
    restored = GradVac(seed=123)
    restored.load_state_dict(resolver.state_dict())
    for g in G[1:]:
        first = resolver.resolve_blocks(g, (3, 4)).direction
        assert torch.equal(first, restored.resolve_blocks(g, (3, 4)).direction)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"beta": 1.5}, ValueError),
        ({"order": "sorted"}, ValueError),
        ({"seed": 1, "generator": torch.Generator()}, ValueError),
        ({"seed": 1.5}, TypeError),
    ],
)
def test_invalid_options(options, error):
    with pytest.raises(error):
        GradVac(**options)


def test_targets_for_other_blocks_are_refused_not_dropped():
    resolver = gradsurgery.get_resolver("gradvac", order="fixed")
    G = torch.tensor([[1.0, 0.5, -0.3, 0.2], [-0.8, 0.4, 0.9, -0.1]], dtype=torch.float64)
    resolver.resolve_blocks(G, [2, 2])
    targets = resolver.state_dict()["targets"].clone()
    with pytest.raises(ValueError, match=r"GradVac has targets for 2 blocks, got 3; .*start over"):
        resolver.resolve_blocks(G, [1, 1, 2])
    assert torch.equal(resolver.state_dict()["targets"], targets)
