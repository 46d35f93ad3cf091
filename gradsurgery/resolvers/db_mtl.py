"""DB-MTL: log-loss gradients, averaged over steps and rescaled to the largest norm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._losses import checked_losses
from gradsurgery.resolvers._options import integer_option, real_option
from gradsurgery.resolvers.base import (
    Resolution,
    Resolver,
    all_finite,
    gram_of_blocks,
    weighted_sum_of_blocks,
)

__all__ = ["DBMTL"]


class DBMTL(Resolver):
    r"""Dual-balancing multi-task learning (Lin et al., 2023, https://arxiv.org/abs/2308.12029).

    **Loss-scale balancing**: each task is trained on :math:`\log L_i`, whose gradient is
    :math:`g_i / L_i`. **Gradient-magnitude balancing**: a moving average of those gradients,

    .. math::

        \hat g_i \leftarrow \beta_k\, \hat g_i + (1 - \beta_k)\, \frac{g_i}{L_i},
        \qquad \beta_k = \beta / k^{\beta_\sigma}

        (k = 1, 2, \dots \text{ the step}, \ \hat g_i = 0 \text{ at the start}),

    is rescaled so that every task has the largest task's norm:

    .. math::

        d = \sum_i \alpha_i \hat g_i, \qquad \alpha_i = \frac{\max_j \|\hat g_j\|}{\|\hat g_i\|}.

    DB-MTL is not a map from the Gram matrix to weights (the average :math:`\hat g` persists
    across steps), so it implements the plain resolver contract. The norms are per block:
    per parameter tensor with ``granularity="tensor"``, over the whole vector with
    ``"global"`` (the paper's choice).

    Args:
        beta: the moving-average factor :math:`\beta \in [0, 1)` (default 0.9; 0 uses the
            current gradients only).
        beta_sigma: the decay exponent :math:`\beta_\sigma \ge 0` of :math:`\beta_k`
            (default 0: a constant :math:`\beta`). Any finite value works: :math:`\beta_k`
            is computed as :math:`\beta k^{-\beta_\sigma}`, which underflows to 0 (no
            memory of past steps) where :math:`k^{\beta_\sigma}` would overflow a float.

    ``losses`` are required and must be positive (their logarithm is taken). Loss weights
    :math:`c_i` multiply :math:`g_i / L_i`; since every :math:`\hat g_i` is rescaled to the
    same norm, constant weights change only the overall scale. ``primary`` is ignored.
    Cost: ``T`` backward passes, :math:`O(TP)` time, and a persistent ``T x P`` buffer
    (:math:`\hat g`, in the gradients' dtype; float32 for half precision) on their device.
    State: :math:`\hat g` and the step count (:meth:`state_dict`), restored exactly; the
    number of tasks and parameters must stay the same from step to step.

    Through :func:`gradsurgery.backward` and :class:`gradsurgery.Accumulator`
    (``trains_on_log_losses``), every task is back-propagated as :math:`c_i \log L_i`,
    as in the paper's and LibMTL's trainers: the parameters one task alone reaches (its
    head) get :math:`c_i \nabla L_i / L_i`, and the shared parameters' rows of ``G``
    arrive already divided, with ``losses`` of one (so the Gram matrix a
    :class:`~gradsurgery.BackwardResult` carries with ``diagnostics=True`` is theirs). In
    an accumulation window (or across ranks) each micro-batch's gradient is so divided by
    its own loss, then summed (or averaged). The losses must be positive there too: each
    micro-batch's are checked, and under ``torch.distributed`` every rank raises if any
    rank's were not.

    .. note::
        LibMTL (``LibMTL/weighting/DB_MTL.py``) takes :math:`\log(L_i + 10^{-8})`, which is
        NaN for a negative loss and silently wrong for a loss near zero, and divides by
        :math:`\|\hat g_i\| + 10^{-8}`, which makes the result depend on the gradients' scale.
        Here a non-positive loss is an error naming the task; a task with
        :math:`\|\hat g_i\|` below machine epsilon times the largest norm counts as zero
        and contributes nothing (rather than being amplified some :math:`10^{16}` times);
        and scaling every gradient by :math:`c > 0` scales :math:`d` by :math:`c`.

    Example:
        >>> import torch, gradsurgery
        >>> resolver = gradsurgery.get_resolver("db_mtl", beta=0.0)
        >>> G = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        >>> gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0])  # g / L = (3, 0), (0, 0.5)
        tensor([3., 3.])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})
    needs_losses = True
    trains_on_log_losses = True

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0) -> None:
        self.beta = real_option(
            "beta", beta, minimum=0, maximum=1, below_maximum=True, note="paper 0.9"
        )
        self.beta_sigma = real_option("beta_sigma", beta_sigma, minimum=0)
        self.average: Tensor | None = None
        self._step = 0

    def _options(self) -> dict[str, Any]:
        return {"beta": self.beta, "beta_sigma": self.beta_sigma}

    def resolve_blocks(
        self,
        G: Tensor,
        block_sizes: Sequence[int],
        *,
        primary: int | None = None,
        losses: Tensor | None = None,
        task_weights: Tensor | None = None,
    ) -> Resolution:
        if losses is None:
            raise ValueError(f"DBMTL needs losses=: the {G.shape[0]} loss values")
        T, P = G.shape
        values = checked_losses(
            losses,
            "DB-MTL takes the logarithm of each loss, so every loss must be > 0 (shift it by "
            "a constant)",
            strictly_positive=True,
        )
        if self.average is not None and self.average.shape != (T, P):
            raise ValueError(
                f"DBMTL keeps a running average of shape {tuple(self.average.shape)} (tasks x "
                f"parameters); got gradients of shape {(T, P)}. Use the same tasks and "
                "parameters every step, or a new DBMTL"
            )
        work_dtype = torch.float32 if G.dtype in (torch.float16, torch.bfloat16) else G.dtype
        scale = 1.0 / values
        if task_weights is not None:
            scale = scale * task_weights.to("cpu", torch.float64)
        log_gradients = G.to(work_dtype) * scale.to(G.device, work_dtype)[:, None]
        if not all_finite(log_gradients):
            raise ValueError(
                "the log-loss gradients g_i / L_i overflow: a loss is too close to zero for "
                f"{work_dtype}"
            )
        step = self._step + 1
        # beta / k^sigma, as beta k^-sigma: k^sigma overflows a float (from sigma = 1024 at
        # k = 2), its reciprocal underflows to 0 instead, the right limit
        beta = self.beta * step**-self.beta_sigma
        average = log_gradients.mul_(1.0 - beta)  # in place: one T x P buffer beside G
        if self.average is not None:
            average.add_(self.average.to(G.device, work_dtype), alpha=beta)
        norms = torch.sqrt(torch.diagonal(gram_of_blocks(average, block_sizes), dim1=-2, dim2=-1))
        if not all_finite(norms):
            raise ValueError(f"the averaged log-loss gradients' norms overflow {work_dtype}")
        largest = norms.max(dim=-1, keepdim=True).values
        # a task whose averaged gradient is below eps x the largest is numerically zero: it
        # is not amplified (its norm may even have underflowed in the Gram)
        positive = norms > largest * torch.finfo(work_dtype).eps
        alphas = torch.where(positive, largest / torch.where(positive, norms, 1.0), 0.0)
        direction = weighted_sum_of_blocks(average, alphas, block_sizes)
        if not all_finite(direction):
            raise ValueError(
                "DB-MTL's rescaled direction overflows: the tasks' gradient norms differ by "
                f"more than {work_dtype} can hold"
            )
        self.average = average
        self._step = step
        return Resolution(direction.to(G.dtype), None, None)

    def state_dict(self) -> dict[str, Any]:
        if self.average is None:
            return {}
        return {"average": self.average.clone(), "step": self._step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            self.average = None
            self._step = 0
            return
        if set(state_dict) != {"average", "step"}:
            raise ValueError(
                "DBMTL.load_state_dict: expected keys ['average', 'step'], "
                f"got {sorted(state_dict)}"
            )
        step = integer_option("DBMTL state_dict['step']", state_dict["step"], minimum=0)
        self.average = state_dict["average"].clone()
        self._step = step
