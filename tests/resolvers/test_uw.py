"""Uncertainty weighting: weights 1/(2 e^s), Adam steps on s by hand, and convergence to log L."""

from __future__ import annotations

import math

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import UncertaintyWeighting

G = torch.eye(2, dtype=torch.float64)


def test_weights_then_one_adam_step_on_the_log_variances():
    resolver = UncertaintyWeighting(lr=0.1, initial_log_variance=math.log(2.0))
    d = gradsurgery.resolve(G, method=resolver, losses=[4.0, 1.0])
    torch.testing.assert_close(d, torch.tensor([0.25, 0.25], dtype=torch.float64))
    # ds = 1/2 - L / (2 e^s) = (1/2 - 1, 1/2 - 1/4): Adam's first step is -lr * sign.
    expected = torch.tensor([math.log(2.0) + 0.1, math.log(2.0) - 0.1], dtype=torch.float64)
    torch.testing.assert_close(resolver.log_variances, expected)
    d = gradsurgery.resolve(G, method=resolver, losses=[4.0, 1.0])
    torch.testing.assert_close(d, 0.5 * torch.exp(-expected))


def test_log_variances_converge_to_the_log_losses():
    resolver = UncertaintyWeighting(lr=0.05)
    losses = [8.0, 0.5]
    for _ in range(600):
        gradsurgery.resolve(G, method=resolver, losses=losses)
    assert resolver.log_variances is not None
    torch.testing.assert_close(
        resolver.log_variances, torch.tensor(losses, dtype=torch.float64).log(), atol=0.05, rtol=0
    )


def test_larger_loss_gets_smaller_weight():
    resolver = UncertaintyWeighting(lr=0.05)
    for _ in range(50):
        d = gradsurgery.resolve(G, method=resolver, losses=[10.0, 1.0])
    assert d[0] < d[1]


def test_losses_are_required_and_must_be_nonnegative():
    with pytest.raises(ValueError, match="needs losses"):
        gradsurgery.resolve(G, method="uw")
    resolver = UncertaintyWeighting()
    with pytest.raises(ValueError, match=r"task 1 is -0\.5"):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, -0.5])
    assert resolver.log_variances is None  # nothing changed


def test_state_restores_exactly():
    resolver = UncertaintyWeighting(lr=0.1)
    for step in range(3):
        gradsurgery.resolve(G, method=resolver, losses=[1.0 + step, 2.0])
    restored = UncertaintyWeighting(lr=0.1)
    restored.load_state_dict(resolver.state_dict())
    for losses in ([3.0, 0.1], [0.2, 5.0]):
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver, losses=losses),
            gradsurgery.resolve(G, method=restored, losses=losses),
        )


def test_the_glue_runs_one_backward_pass_with_the_current_weights():
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    hidden = 2.0 * x
    passes = []
    hidden.register_hook(lambda grad: passes.append(1))
    resolver = UncertaintyWeighting(initial_log_variance=math.log(0.25))  # weights 2
    result = gradsurgery.backward([hidden.pow(2).sum(), hidden.sum()], [x], resolver=resolver)
    assert len(passes) == 1 and result.gram is None
    # d/dx (2 |2x|^2 + 2 sum(2x)) = 16 x + 4.
    torch.testing.assert_close(x.grad, 16 * x.detach() + 4)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"initial_log_variance": 1e3}, "initial")],
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        UncertaintyWeighting(**options)
