"""Dynamic weight average: epoch averages, weights by hand, epoch boundaries, one backward."""

from __future__ import annotations

import math

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import DynamicWeightAverage

G = torch.eye(2, dtype=torch.float64)


def dwa_weights(ratios, temperature=2.0):
    exps = [math.exp(r / temperature) for r in ratios]
    return torch.tensor([len(ratios) * e / sum(exps) for e in exps], dtype=torch.float64)


def test_first_two_epochs_use_unit_weights_then_the_ratio_of_epoch_averages():
    resolver = DynamicWeightAverage(epoch_length=2)
    epochs = [([2.0, 4.0], [4.0, 4.0]), ([3.0, 1.0], [3.0, 3.0])]  # averages (3, 4), (3, 2)
    for epoch in epochs:
        for losses in epoch:
            torch.testing.assert_close(
                gradsurgery.resolve(G, method=resolver, losses=losses), G.sum(0)
            )
    d = gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0])
    torch.testing.assert_close(d, dwa_weights([3 / 3, 2 / 4]))


def test_end_epoch_delimits_epochs_of_any_length():
    resolver = DynamicWeightAverage(temperature=1.0)
    for losses in ([1.0, 1.0], [1.0, 1.0], [1.0, 1.0]):  # epoch 0: averages (1, 1)
        gradsurgery.resolve(G, method=resolver, losses=losses)
    resolver.end_epoch()
    gradsurgery.resolve(G, method=resolver, losses=[0.5, 2.0])  # epoch 1: averages (0.5, 2)
    resolver.end_epoch()
    weights = dwa_weights([0.5, 2.0], temperature=1.0)
    for _ in range(3):  # the weights are fixed for the whole epoch
        torch.testing.assert_close(
            gradsurgery.resolve(G, method=resolver, losses=[9.0, 9.0]), weights
        )


def test_weights_sum_to_the_number_of_tasks():
    resolver = DynamicWeightAverage(epoch_length=1)
    three = torch.eye(3, dtype=torch.float64)
    for losses in ([1.0, 2.0, 3.0], [0.1, 2.0, 9.0], [1.0, 1.0, 1.0]):
        d = gradsurgery.resolve(three, method=resolver, losses=losses)
    assert d.sum().item() == pytest.approx(3.0)
    assert d[2] > d[1] > d[0]  # the task whose loss fell least (grew most) weighs most


def test_zero_average_gives_ratio_one_and_huge_ratios_stay_finite():
    resolver = DynamicWeightAverage(epoch_length=1)
    for losses in ([0.0, 1e-300], [1.0, 1e300], [1.0, 1.0]):
        d = gradsurgery.resolve(G, method=resolver, losses=losses)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_end_epoch_without_losses_is_an_error():
    resolver = DynamicWeightAverage()
    with pytest.raises(RuntimeError, match="no losses"):
        resolver.end_epoch()


def test_losses_are_required_and_must_be_nonnegative():
    with pytest.raises(ValueError, match="needs losses"):
        gradsurgery.resolve(G, method="dwa")
    with pytest.raises(ValueError, match=r"task 0 is -1\.0"):
        gradsurgery.resolve(G, method="dwa", losses=[-1.0, 1.0])


def test_state_restores_mid_epoch():
    resolver = DynamicWeightAverage(epoch_length=3)
    for step in range(7):
        gradsurgery.resolve(G, method=resolver, losses=[1.0 + step, 2.0 / (step + 1)])
    restored = DynamicWeightAverage(epoch_length=3)
    restored.load_state_dict(resolver.state_dict())
    for step in range(4):
        losses = [0.5 * step + 1, 1.0]
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver, losses=losses),
            gradsurgery.resolve(G, method=restored, losses=losses),
        )


def test_the_glue_runs_one_backward_pass():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    hidden = x + 1.0
    passes = []
    hidden.register_hook(lambda grad: passes.append(1))
    result = gradsurgery.backward([hidden.sum(), hidden.prod()], [x], resolver="dwa")
    assert len(passes) == 1 and result.gram is None
    torch.testing.assert_close(x.grad, torch.tensor([1.0 + 3.0, 1.0 + 2.0]))


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"epoch_length": 0}, "epoch_length"),
    ],
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        DynamicWeightAverage(**options)


def test_a_non_integer_epoch_length_is_a_type_error():
    with pytest.raises(TypeError, match="epoch_length"):
        DynamicWeightAverage(epoch_length=1.5)


def test_a_changed_number_of_tasks_is_refused_once_weights_are_formed():
    resolver = DynamicWeightAverage(epoch_length=1)
    for losses in ([1.0, 2.0], [1.0, 2.0]):
        gradsurgery.resolve(G, method=resolver, losses=losses)
    with pytest.raises(ValueError, match="has state for 2 tasks, got 3"):
        gradsurgery.resolve(torch.eye(3, dtype=torch.float64), method=resolver, losses=[1.0] * 3)


def test_a_changed_number_of_tasks_is_refused_within_an_epoch():
    resolver = DynamicWeightAverage(epoch_length=3)
    gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0])
    with pytest.raises(ValueError, match="has state for 2 tasks, got 3"):
        gradsurgery.resolve(torch.eye(3, dtype=torch.float64), method=resolver, losses=[1.0] * 3)


def test_a_changed_number_of_tasks_is_refused_after_the_first_epoch():
    resolver = DynamicWeightAverage(epoch_length=1)
    gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0])  # one epoch average held
    state = str(resolver.state_dict())
    three = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"has state for 2 tasks, got 3.*load_state_dict"):
        gradsurgery.resolve(three, method=resolver, losses=[1.0] * 3)
    assert str(resolver.state_dict()) == state
    resolver.load_state_dict({})  # starting over takes the new tasks
    gradsurgery.resolve(three, method=resolver, losses=[1.0] * 3)
    with pytest.raises(ValueError, match="has state for 3 tasks, got 2"):
        resolver.current_weights(2)


def test_epochs_completed_counts_ended_epochs_up_to_the_two_the_weights_use():
    resolver = DynamicWeightAverage(epoch_length=1)
    assert resolver.epochs_completed == 0
    for expected in (1, 2, 2):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0])
        assert resolver.epochs_completed == expected
