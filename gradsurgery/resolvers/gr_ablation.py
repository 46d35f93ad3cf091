"""Gradient Remedy's two halves on their own: the projection alone, the rescale alone.

The GR paper's ablation (Hu et al., ICASSP 2023, https://arxiv.org/abs/2302.11362) trains
with each step of the method removed. :class:`GradientRemedyProjection` (``"gr_project"``)
keeps only the acute-angle projection; :class:`GradientRemedyRescale` (``"gr_rescale"``)
keeps only the rescale of a dominant auxiliary gradient. Both are built from the same
functions as :class:`~gradsurgery.resolvers.GradientRemedy`
(:func:`~gradsurgery.resolvers.gr.remedy_projection`,
:func:`~gradsurgery.resolvers.gr.remedy_rescale`), so the three differ only in the steps they
run.
"""

from __future__ import annotations

import numpy as np

from gradsurgery.resolvers.gr import (
    RescaleOptions,
    auxiliary_pairs,
    remedy_projection,
    remedy_rescale,
    sum_in_order,
)
from gradsurgery.resolvers.host import HostGramResolver

__all__ = ["GradientRemedyProjection", "GradientRemedyRescale"]


class GradientRemedyProjection(HostGramResolver):
    r"""Gradient Remedy's projection step alone (``"gr_project"``).

    For the primary gradient :math:`p` and each auxiliary gradient :math:`a_k`, with
    :math:`\tan\theta_k = \|a_k\| / \|p\|`: if :math:`a_k \cdot p < 0`, remove the conflicting
    component and push :math:`a_k` toward :math:`p` until it makes the acute angle
    :math:`\theta_k` with it,

    .. math::

        a_k \leftarrow a_k - \frac{a_k \cdot p}{\|p\|^2} p, \qquad
        a_k \leftarrow a_k + \frac{\|a_k\|}{\tan\theta_k} \frac{p}{\|p\|}, \qquad
        d = p + \sum_k a_k,

    (:func:`~gradsurgery.resolvers.gr.remedy_projection`). There is no rescale, whatever the
    ratio :math:`\|a_k\| / \|p\|`. Each auxiliary is projected against the original primary on
    its own; with two tasks this is exactly GR without its step 3.

    Every projected :math:`a_k` makes a non-obtuse angle with :math:`p`, so
    :math:`d \cdot p \ge \|p\|^2`: the result never conflicts with the primary task.

    Reference: Hu, Chen, Li, Zhu, Chng, "Gradient Remedy for Multi-Task Learning in
    End-to-End Noise-Robust Speech Recognition", ICASSP 2023,
    https://arxiv.org/abs/2302.11362 (the ablation removes the rescale).

    ``primary``: the index of the primary task; ``None`` means task 0. No hyper-parameters.
    Cost: ``T`` backward passes (one per task), :math:`O(TP)` for the Gram's diagonal and
    primary row (the whole Gram, :math:`O(T^2 P)`, where the autograd glue reports it),
    :math:`O(T)` for the weights, :math:`O(TP)` for the weighted sum. Stateless.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-6.0, 8.0]])  # primary, conflicting and dominant
        >>> gradsurgery.resolve(G, method="gr_project")
        tensor([1.8000, 8.0000])
    """

    promises = frozenset({"scale_equivariant", "sum_without_conflict", "primary_nonconflicting"})
    reads_primary_only = True

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        p = 0 if primary is None else primary
        weights = np.ones(gram.shape[:-1])
        if gram.shape[-1] > 1:
            pairs, _ = auxiliary_pairs(gram, p)
            weights[..., p] = sum_in_order(1.0, remedy_projection(pairs).shift)
        return weights


class GradientRemedyRescale(RescaleOptions):
    r"""Gradient Remedy's rescale step alone (``"gr_rescale"``).

    For the primary gradient :math:`p` and each auxiliary gradient :math:`a_k`, with
    :math:`\cos\theta_k` the cosine between them: if :math:`\|a_k\| / \|p\| > K` and
    :math:`\cos\theta_k > 0`, shrink the auxiliary and stretch the primary,

    .. math::

        a_k \leftarrow a_k \cos\theta_k, \qquad p \leftarrow p / \cos\theta_k, \qquad
        d = p + \sum_k a_k

    (:func:`~gradsurgery.resolvers.gr.remedy_rescale`). There is no projection: a conflicting
    auxiliary gradient is added as it is. With several auxiliaries, as in
    :class:`~gradsurgery.resolvers.GradientRemedy`, each is compared with the original primary
    and the primary is stretched by the largest factor any of them asks for; with two tasks
    this is exactly GR without its step 2.

    A conflicting auxiliary (:math:`\cos\theta_k < 0`) is never rescaled: the stretch
    :math:`1/\cos\theta_k` would flip :math:`p`. (In full GR the projection runs first, so
    this case does not arise there.)

    Reference: Hu, Chen, Li, Zhu, Chng, "Gradient Remedy for Multi-Task Learning in
    End-to-End Noise-Robust Speech Recognition", ICASSP 2023,
    https://arxiv.org/abs/2302.11362 (the ablation removes the projection).

    Args:
        k: dominance threshold :math:`K > 0`; the paper uses 5.
        max_stretch: optional cap on the primary stretch :math:`1/\cos\theta_k` (``None``,
            the default, follows the paper).

    ``primary``: the index of the primary task; ``None`` means task 0. Defaults: ``k=5.0``.
    Cost: ``T`` backward passes, :math:`O(TP)` for the Gram's diagonal and primary row
    (the whole Gram, :math:`O(T^2 P)`, where the autograd glue reports it), :math:`O(TP)`
    for the sum. Stateless.

    .. warning::
        As in GR, a dominant auxiliary nearly orthogonal to :math:`p` gives a large stretch:
        clip the gradient norm or set ``max_stretch``.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [6.0, 8.0]])  # |a| = 10 |p|, cos = 0.6
        >>> gradsurgery.resolve(G, method="gr_rescale")
        tensor([5.2667, 4.8000])
    """

    promises = frozenset({"scale_equivariant", "sum_without_conflict"})
    reads_primary_only = True

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        p = 0 if primary is None else primary
        weights = np.ones(gram.shape[:-1])
        if gram.shape[-1] > 1:
            pairs, auxiliaries = auxiliary_pairs(gram, p)
            rescaled = remedy_rescale(pairs, self.k, self.max_stretch)
            weights[..., auxiliaries] = rescaled.auxiliary_scale
            weights[..., p] = np.maximum(rescaled.primary_scale.max(axis=-1), 1.0)
        return weights
