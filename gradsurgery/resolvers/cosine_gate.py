"""Gradient-cosine gating (Du et al. 2018): use an auxiliary gradient only when it helps."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradsurgery.resolvers.host import HostGramResolver

__all__ = ["CosineGate"]


class CosineGate(HostGramResolver):
    r"""Gradient-cosine gating of auxiliary tasks (Du et al., 2018).

    With :math:`p` the primary (main) gradient and :math:`a_k` the auxiliary gradients, an
    auxiliary is added only when its cosine similarity with the main gradient is positive:

    .. math::

        d = p + \sum_k \mathbb{1}\left[\cos(p, a_k) > 0\right] a_k .

    With ``weighted=True`` (the paper's weighted variant) each auxiliary is scaled by its
    cosine instead: :math:`d = p + \sum_k \max(\cos(p, a_k), 0)\, a_k`. Either way
    :math:`d \cdot p \ge \|p\|^2`: the result never conflicts with the main task.

    Reference: Du, Czarnecki, Jayakumar, Farajtabar, Pascanu, Lakshminarayanan, "Adapting
    Auxiliary Losses Using Gradient Similarity", arXiv 2018, https://arxiv.org/abs/1812.02224.
    The cosine is taken over whatever is resolved: the whole shared vector with
    ``granularity="global"`` (as the paper and AuxiLearn's ``GradCosine`` do), each parameter
    tensor with ``granularity="tensor"``.

    Args:
        weighted: scale each kept auxiliary by its cosine (default ``False``: the unweighted
            variant, the one AuxiLearn's ``GradCosine`` implements).

    ``primary``: the index of the main task; ``None`` means task 0.
    Cost: ``T`` backward passes, :math:`O(TP)` for the Gram's diagonal and primary row (the
    whole Gram, :math:`O(T^2 P)`, where the autograd glue reports it), :math:`O(TP)` for the
    sum. Stateless.

    .. note::
        A zero main gradient has cosine 0 with everything, so every auxiliary is dropped and
        :math:`d = 0` for that block, as the rule :math:`\cos > 0` says. An auxiliary exactly
        orthogonal to the main gradient is dropped too.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [1.0, 1.0]])  # main, two auxiliaries
        >>> gradsurgery.resolve(G, method="cosine_gate")
        tensor([2., 1.])
    """

    promises = frozenset({"scale_equivariant", "primary_nonconflicting"})
    reads_primary_only = True

    def __init__(self, weighted: bool = False) -> None:
        if not isinstance(weighted, bool):
            raise TypeError(f"Invalid weighted: {weighted!r} (expected True or False)")
        self.weighted = weighted

    def _options(self) -> dict[str, Any]:
        return {"weighted": self.weighted}

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        p = 0 if primary is None else primary
        norms = np.sqrt(np.maximum(np.diagonal(gram, axis1=-2, axis2=-1), 0.0))
        denominator = norms[..., p : p + 1] * norms
        positive = denominator > 0
        cosine = np.where(positive, gram[..., p, :] / np.where(positive, denominator, 1.0), 0.0)
        cosine = np.clip(cosine, -1.0, 1.0)
        weights = np.maximum(cosine, 0.0) if self.weighted else (cosine > 0).astype(np.float64)
        weights[..., p] = 1.0
        return weights
