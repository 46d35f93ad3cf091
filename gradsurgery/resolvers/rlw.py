"""Random loss weighting (RLW): fresh random task weights every step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradsurgery.resolvers._random import SeededRandomness
from gradsurgery.resolvers.base import GramResolver

__all__ = ["RandomLossWeighting"]


class RandomLossWeighting(SeededRandomness, GramResolver):
    r"""Random loss weighting (Lin et al., TMLR 2022, https://arxiv.org/abs/2111.10603).

    Every step draws :math:`\varepsilon \sim \mathcal{N}(0, I_T)` and weights the tasks by its
    softmax:

    .. math::

        w = \operatorname{softmax}(\varepsilon), \qquad d = \sum_i w_i g_i .

    The weights sum to 1, so in expectation over the draw the update is a random convex
    combination of the task gradients; the paper uses it as a litmus test that a more
    elaborate method must beat.

    Args:
        seed: seed of a private :class:`torch.Generator`. ``None`` draws from ``generator``
            if given, else from torch's global generator (seeded by :func:`torch.manual_seed`).
        generator: a CPU generator to draw from.

    ``primary`` is ignored: every task is weighted alike. ``losses`` are not needed.
    Cost: one backward pass of :math:`\sum_i w_i L_i` through :func:`gradsurgery.backward`
    (no task gradients are formed), :math:`O(T)` for the weights. With per-tensor
    granularity the same weights serve every tensor. State: the private generator's state
    (:meth:`~gradsurgery.resolvers.Resolver.state_dict`), so a resumed run draws the same
    weights as one that never stopped.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> d = gradsurgery.resolve(G, method="rlw", seed=0)
        >>> bool(d.sum().isclose(torch.tensor(1.0)))  # a convex combination
        True
    """

    promises = frozenset({"scale_equivariant"})
    uses_gram = False

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        self._init_randomness(seed, generator, cpu_only=True)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[-1]
        noise = torch.randn(T, generator=self.generator, dtype=torch.float64)
        weights = torch.softmax(noise, dim=0).to(gram.device)
        return weights.expand(gram.shape[:-1]).clone()
