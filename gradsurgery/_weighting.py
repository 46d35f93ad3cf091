r"""Loss weightings in the autograd glue: one backward pass of :math:`\sum_i w_i c_i L_i`.

A resolver whose weights ignore the Gram matrix (``uses_gram = False``: ``sum``, ``mean``,
UW, DWA, RLW, FAMO, ...) needs no task gradients: its direction :math:`\sum_i w_i c_i g_i`
is the gradient of :math:`\sum_i w_i c_i L_i`, with :math:`w` the resolver's weights and
:math:`c` the loss weights. This module forms those coefficients and that sum; it runs on
every training step of such a method, so it is kept to a handful of tensor operations.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypeGuard

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver, Resolver
from gradsurgery.resolvers.sum import Sum

__all__ = ["coefficients", "is_loss_weighting", "is_plain_sum", "stack_losses", "weighted_total"]


def is_loss_weighting(resolver: Resolver) -> TypeGuard[GramResolver]:
    """Whether ``resolver``'s direction is a weighted sum of the task gradients whose weights
    do not depend on them (so the glue back-propagates one weighted loss)."""
    return isinstance(resolver, GramResolver) and not resolver.uses_gram


def stack_losses(losses: list[Tensor]) -> Tensor:
    """The ``(T,)`` stacked scalar losses, on the first loss's device (differentiable).

    Losses of one shape on one device, the usual case, are stacked as they are (one
    operation, as ``torch.stack(losses)`` in a plain loop); mixed shapes of one element,
    or a loss on another device, are reshaped and moved first.
    """
    try:
        stacked = torch.stack(losses)
    except RuntimeError:  # shapes or devices differ
        device = losses[0].device
        scalars = [loss if loss.dim() == 0 else loss.reshape(()) for loss in losses]
        return torch.stack([x if x.device == device else x.to(device) for x in scalars])
    return stacked if stacked.dim() == 1 else stacked.reshape(-1)


def is_plain_sum(resolver: GramResolver | None, loss_weights: Tensor | None) -> bool:
    """Whether every coefficient is 1 without asking the resolver: plain weights (``None``)
    or the plain sum, and no loss weights."""
    return loss_weights is None and (resolver is None or type(resolver) is Sum)


@lru_cache(maxsize=64)
def _zero_gram(T: int) -> Tensor:
    """The ``(1, T, T)`` float64 zero Gram handed to a loss weighting, which reads only its
    shape and device: one zero, expanded, so that an in-place write raises instead of
    reaching the next call."""
    return torch.zeros((), dtype=torch.float64).expand(1, T, T)


def coefficients(
    resolver: GramResolver | None,
    primary: int | None,
    loss_values: Tensor | list[float],
    loss_weights: Tensor | None,
) -> Tensor:
    """The ``(1, T)`` float64 coefficients :math:`w_i c_i` of the losses.

    Args:
        resolver: the loss weighting, or ``None`` for plain weights :math:`w = 1` (tasks
            that share no parameter, or non-finite losses left to a ``GradScaler``).
        primary: the primary task's index, handed to the resolver.
        loss_values: ``(T,)`` float64 loss values, handed to the resolver; a list of
            floats is made a tensor only then (not for :func:`is_plain_sum` weights).
        loss_weights: ``(T,)`` float64 loss weights :math:`c`, or ``None`` for ones.
    """
    T = len(loss_values)
    if resolver is None or is_plain_sum(resolver, loss_weights):
        weights = torch.ones(1, T, dtype=torch.float64)
    else:  # the Gram is not read: a loss weighting is handed NaN-free zeros of its shape
        if not isinstance(loss_values, Tensor):
            loss_values = torch.tensor(loss_values, dtype=torch.float64)
        weights = resolver.weights(_zero_gram(T), primary=primary, losses=loss_values)
    if loss_weights is not None:
        weights = weights * loss_weights
    return weights


def weighted_total(stacked: Tensor, coefficients: Tensor, plain: bool = False) -> Tensor:
    r""":math:`\sum_i a_i L_i` as one product of the stacked losses with ``coefficients``
    (three autograd nodes whatever ``T``, where a chain of products and sums has ``2T``,
    each built in the forward and run in the backward). Coefficients all 1 (the plain
    sum) skip the product.

    Each term is the loss times its coefficient rounded to the losses' dtype. For float32
    and float64 losses that is how ``c * loss`` with a Python float ``c`` computes it, so
    the result equals the hand-written ``c_0 * L_0 + c_1 * L_1`` for two losses, bit for
    bit. For half-precision losses ``c * loss`` multiplies in float32 and rounds once,
    so the total may differ from it in the last place; the gradients do not (the backward
    of ``c * loss`` rounds ``c`` to the loss's dtype too).

    Args:
        stacked: ``(T,)`` losses from :func:`stack_losses`.
        coefficients: ``(1, T)`` coefficients :math:`a` from :func:`coefficients`, any
            dtype and device.
        plain: the coefficients are known to be all 1 (:func:`is_plain_sum`): they are
            not read.
    """
    if plain:
        return stacked.sum()
    values = coefficients.tolist()[0]
    if all(value == 1.0 for value in values):
        return stacked.sum()
    return (stacked * torch.tensor(values, dtype=stacked.dtype, device=stacked.device)).sum()
