"""CAGrad: the best worst-case improvement within a ball around the mean gradient."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from gradsurgery.resolvers._options import real_option
from gradsurgery.resolvers._simplex import min_norm_in_simplex_array
from gradsurgery.resolvers.host import HostGramResolver

__all__ = ["CAGrad"]

Rescale = Literal["1+c^2", "1+c", "none"]
_RESCALES = ("1+c^2", "1+c", "none")
_MAX_ITERATIONS = 100
_SOLVE_C_RANGE = (2.0**-60, 2.0**60)
"""The dual is solved with ``c`` clamped to this range. Beyond ``2^60`` the shift
``mu (b 1^T + 1 b^T) + mu^2 ||g_0||^2 1 1^T`` of the Gram is below ``2^-60`` of its largest
entry, under the Gram's own rounding, so the solve's weights are those of any larger ``c``;
below ``2^-60`` the ``g_w`` term of ``d`` is ``c ||g_0||``, under ``d``'s rounding, so the
weights' small changes do not show. Unclamped, ``mu`` and the shifted Gram overflow."""
_TOLERANCE = 1e-13
_NEGLIGIBLE_NORM = 1e-7
"""``g_w`` counts as zero when ``||g_w|| <= 1e-7 max_i ||g_i||``; then ``d = g_0 / (1 + c^2)``.
``||g_w||`` is computed from the Gram, ``sqrt(w^T Q w)``, so it is known only to about
``sqrt(eps) max_i ||g_i||`` (1.5e-8 in float64): below a few times that it is rounding, and
stepping along such a ``g_w`` gives a direction of rounding."""


