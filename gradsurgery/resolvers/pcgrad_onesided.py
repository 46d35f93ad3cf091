"""One-sided PCGrad ("gradient modulation"): project an auxiliary gradient only off the primary."""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver

__all__ = ["OneSidedPCGrad"]


class OneSidedPCGrad(GramResolver):
    r"""One-sided PCGrad, the "gradient modulation" of Gradient Remedy's authors.

    The primary gradient :math:`p` is never changed. Each auxiliary gradient :math:`a_k`
    that conflicts with it loses its conflicting component:

    .. math::

        a_k \leftarrow a_k - \frac{a_k \cdot p}{\|p\|^2}\, p \quad
        \text{if } a_k \cdot p < 0, \qquad d = p + \sum_k a_k.

    Auxiliaries are not projected against each other (unlike
    :class:`~gradsurgery.resolvers.PCGrad` with ``primary``), so the result does not depend
    on any visiting order and is deterministic. Every projected :math:`a_k` is orthogonal or
    non-obtuse to :math:`p`, so :math:`d \cdot p \ge \|p\|^2`. With two tasks it equals
    PCGrad's projection of the auxiliary alone.

    Reference: the one-sided, per-tensor projection in the training recipe of Hu et al.'s
    unified speech enhancement and separation work (YUCHEN005/Unified-Enhance-Separation,
    ``recipes/LibriMix/separation/train_unified_gm.py``), the group that proposed Gradient
    Remedy; PCGrad is Yu et al., NeurIPS 2020, https://arxiv.org/abs/2001.06782. The authors
    resolve each parameter tensor on its own: use ``granularity="tensor"`` in
    :func:`gradsurgery.backward` to match them.

    ``primary``: the index of the primary task; ``None`` means task 0. No hyper-parameters.
    A zero :math:`p` is never projected onto. Cost: ``T`` backward passes, :math:`O(TP)`
    for the Gram's diagonal and primary row (the whole Gram, :math:`O(T^2 P)`, where the
    autograd glue reports it), :math:`O(TP)` for the sum. Stateless.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # primary, conflicting auxiliary
        >>> gradsurgery.resolve(G, method="pcgrad_onesided")
        tensor([1., 1.])
    """

    promises = frozenset({"scale_equivariant", "sum_without_conflict", "primary_nonconflicting"})
    reads_primary_only = True

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        p = 0 if primary is None else primary
        weights = torch.ones(gram.shape[:-1], dtype=gram.dtype, device=gram.device)
        pp = gram[..., p, p]
        dots = gram[..., p, :].clone()
        dots[..., p] = 0.0
        conflict = (dots < 0) & (pp > 0).unsqueeze(-1)
        safe_pp = torch.where(pp > 0, pp, torch.ones_like(pp)).unsqueeze(-1)
        shifts = torch.where(conflict, dots / safe_pp, torch.zeros_like(dots))
        weights[..., p] -= shifts.sum(dim=-1)
        return weights
