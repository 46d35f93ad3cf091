"""The multi-task-learning baseline: the plain (weighted) sum of task gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver

__all__ = ["Sum"]


class Sum(GramResolver):
    r"""The plain sum of the task gradients, :math:`d = \sum_i g_i`.

    This is the multi-task learning (MTL) baseline every other resolver is measured
    against: it equals ``sum(losses).backward()``. With loss weights :math:`c` (the
    ``weights`` argument of :func:`gradsurgery.resolve` and :func:`gradsurgery.backward`) it
    is :math:`d = \sum_i c_i g_i`.

    Cost: one backward pass through the glue (no task gradients are formed), one pass over
    :math:`G` through :func:`gradsurgery.resolve`. ``primary`` is ignored.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])
        >>> gradsurgery.resolve(G, method="sum")
        tensor([-1.,  1.])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant", "sum_without_conflict"})
    uses_gram = False

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        return torch.ones(gram.shape[:2], dtype=torch.float64, device=gram.device)
