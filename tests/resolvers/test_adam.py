"""The host Adam of the loss-weighting resolvers is torch.optim.Adam's update, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsurgery.resolvers._adam import HostAdam


def torch_adam_trajectory(start, gradients, **options):
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], **options)
    path = []
    for gradient in gradients:
        x.grad = gradient.clone()
        optimizer.step()
        path.append(x.detach().clone())
    return path, optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_steps_match_torch_adam(weight_decay):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(4, dtype=torch.float64, generator=generator)
    gradients = [torch.randn(4, dtype=torch.float64, generator=generator) for _ in range(20)]
    expected, _ = torch_adam_trajectory(start, gradients, lr=0.05, weight_decay=weight_decay)
    adam = HostAdam(start, lr=0.05, weight_decay=weight_decay)
    for gradient, target in zip(gradients, expected):
        adam.step(gradient.numpy())
        torch.testing.assert_close(adam.values, target, rtol=1e-14, atol=1e-15)


def test_first_step_moves_each_value_by_lr_against_the_gradient_sign():
    adam = HostAdam(torch.zeros(3, dtype=torch.float64), lr=0.1)
    adam.step(np.array([2.0, -0.001, 5.0]))  # lr * g / (|g| + eps)
    expected = torch.tensor([-0.1, 0.1, -0.1], dtype=torch.float64)
    torch.testing.assert_close(adam.values, expected, rtol=0, atol=1e-6)


def test_values_is_a_live_view_and_start_is_copied():
    start = torch.zeros(2, dtype=torch.float64)
    adam = HostAdam(start, lr=1.0)
    view = adam.values
    adam.step(np.array([1.0, -1.0]))
    assert adam.values.data_ptr() == view.data_ptr()
    torch.testing.assert_close(view, torch.tensor([-1.0, 1.0], dtype=torch.float64))
    assert start.tolist() == [0.0, 0.0]


def test_state_round_trip_continues_exactly():
    gradients = [np.array([0.3, -2.0]), np.array([1.0, 0.5]), np.array([-0.2, 0.1])]
    adam = HostAdam(torch.tensor([0.5, -0.5], dtype=torch.float64), lr=0.01)
    adam.step(gradients[0])
    restored = HostAdam(adam.values.clone(), lr=0.01)
    restored.load_state_dict(adam.state_dict())
    for gradient in gradients[1:]:
        adam.step(gradient)
        restored.step(gradient)
    assert restored.values.tolist() == adam.values.tolist()


def test_loads_a_torch_adam_state_dict():
    start = torch.tensor([0.5, -0.5], dtype=torch.float64)
    gradients = [torch.tensor([0.3, -2.0], dtype=torch.float64)] * 3
    _, optimizer = torch_adam_trajectory(start, gradients[:2], lr=0.01)
    expected, _ = torch_adam_trajectory(start, gradients, lr=0.01)
    adam = HostAdam(expected[1], lr=0.01)
    adam.load_state_dict(optimizer.state_dict())
    adam.step(gradients[2].numpy())
    torch.testing.assert_close(adam.values, expected[2], rtol=1e-14, atol=1e-15)


def test_loads_a_torch_adam_state_dict_from_before_any_step():
    optimizer = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.1)
    adam = HostAdam(torch.zeros(2, dtype=torch.float64), lr=0.1)
    adam.load_state_dict(optimizer.state_dict())
    adam.step(np.array([1.0, -1.0]))
    expected = torch.tensor([-0.1, 0.1], dtype=torch.float64)
    torch.testing.assert_close(adam.values, expected, rtol=0, atol=1e-6)
