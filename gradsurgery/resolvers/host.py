"""The ``T x T`` algebra of the resolvers runs in float64 NumPy on the host.

A resolver's weights are a few dozen element-wise steps on arrays of ``T x T`` entries per
block, so their cost is the overhead of each call, not arithmetic: about 0.5-1 us for a
NumPy operation on a tiny array, 2-10 us for a torch one on the CPU (more with a kernel
launch on an accelerator). Such resolvers copy the Gram matrices to the host once
(:func:`to_host`), compute there, and copy the ``(B, T)`` weights back (:func:`from_host`);
the ``O(T P)`` work on the task gradients themselves stays in torch, where they live.
:class:`HostGramResolver` is that frame: its subclasses write their weights on arrays.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver

__all__ = ["HostGramResolver", "from_host", "to_host"]


def to_host(tensor: Tensor) -> np.ndarray:
    """``tensor`` as a float64 NumPy array on the host (a copy only where needed)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def from_host(array: np.ndarray, like: Tensor) -> Tensor:
    """``array`` as a tensor with ``like``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype)


class HostGramResolver(GramResolver):
    """A :class:`~gradsurgery.resolvers.GramResolver` whose weights are computed in
    float64 NumPy: subclasses implement :meth:`host_weights`, and :meth:`weights` copies
    the Gram matrices to the host once and the weights back (for weights that do not read
    the loss values).

    Example:
        >>> import numpy as np, torch, gradsurgery
        >>> from gradsurgery.resolvers.host import HostGramResolver
        >>> class InverseNorm(HostGramResolver):  # d = sum_i g_i / ||g_i||
        ...     def host_weights(self, gram, *, primary):
        ...         norms = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
        ...         return 1.0 / np.where(norms > 0, norms, 1.0)
        >>> G = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
        >>> gradsurgery.resolve(G, method=InverseNorm())
        tensor([0.6000, 1.8000])
    """

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        return from_host(self.host_weights(to_host(gram), primary=primary), gram)

    @abstractmethod
    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        """:meth:`weights` on the host.

        Args:
            gram: ``(B, T, T)`` float64 Gram matrices, one per block.
            primary: index of the primary task, or ``None``.

        Returns:
            ``(B, T)`` float64 weights, finite.
        """
