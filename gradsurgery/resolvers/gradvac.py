"""GradVac: pull each pair of task gradients toward a running target similarity."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._random import SeededRandomness
from gradsurgery.resolvers._tasks import raise_if_other_tasks
from gradsurgery.resolvers.base import GramResolver

__all__ = ["GradVac"]

Order = Literal["random", "fixed"]


class GradVac(SeededRandomness, GramResolver):
    r"""GradVac, gradient vaccine (Wang et al., ICLR 2021).

    "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
    Multilingual Models", https://arxiv.org/abs/2010.05874. Each task pair :math:`(i, j)`
    keeps a target cosine similarity :math:`\hat\phi_{ij}` (an exponential moving average,
    starting at 0). For each task :math:`i`, visiting the other tasks :math:`j` in random
    order, with :math:`\phi = \cos(g_i^{PC}, g_j)` for the (already modified)
    :math:`g_i^{PC}`:

    .. math::

        \text{if } \phi < \hat\phi_{ij}: \quad g_i^{PC} \leftarrow g_i^{PC} +
        \frac{\|g_i^{PC}\| \big(\hat\phi_{ij} \sqrt{1 - \phi^2} - \phi \sqrt{1 -
        \hat\phi_{ij}^2}\big)}{\|g_j\| \sqrt{1 - \hat\phi_{ij}^2}}\, g_j, \qquad
        \hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi,

    which raises the similarity to exactly :math:`\hat\phi_{ij}`; then
    :math:`d = \sum_i g_i^{PC}`. The target is updated at every visit, with the similarity
    measured before the change, as in LibMTL since its commit d2d84fa ("fix a bug in
    GradVac", February 2024); LibMTL 1.1.5, the release on PyPI, updates it only when
    :math:`\phi < \hat\phi_{ij}`, so its targets can only fall. Each :math:`g_i^{PC}` stays
    a combination of the original gradients, so the method runs on the Gram matrix; with
    per-tensor granularity every parameter tensor keeps its own targets (LibMTL's finest
    grouping) and all tensors are processed in one batch.

    Args:
        beta: the EMA rate :math:`\beta \in [0, 1]`; default 0.5 (LibMTL; the paper uses
            1e-2 for its translation models).
        order: ``"random"`` (a fresh order of the other tasks for each task, each step, as
            the paper) or ``"fixed"`` (increasing index).
        seed: seed of a private :class:`torch.Generator` for the random order; ``None``
            draws from ``generator`` if given, else from torch's global generator.
        generator: a generator to draw the random order from.

    ``primary`` is ignored: GradVac treats all tasks alike. Scale-equivariant (cosines and
    norm ratios only). Without conflict and with non-positive targets, :math:`d` is the sum.
    Cost: ``T`` backward passes, :math:`O(T^2 P)` for the Gram, :math:`O(T^3)` per block for
    the pairwise updates (``T - 1`` rounds of batched updates: every task makes its
    ``k``-th visit at once, since a visit changes only the visiting task's
    :math:`g_i^{PC}` and targets), :math:`O(TP)` for the sum. State: the targets, shape
    ``(blocks, T, T)``, and the private generator's state, restored exactly; a call with
    another number of tasks or blocks is refused rather than drop the targets
    (``load_state_dict({})`` starts over).

    .. note::
        LibMTL and TorchJD add ``1e-8`` to the denominators, which breaks scale
        invariance for small gradients; here a zero :math:`g_i^{PC}` or :math:`g_j` makes
        :math:`\phi = 0`, and a pair whose target is :math:`\pm 1` (where the update is
        undefined) is left unchanged.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="gradvac")  # first step: targets 0, as PCGrad
        tensor([0.5000, 1.5000])
    """

    promises = frozenset({"scale_equivariant"})

    def __init__(
        self,
        beta: float = 0.5,
        order: Order = "random",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.beta = real_option("beta", beta, minimum=0, maximum=1)
        if order not in ("random", "fixed"):
            raise ValueError(f"Invalid order: {order!r} (expected 'random' or 'fixed')")
        self.order: Order = order
        self._init_randomness(seed, generator)
        self.targets: Tensor | None = None

    def _options(self) -> dict[str, Any]:
        return {"beta": self.beta, "order": self.order, "seed": self.seed}

    def _visit_order(self, others: list[int]) -> list[int]:
        return others if self.order == "fixed" else self._shuffled(others)

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        # Each task's visits change only its own coefficients and targets, so all tasks
        # take their k-th visit together: row i of ``coefficients`` is g_i^PC in the basis
        # of the original gradients, row i of ``projected`` is G times it.
        T = gram.shape[-1]
        targets = self.targets
        if targets is None:
            targets = torch.zeros_like(gram, device="cpu")
        else:
            raise_if_other_tasks(self, targets.shape[-1], T)
            if targets.shape != gram.shape:
                raise ValueError(
                    f"GradVac has targets for {targets.shape[:-2].numel()} blocks, got "
                    f"{gram.shape[:-2].numel()}; use the same parameters and granularity every "
                    "step, or load_state_dict({}) to start over"
                )
        targets = targets.to(gram.device, gram.dtype).clone()
        norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0.0))
        visits = torch.tensor(
            [self._visit_order([j for j in range(T) if j != i]) for i in range(T)],
            dtype=torch.long,
            device=gram.device,
        ).reshape(T, T - 1)
        tasks = torch.arange(T, device=gram.device)
        coefficients = torch.eye(T, dtype=gram.dtype, device=gram.device).expand_as(gram).clone()
        projected = gram.clone()  # G e_i = row i of the symmetric G
        for visit in range(T - 1):
            j = visits[:, visit]  # the task each task i visits now
            dot = projected[..., tasks, j]  # g_i^PC . g_j
            norm_i = torch.sqrt((coefficients * projected).sum(-1).clamp(min=0.0))
            norm_j = norms[..., j]
            both = (norm_i > 0) & (norm_j > 0)
            denominator = torch.where(both, norm_i * norm_j, 1.0)
            phi = torch.where(both, (dot / denominator).clamp(-1.0, 1.0), 0.0)
            target = targets[..., tasks, j]
            room = torch.sqrt((1.0 - target * target).clamp(min=0.0))
            change = both & (phi < target) & (room > 0)
            numerator = norm_i * (target * torch.sqrt(1.0 - phi * phi) - phi * room)
            safe = torch.where(change, norm_j * room, 1.0)
            step = torch.where(change, numerator / safe, 0.0)
            coefficients[..., tasks, j] += step
            projected += step.unsqueeze(-1) * gram[..., j, :]
            targets[..., tasks, j] = (1.0 - self.beta) * target + self.beta * phi
        self.targets = targets.to("cpu")
        return coefficients.sum(dim=-2)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # the generator's, if any
        if self.targets is not None:
            state["targets"] = self.targets.clone()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unknown = set(state_dict) - {"targets", "generator"}
        if unknown:
            raise ValueError(f"GradVac.load_state_dict: unexpected keys {sorted(unknown)}")
        targets = state_dict.get("targets")
        if targets is not None and not isinstance(targets, Tensor):
            raise ValueError(
                f"Invalid GradVac state_dict['targets']: {type(targets).__name__} (expected a "
                "tensor)"
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k == "generator"})
        self.targets = None if targets is None else targets.clone()
