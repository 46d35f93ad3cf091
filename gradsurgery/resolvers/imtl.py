"""IMTL-G: the update with equal projections on every task's unit gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from gradsurgery.resolvers.base import GramResolver
from gradsurgery.resolvers.host import exactly_rescaled_tensor

__all__ = ["IMTLG"]


class IMTLG(GramResolver):
    r"""IMTL-G, the gradient half of impartial multi-task learning (Liu et al., ICLR 2021).

    "Towards Impartial Multi-task Learning", https://openreview.net/forum?id=IMPnRXEWpvr.
    The update :math:`d = \sum_i \alpha_i g_i` has the SAME projection on every unit task
    gradient :math:`u_i = g_i / \|g_i\|`, so no task is favoured:
    :math:`d \cdot u_1 = \dots = d \cdot u_T`. On the Gram matrix :math:`Q = J J^\top` this
    reads :math:`Q \alpha \propto s` with :math:`s_i = \sqrt{Q_{ii}} = \|g_i\|`, so

    .. math::

        v = Q^+ s, \qquad \alpha = v / \textstyle\sum_i v_i,

    which equals the paper's closed form :math:`\alpha_{2:T} = g_1 U^\top (D U^\top)^{-1}`,
    :math:`\alpha_1 = 1 - \sum_{i \ge 2} \alpha_i` (with :math:`D_i = g_1 - g_i`,
    :math:`U_i = u_1 - u_i`) whenever that inverse exists, and extends it to rank-deficient
    :math:`Q` (duplicate, zero or linearly dependent gradients) through the pseudo-inverse.
    The common projection is :math:`d \cdot u_i = 1 / \sum_j v_j`.

    A rank-deficient :math:`Q` may leave :math:`s` outside its range: exactly opposite
    gradients of different norms, a gradient that is a combination of the others at other
    angles, more tasks than the block has entries. Then no update in the span of the
    gradients other than :math:`d = 0` has equal projections (:math:`Q\alpha = \lambda s`
    forces :math:`\lambda = 0`), and :math:`d = 0` is what the paper's closed form gives
    there too, and the limit of the full-rank updates as the gradients approach such a
    case. The weights are then the part :math:`r` of :math:`s` outside the range (a null
    vector of :math:`Q`, so :math:`\sum_i r_i g_i = 0`) in place of :math:`v`. :math:`s`
    counts as outside when :math:`\|r\| > \sqrt{\epsilon} \|s\|`, which rounding of a
    consistent :math:`s` (duplicate or zero gradients) stays far below. Where :math:`r`
    sums to zero (no normalisation exists), the weights are zero; the sum counts as zero
    below the precision of :math:`r`, :math:`16 T \epsilon \lambda_{\max} /
    \lambda_{\min}` relative to :math:`\sum_i |r_i|` (its eigenvectors' rounding), so
    that rounding is never normalised into an update.

    ``primary`` is ignored: IMTL-G treats all tasks alike. Scale-equivariant and
    permutation-invariant. Precision: :math:`Q^+` amplifies rounding by up to the condition
    number of :math:`Q` on the eigenvalues it keeps, so the weights are known to about
    :math:`\epsilon \lambda_{\max} / \lambda_{\min}`, relative (nearly parallel
    gradients of very different norms make it large), and the direction to that times
    :math:`\sum_i |\alpha_i| \|g_i\|`, absolute (more than :math:`\|d\|` where the
    weighted gradients cancel). Cost: ``T`` backward passes,
    :math:`O(T^2 P)` for the Gram, one :math:`O(T^3)` symmetric eigen-solve per block (all
    blocks in one batch), :math:`O(TP)` for the sum. No hyper-parameters.

    .. note::
        The normalisation :math:`\sum_i \alpha_i = 1` fixes the SIGN of the common
        projection to that of :math:`\sum_j v_j`, which can be negative (for example, two
        nearly parallel tasks beside a much smaller one): then the paper's update points
        AGAINST every task. Here the weights are divided by :math:`|\sum_j v_j|` instead,
        so the equal projections are always non-negative; this is the paper's update or
        its opposite. When :math:`\sum_j v_j` vanishes (relative to :math:`\sum_j |v_j|`),
        the weights are zero, as in TorchJD (which uses an absolute threshold of
        :math:`10^{-12}`, so it is not scale-invariant).

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> gradsurgery.resolve(G, method="imtl")  # equal projections on (1, 0) and (0, 1)
        tensor([0.6667, 0.6667])
    """

    promises = frozenset({"scale_equivariant", "permutation_invariant"})

    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        T = gram.shape[-1]
        # The weights ignore the Gram's scale; out of range, the inverse of its eigenvalues
        # would overflow (gradients below about 1e-150 in float64).
        gram = exactly_rescaled_tensor(gram)
        norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0.0))
        values, vectors = torch.linalg.eigh(gram)
        eps = torch.finfo(gram.dtype).eps
        largest = values.abs().amax(-1, keepdim=True)
        # Pseudo-inverse cut-off of torch.linalg.pinv (T machine epsilons, relative).
        keep = values > T * eps * largest
        inverse = torch.where(keep, 1.0 / torch.where(keep, values, 1.0), 0.0)
        along = (vectors.transpose(-2, -1) @ norms.unsqueeze(-1)).squeeze(-1)  # V^T s
        v = (vectors @ (inverse * along).unsqueeze(-1)).squeeze(-1)  # Q^+ s
        # The part of s outside the range of Q: in the null space, so J^T r = 0.
        r = (vectors @ torch.where(keep, 0.0, along).unsqueeze(-1)).squeeze(-1)
        outside = r.norm(dim=-1, keepdim=True) > eps**0.5 * norms.norm(dim=-1, keepdim=True)
        v = torch.where(outside, r, v)
        total = v.sum(-1, keepdim=True)
        # r is known to about T eps times the kept spectrum's condition number: a sum of r
        # below that is rounding (r summing to zero exactly), not a normalisation.
        smallest_kept = torch.where(keep, values, torch.inf).amin(-1, keepdim=True)
        precision_of_r = (16 * T * eps) * (largest / smallest_kept)
        cut = torch.where(outside, precision_of_r.clamp(min=1e-9), 1e-9)
        significant = total.abs() > cut * v.abs().sum(-1, keepdim=True)
        return torch.where(significant, v / torch.where(significant, total.abs(), 1.0), 0.0)
