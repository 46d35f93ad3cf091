"""Conflict diagnostics computed from the Gram matrix a resolver already has."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cosine_from_gram", "norm_ratio_from_gram"]


def cosine_from_gram(gram: Tensor) -> Tensor:
    r"""Pairwise cosine similarity :math:`\cos(g_i, g_j) = G_{ij} / \sqrt{G_{ii} G_{jj}}`.

    Works on ``(..., T, T)`` Gram matrices; a pair involving a zero gradient has cosine 0.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> cosine_from_gram(G @ G.T)
        tensor([[ 1.0000, -0.7071],
                [-0.7071,  1.0000]])
    """
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0))
    denominator = norms.unsqueeze(-1) * norms.unsqueeze(-2)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, gram / safe, torch.zeros_like(gram))


def norm_ratio_from_gram(gram: Tensor) -> Tensor:
    r"""Pairwise norm ratio :math:`\|g_i\| / \|g_j\|` from ``(..., T, T)`` Gram matrices.

    A zero denominator gives ``inf`` (or 1 when both norms are zero).

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
        >>> norm_ratio_from_gram(G @ G.T)
        tensor([[1.0000, 0.2000],
                [5.0000, 1.0000]])
    """
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0))
    numerator = norms.unsqueeze(-1).expand(gram.shape)
    denominator = norms.unsqueeze(-2).expand(gram.shape)
    both_zero = (numerator == 0) & (denominator == 0)
    return torch.where(both_zero, torch.ones_like(gram), numerator / denominator)
