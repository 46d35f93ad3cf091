"""Aligned-MTL: make the task gradients orthogonal and equally long, then sum them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver

__all__ = ["AlignedMTL"]

ScaleMode = Literal["min", "median", "rmse"]
_SCALE_MODES = ("min", "median", "rmse")


class AlignedMTL(GramResolver):
    r"""Aligned-MTL (Senushkin et al., CVPR 2023).

    "Independent Component Alignment for Multi-Task Learning",
    https://arxiv.org/abs/2305.19000. The task gradients :math:`J` (``T x P``) are replaced
    by the closest (Procrustes) matrix :math:`\hat J = B J` with orthogonal rows of equal
    norm :math:`\sigma`, which removes both conflict and dominance (the condition number of
    :math:`\hat J` is 1). With the eigen-decomposition of the Gram
    :math:`Q = J J^\top = V \Lambda V^\top`, truncated to its rank :math:`r` (eigenvalues
    above :math:`\lambda_{\max} T \epsilon`),

    .. math::

        B = \sigma\, V_r \Lambda_r^{-1/2} V_r^\top, \qquad
        d = \mathbf 1^\top \hat J = (B \mathbf 1)^\top J,

    with :math:`\sigma^2 = \lambda_{\min}` (``"min"``, the paper's default), the median or
    the mean of the kept eigenvalues (``"median"``, ``"rmse"``).

    Args:
        scale_mode: ``"min"``, ``"median"`` or ``"rmse"``.

    ``primary`` is ignored: this is the symmetric method (the paper's primary-task
    variant, Aligned-MTL-UB, works on representations and is not implemented here).
    Scale-equivariant and permutation-invariant; a single task passes through unchanged.
    Precision: :math:`\Lambda_r^{-1/2}` amplifies rounding by up to the condition number
    of the kept spectrum, :math:`\lambda_{\max} / \lambda_{\min}` (up to
    :math:`1 / (T \epsilon)`), so with gradients of very different norms the direction is
    known only to about :math:`\epsilon \lambda_{\max} / \lambda_{\min}`, relative.
    Cost: ``T`` backward passes, :math:`O(T^2 P)` for the Gram, one :math:`O(T^3)`
    symmetric eigen-solve per block (batched), :math:`O(TP)` for the sum.

    .. note::
        Weight convention: :math:`d` is the SUM of the aligned gradients, as in the
        authors' code (SamsungLabs/MTL, ``code/optim/aligned/balancer.py``) and LibMTL;
        TorchJD's ``AlignedMTL`` averages them (weights :math:`B \mathbf 1 / T`), a
        direction :math:`T` times shorter. The rank cut-off is TorchJD's.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="aligned_mtl")
        tensor([0.8292, 0.2764])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})

    def __init__(self, scale_mode: ScaleMode = "min") -> None:
        if scale_mode not in _SCALE_MODES:
            raise ValueError(f"Invalid scale_mode: {scale_mode!r} (expected one of {_SCALE_MODES})")
        self.scale_mode: ScaleMode = scale_mode

    def _options(self) -> dict[str, Any]:
        return {"scale_mode": self.scale_mode}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[-1]
        values, vectors = torch.linalg.eigh(gram)  # ascending
        top = values[..., -1:]
        keep = values > top * T * torch.finfo(gram.dtype).eps
        rank = keep.sum(-1, keepdim=True)
        inverse_sqrt = torch.where(keep, torch.where(keep, values, 1.0).rsqrt(), 0.0)
        sigma_squared = self._sigma_squared(values, keep, rank)
        # B 1 = sigma V_r Lambda_r^{-1/2} V_r^T 1.
        ones = torch.ones(*gram.shape[:-1], 1, dtype=gram.dtype, device=gram.device)
        coefficients = inverse_sqrt * (vectors.transpose(-2, -1) @ ones).squeeze(-1)
        weights = (vectors @ coefficients.unsqueeze(-1)).squeeze(-1)
        scaled: Tensor = torch.sqrt(sigma_squared) * weights
        return scaled

    def _sigma_squared(self, values: Tensor, keep: Tensor, rank: Tensor) -> Tensor:
        """The target squared norm :math:`\\sigma^2` per block, shape ``(..., 1)``; 0 if r = 0."""
        T = values.shape[-1]
        kept = torch.where(keep, values, torch.zeros_like(values))
        if self.scale_mode == "rmse":
            return kept.sum(-1, keepdim=True) / rank.clamp(min=1)
        # The kept eigenvalues are the last r (ascending); the smallest is at T - r, the
        # (lower) median, as torch.median takes it, at T - r + (r - 1) // 2.
        offset = (rank - 1).clamp(min=0) // 2 if self.scale_mode == "median" else 0 * rank
        index = (T - rank + offset).clamp(max=T - 1)
        return kept.gather(-1, index)
