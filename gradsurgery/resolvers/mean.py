"""The mean of task gradients: the MTL baseline on the averaged loss."""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver

__all__ = ["Mean"]


class Mean(GramResolver):
    r"""The mean of the task gradients, :math:`d = \frac{1}{T} \sum_i g_i`.

    The gradient of the averaged loss; with loss weights :math:`c`,
    :math:`d = \frac{1}{T} \sum_i c_i g_i`. Same cost as :class:`~gradsurgery.resolvers.Sum`:
    one backward pass through the glue. ``primary`` is ignored.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])
        >>> gradsurgery.resolve(G, method="mean")
        tensor([-0.5000,  0.5000])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})
    uses_gram = False

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[1]
        return torch.full(gram.shape[:2], 1.0 / T, dtype=torch.float64, device=gram.device)
