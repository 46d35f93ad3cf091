"""Small exact solvers on ``T x T`` Gram matrices, batched over blocks.

Several resolvers (MGDA, CAGrad, UPGrad) reduce to a quadratic programme in the ``T`` task
weights. They are solved here exactly (to rounding), not to a loose iteration cap: the
Lawson-Hanson active-set method, written on the Gram matrix and run for all blocks at once.

- :func:`nonnegative_quadratic`: :math:`\\min_{u \\ge 0} \\tfrac12 u^\\top A u - b^\\top u`, on
  NumPy arrays (UPGrad calls it on the host, and so does the next one).
- :func:`min_norm_in_simplex`: :math:`\\min_{w \\in \\Delta} \\|w^\\top J\\|^2` from the Gram
  :math:`J J^\\top`, via an equivalent non-negative problem.

The problems are tiny (``T <= 16`` or so, a few dozen blocks) and the method takes a few
dozen element-wise steps per iteration, so its cost is the per-call overhead of each step,
not arithmetic. NumPy's is several times lower than torch's for such arrays, so the
solvers run in float64 NumPy on the host. :func:`min_norm_in_simplex` copies the ``T x T``
inputs there and the ``T`` weights back (:mod:`gradsurgery.resolvers.host`);
:func:`min_norm_in_simplex_array` is its NumPy core, for callers that chain many solves
(CAGrad).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from gradsurgery.resolvers.host import exactly_rescaled, from_host, to_host

__all__ = [
    "min_norm_in_simplex",
    "min_norm_in_simplex_array",
    "nonnegative_quadratic",
]

_OPTIMALITY_TOL = 1e-15
"""A free variable enters the active set when its gradient exceeds this (relative) value."""
_RCOND = 1e-13
"""Eigenvalues below this fraction of the largest are treated as zero in the sub-solves."""
_START_TRIALS = 4
"""Solves spent looking for a starting free set (see :func:`nonnegative_quadratic`)."""
_SWAMPED = 0.1
"""The min-norm value (of the normalised Gram) below which a second, reweighted pass runs."""


def nonnegative_quadratic(
    A: np.ndarray,
    b: np.ndarray,
    max_iterations: int | None = None,
    guess: np.ndarray | None = None,
) -> np.ndarray:
    r"""Solve :math:`\min_{u \ge 0} \tfrac12 u^\top A u - b^\top u` for each block.

    The Lawson-Hanson active-set method (Lawson & Hanson, *Solving Least Squares Problems*,
    1974, ch. 23) on the normal equations: starting from :math:`u = 0`, the variable with the
    largest gradient :math:`(b - A u)_j > 0` is freed, the problem is solved exactly on the
    free set, and a step that would make a free variable negative is cut short at the
    boundary (that variable is fixed at zero again). It stops when the KKT conditions
    :math:`u \ge 0`, :math:`b - A u \le 0`, :math:`u_i (b - A u)_i = 0` hold to rounding.

    For a positive semi-definite :math:`A = M^\top M` the columns of :math:`M` in the free set
    stay linearly independent (the method's invariant), so rank-deficient :math:`A`
    (duplicate or zero tasks) is handled without regularisation. All blocks iterate
    together; each iteration is one batched symmetric eigen-solve of size ``T``, in
    float64 NumPy (see the module's note).

    Args:
        A: ``(..., T, T)`` float64 symmetric positive semi-definite matrices.
        b: ``(..., T)`` float64 vectors.
        max_iterations: a cap on the iterations (default ``5 T + 20``; the method usually
            needs fewer than ``2 T``). At the cap the current feasible iterate is returned.
        guess: optional ``(..., T)`` boolean free set to start from (a warm start, e.g. the
            support of a nearby problem's solution; default: every variable). Where the
            solution on that set has non-positive entries, they are dropped from it and it
            is solved again, up to 4 solves in all; where none of those solutions is
            positive on its whole set, the method starts from zero. The result does not
            depend on the start (up to rounding, or among equal minimisers).

    Returns:
        ``(..., T)`` float64 non-negative minimisers.
    """
    T = A.shape[-1]
    batch = A.shape[:-2]
    A = A.reshape(-1, T, T)
    b = b.reshape(-1, T)
    n = A.shape[0]
    cap = 5 * T + 20 if max_iterations is None else max_iterations
    u = np.zeros((n, T))
    free = np.zeros((n, T), dtype=bool)
    # The start: the solution on a trial free set where it is positive there. The trial is
    # the guess, or every variable; where its solution has non-positive entries, those
    # leave the trial and it is solved again (a heuristic: the method below is exact from
    # any start, and this one saves it adding the support one variable per iteration).
    trial = np.ones((n, T), dtype=bool) if guess is None else guess.reshape(-1, T)
    pending = np.ones(n, dtype=bool)
    for _ in range(_START_TRIALS):
        start = _solve_on_free_set(A, b, trial)
        positive_on_trial = (start > 0) | ~trial
        usable = pending & trial.any(-1) & positive_on_trial.all(-1)
        u = np.where(usable[:, None], start, u)
        free = np.where(usable[:, None], trial, free)
        pending &= ~usable
        trial = trial & (start > 0)
        if not (pending & trial.any(-1)).any():
            break
    done = np.zeros(n, dtype=bool)
    rows = np.arange(n)
    scale_of_b = np.abs(b).max(-1)
    scale_of_A = np.abs(A).max((-2, -1))
    for _ in range(cap):
        s = _solve_on_free_set(A, b, free)
        feasible = np.all((s > 0) | ~free, axis=-1)
        # Infeasible blocks: step from u toward s until the first free variable hits zero.
        blocking = free & (s <= 0)
        gap = u - s
        ratio = np.where(blocking & (gap > 0), u / np.where(gap > 0, gap, 1.0), 0.0)
        ratio = np.where(blocking, ratio, np.inf)
        first = ratio.argmin(-1)
        step = np.clip(ratio[rows, first], 0.0, 1.0)
        stepped = u + step[:, None] * (s - u)
        leaving = blocking & (stepped <= 0)
        leaving[rows, first] |= blocking[rows, first]
        stepped = np.where(leaving, 0.0, np.maximum(stepped, 0.0))
        # Feasible blocks: accept s, then free the variable with the largest gradient.
        accepted = np.where(feasible[:, None], s, stepped)
        gradient = b - (A @ accepted[:, :, None])[:, :, 0]
        tolerance = _OPTIMALITY_TOL * (scale_of_b + scale_of_A * np.abs(accepted).sum(-1))
        candidates = np.where(free, -np.inf, gradient)
        entering = candidates.argmax(-1)
        best = candidates[rows, entering]
        optimal = feasible & ~(best > tolerance)
        u = np.where(done[:, None], u, accepted)
        grow = feasible & ~optimal & ~done
        new_free = np.where(feasible[:, None], free, free & ~leaving)
        new_free[rows[grow], entering[grow]] = True
        free = np.where(done[:, None], free, new_free)
        done = done | optimal
        if done.all():
            break
    return u.reshape(*batch, T)


def _solve_on_free_set(A: np.ndarray, b: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Solve :math:`A_{FF} s_F = b_F`, :math:`s = 0` off the free set :math:`F`, per block.

    The fixed variables get a decoupled diagonal entry (the free block's largest diagonal
    entry), so every block is one symmetric system; a pseudo-inverse guards against
    round-off singularity.
    """
    # The filler is the largest FREE diagonal entry, so that the fixed variables never set
    # the scale of the pseudo-inverse's cut-off (a tiny free block must still be solved).
    diagonal = np.diagonal(A, axis1=-2, axis2=-1)
    largest_free = np.where(free, diagonal, 0.0).max(-1)
    filler = np.where(largest_free > 0, largest_free, 1.0)
    both = free[:, :, None] & free[:, None, :]
    system = np.where(both, A, 0.0)
    T = A.shape[-1]
    fixed_diagonal = np.where(free, 0.0, filler[:, None])
    system[:, np.arange(T), np.arange(T)] += fixed_diagonal
    rhs = np.where(free, b, 0.0)
    values, vectors = np.linalg.eigh(system)
    largest = np.abs(values).max(-1, keepdims=True)
    keep = values > _RCOND * largest
    inverse = np.where(keep, 1.0 / np.where(keep, values, 1.0), 0.0)
    coefficients = inverse * (rhs[:, None, :] @ vectors)[:, 0, :]
    s = (vectors @ coefficients[:, :, None])[:, :, 0]
    return np.where(free, s, 0.0)


def min_norm_in_simplex(
    gram: Tensor, guess: Tensor | None = None, *, refine: bool = True
) -> Tensor:
    r"""The weights of the min-norm point of the convex hull of the task gradients.

    Solves :math:`\min_{w \in \Delta} w^\top Q w` with :math:`Q = J J^\top` and
    :math:`\Delta = \{w \ge 0, \sum_i w_i = 1\}`, exactly, through the equivalent
    non-negative problem

    .. math::

        \min_{u \ge 0} u^\top \hat Q u + (\mathbf 1^\top u - 1)^2, \qquad
        \hat Q = Q / \max_i Q_{ii},

    whose solution is :math:`u^* = w^* / (1 + w^{*\top} \hat Q w^*)`: writing :math:`u = t w`
    with :math:`w \in \Delta`, the optimal :math:`t` leaves
    :math:`\hat q / (1 + \hat q)` with :math:`\hat q = w^\top \hat Q w`, increasing in
    :math:`\hat q`. So :math:`w^* = u^* / \mathbf 1^\top u^*`, and
    :func:`nonnegative_quadratic` solves it exactly for any rank of :math:`Q`.

    The min-norm point :math:`w^{*\top} J` is unique; the weights are not when gradients are
    affinely dependent (one solution is returned). A zero :math:`Q` gives uniform weights.

    Args:
        gram: ``(..., T, T)`` Gram matrices.
        guess: optional ``(..., T)`` weights of a nearby problem's solution; their support
            warm-starts the active set (the result does not depend on it).
        refine: try each support less one task, and the shortest gradient's vertex, after
            the active-set solve (:func:`_prune_support`: ``T`` more batched solves). Without
            it the result can lie about :math:`10^{-6}` of the largest squared norm above
            the optimum when two gradients are nearly collinear; a caller that solves many
            nearby problems (CAGrad's root search) refines only the last.

    Returns:
        ``(..., T)`` weights in the simplex, in ``gram``'s dtype and on its device.
    """
    support = None if guess is None else to_host(guess)
    return from_host(min_norm_in_simplex_array(to_host(gram), support, refine=refine), gram)


def min_norm_in_simplex_array(
    gram: np.ndarray, guess: np.ndarray | None = None, *, refine: bool = True
) -> np.ndarray:
    """:func:`min_norm_in_simplex` on float64 NumPy arrays (same arguments)."""
    T = gram.shape[-1]
    if T == 1:
        return np.ones(gram.shape[:-1])
    if T == 2:
        return _min_norm_of_two(exactly_rescaled(gram))  # (q11 - 2 q12 + q22 may overflow)
    batch = gram.shape[:-2]
    gram = gram.reshape(-1, T, T)
    top = np.diagonal(gram, axis1=-2, axis2=-1).max(-1)
    positive = top > 0
    normalised = gram / np.where(positive, top, 1.0)[:, None, None]
    support = None if guess is None else guess.reshape(-1, T) > 0
    weight_of_sum = np.ones_like(top)
    weights, value = _min_norm_pass(normalised, weight_of_sum, support)
    # A second pass weighs the sum constraint by the first pass's min-norm value, so that
    # small gradients' Gram entries are not swamped by the rank-one term (any positive
    # weight gives the same solution in exact arithmetic). Where that value is at least
    # _SWAMPED, the first pass lost no more than a few units of rounding: it stands.
    again = value < _SWAMPED
    if again.any():
        weight_of_sum[again] = np.maximum(value[again], 1e-6)
        weights[again], value[again] = _min_norm_pass(
            normalised[again], weight_of_sum[again], weights[again] > 0
        )
    solved = positive & (weights.sum(-1) > 0)
    if refine:
        weights = _prune_support(normalised, weights, value, weight_of_sum)
    return np.where(solved[:, None], weights, 1.0 / T).reshape(*batch, T)


def _min_norm_pass(
    normalised: np.ndarray, weight_of_sum: np.ndarray, support: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One solve of :math:`\\min_{u \\ge 0} u^\\top \\hat Q u + s (\\mathbf 1^\\top u - 1)^2`
    per block; returns the weights :math:`u / \\mathbf 1^\\top u` (zero where :math:`u = 0`)
    and their :math:`w^\\top \\hat Q w`."""
    T = normalised.shape[-1]
    s = weight_of_sum[..., None, None]
    linear = np.broadcast_to(s[..., 0], (*weight_of_sum.shape, T))
    u = nonnegative_quadratic(normalised + s, linear, guess=support)
    total = u.sum(-1, keepdims=True)
    weights = u / np.where(total > 0, total, 1.0)
    return weights, np.einsum("...i,...ij,...j->...", weights, normalised, weights)


def _prune_support(
    Q: np.ndarray, w: np.ndarray, value: np.ndarray, weight_of_sum: np.ndarray
) -> np.ndarray:
    r"""Try the solution with each supporting task left out; keep the lowest norm.

    The active-set solve works on normal equations, which square the conditioning: with
    two nearly collinear gradients (their difference :math:`\sim 10^{-5}` of their norm)
    the solve on a support holding both can cut the near-null direction and settle on a
    point :math:`\sim 10^{-6}` above the optimum, where the optimum leaves one of them out.
    So the candidates are each support less one task, solved exactly in one batched call,
    and the vertex of the shortest gradient (where a task's gradient is zero, or tiny
    beside the others', that vertex is the answer, and the entering test cannot tell it
    from rounding). The candidate in the simplex (all weights non-negative) with the lowest
    :math:`w^\top \hat Q w` replaces the solution where it is lower beyond rounding. Any
    point of the simplex is admissible, so this never worsens the result.
    """
    n, T = w.shape
    support = w > 0
    # candidates 0..T-1: the support less task k, solved in one batched call
    reduced = support[:, None, :] & ~np.eye(T, dtype=bool)
    A = np.broadcast_to((Q + weight_of_sum[:, None, None])[:, None], (n, T, T, T))
    b = np.broadcast_to(weight_of_sum[:, None, None], (n, T, T))
    u = _solve_on_free_set(A.reshape(-1, T, T), b.reshape(-1, T), reduced.reshape(-1, T))
    u = u.reshape(n, T, T)
    total = u.sum(-1)
    dropped = u / np.where(total > 0, total, 1.0)[..., None]
    admissible = support & reduced.any(-1) & (total > 0) & (u >= 0).all(-1)
    # candidate T: the vertex of the shortest gradient
    vertex = np.diagonal(Q, axis1=-2, axis2=-1).argmin(-1)
    candidates = np.concatenate([dropped, np.eye(T)[vertex][:, None]], 1)
    values = np.einsum("nki,nij,nkj->nk", candidates, Q, candidates)
    values[:, :T] = np.where(admissible, values[:, :T], np.inf)
    best = values.argmin(-1)
    rows = np.arange(n)
    # "lower beyond rounding": by more than 32 units in the last place of the value
    keep_below = 1.0 - 32.0 * np.finfo(np.float64).eps
    better = values[rows, best] < value * keep_below
    return np.where(better[:, None], candidates[rows, best], w)


def _min_norm_of_two(gram: np.ndarray) -> np.ndarray:
    r"""Two tasks in closed form: :math:`w_1 = \operatorname{clip}((g_2 - g_1) \cdot g_2 /
    \|g_1 - g_2\|^2, 0, 1)`; equal gradients (a zero denominator) get :math:`w_1 = 1/2`."""
    q11, q12, q22 = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
    denominator = q11 - 2.0 * q12 + q22
    positive = denominator > 0
    first = np.where(positive, (q22 - q12) / np.where(positive, denominator, 1.0), 0.5)
    first = np.clip(first, 0.0, 1.0)
    return np.stack([first, 1.0 - first], axis=-1)
