"""Which parameters a loss depends on, found by walking its autograd graph (no computation)."""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Any

from torch import Tensor


def walk_to_parameters(loss: Tensor, ids: Container[int]) -> Iterator[Tensor]:
    """The parameters (those whose ``id`` is in ``ids``) ``loss`` depends on, yielded
    as its autograd graph is walked (each node visited once; leaves are not expanded), so
    a caller that needs only the first stops the walk there."""
    if loss.grad_fn is None:  # the loss is itself a leaf
        if id(loss) in ids:
            yield loss
        return
    seen: set[Any] = set()
    stack: list[Any] = [loss.grad_fn]
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is None or child in seen:
                continue
            seen.add(child)
            variable = getattr(child, "variable", None)  # only AccumulateGrad nodes have one
            if variable is None:
                stack.append(child)
            elif id(variable) in ids:
                yield variable


def reached_parameters(loss: Tensor, ids: Container[int]) -> dict[int, Tensor]:
    """Every parameter ``loss`` depends on, by id."""
    return {id(param): param for param in walk_to_parameters(loss, ids)}


def reaches_any(loss: Tensor, ids: Container[int]) -> bool:
    """Whether ``loss`` depends on any of the parameters (the walk stops at the first)."""
    return next(walk_to_parameters(loss, ids), None) is not None
