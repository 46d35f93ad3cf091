"""OL-AUX: weights fixed within a horizon, one SGD step per horizon, by hand."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import OLAux

# Main gradient (1, 0); auxiliary 1 helps (dot 2), auxiliary 2 conflicts (dot -1).
G = torch.tensor([[1.0, 0.0], [2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)


def test_weights_move_once_per_horizon_by_the_summed_dot_products():
    resolver = OLAux(lr=2.0, model_lr=0.1, horizon=3)
    for _ in range(3):  # the whole first horizon uses the initial weights
        torch.testing.assert_close(gradsurgery.resolve(G, method=resolver), G.sum(0))
    # w_k += lr * model_lr * sum over 3 steps of g_main . g_k = 0.2 * 3 * (2, -1).
    expected = torch.tensor([1.0, 1.0 + 1.2, 1.0 - 0.6], dtype=torch.float64)
    torch.testing.assert_close(resolver.task_weights, expected)
    d = gradsurgery.resolve(G, method=resolver)
    torch.testing.assert_close(d, G[0] + 2.2 * G[1] + 0.4 * G[2])


def test_nonnegative_clips_at_zero():
    resolver = OLAux(lr=10.0, model_lr=0.1, horizon=1, nonnegative=True)
    gradsurgery.resolve(G, method=resolver)  # auxiliary 2: 1 - 1.0 * 1 -> 0
    gradsurgery.resolve(G, method=resolver)  # would go negative; stays 0
    assert resolver.task_weights is not None
    assert resolver.task_weights[2].item() == 0.0
    helpful = resolver.task_weights[1].item()
    d = gradsurgery.resolve(G, method=resolver)
    torch.testing.assert_close(d, G[0] + helpful * G[1])


def test_unconstrained_weights_can_turn_negative():
    resolver = OLAux(lr=10.0, model_lr=0.1, horizon=1)
    for _ in range(3):
        gradsurgery.resolve(G, method=resolver)
    assert resolver.task_weights is not None
    assert resolver.task_weights[2].item() == pytest.approx(1.0 - 3.0)


def test_primary_weight_stays_one_and_primary_selects_the_main_task():
    resolver = OLAux(lr=1.0, model_lr=1.0, horizon=1)
    gradsurgery.resolve(G, method=resolver, primary=1)
    # Main task 1: dots with (task 0, task 2) = (2, 1): weights 1 + (2, 1).
    assert resolver.task_weights is not None
    torch.testing.assert_close(
        resolver.task_weights, torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    )


def test_dot_products_are_summed_over_blocks():
    # Per-tensor blocks share one set of weights: the dot is over the whole vector.
    resolver = OLAux(lr=1.0, model_lr=1.0, horizon=1)
    two = torch.tensor([[1.0, 1.0], [1.0, -3.0]], dtype=torch.float64)  # blocks dots 1, -3
    resolver.resolve_blocks(two, (1, 1))
    assert resolver.task_weights is not None
    assert resolver.task_weights[1].item() == pytest.approx(1.0 - 2.0)


def test_state_restores_mid_horizon():
    resolver = OLAux(lr=1.0, model_lr=0.1, horizon=4)
    for _ in range(2):
        gradsurgery.resolve(G, method=resolver)
    restored = OLAux(lr=1.0, model_lr=0.1, horizon=4)
    restored.load_state_dict(resolver.state_dict())
    for _ in range(4):
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver), gradsurgery.resolve(G, method=restored)
        )


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"model_lr": 0.0}, "model_lr"),
        ({"horizon": 0}, "horizon"),
        ({"initial_weight": float("inf")}, "initial_weight"),
        ({"initial_weight": -1.0, "nonnegative": True}, "initial_weight"),
    ],
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        OLAux(**options)


def test_a_non_integer_horizon_is_a_type_error():
    with pytest.raises(TypeError, match="horizon"):
        OLAux(horizon=2.5)


def test_nonnegative_must_be_a_bool():
    with pytest.raises(TypeError, match="nonnegative"):
        OLAux(nonnegative=1)
