"""GradNorm: the weight update by hand, renormalisation, state, and required losses."""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import GradNorm


def test_first_step_uses_unit_weights_then_updates():
    resolver = GradNorm(lr=0.1)
    G = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=resolver, losses=[2.0, 4.0])
    torch.testing.assert_close(d, G.sum(0))
    # Equal loss ratios: the targets are the mean weighted norm 2; task 0 is below it
    # (gradient -1), task 1 above (+3). Adam's first step moves each by lr * sign.
    torch.testing.assert_close(resolver.task_weights, torch.tensor([1.1, 0.9], dtype=torch.float64))
    d2 = gradsurgery.resolve(G, method=resolver, losses=[2.0, 4.0])
    torch.testing.assert_close(d2, torch.tensor([1.1, 2.7], dtype=torch.float64))


def test_slower_task_gains_weight():
    resolver = GradNorm()
    G = torch.eye(2, dtype=torch.float64)
    gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0])
    for _ in range(20):  # task 1 trains twice as fast as task 0
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 0.5])
    weights = resolver.task_weights
    assert weights[0] > weights[1]
    assert weights.sum().item() == pytest.approx(2.0)


def test_weights_stay_positive_and_sum_to_T():
    resolver = GradNorm(lr=1.0)
    G = torch.tensor([[1.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 0.01]], dtype=torch.float64)
    for step in range(50):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0 / (step + 1), 1.0])
        assert (resolver.task_weights > 0).all()
        assert resolver.task_weights.sum().item() == pytest.approx(3.0)


def test_losses_are_required():
    with pytest.raises(ValueError, match="needs losses"):
        gradsurgery.resolve(torch.eye(2), method="gradnorm")


def test_state_dict_restores_exactly():
    G = torch.tensor([[1.0, 2.0], [-3.0, 1.0]], dtype=torch.float64)
    resolver = GradNorm()
    for step in range(3):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0 / (step + 1)])
    state = resolver.state_dict()
    expected = [gradsurgery.resolve(G, method=resolver, losses=[0.5, 0.2]) for _ in range(2)]
    restored = GradNorm()
    restored.load_state_dict(state)
    actual = [gradsurgery.resolve(G, method=restored, losses=[0.5, 0.2]) for _ in range(2)]
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)


def test_nonfinite_gradient_leaves_state_untouched():
    resolver = GradNorm()
    gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 1.0])
    before = resolver.state_dict()
    with pytest.raises(ValueError, match="task 1"):
        gradsurgery.resolve(
            torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]), method=resolver, losses=[1.0, 1.0]
        )
    after = resolver.state_dict()
    assert all(torch.equal(torch.as_tensor(before[k]), torch.as_tensor(after[k])) for k in before)


@pytest.mark.parametrize(
    "options", [{"alpha": -1.0}, {"lr": 0.0}, {"lr": float("nan")}, {"min_weight": 1.0}]
)
def test_invalid_hyper_parameters(options):
    with pytest.raises(ValueError, match="Invalid"):
        GradNorm(**options)


def test_a_negative_loss_is_refused_by_task_and_changes_nothing():
    """A negative loss ratio has no power alpha: its NaN target made sign() give a zero
    step for that task, silently. Now refused, naming the task, before any state moves."""
    resolver = GradNorm()
    G = torch.tensor([[1.0, 0.2], [0.3, 1.0]], dtype=torch.float64)
    gradsurgery.resolve(G, method=resolver, losses=torch.tensor([1.0, 2.0]))
    state = copy.deepcopy(resolver.state_dict())
    with pytest.raises(ValueError, match=r"^Invalid losses: task 0 is -1\.0; GradNorm needs"):
        gradsurgery.resolve(G, method=resolver, losses=torch.tensor([-1.0, 2.0]))
    torch.testing.assert_close(resolver.state_dict(), state, rtol=0, atol=0)
    gradsurgery.resolve(G, method=resolver, losses=torch.tensor([0.0, 2.0]))  # zero is fine
