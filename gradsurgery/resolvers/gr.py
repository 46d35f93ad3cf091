"""Gradient Remedy (GR): project the auxiliary gradient to an acute angle, then rescale.

Hu, Chen, Li, Zhu, Chng. "Gradient Remedy for Multi-Task Learning in End-to-End
Noise-Robust Speech Recognition". ICASSP 2023. https://arxiv.org/abs/2302.11362

The two halves of the method are separate functions, :func:`remedy_projection` and
:func:`remedy_rescale`, that work on the 2 x 2 Gram matrix of a (primary, auxiliary) pair;
:class:`GradientRemedy` composes them. They take float64 NumPy arrays: the method is a few
dozen element-wise steps on arrays of one entry per block, whose cost is per-call overhead,
several times lower in NumPy than in torch; the resolvers copy the ``T x T`` Gram to the
host once and the weights back (:mod:`gradsurgery.resolvers.host`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers.host import HostGramResolver

__all__ = [
    "GradientRemedy",
    "PairGram",
    "Projection",
    "Rescale",
    "RescaleOptions",
    "auxiliary_pairs",
    "pair_gram",
    "remedy_projection",
    "remedy_rescale",
    "sum_in_order",
]


class PairGram(NamedTuple):
    """The Gram matrix of a primary gradient :math:`p` and an auxiliary gradient :math:`a`.

    Each field is a float64 NumPy array of any (common) shape, one entry per block.
    """

    pp: np.ndarray
    """:math:`\\|p\\|^2`"""
    aa: np.ndarray
    """:math:`\\|a\\|^2`"""
    pa: np.ndarray
    """:math:`p \\cdot a`"""


def pair_gram(gram: np.ndarray, primary: int, auxiliary: int) -> PairGram:
    """The (primary, auxiliary) entries of ``(..., T, T)`` float64 Gram matrices."""
    return PairGram(
        pp=gram[..., primary, primary],
        aa=gram[..., auxiliary, auxiliary],
        pa=gram[..., primary, auxiliary],
    )


def auxiliary_pairs(gram: np.ndarray, primary: int) -> tuple[PairGram, np.ndarray]:
    """The pairs (primary, auxiliary ``a``) for every task ``a != primary`` at once.

    Returns:
        The pairs' Gram entries, each of shape ``(..., T - 1)`` (``pp`` broadcast as
        ``(..., 1)``), in task order, and the auxiliaries' indices. The step functions
        work element-wise, so one call handles every auxiliary, at the cost of one.
    """
    T = gram.shape[-1]
    auxiliaries = np.array([a for a in range(T) if a != primary], dtype=np.intp)
    squares = np.diagonal(gram, axis1=-2, axis2=-1)
    pairs = PairGram(
        pp=gram[..., primary, primary, None],
        aa=squares[..., auxiliaries],
        pa=gram[..., primary, auxiliaries],
    )
    return pairs, auxiliaries


def sum_in_order(start: np.ndarray | float, terms: np.ndarray) -> np.ndarray:
    """``start + terms[..., 0] + terms[..., 1] + ...``, added left to right as a loop over
    the tasks would (NumPy's ``sum`` pairs the terms up and can round differently)."""
    total = np.asarray(start, dtype=np.float64)
    for k in range(terms.shape[-1]):
        total = total + terms[..., k]
    return total


class Projection(NamedTuple):
    """Result of :func:`remedy_projection`: :math:`a' = a + \\text{shift}\\, p`."""

    shift: np.ndarray
    """Coefficient of :math:`p` added to :math:`a`."""
    gram: PairGram
    """The Gram matrix of :math:`(p, a')`."""


def remedy_projection(gram: PairGram) -> Projection:
    r"""GR's projection step, in closed form on the pair's Gram matrix.

    With :math:`\tan\theta = \|a\| / \|p\|` taken before any change, a conflicting auxiliary
    gradient (:math:`a \cdot p < 0`) loses its conflicting component and is pushed toward
    :math:`p` until it makes the acute angle :math:`\theta` with it:

    .. math::

        a \leftarrow a - \frac{a \cdot p}{\|p\|^2} p, \qquad
        a \leftarrow a + \frac{\|a\|}{\tan\theta} \frac{p}{\|p\|}.

    Writing :math:`s = \sqrt{1 - (a \cdot p)^2 / (\|a\|^2 \|p\|^2)}`, this is
    :math:`a' = a + (s - a \cdot p / \|p\|^2)\, p`, with :math:`\|a'\|^2 = s^2 (\|a\|^2 +
    \|p\|^2)` and :math:`a' \cdot p = s \|p\|^2`. Without conflict :math:`a' = a`.

    Degenerate cases: a zero :math:`p` or :math:`a` cannot conflict (their dot product is
    zero), so nothing changes; an :math:`a` exactly opposite to :math:`p` (:math:`s = 0`)
    becomes zero, up to rounding: :math:`s` is read from the rounded cosine, so where the
    cosine lies within about :math:`10^{-13}` of :math:`-1` it is good only to about
    :math:`\sqrt{\epsilon}` (:math:`10^{-8}` in float64), and :math:`a'` keeps up to that
    multiple of :math:`p` (``p = (1, 1)``, ``a = -p``: the cosine rounds to
    :math:`-1 + 2^{-52}` and :math:`a' = 2.1 \times 10^{-8}\, p`).
    """
    pp, aa, pa = gram
    # pa < 0 implies nonzero gradients, but their squared norms may underflow to zero.
    conflict = (pa < 0) & (pp > 0) & (aa > 0)
    safe_pp = np.where(conflict, pp, 1.0)
    cos = _cosine(gram)
    s_squared = np.maximum(1.0 - cos * cos, 0.0)
    s = np.sqrt(s_squared)
    shift = np.where(conflict, s - pa / safe_pp, 0.0)
    new_gram = PairGram(
        pp=pp,
        aa=np.where(conflict, s_squared * (aa + pp), aa),
        pa=np.where(conflict, s * pp, pa),
    )
    return Projection(shift, new_gram)


class Rescale(NamedTuple):
    """Result of :func:`remedy_rescale`: :math:`a \\leftarrow a\\_scale\\, a`,
    :math:`p \\leftarrow p\\_scale\\, p`."""

    auxiliary_scale: np.ndarray
    primary_scale: np.ndarray


def remedy_rescale(gram: PairGram, k: float, max_stretch: float | None = None) -> Rescale:
    r"""GR's rescale step: when the auxiliary gradient dominates, shrink it and stretch the primary.

    With :math:`\cos\theta'` the cosine between :math:`a` and :math:`p`, if
    :math:`\|a\| / \|p\| > K` and :math:`\cos\theta' \neq 0`:

    .. math::

        a \leftarrow a \cos\theta', \qquad p \leftarrow p / \cos\theta'.

    GR applies it after :func:`remedy_projection`, so :math:`\cos\theta' \ge 0`.

    Degenerate cases: a zero :math:`p` gives :math:`\cos\theta' = 0`, hence no rescale; a
    negative :math:`\cos\theta'` (only possible when called without the projection) never
    rescales either, since the stretch would flip :math:`p`. Cosines below :math:`10^{-12}`
    count as zero, so that the stretch :math:`1/\cos\theta'` stays finite in float32. The
    test is strict: :math:`\|a\| = K \|p\|` does not rescale. The rescale is discontinuous
    there, so for norms that tie in exact arithmetic the rounding of their squares decides
    (the authors' steps, which divide rounded norms, may decide otherwise).

    Args:
        gram: the pair's Gram matrix.
        k: the dominance threshold :math:`K > 0`.
        max_stretch: if given, :math:`1/\cos\theta'` is capped at this value (the auxiliary
            shrink is unchanged). ``None`` follows the paper exactly.
    """
    pp, aa, _ = gram
    cos = _cosine(gram)
    # ||a|| / ||p|| > K, compared without dividing: aa / pp overflows when the norms differ
    # by more than about 1e154, and (K^2) pp overflows only where no aa can exceed it.
    dominant = (pp > 0) & (aa > (k * k) * pp)
    rescale = dominant & (cos > _MIN_COS)
    safe_cos = np.where(rescale, cos, 1.0)
    stretch = 1.0 / safe_cos
    if max_stretch is not None:
        stretch = np.minimum(stretch, max_stretch)
    return Rescale(auxiliary_scale=safe_cos, primary_scale=stretch)


_MIN_COS = 1e-12


def _cosine(gram: PairGram) -> np.ndarray:
    """:math:`p \\cdot a / (\\|p\\| \\|a\\|)` in [-1, 1], zero when either norm is zero."""
    pp, aa, pa = gram
    both = (pp > 0) & (aa > 0)
    denominator = np.sqrt(np.where(both, pp, 1.0)) * np.sqrt(np.where(both, aa, 1.0))
    return np.where(both, np.clip(pa / denominator, -1.0, 1.0), 0.0)


class RescaleOptions(HostGramResolver):
    """The hyper-parameters of GR's rescale, shared by :class:`GradientRemedy` and the
    rescale-only ablation: ``k`` (dominance threshold, > 0) and ``max_stretch`` (None or
    >= 1)."""

    def __init__(self, k: float = 5.0, max_stretch: float | None = None) -> None:
        self.k = real_option("k", k, minimum=0, above_minimum=True, note="the paper uses 5")
        self.max_stretch = real_option("max_stretch", max_stretch, minimum=1, optional=True)

    def _options(self) -> dict[str, Any]:
        return {"k": self.k, "max_stretch": self.max_stretch}


class GradientRemedy(RescaleOptions):
    r"""Gradient Remedy (Hu et al., ICASSP 2023): acute-angle projection plus rescale.

    For the primary gradient :math:`p` and an auxiliary gradient :math:`a`:

    1. :math:`\tan\theta = \|a\| / \|p\|`, before any change.
    2. If :math:`a \cdot p < 0`: :math:`a \leftarrow a - \frac{a \cdot p}{\|p\|^2} p`, then
       :math:`a \leftarrow a + \frac{\|a\|}{\tan\theta} \frac{p}{\|p\|}`; the result makes
       the acute angle :math:`\theta` with :math:`p`
       (:func:`~gradsurgery.resolvers.gr.remedy_projection`).
    3. With :math:`\cos\theta'` the cosine between the new :math:`a` and :math:`p`: if
       :math:`\|a\| / \|p\| > K` and :math:`\cos\theta' \ne 0`, then
       :math:`a \leftarrow a \cos\theta'` and :math:`p \leftarrow p / \cos\theta'`
       (:func:`~gradsurgery.resolvers.gr.remedy_rescale`).
    4. :math:`d = a + p`.

    Only the pair's 2 x 2 Gram matrix is needed, so the result is :math:`d = w_p p + w_a a`
    with closed-form weights; per-tensor granularity (the authors' choice) costs one batched
    Gram for all tensors.

    **Several auxiliary tasks** (our generalisation; with two tasks it is exactly the steps
    above): each auxiliary :math:`a_k` is projected and shrunk against the ORIGINAL primary
    on its own, and the primary is stretched by the largest stretch any auxiliary asks for:
    :math:`d = \max_k(1/\cos\theta'_k)\, p + \sum_k \cos\theta'_k\, a'_k` (with
    :math:`1/\cos\theta'_k = \cos\theta'_k = 1` for an auxiliary that does not dominate).
    Every :math:`a'_k` makes a non-obtuse angle with :math:`p`, so :math:`d \cdot p > 0`
    whenever :math:`p \ne 0`: the result never conflicts with the primary task. In
    floating point this holds up to rounding where an auxiliary gradient is more than
    :math:`10^{12}` times as long as :math:`p`: its cosine with :math:`p` after the
    projection is then below :math:`10^{-12}`, which counts as zero (no rescale, see
    :func:`~gradsurgery.resolvers.gr.remedy_rescale`), and :math:`d`'s component along
    :math:`p`, about
    :math:`\|p\|`, can drop below the rounding of :math:`d`'s entries, about
    :math:`\epsilon \|a\|`: in float32 from :math:`10^{12}`, in float64 from about
    :math:`1/\epsilon = 4.5 \times 10^{15}`. An auxiliary whose cosine with :math:`p` lies
    within about :math:`10^{-13}` of :math:`-1`, whose projection is zero in exact
    arithmetic, keeps up to about :math:`\sqrt{\epsilon}\, p`
    (:func:`~gradsurgery.resolvers.gr.remedy_projection`).

    Args:
        k: dominance threshold :math:`K`; the paper uses 5 and requires :math:`K > 1`.
        max_stretch: optional cap on the primary stretch :math:`1/\cos\theta'`. The paper
            has none (``None``, the default), and relies on gradient-norm clipping.

    ``primary``: the index of the primary task; ``None`` means task 0. Defaults: ``k=5.0``.
    Cost: two backward passes through the parameters both tasks reach (one per task),
    :math:`O(T P)` for the Gram's diagonal and primary row (the whole Gram, :math:`O(T^2 P)`,
    where the autograd glue reports it) and the weighted sum, :math:`O(T)` beyond.

    .. warning::
        When the auxiliary gradient dominates and is nearly orthogonal to the primary,
        :math:`1/\cos\theta'` is large and so is :math:`\|d\|`: clip the gradient norm (the
        authors clip at 5) or set ``max_stretch``.

    .. note::
        Unlike the authors' trainer, a zero primary gradient does not produce NaN: it cannot
        conflict and does not trigger the rescale, so :math:`d = a + p`.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # primary, conflicting auxiliary
        >>> gradsurgery.resolve(G, method="gr", primary=0)
        tensor([1.7071, 1.0000])
    """

    promises = frozenset({"scale_equivariant", "sum_without_conflict", "primary_nonconflicting"})
    reads_primary_only = True

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        p = 0 if primary is None else primary
        weights = np.ones(gram.shape[:-1])
        if gram.shape[-1] == 1:
            return weights
        pairs, auxiliaries = auxiliary_pairs(gram, p)
        projected = remedy_projection(pairs)
        rescaled = remedy_rescale(projected.gram, self.k, self.max_stretch)
        # cos * (a + shift * p): each auxiliary's own weight and its share of p.
        weights[..., auxiliaries] = rescaled.auxiliary_scale
        stretch = np.maximum(rescaled.primary_scale.max(axis=-1), 1.0)
        primary_from_auxiliaries = sum_in_order(0.0, rescaled.auxiliary_scale * projected.shift)
        weights[..., p] = stretch + primary_from_auxiliaries
        return weights
