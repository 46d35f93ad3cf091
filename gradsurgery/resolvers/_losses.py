"""The loss-value check shared by the resolvers that take logarithms or ratios of losses."""

from __future__ import annotations

import torch
from torch import Tensor


def checked_losses(losses: Tensor, message: str, *, strictly_positive: bool) -> Tensor:
    """The losses as a CPU float64 vector, after checking their sign.

    Args:
        losses: ``(T,)`` loss values.
        message: what follows ``Invalid losses: task i is v;`` in the error, naming the
            method and what it needs.
        strictly_positive: require every loss ``> 0`` (else ``>= 0``).

    Raises:
        ValueError: naming the first task whose loss fails the check.
    """
    values = losses.detach().to("cpu", torch.float64).reshape(-1)
    # A handful of numbers, checked on every step: as Python floats, not tensor reductions.
    for index, value in enumerate(values.tolist()):
        if (not value > 0) if strictly_positive else value < 0:  # NaN fails only the first
            raise ValueError(f"Invalid losses: task {index} is {value}; {message}")
    return values
