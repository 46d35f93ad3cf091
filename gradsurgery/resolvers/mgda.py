"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.resolvers._simplex import min_norm_in_simplex
from gradsurgery.resolvers.base import GramResolver

__all__ = ["MGDA"]

Normalization = Literal["none", "l2", "loss", "loss+"]
_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA(GramResolver):
    r"""MGDA, the multiple-gradient descent algorithm (Sener & Koltun, NeurIPS 2018).

    "Multi-Task Learning as Multi-Objective Optimization", https://arxiv.org/abs/1810.04650.
    The update is the min-norm element of the convex hull of the task gradients:

    .. math::

        w^* = \operatorname*{arg\,min}_{w \ge 0,\ \sum_i w_i = 1}
        \Big\| \sum_i w_i \hat g_i \Big\|^2, \qquad d = \sum_i w^*_i g_i,

    where :math:`\hat g_i = g_i / n_i` are the gradients after the optional normalisation
    :math:`n_i`: ``"none"`` (:math:`n_i = 1`), ``"l2"`` (:math:`\|g_i\|`), ``"loss"``
    (:math:`L_i`) or ``"loss+"`` (:math:`L_i \|g_i\|`). For two tasks the solution is
    :math:`w_1 = \operatorname{clip}\big((\hat g_2 - \hat g_1) \cdot \hat g_2 /
    \|\hat g_1 - \hat g_2\|^2, 0, 1\big)`. For any ``T`` it is solved EXACTLY (to rounding)
    on the ``T x T`` Gram matrix by an active-set method
    (:func:`~gradsurgery.resolvers._simplex.min_norm_in_simplex`), not by a capped
    Frank-Wolfe loop. Exact to rounding in :math:`\|d\|^2`, which is what the Gram matrix
    holds, means exact to about :math:`\sqrt{\epsilon} \max_i \|g_i\|` in :math:`d`:
    where two gradients differ by less than that, which of them (or which mix) is returned
    may depend on the order of the tasks.

    With ``normalization="none"`` the direction is non-conflicting:
    :math:`g_k \cdot d \ge \|d\|^2 \ge 0` for every task, and :math:`d = 0` exactly when
    the tasks are Pareto-stationary (zero is in the hull).

    Args:
        normalization: ``"none"`` (default, as TorchJD and LibMTL), ``"l2"``, ``"loss"`` or
            ``"loss+"`` (the options of the authors' code). The loss-based ones need
            ``losses`` (positive).

    ``primary`` is ignored: MGDA treats all tasks alike. Scale-equivariant and
    permutation-invariant. Cost: ``T`` backward passes, :math:`O(T^2 P)` for the Gram,
    :math:`O(T)` active-set iterations of :math:`O(T^3)` each, :math:`O(TP)` for the sum.
    Per-tensor granularity solves all tensors' problems in one batch.

    .. note::
        TorchJD 0.18's Frank-Wolfe (tolerance 1e-3, 100 iterations) and LibMTL's (250
        iterations) can stop far from the min-norm point when two tasks nearly oppose; the
        active-set solve here has no such cap on accuracy. With a normalisation, the weights
        found on :math:`\hat g` are applied to the ORIGINAL gradients, as in the authors' code
        (``multi_task/train_multi_task.py``); LibMTL applies them to the normalised ones.
        For two tasks whose min-norm point is a vertex (:math:`\hat g_1 \cdot \hat g_2 \ge
        \|\hat g_i\|^2`), the authors' solver, which LibMTL keeps, returns the weights 0.999
        and 0.001 where the exact ones, here, are 1 and 0.

        Heads: the authors' trainer back-propagates :math:`\sum_i w^*_i L_i` ("scaled
        back-propagation"), so the parameters one task alone reaches get
        :math:`w^*_i \nabla L_i`. Through :func:`gradsurgery.backward` they get
        :math:`\nabla L_i`, as under every resolver of task gradients, and as LibMTL's
        trainer gives them (each task's loss back-propagated on its own).

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="mgda")
        tensor([0.2000, 0.4000])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})

    def __init__(self, normalization: Normalization = "none") -> None:
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"Invalid normalization: {normalization!r} (expected one of {_NORMALIZATIONS})"
            )
        self.normalization: Normalization = normalization
        self.needs_losses = normalization in ("loss", "loss+")

    def _options(self) -> dict[str, Any]:
        return {"normalization": self.normalization}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        scale = self._normalizers(gram, losses)
        normalised = gram / (scale[..., :, None] * scale[..., None, :])
        return min_norm_in_simplex(normalised)

    def _normalizers(self, gram: Tensor, losses: Tensor | None) -> Tensor:
        """The per-task divisors :math:`n_i`, shape ``(B, T)``; 1 where undefined (zero)."""
        ones = torch.ones(gram.shape[:-1], dtype=gram.dtype, device=gram.device)
        if self.normalization == "none":
            return ones
        scale = ones
        if self.normalization in ("l2", "loss+"):
            norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0.0))
            scale = torch.where(norms > 0, norms, 1.0)
        if self.normalization in ("loss", "loss+"):
            if losses is None or not bool((losses > 0).all()):
                raise ValueError(
                    f"MGDA(normalization={self.normalization!r}) needs positive losses; "
                    f"got {None if losses is None else losses.tolist()}"
                )
            scale = scale * losses
        return scale
