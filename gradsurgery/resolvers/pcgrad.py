"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from gradsurgery.resolvers._random import SeededRandomness
from gradsurgery.resolvers.host import HostGramResolver

__all__ = ["PCGrad"]

Order = Literal["random", "fixed"]


class PCGrad(SeededRandomness, HostGramResolver):
    r"""PCGrad, "gradient surgery" (Yu et al., NeurIPS 2020, https://arxiv.org/abs/2001.06782).

    For each task :math:`i`, visit the other tasks :math:`j` in random order; whenever the
    (already projected) :math:`g_i^{PC}` conflicts with :math:`g_j`, remove the conflicting
    component:

    .. math::

        g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC} \cdot g_j}{\|g_j\|^2} g_j
        \quad \text{if } g_i^{PC} \cdot g_j < 0, \qquad d = \sum_i g_i^{PC}.

    Each :math:`g_i^{PC}` stays a combination of the original gradients, so the whole
    procedure runs on the ``T x T`` Gram matrix (as TorchJD does) and returns weights.

    **With** ``primary``: only the auxiliary gradients are projected; the primary gradient is
    left intact, and each auxiliary visits the primary LAST, so every projected auxiliary is
    non-conflicting with it and :math:`d \cdot g_p \ge \|g_p\|^2`. Without ``primary``
    every task is treated alike, as in the paper.

    Args:
        order: ``"random"`` (the paper: a fresh random order of the other tasks for each
            task, each step) or ``"fixed"`` (increasing task index: deterministic).
        seed: seed of a private :class:`torch.Generator` for the random order. ``None``
            draws from ``generator`` if given, else from torch's global generator (seeded
            by :func:`torch.manual_seed`).
        generator: a generator to draw the random order from.

    With per-tensor granularity one random order per step is shared by all tensors.
    A zero :math:`g_j` is never projected onto. Scale-equivariant: scaling every gradient by
    :math:`c > 0` scales :math:`d` by :math:`c`. Cost: :math:`O(T^2 P)` for the Gram,
    :math:`O(T^3)` for the projections (``T - 1`` batched rounds: every task makes its
    ``k``-th visit at once), :math:`O(TP)` for the sum; ``T`` backward passes.
    State: the private generator's state
    (:meth:`~gradsurgery.resolvers.Resolver.state_dict`), so a resumed run draws the same
    orders as one that never stopped.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="pcgrad", order="fixed")
        tensor([0.5000, 1.5000])
    """

    promises = frozenset({"scale_equivariant", "sum_without_conflict", "primary_nonconflicting"})

    def __init__(
        self,
        order: Order = "random",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if order not in ("random", "fixed"):
            raise ValueError(f"Invalid order: {order!r} (expected 'random' or 'fixed')")
        self.order: Order = order
        self._init_randomness(seed, generator)

    def _options(self) -> dict[str, Any]:
        return {"order": self.order, "seed": self.seed}

    def _visit_order(self, others: list[int]) -> list[int]:
        if self.order == "fixed" or len(others) < 2:
            return others
        return self._shuffled(others)

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        # Each task's projections change only its own g_i^PC, so all tasks make their k-th
        # visit at once: row i of ``coefficients`` is g_i^PC in the basis of the original
        # gradients, row i of ``projected`` is G times it. The primary (if any) visits none.
        T = gram.shape[-1]
        visits = []
        for i in range(T):
            if i == primary:
                visits.append([i] * (T - 1))  # inactive row: its steps are masked out
                continue
            order = self._visit_order([j for j in range(T) if j != i and j != primary])
            visits.append(order if primary is None else [*order, primary])
        visit_table = np.array(visits, dtype=np.intp).reshape(T, T - 1)
        visiting = np.ones(T, dtype=bool)
        if primary is not None:
            visiting[primary] = False
        tasks = np.arange(T)
        diagonal = np.diagonal(gram, axis1=-2, axis2=-1)
        coefficients = np.broadcast_to(np.eye(T), gram.shape).copy()
        projected = gram.copy()  # G e_i = row i of the symmetric G
        for visit in range(T - 1):
            j = visit_table[:, visit]
            dot = projected[..., tasks, j]  # g_i^PC . g_j
            norm_j = diagonal[..., j]
            project = visiting & (dot < 0) & (norm_j > 0)
            step = -np.where(project, dot / np.where(project, norm_j, 1.0), 0.0)
            coefficients[..., tasks, j] += step
            projected += step[..., None] * gram[..., j, :]
        weights: np.ndarray = coefficients.sum(axis=-2)
        return weights
