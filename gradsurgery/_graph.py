"""Which parameters a loss depends on, found by walking its autograd graph (no computation).

The walk runs on every training step (the glue checks that each loss reaches ``params``),
so it is a plain loop: a leaf's gradient accumulator is recognised by its type, and the
check for "any parameter" returns at the first one, usually a few nodes below the loss.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import torch
from torch import Tensor


def _accumulate_grad_type() -> type:
    """The type of autograd's node for a leaf (``AccumulateGrad``), read off a tiny graph
    (built with autograd on, whatever the importer's context)."""
    with torch.inference_mode(False), torch.enable_grad():
        leaf = torch.zeros((), requires_grad=True)
        node = (leaf * 1).grad_fn
    assert node is not None
    return type(node.next_functions[0][0])


_ACCUMULATE_GRAD: Any = _accumulate_grad_type()


def _walk(loss: Tensor, ids: Container[int], found: dict[int, Tensor] | None) -> bool:
    """Walk ``loss``'s graph (each node once, leaves not expanded) for parameters whose
    ``id`` is in ``ids``: with ``found`` None, return at the first; otherwise collect every
    one into ``found``. Returns whether any was met."""
    root = loss.grad_fn
    if root is None:  # the loss is itself a leaf
        if id(loss) not in ids:
            return False
        if found is not None:
            found[id(loss)] = loss
        return True
    met = False
    seen: set[Any] = set()
    stack: list[Any] = [root]
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is None or child in seen:
                continue
            seen.add(child)
            if type(child) is not _ACCUMULATE_GRAD:
                stack.append(child)
                continue
            variable = child.variable
            if id(variable) in ids:
                if found is None:
                    return True
                found[id(variable)] = variable
                met = True
    return met


def reached_parameters(loss: Tensor, ids: Container[int]) -> dict[int, Tensor]:
    """Every parameter (one whose ``id`` is in ``ids``) ``loss`` depends on, by id."""
    found: dict[int, Tensor] = {}
    _walk(loss, ids, found)
    return found


def reaches_any(loss: Tensor, ids: Container[int]) -> bool:
    """Whether ``loss`` depends on any of the parameters (the walk stops at the first)."""
    return _walk(loss, ids, None)
