"""Small exact solvers on ``T x T`` Gram matrices, batched over blocks.

Several resolvers (MGDA, CAGrad, UPGrad) reduce to a quadratic programme in the ``T`` task
weights. They are solved here exactly (to rounding), not to a loose iteration cap: the
Lawson-Hanson active-set method, written on the Gram matrix and run for all blocks at once.

- :func:`nonnegative_quadratic`: :math:`\\min_{u \\ge 0} \\tfrac12 u^\\top A u - b^\\top u`.
- :func:`min_norm_in_simplex`: :math:`\\min_{w \\in \\Delta} \\|w^\\top J\\|^2` from the Gram
  :math:`J J^\\top`, via an equivalent non-negative problem.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["min_norm_in_simplex", "nonnegative_quadratic"]

_OPTIMALITY_TOL = 1e-15
"""A free variable enters the active set when its gradient exceeds this (relative) value."""
_RCOND = 1e-13
"""Eigenvalues below this fraction of the largest are treated as zero in the sub-solves."""


def nonnegative_quadratic(
    A: Tensor, b: Tensor, max_iterations: int | None = None, guess: Tensor | None = None
) -> Tensor:
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
    together; each iteration is one batched symmetric eigen-solve of size ``T``.

    Args:
        A: ``(..., T, T)`` symmetric positive semi-definite matrices.
        b: ``(..., T)`` vectors.
        max_iterations: a cap on the iterations (default ``5 T + 20``; the method usually
            needs fewer than ``2 T``). At the cap the current feasible iterate is returned.
        guess: optional ``(..., T)`` boolean free set to start from (a warm start, e.g. the
            support of a nearby problem's solution). Where the solution on that set is
            positive it is the starting point; elsewhere the method starts from zero.

    Returns:
        ``(..., T)`` non-negative minimisers, in ``A``'s dtype.
    """
    T = A.shape[-1]
    batch = A.shape[:-2]
    A = A.reshape(-1, T, T)
    b = b.reshape(-1, T)
    n = A.shape[0]
    cap = 5 * T + 20 if max_iterations is None else max_iterations
    u = torch.zeros(n, T, dtype=A.dtype, device=A.device)
    free = torch.zeros(n, T, dtype=torch.bool, device=A.device)
    if guess is not None:
        guess = guess.reshape(-1, T)
        start = _solve_on_free_set(A, b, guess)
        usable = guess.any(-1) & ((start > 0) | ~guess).all(-1)
        u = torch.where(usable[:, None], start, u)
        free = torch.where(usable[:, None], guess, free)
    done = torch.zeros(n, dtype=torch.bool, device=A.device)
    rows = torch.arange(n, device=A.device)
    for _ in range(cap):
        s = _solve_on_free_set(A, b, free)
        feasible = ((s > 0) | ~free).all(-1)
        # Infeasible blocks: step from u toward s until the first free variable hits zero.
        blocking = free & (s <= 0)
        gap = u - s
        ratio = torch.where(blocking & (gap > 0), u / torch.where(gap > 0, gap, 1.0), 0.0)
        ratio = torch.where(blocking, ratio, torch.full_like(ratio, torch.inf))
        first = ratio.argmin(-1)  # (``Tensor.min(dim)`` is far slower on CPU)
        step = ratio.gather(-1, first[:, None]).squeeze(-1).clamp(0.0, 1.0)
        stepped = u + step[:, None] * (s - u)
        leaving = blocking & (stepped <= 0)
        leaving[rows, first] |= blocking[rows, first]
        stepped = torch.where(leaving, torch.zeros_like(stepped), stepped.clamp(min=0.0))
        # Feasible blocks: accept s, then free the variable with the largest gradient.
        accepted = torch.where(feasible[:, None], s, stepped)
        gradient = b - (A @ accepted.unsqueeze(-1)).squeeze(-1)
        tolerance = _OPTIMALITY_TOL * (
            b.abs().amax(-1) + A.abs().amax((-2, -1)) * accepted.abs().sum(-1)
        )
        candidates = torch.where(~free, gradient, torch.full_like(gradient, -torch.inf))
        entering = candidates.argmax(-1)
        best = candidates.gather(-1, entering[:, None]).squeeze(-1)
        optimal = feasible & ~(best > tolerance)
        u = torch.where(done[:, None], u, accepted)
        grow = feasible & ~optimal & ~done
        new_free = torch.where(feasible[:, None], free, free & ~leaving)
        new_free[rows[grow], entering[grow]] = True
        free = torch.where(done[:, None], free, new_free)
        done = done | optimal
        if bool(done.all()):
            break
    return u.reshape(*batch, T)


