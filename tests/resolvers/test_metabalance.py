"""MetaBalance: moving averages and relaxed magnitude matching by hand, per-block state."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import MetaBalance


def test_first_step_by_hand():
    # m = 0.1 |g| for both tasks, so m_p / m_a = |p| / |a| = 1 / 10; factor 0.7/10 + 0.3.
    G = torch.tensor([[1.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=MetaBalance())
    torch.testing.assert_close(d, torch.tensor([1.0, 10.0 * (0.07 + 0.3)], dtype=torch.float64))


def test_moving_average_over_two_steps_by_hand():
    resolver = MetaBalance(relax=0.5, beta=0.5)
    first = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    second = torch.tensor([[4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    gradsurgery.resolve(first, method=resolver)  # m = (1, 2)
    d = gradsurgery.resolve(second, method=resolver)  # m = (0.5 + 2, 1 + 2) = (2.5, 3)
    factor = 0.5 * 2.5 / 3 + 0.5
    torch.testing.assert_close(d, torch.tensor([4.0, 4.0 * factor], dtype=torch.float64))
    torch.testing.assert_close(
        resolver.average_norms, torch.tensor([[2.5, 3.0]], dtype=torch.float64)
    )


def test_relax_one_gives_each_auxiliary_the_primary_magnitude():
    G = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -40.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=MetaBalance(relax=1.0))
    torch.testing.assert_close(d, torch.tensor([3.0, 3.0, -3.0], dtype=torch.float64))


def test_relax_zero_is_the_plain_sum():
    G = torch.tensor([[3.0, 1.0], [-7.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(G, method=MetaBalance(relax=0.0)), G.sum(0))


def test_primary_chooses_the_reference_magnitude():
    G = torch.tensor([[1.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=MetaBalance(relax=1.0), primary=1)
    torch.testing.assert_close(d, torch.tensor([10.0, 10.0], dtype=torch.float64))


def test_blocks_keep_their_own_averages():
    resolver = MetaBalance(relax=1.0)
    # Block 0 (size 2): |p| = 1, |a| = 2; block 1 (size 1): |p| = 3, |a| = 1.
    G = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, -1.0]], dtype=torch.float64)
    d = resolver.resolve_blocks(G, (2, 1)).direction
    torch.testing.assert_close(d, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        resolver.average_norms, torch.tensor([[0.1, 0.2], [0.3, 0.1]], dtype=torch.float64)
    )


def test_a_task_never_seen_nonzero_keeps_factor_one():
    G = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(G, method=MetaBalance()), G[0])


def test_changing_blocks_is_an_error():
    resolver = MetaBalance()
    G = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, -1.0]], dtype=torch.float64)
    resolver.resolve_blocks(G, (2, 1))
    with pytest.raises(ValueError, match="blocks x tasks"):
        resolver.resolve_blocks(G, (3,))


def test_state_restores_exactly_over_several_steps():
    steps = [torch.randn(3, 5, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    resolver = MetaBalance()
    for G in steps[:3]:
        gradsurgery.resolve(G, method=resolver)
    restored = MetaBalance()
    restored.load_state_dict(resolver.state_dict())
    for G in steps[3:]:
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver), gradsurgery.resolve(G, method=restored)
        )


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"relax": -0.1}, "relax"),
        ({"relax": 1.5}, "relax"),
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.5}, "beta"),
        ({"beta": float("nan")}, "beta"),
    ],
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        MetaBalance(**options)


def test_bad_state_dict_is_rejected():
    with pytest.raises(ValueError, match="average_norms"):
        MetaBalance().load_state_dict({"norms": torch.zeros(1, 2)})
