"""The loss-value check shared by the loss-aware resolvers."""

from __future__ import annotations

import math

import pytest
import torch

from gradsurgery.resolvers._losses import checked_losses


@pytest.mark.parametrize(
    ("values", "strictly_positive", "bad_index"),
    [
        ([1.0, 0.0, 2.0], False, None),
        ([1.0, 0.0, 2.0], True, 1),
        ([1.0, -0.5, -2.0], False, 1),
        ([3.0, 2.0, -1e-300], True, 2),
        ([1.0, math.nan, -1.0], True, 1),  # NaN is not > 0
        ([1.0, math.nan, -1.0], False, 2),  # nor < 0
        ([1.0, math.inf], True, None),
    ],
)
def test_the_first_failing_task_is_named_with_its_value(values, strictly_positive, bad_index):
    losses = torch.tensor(values, dtype=torch.float32)
    if bad_index is None:
        out = checked_losses(losses, "why", strictly_positive=strictly_positive)
        assert out.dtype == torch.float64 and out.tolist() == values
        return
    wanted = f"task {bad_index} is {float(torch.tensor(values[bad_index]))}; why"
    with pytest.raises(ValueError, match=f"^Invalid losses: {wanted}$".replace("+", r"\+")):
        checked_losses(losses, "why", strictly_positive=strictly_positive)


def test_any_shape_and_device_gives_a_cpu_float64_vector():
    out = checked_losses(torch.ones(2, 2, dtype=torch.float16), "", strictly_positive=True)
    assert out.shape == (4,) and out.dtype == torch.float64 and out.device.type == "cpu"