def _solve_on_free_set(A: Tensor, b: Tensor, free: Tensor) -> Tensor:
    """Solve :math:`A_{FF} s_F = b_F`, :math:`s = 0` off the free set :math:`F`, per block.

    The fixed variables get a decoupled diagonal entry (the free block's largest diagonal
    entry), so every block is one symmetric system; a pseudo-inverse guards against
    round-off singularity.
    """
    # The filler is the largest FREE diagonal entry, so that the fixed variables never set
    # the scale of the pseudo-inverse's cut-off (a tiny free block must still be solved).
    diagonal = torch.diagonal(A, dim1=-2, dim2=-1)
    largest_free = torch.where(free, diagonal, torch.zeros_like(diagonal)).amax(-1)
    filler = torch.where(largest_free > 0, largest_free, torch.ones_like(largest_free))
    both = free.unsqueeze(-1) & free.unsqueeze(-2)
    system = torch.where(both, A, torch.zeros_like(A))
    system = system + torch.diag_embed(torch.where(free, 0.0, filler[:, None].expand_as(b)))
    rhs = torch.where(free, b, torch.zeros_like(b))
    values, vectors = torch.linalg.eigh(system)
    largest = values.abs().amax(-1, keepdim=True)
    keep = values > _RCOND * largest
    inverse = torch.where(keep, 1.0 / torch.where(keep, values, 1.0), 0.0)
    coefficients = inverse * (vectors.transpose(-2, -1) @ rhs.unsqueeze(-1)).squeeze(-1)
    s = (vectors @ coefficients.unsqueeze(-1)).squeeze(-1)
    return torch.where(free, s, torch.zeros_like(s))


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
        ``(..., T)`` weights in the simplex.
    """
    T = gram.shape[-1]
    if T == 1:
        return torch.ones_like(gram[..., 0])
    if T == 2:
        return _min_norm_of_two(gram)
    top = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1)
    positive = top > 0
    normalised = gram / torch.where(positive, top, 1.0)[..., None, None]
    ones = torch.ones(T, T, dtype=gram.dtype, device=gram.device)
    support = None if guess is None else guess > 0
    weight_of_sum = torch.ones_like(top)
    # Two passes: the second weighs the sum constraint by the first pass's min-norm value,
    # so that small gradients' Gram entries are not swamped by the rank-one term (any
    # positive weight gives the same solution in exact arithmetic).
    for _ in range(2):
        s = weight_of_sum[..., None, None]
        u = nonnegative_quadratic(
            normalised + s * ones, s[..., 0].expand(*top.shape, T), guess=support
        )
        total = u.sum(-1, keepdim=True)
        weights = u / torch.where(total > 0, total, 1.0)
        support = weights > 0
        value = torch.einsum("...i,...ij,...j->...", weights, normalised, weights)
        weight_of_sum = value.clamp(min=1e-6, max=1.0)
    if refine:
        weights = _prune_support(normalised, weights, value, s)
    uniform = torch.full_like(weights, 1.0 / T)
    return torch.where((positive & (total.squeeze(-1) > 0))[..., None], weights, uniform)


def _prune_support(normalised: Tensor, weights: Tensor, value: Tensor, s: Tensor) -> Tensor:
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
    T = weights.shape[-1]
    Q = normalised.reshape(-1, T, T)
    w = weights.reshape(-1, T)
    n = w.shape[0]
    weight_of_sum = s.reshape(-1).expand(n)
    support = w > 0
    # candidates 0..T-1: the support less task k, solved in one batched call
    reduced = support[:, None, :] & ~torch.eye(T, dtype=torch.bool, device=w.device)
    A = (Q + weight_of_sum[:, None, None])[:, None].expand(n, T, T, T).reshape(-1, T, T)
    b = weight_of_sum[:, None, None].expand(n, T, T).reshape(-1, T)
    u = _solve_on_free_set(A, b, reduced.reshape(-1, T)).reshape(n, T, T)
    total = u.sum(-1)
    dropped = u / torch.where(total > 0, total, 1.0)[..., None]
    admissible = support & reduced.any(-1) & (total > 0) & (u >= 0).all(-1)
    # candidate T: the vertex of the shortest gradient
    diagonal = torch.diagonal(Q, dim1=-2, dim2=-1)
    vertex = diagonal.argmin(-1, keepdim=True)
    candidates = torch.cat([dropped, torch.zeros_like(w).scatter_(-1, vertex, 1.0)[:, None]], 1)
    values = torch.einsum("nki,nij,nkj->nk", candidates, Q, candidates)
    values[:, :T] = torch.where(admissible, values[:, :T], torch.inf)
    best = values.argmin(-1)
    rows = torch.arange(n, device=w.device)
    # "lower beyond rounding": by more than 32 units in the last place of the value
    keep_below = 1.0 - 32.0 * torch.finfo(w.dtype).eps
    better = values[rows, best] < value.reshape(-1).expand(n) * keep_below
    return torch.where(better[:, None], candidates[rows, best], w).reshape(weights.shape)


def _min_norm_of_two(gram: Tensor) -> Tensor:
    r"""Two tasks in closed form: :math:`w_1 = \operatorname{clip}((g_2 - g_1) \cdot g_2 /
    \|g_1 - g_2\|^2, 0, 1)`; equal gradients (a zero denominator) get :math:`w_1 = 1/2`."""
    q11, q12, q22 = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
    denominator = q11 - 2.0 * q12 + q22
    positive = denominator > 0
    first = torch.where(positive, (q22 - q12) / torch.where(positive, denominator, 1.0), 0.5)
    first = first.clamp(0.0, 1.0)
    return torch.stack([first, 1.0 - first], dim=-1)
