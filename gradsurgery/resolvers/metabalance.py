"""MetaBalance: pull each auxiliary gradient's magnitude toward the primary's, block by block."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers.base import GramResolver

__all__ = ["MetaBalance"]


class MetaBalance(GramResolver):
    r"""MetaBalance (He et al., WWW 2022, https://arxiv.org/abs/2203.06801).

    Per block (each parameter tensor with ``granularity="tensor"``, the paper's setting; the
    whole vector with ``"global"``), keep a moving average of every task's gradient norm,

    .. math::

        m_k \leftarrow \beta\, m_k + (1 - \beta)\, \|g_k\|,

    and move each auxiliary gradient's magnitude toward the primary's by the relax factor
    :math:`r`:

    .. math::

        g_k \leftarrow r \frac{m_p}{m_k} g_k + (1 - r)\, g_k, \qquad d = \sum_k g_k .

    The primary gradient is unchanged (its factor is :math:`m_p / m_p = 1`). :math:`r = 1`
    gives every auxiliary the primary's (averaged) magnitude, :math:`r = 0` is the plain sum.
    The directions are never changed, so an auxiliary that conflicts with the primary still
    does: MetaBalance does not promise a non-conflicting result.

    Args:
        relax: the relax factor :math:`r \in [0, 1]` (paper default 0.7).
        beta: the moving-average factor :math:`\beta \in [0, 1)` (paper default 0.9).

    ``primary``: the index of the primary (target) task; ``None`` means task 0.
    Cost: ``T`` backward passes, :math:`O(TP)` for the Gram's diagonal (the whole Gram,
    :math:`O(T^2 P)`, where the autograd glue reports it), :math:`O(TP)` for the sum.
    State: the ``B x T`` averaged norms (``B`` blocks), restored exactly by
    :meth:`load_state_dict`; the blocks must be the same from step to step.
    The averages start at zero, like the reference; that bias is common to all tasks, so it
    cancels in :math:`m_p / m_k`.

    .. note::
        The reference optimiser (facebookresearch/MetaBalance, ``metabalance.py``) divides by
        :math:`m_k` without a guard (NaN while a task's gradient on a tensor has always been
        zero), stops visiting a group's parameters at the first one without a gradient, and
        hard-codes CUDA. Here a task whose average norm is zero keeps factor 1 (its gradient
        is then zero anyway), every block is visited, and the state follows the input's
        device.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 10.0]])  # primary, 10 times larger auxiliary
        >>> gradsurgery.resolve(G, method="metabalance")  # 0.7 * 1 + 0.3 * 10 = 3.7
        tensor([1.0000, 3.7000])
    """

    promises = frozenset({"scale_equivariant"})
    reads_primary_only = True

    def __init__(self, relax: float = 0.7, beta: float = 0.9) -> None:
        self.relax = real_option("relax", relax, minimum=0, maximum=1, note="paper 0.7")
        self.beta = real_option(
            "beta", beta, minimum=0, maximum=1, below_maximum=True, note="paper 0.9"
        )
        self.average_norms: Tensor | None = None

    def _options(self) -> dict[str, Any]:
        return {"relax": self.relax, "beta": self.beta}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        p = 0 if primary is None else primary
        norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0.0))  # (B, T)
        if self.average_norms is None:
            previous = torch.zeros_like(norms)
        elif self.average_norms.shape != norms.shape:
            raise ValueError(
                f"MetaBalance keeps one average norm per block and task, shaped "
                f"{tuple(self.average_norms.shape)}; this step has {tuple(norms.shape)} "
                "(blocks x tasks). Use the same parameters and granularity every step, or a "
                "new MetaBalance"
            )
        else:
            previous = self.average_norms.to(norms.device)
        average = self.beta * previous + (1.0 - self.beta) * norms
        self.average_norms = average
        positive = average > 0
        ratio = average[..., p : p + 1] / torch.where(positive, average, torch.ones_like(average))
        factor = torch.where(positive, self.relax * ratio + (1.0 - self.relax), 1.0)
        factor[..., p] = 1.0
        return factor

    def state_dict(self) -> dict[str, Any]:
        if self.average_norms is None:
            return {}
        return {"average_norms": self.average_norms.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.average_norms = None
            return
        if set(state_dict) != {"average_norms"}:
            raise ValueError(
                "MetaBalance.load_state_dict: expected {'average_norms': tensor}, "
                f"got keys {sorted(state_dict)}"
            )
        self.average_norms = state_dict["average_norms"].clone()
