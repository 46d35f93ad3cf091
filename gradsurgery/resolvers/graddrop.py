"""GradDrop: per coordinate, keep only the gradients of one randomly chosen sign."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._random import SeededRandomness
from gradsurgery.resolvers.base import Resolution, Resolver

__all__ = ["GradDrop"]


class GradDrop(SeededRandomness, Resolver):
    r"""Gradient sign dropout (Chen et al., NeurIPS 2020, https://arxiv.org/abs/2010.06808).

    Per coordinate :math:`j` of the task-gradient matrix, the positive sign purity

    .. math::

        \mathcal{P}_j = \frac12 \Bigl(1 + \frac{\sum_i G_{ij}}{\sum_i |G_{ij}|}\Bigr)
        \in [0, 1]

    is the probability of keeping the positive entries of column :math:`j`: with
    :math:`U_j \sim \mathcal{U}[0, 1)`, task :math:`i`'s entry is kept (:math:`M_{ij} = 1`)
    when :math:`G_{ij} > 0` and :math:`U_j < \mathcal{P}_j`, or when :math:`G_{ij} < 0` and
    :math:`U_j \ge \mathcal{P}_j`. The direction is

    .. math::

        d_j = \sum_i \bigl(\ell_i + (1 - \ell_i) M_{ij}\bigr) G_{ij},

    with leak :math:`\ell_i` (0 by default: only one sign survives in each coordinate). A
    coordinate where all tasks agree in sign keeps every entry, so without conflict
    :math:`d = \sum_i g_i`. This is the aggregator form of TorchJD: it works on the gradient
    matrix it is given. The paper applies it to gradients with respect to an activation
    layer, multiplied by the sign of the activation and summed over the batch; pass such a
    matrix to :func:`gradsurgery.resolve` for that form.

    Args:
        leak: the leak :math:`\ell \in [0, 1]` of every non-primary task (default 0).
        seed: seed of a private :class:`torch.Generator` for :math:`U`. ``None`` draws from
            ``generator`` if given, else from torch's global generator on the input's device.
        generator: a generator to draw :math:`U` from (then moved to the input's device).

    ``primary``: with a primary task its leak is 1, so its gradient always passes whole and
    only the auxiliaries are sign-dropped (the paper's leak mechanism used for a task one
    cares most about); ``None`` gives every task the leak ``leak``. ``losses`` are not used.
    Cost: ``T`` backward passes, :math:`O(TP)` time, one :math:`P`-vector of random numbers;
    block sizes (granularity) make no difference, the rule is per coordinate. State: the
    private generator's state (:meth:`~gradsurgery.resolvers.Resolver.state_dict`).
    Through :func:`gradsurgery.backward` with ``granularity="tensor"``, the shared tensors'
    columns come in order of tensor size (equal sizes are batched), so the same seed draws
    :math:`U_j` for other coordinates than with ``"global"``: the same distribution, other
    draws.

    .. note::
        TorchJD and LibMTL keep positive entries where :math:`\mathcal{P} > U` and negative
        ones where :math:`\mathcal{P} < U`, and divide by :math:`\sum_i |G_{ij}|` unguarded
        (LibMTL adds :math:`10^{-7}`). Here exactly one sign survives in every coordinate
        (:math:`U = \mathcal{P}` keeps the negative entries), and an all-zero column has
        :math:`\mathcal{P} = \frac12` and contributes zero.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 2.0], [3.0, -2.0]])  # column 0 agrees, column 1 conflicts
        >>> d = gradsurgery.resolve(G, method="graddrop", seed=0)
        >>> d[0].item(), d[1].item() in (2.0, -2.0)
        (4.0, True)
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant", "sum_without_conflict"})

    def __init__(
        self,
        leak: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.leak = real_option("leak", leak, minimum=0, maximum=1)
        self._init_randomness(seed, generator)

    def _options(self) -> dict[str, Any]:
        return {"leak": self.leak, "seed": self.seed}

    def _uniform(self, size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        if self.generator is None:
            return torch.rand(size, dtype=dtype, device=device)
        drawn = torch.rand(
            size, generator=self.generator, dtype=dtype, device=self.generator.device
        )
        return drawn.to(device)

    def resolve_blocks(
        self,
        G: Tensor,
        block_sizes: Sequence[int],
        *,
        primary: int | None = None,
        losses: Tensor | None = None,
        task_weights: Tensor | None = None,
    ) -> Resolution:
        T, P = G.shape
        work_dtype = torch.float32 if G.dtype in (torch.float16, torch.bfloat16) else G.dtype
        work = G.to(work_dtype)
        if task_weights is not None:
            work = work * task_weights.to(G.device, work_dtype)[:, None]
        total = work.sum(dim=0)
        magnitude = work.abs().sum(dim=0)
        # An all-zero column divides its zero sum by 1 instead (adding the mask is exact).
        purity = 0.5 * (1.0 + total / (magnitude + (magnitude == 0)))
        uniform = self._uniform(P, work_dtype, G.device)
        keep_positive = uniform < purity  # (P,): which sign survives in each coordinate
        # (T, P): the positive entries where that sign is positive, the others where it is
        # negative. A zero entry counts as negative; its product with any factor is the same
        # signed zero, so this is M's rule. (A comparison of two masks: torch.where with a
        # broadcast (P,) condition runs several times slower on the CPU.)
        kept = (work > 0) == keep_positive
        leaks = torch.full((T, 1), self.leak, dtype=work_dtype, device=G.device)
        if primary is not None:
            leaks[primary] = 1.0
        # (l + (1 - l) M) G, formed in one (T, P) buffer (products and sums commute exactly)
        terms = kept.to(work_dtype).mul_(1.0 - leaks).add_(leaks).mul_(work)
        direction = terms.sum(dim=0)
        return Resolution(direction.to(G.dtype), None, None)