class CAGrad(HostGramResolver):
    r"""CAGrad, conflict-averse gradient descent (Liu et al., NeurIPS 2021).

    "Conflict-Averse Gradient Descent for Multi-task Learning",
    https://arxiv.org/abs/2110.14048. With :math:`g_0 = \frac1T \sum_i g_i` the mean
    gradient, CAGrad maximises the worst task's improvement in a ball around it,
    :math:`\max_{\|d - g_0\| \le c \|g_0\|} \min_i g_i \cdot d`. Its dual, over the simplex,

    .. math::

        w^* = \operatorname*{arg\,min}_{w \in \Delta} g_w \cdot g_0 + c \|g_0\| \|g_w\|,
        \qquad g_w = \sum_i w_i g_i,

    gives :math:`d = \big(g_0 + \frac{c \|g_0\|}{\|g_w\|} g_w\big) / (1 + c^2)`.

    **Solver** (no scipy at run time). The optimality conditions of the dual are those of
    the min-norm point of the SHIFTED gradients :math:`g_i + \mu g_0` with
    :math:`\mu = \|g_w\| / (c \|g_0\|)`; so each candidate :math:`\mu` costs one exact
    min-norm solve on the shifted Gram
    :math:`Q + \mu (b \mathbf 1^\top + \mathbf 1 b^\top) + \mu^2 \|g_0\|^2 \mathbf 1
    \mathbf 1^\top` (:math:`b_i = g_i \cdot g_0`), and the scalar :math:`\mu` is found by a
    safeguarded regula falsi (Illinois) on :math:`h(\mu) = \|g_{w(\mu)}\| - c\|g_0\|\mu`,
    bracketed by :math:`0` and :math:`\max_i \|g_i\| / (c\|g_0\|)`, to a relative
    :math:`10^{-13}`. When the optimum has :math:`g_w = 0` (or :math:`g_0 = 0`),
    :math:`d = g_0 / (1 + c^2)`; :math:`g_w` counts as zero when
    :math:`\|g_w\| \le 10^{-7} \max_i \|g_i\|`: from the Gram matrix :math:`\|g_w\|` is
    known only to about :math:`\sqrt{\epsilon} \max_i \|g_i\|`, so a smaller one is
    rounding (a zero gradient among the tasks, say). The cut is relative, so
    scale-equivariant, but a matrix sitting on it may fall either side after rounding.
    Above the cut, the Gram's rounding, about :math:`\epsilon \max_i \|g_i\|^2`, is
    relative to :math:`\|g_w\|^2`: :math:`d` is known to within about
    :math:`\epsilon \max_i \|g_i\|^2 / \|g_w\|^2` relative, which grows where
    :math:`g_w` cancels (two nearly opposite gradients).

    Args:
        c: the radius :math:`c \ge 0` relative to :math:`\|g_0\|`; default 0.4 (the nyuv2
            experiments of the authors and of Nash-MTL; LibMTL uses 0.5, the toy 0.5).
            ``c = 0`` gives the mean gradient. Any finite ``c`` works: the final division
            is applied to each term of :math:`d` separately (:math:`1/(1+c^2)` and
            :math:`c/(1+c^2)`, so :math:`c^2` is never formed where it would overflow), and
            the dual is solved with ``c`` clamped to :math:`[2^{-60}, 2^{60}]`, outside which
            its solution does not change beyond rounding (the shift of the Gram is below its
            rounding above :math:`2^{60}`; the :math:`g_w` term of :math:`d` is below
            :math:`d`'s rounding under :math:`2^{-60}`). With ``rescale="none"`` a huge ``c``
            gives a direction of about :math:`c \|g_0\|`, an error where that overflows.
        rescale: the final division: ``"1+c^2"`` (default, the authors' ``rescale=1`` on
            nyuv2), ``"1+c"`` (the authors' toy, ``rescale=2``) or ``"none"``.

    ``primary`` is ignored: CAGrad treats all tasks alike. Scale-equivariant; invariant to
    the order of the tasks up to the solve's rounding (about :math:`10^{-8}` relative when
    gradient norms differ by :math:`10^4`, since the shifted Gram mixes their squares), so
    it does not promise the shared test's :math:`10^{-9}`. Cost: ``T`` backward passes,
    :math:`O(T^2 P)` for the Gram, up to 100 batched min-norm solves of size ``T``
    (typically 3 to 12, each warm-started from the last), :math:`O(TP)` for the sum.

    .. note::
        The authors, LibMTL and Nash-MTL solve the dual with scipy's SLSQP from the uniform
        weights at its default tolerance, and add :math:`10^{-8}` to norms; TorchJD calls
        cvxpy. This solve is exact to the stated tolerance and has no additive epsilons,
        so it is scale-equivariant; results agree with SLSQP to its accuracy.

    Example:
        >>> import torch, gradsurgery
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> gradsurgery.resolve(G, method="cagrad")
        tensor([0.1724, 0.4310])
    """

    promises = frozenset({"scale_equivariant"})

    def __init__(self, c: float = 0.4, rescale: Rescale = "1+c^2") -> None:
        self.c = real_option("c", c, minimum=0, note="default 0.4")
        if rescale not in _RESCALES:
            raise ValueError(f"Invalid rescale: {rescale!r} (expected one of {_RESCALES})")
        self.rescale: Rescale = rescale

    def _options(self) -> dict[str, Any]:
        return {"c": self.c, "rescale": self.rescale}

    def host_weights(self, gram: np.ndarray, *, primary: int | None) -> np.ndarray:
        # The root search is many tiny steps, whose cost is per-call overhead: NumPy on
        # the host (see gradsurgery.resolvers.host).
        T = gram.shape[-1]
        mean_weight, step_factor = self._final_factors()
        weights = np.full(gram.shape[:-1], mean_weight / T)
        mean_dots = gram.mean(-1)  # b_i = g_i . g_0
        mean_norm = np.sqrt(np.maximum(mean_dots.mean(-1), 0.0))  # ||g_0||
        if self.c > 0 and (mean_norm > 0).any():
            # the c of the dual's solve, kept within [2^-60, 2^60] (see the class docstring)
            solve_c = min(max(self.c, _SOLVE_C_RANGE[0]), _SOLVE_C_RANGE[1])
            radius = solve_c * mean_norm  # c ||g_0||
            w = self._dual_weights(gram, mean_dots, radius)
            norm_w = _norm_of_combination(w, gram)
            scale = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1).max(-1))
            active = (radius > 0) & (norm_w > _NEGLIGIBLE_NORM * scale)
            ratio = np.where(active, mean_norm / np.where(active, norm_w, 1.0), 0.0)
            with np.errstate(over="ignore"):  # rescale="none" with a huge c: the glue's error
                weights = weights + (step_factor * ratio)[..., None] * w
        return weights

    def _final_factors(self) -> tuple[float, float]:
        """The factors of :math:`g_0` and of :math:`\\|g_0\\| g_w / \\|g_w\\|` in :math:`d`:
        ``1 / divisor`` and ``c / divisor``, neither overflowing for any finite ``c``."""
        c = self.c
        if self.rescale == "1+c^2":
            if c > 2.0**500:  # c^2 would overflow; 1 + c^2 = c^2 in float64 anyway
                return 1.0 / c / c, 1.0 / c
            return 1.0 / (1.0 + c * c), c / (1.0 + c * c)
        if self.rescale == "1+c":
            return 1.0 / (1.0 + c), c / (1.0 + c)
        return 1.0, c

    def _dual_weights(
        self, gram: np.ndarray, mean_dots: np.ndarray, radius: np.ndarray
    ) -> np.ndarray:
        """The dual's minimiser :math:`w^*` per block, by a root search on :math:`\\mu`."""
        outer = mean_dots[..., :, None] + mean_dots[..., None, :]
        mean_sq = mean_dots.mean(-1)[..., None, None]
        safe_radius = np.where(radius > 0, radius, 1.0)

        previous: list[np.ndarray] = []  # the last solution warm-starts the next solve

        def shifted(mu: np.ndarray) -> np.ndarray:
            m = mu[..., None, None]
            shifted_gram: np.ndarray = gram + m * outer + m * m * mean_sq
            return shifted_gram

        def solve(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # unrefined: the root search needs h to its tolerance, the last solve is refined
            guess = previous[-1] if previous else None
            w = min_norm_in_simplex_array(shifted(mu), guess, refine=False)
            previous[:] = [w]
            return w, _norm_of_combination(w, gram) - radius * mu

        top = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1).max(-1))
        tolerance = _TOLERANCE * top
        # h(0) >= 0 (a norm) and h(hi) <= 0 since ||g_w|| <= max_i ||g_i||. When zero is in
        # the hull, h(0) = 0 and h > 0 just right of 0, so mu = 0 is not the root: until lo
        # has an h clearly above rounding (sqrt of the Gram's), bisect instead of regula falsi.
        noise = 1e-7 * top
        lo, hi = np.zeros_like(radius), top / safe_radius
        best_w, f_hi = solve(hi)
        best_mu = hi
        f_lo = np.where(radius > 0, solve(lo)[1], 0.0)
        done = (radius <= 0) | (np.abs(f_hi) <= tolerance)
        last_side = np.zeros_like(radius)  # +1: the last point replaced lo; -1: hi
        certified = f_lo > noise
        for _ in range(_MAX_ITERATIONS):
            if done.all():
                break
            width = hi - lo
            denominator = f_lo - f_hi
            secant = lo + width * f_lo / np.where(denominator > 0, denominator, 1.0)
            inside = certified & (denominator > 0) & (secant > lo) & (secant < hi)
            mu = np.where(inside, secant, 0.5 * (lo + hi))
            w, h = solve(mu)
            live = ~done
            best_w = np.where(live[..., None], w, best_w)
            best_mu = np.where(live, mu, best_mu)
            right = live & (h > 0)  # the root is right of mu
            left = live & ~(h > 0)
            # Illinois: an endpoint kept twice in a row has its value halved.
            f_hi = np.where(right & (last_side > 0), 0.5 * f_hi, f_hi)
            f_lo = np.where(left & (last_side < 0), 0.5 * f_lo, f_lo)
            lo, f_lo = np.where(right, mu, lo), np.where(right, h, f_lo)
            hi, f_hi = np.where(left, mu, hi), np.where(left, h, f_hi)
            last_side = np.where(right, 1.0, np.where(left, -1.0, last_side))
            certified = certified | (right & (h > noise))
            converged = certified & (np.abs(h) <= tolerance)
            done = done | converged | (hi - lo <= 1e-15 * top / safe_radius)
        return min_norm_in_simplex_array(shifted(best_mu), best_w)


def _norm_of_combination(w: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """:math:`\\|g_w\\| = \\sqrt{w^\\top Q w}` per block, from the Gram."""
    squared = np.asarray(np.einsum("...i,...ij,...j->...", w, gram, w))
    norm: np.ndarray = np.sqrt(np.maximum(squared, 0.0))
    return norm
