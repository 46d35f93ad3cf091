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

__all__ = [
    "HostGramResolver",
    "exactly_rescaled",
    "exactly_rescaled_tensor",
    "from_host",
    "to_host",
]

_SAFE_TOP = (2.0**-500, 2.0**500)
"""Gram matrices whose largest entry lies in this range are used as they are: products of
two entries (a cosine's ``q_ab^2 / (q_aa q_bb)``, say) can neither overflow nor underflow."""


def to_host(tensor: Tensor) -> np.ndarray:
    """``tensor`` as a float64 NumPy array on the host (a copy only where needed)."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def from_host(array: np.ndarray, like: Tensor) -> Tensor:
    """``array`` as a tensor with ``like``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype)


def exactly_rescaled(gram: np.ndarray) -> np.ndarray:
    """``gram``, or where its largest entry lies outside :math:`[2^{-500}, 2^{500}]` (about
    ``1e-150`` to ``1e150``), each ``(T, T)`` block times :math:`4^{-k}`, with :math:`k`
    such that the block's largest diagonal entry lands in :math:`[1/4, 1)`.

    Multiplying by a power of four is exact in floating point, and so are the square roots
    that follow (they scale by :math:`2^{-k}`): a computation whose result does not change
    when the gradients are scaled gets the same bits from the rescaled Gram as from
    ``gram``, except that products of entries near ``1e308`` no longer overflow, nor those
    of tiny entries underflow. Entries below about :math:`10^{-290}` of their block's
    largest may lose bits to subnormals. An all-zero block is left as it is.
    """
    if _used_as_it_is(gram.max()):
        return gram
    return _rescaled_blocks(gram)


def _used_as_it_is(top: float) -> bool:
    """Whether Gram matrices whose largest entry (which lies on a diagonal) is ``top`` are
    left unscaled: in :data:`_SAFE_TOP`, or all zero."""
    return _SAFE_TOP[0] <= top <= _SAFE_TOP[1] or not top > 0


def _rescaled_blocks(gram: np.ndarray) -> np.ndarray:
    """Each ``(T, T)`` block of ``gram`` times :math:`4^{-k}`, its largest diagonal entry
    brought into :math:`[1/4, 1)` (:func:`exactly_rescaled`)."""
    tops = np.diagonal(gram, axis1=-2, axis2=-1).max(-1)
    _, exponent = np.frexp(tops)  # tops = m 2^e with 1/2 <= m < 1 (0 for a zero block)
    k = (exponent + 1) // 2  # 4^-k top = m 2^(e - 2k), and e - 2k is 0 or -1
    scaled: np.ndarray = np.ldexp(gram, (-2 * k)[..., None, None])
    return scaled


def exactly_rescaled_tensor(gram: Tensor) -> Tensor:
    """:func:`exactly_rescaled` for the Gram matrices of a resolver whose weights are
    computed in torch: ``gram`` itself where its largest entry is in range (one reduction,
    read back), else the rescaled matrices (formed on the host, returned on ``gram``'s
    device and in its dtype)."""
    if _used_as_it_is(float(gram.max())):
        return gram
    return from_host(_rescaled_blocks(to_host(gram)), gram)


class HostGramResolver(GramResolver):
    """A :class:`~gradsurgery.resolvers.GramResolver` whose weights are computed in
    float64 NumPy: subclasses implement :meth:`host_weights`, and :meth:`weights` copies
    the Gram matrices to the host once and the weights back (for weights that do not read
    the loss values). A subclass that promises ``"scale_equivariant"`` (weights that do not
    change when the gradients are scaled) is handed Gram matrices through
    :func:`exactly_rescaled`, so that its algebra cannot overflow on huge gradients.

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
        host = to_host(gram)
        if "scale_equivariant" in self.promises:  # weights that ignore the Gram's scale
            host = exactly_rescaled(host)
        return from_host(self.host_weights(host, primary=primary), gram)

    @abstractmethod
    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        """:meth:`~gradsurgery.resolvers.GramResolver.weights` on the host.

        Args:
            gram: ``(B, T, T)`` float64 Gram matrices, one per block.
            primary: index of the primary task, or ``None``.

        Returns:
            ``(B, T)`` float64 weights, finite.
        """
