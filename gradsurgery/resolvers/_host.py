"""The ``T x T`` algebra of the resolvers runs in float64 NumPy on the host.

A resolver's weights are a few dozen element-wise steps on arrays of ``T x T`` entries per
block, so their cost is the overhead of each call, not arithmetic: about 0.5-1 us for a
NumPy operation on a tiny array, 2-10 us for a torch one on the CPU (more with a kernel
launch on an accelerator). Such resolvers copy the Gram matrices to the host once
(:func:`to_host`), compute there, and copy the ``(B, T)`` weights back (:func:`from_host`);
the ``O(T P)`` work on the task gradients themselves stays in torch, where they live.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["from_host", "to_host"]


def to_host(tensor: Tensor) -> np.ndarray:
    """``tensor`` as a float64 NumPy array on the host (a copy only where needed)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def from_host(array: np.ndarray, like: Tensor) -> Tensor:
    """``array`` as a tensor with ``like``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype)
