"""UPGrad: project every task gradient onto the dual cone of all of them, then average."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._simplex import nonnegative_quadratic
from gradsurgery.resolvers.base import GramResolver
from gradsurgery.resolvers.host import from_host, to_host

__all__ = ["UPGrad"]


class UPGrad(GramResolver):
    r"""UPGrad, unconflicting projection of gradients (Quinton & Rey, 2024).

    "Jacobian Descent for Multi-Objective Optimization", https://arxiv.org/abs/2406.16232.
    Each task gradient is projected onto the dual cone of the task gradients,
    :math:`\mathcal C = \{v : g_j \cdot v \ge 0\ \forall j\}`, and the projections are
    averaged. With :math:`J` the ``(T, P)`` matrix and :math:`Q = J J^\top`, the projection
    of :math:`u^\top J` is :math:`v^\top J` with

    .. math::

        v = \operatorname*{arg\,min}_{v \ge u} v^\top Q v,

    a small quadratic programme in weight space (its dual), so that

    .. math::

        d = \frac{1}{T} \sum_i \pi_{\mathcal C}(g_i) = \Big(\sum_i v^{(i)}\Big)^\top J,
        \qquad v^{(i)} = \operatorname*{arg\,min}_{v \ge e_i / T} v^\top \tilde Q v,

    with :math:`\tilde Q = Q / \operatorname{tr} Q + \varepsilon_{reg} I` (as the reference).
    Each of the ``T`` problems is solved exactly by an active-set method
    (:func:`~gradsurgery.resolvers._simplex.nonnegative_quadratic` on :math:`v - e_i/T`),
    all of them, for all blocks, in one batch.

    Without regularisation :math:`d` is non-conflicting (:math:`J d \ge 0`) up to
    round-off: the Gram resolves combinations of the gradients only to about
    :math:`\sqrt{\epsilon}` of their scale, so where the dual cone is nearly degenerate (a
    task opposed, to within about :math:`10^{-6}` rad, by another or by a combination of
    others) :math:`g_k \cdot d` can fall below zero by about
    :math:`10^{-8} \operatorname{tr}(Q)` (at most :math:`16 \sqrt{\epsilon}
    \operatorname{tr}(Q)` in the tests); a task :math:`10^6` times smaller than one it
    opposes can leave more (:math:`2 \times 10^{-6} \operatorname{tr}(Q)` on rows
    :math:`(1, -1.4 \cdot 10^{-6})`, :math:`(-1.4 \cdot 10^{-6}, 1)`,
    :math:`(-1.4 \cdot 10^{-6}, -1.4 \cdot 10^{-6})`). With it,
    :math:`g_k \cdot d \ge -\varepsilon_{reg} \operatorname{tr}(Q)\, w_k`, a tiny violation.
    Without any conflict, :math:`d` is the mean (up to the regularisation).

    Args:
        norm_eps: the trace is used only when it is at least ``norm_eps``; below, the
            Gram is taken as zero and :math:`d` is the mean. Default ``0.0`` (see the note).
        reg_eps: :math:`\varepsilon_{reg}`, added to the diagonal of the trace-normalised
            Gram to make the problems strictly convex; the reference's ``1e-4`` by default.
            ``0`` solves the exact projection (the active-set solver handles singular
            :math:`Q`).

    ``primary`` is ignored: UPGrad treats all tasks alike. Scale-equivariant and
    permutation-invariant. Cost: ``T`` backward passes, :math:`O(T^2 P)` for the Gram,
    ``T`` quadratic programmes of :math:`O(T)` active-set steps of :math:`O(T^3)` each (so
    :math:`O(T^5)` at worst, independent of ``P``), :math:`O(TP)` for the sum.

    Warm start: each call starts the active-set method from the supports of the previous
    call's solutions (of the same shape), which change little between nearby training
    steps, and falls back to its cold start where they no longer hold. Where the supports
    are unchanged, the weights are those of a cold start bit for bit (the last solve is on
    the same free set), in 2 batched solves, where a cold start frees the supports'
    variables about one per solve. In general the direction does not depend on the start,
    up to rounding (the weights may differ only among equal minimisers, with
    ``reg_eps = 0`` and dependent gradients). The supports are a cache, not state:
    ``state_dict()`` stays empty.

    .. note::
        TorchJD (``_linalg/_dual_cone.py``) solves each projection with quadprog, and
        replaces the Gram by zero when its trace is below an ABSOLUTE ``norm_eps = 1e-4``:
        whenever the task gradients' squared norms add up to less than ``1e-4`` (common
        late in training), its UPGrad silently becomes the mean. Here the default
        ``norm_eps = 0`` normalises any non-zero Gram, which keeps the method
        scale-equivariant; pass ``norm_eps=1e-4`` to reproduce TorchJD exactly.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="upgrad", reg_eps=0.0)
        tensor([0.2500, 0.7500])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant", "non_conflicting"})

    def __init__(self, norm_eps: float = 0.0, reg_eps: float = 1e-4) -> None:
        self.norm_eps = real_option("norm_eps", norm_eps, minimum=0)
        self.reg_eps = real_option("reg_eps", reg_eps, minimum=0)
        self._supports: np.ndarray | None = None  # the last solutions' supports (warm start)

    def _options(self) -> dict[str, Any]:
        return {"norm_eps": self.norm_eps, "reg_eps": self.reg_eps}

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[-1]
        trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
        usable = (trace > 0) & (trace >= self.norm_eps)
        normalised = torch.where(
            usable[..., None, None],
            gram / torch.where(usable, trace, 1.0)[..., None, None],
            torch.zeros_like(gram),
        )
        eye = torch.eye(T, dtype=gram.dtype, device=gram.device)
        regularised = normalised + self.reg_eps * eye
        # Problem i: v = e_i / T + z, z >= 0, minimising 1/2 z^T Q z + (Q e_i / T)^T z.
        lower = eye / T  # row i is the lower bound of problem i
        systems = regularised.unsqueeze(-3).expand(*gram.shape[:-2], T, T, T)
        linear = -(lower @ regularised)  # row i: -(Q e_i / T)^T, Q symmetric
        guess = self._supports
        if guess is not None and guess.shape != tuple(linear.shape):
            guess = None
        z = nonnegative_quadratic(to_host(systems), to_host(linear), guess=guess)
        self._supports = z > 0
        return (from_host(z, systems) + lower).sum(-2)
