"""The resolver contract, and the Gram-matrix shape most resolvers share.

A resolver maps the gradients of ``T`` tasks with respect to the same ``P`` parameters, a
``(T, P)`` matrix :math:`G` with one row :math:`g_i` per task, to ONE update direction
:math:`d \\in \\mathbb{R}^P`.

Most resolvers are, underneath, a map from the ``T x T`` Gram matrix :math:`G G^\\top`
(plus ``primary`` and ``losses``) to ``T`` weights :math:`w`, with :math:`d = w^\\top G`.
:class:`GramResolver` implements that shape once: the :math:`O(T^2 P)` Gram and the
:math:`O(TP)` weighted sum happen here, and a subclass only writes
:meth:`~gradsurgery.resolvers.GramResolver.weights`, a few lines on a ``T x T`` matrix that
never see ``P``. Because :meth:`~gradsurgery.resolvers.GramResolver.weights`
is batched over leading dimensions, per-tensor granularity (one Gram per parameter tensor)
is a single batched call, not a Python loop over parameters.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "GramResolver",
    "NonFiniteDirectionError",
    "NonFiniteGramError",
    "Resolution",
    "Resolver",
    "all_finite",
    "gram_of_blocks",
    "gram_of_primary",
    "weighted_sum_of_blocks",
]


class NonFiniteGramError(ValueError):
    """The Gram matrix of the task gradients is not finite.

    Raised before any state changes, so a stateful resolver is left as it was. The front
    door (:func:`gradsurgery.resolve`, :func:`gradsurgery.backward`) turns it into an error
    that names the offending task.
    """


class NonFiniteDirectionError(ValueError):
    """The direction of a :class:`GramResolver` is not finite, though the task gradients
    and their Gram matrix are: a weight or the weighted sum :math:`w^\\top G` overflows
    the gradients' dtype (float32 for half precision's weights and sum).

    Raised after the weights are computed, so a stateful resolver's state has already
    advanced. The front door (:func:`gradsurgery.resolve`, :func:`gradsurgery.backward`)
    turns it into an error that says to scale the losses down.
    """


@dataclass(frozen=True)
class Resolution:
    """What a resolver computed, beyond the direction itself.

    Attributes:
        direction: the resolved update direction, shape ``(P,)``.
        gram: the Gram matrices the resolver used, shape ``(B, T, T)`` with one ``T x T``
            matrix per block (``B = 1`` for a whole-vector resolution), in float64; ``None``
            for a resolver that never forms it, or that formed only the entries it reads
            (``full_gram=False``, see :attr:`GramResolver.reads_primary_only`).
        weights: the task weights, shape ``(B, T)``, with ``direction = weights^T G`` block
            by block; ``None`` for a resolver that is not a weighting of the task gradients.
    """

    direction: Tensor
    gram: Tensor | None
    weights: Tensor | None


class Resolver(ABC):
    r"""Base class of every resolver.

    Subclasses implement :meth:`resolve_blocks`. Calling a resolver on a ``(T, P)`` matrix
    returns the ``(P,)`` direction. Stateless resolvers inherit an empty
    :meth:`state_dict`; stateful ones override both :meth:`state_dict` and
    :meth:`load_state_dict` so that a checkpoint restores them exactly.

    Class attributes:
        needs_losses: whether ``losses`` must be given.
        trains_on_log_losses: whether the method trains every task on :math:`\log L_i`
            and takes ``G``'s rows as the gradients of :math:`L_i`, dividing them by the
            ``losses`` itself (DB-MTL). Through :func:`gradsurgery.backward` and
            :class:`gradsurgery.Accumulator` every task is then back-propagated as
            :math:`\log L_i` (its losses must be positive), so that the parameters of
            one task alone get :math:`\nabla L_i / L_i` too, and the resolver is given
            those rows with ``losses`` of one.
        promises: the properties the resolver guarantees, checked for every registered
            resolver by the shared property tests: ``"scale_equivariant"`` (scaling every
            gradient by :math:`c > 0` scales :math:`d` by :math:`c`),
            ``"permutation_invariant"`` (reordering the tasks leaves :math:`d` unchanged),
            ``"sum_without_conflict"`` (without conflicting pairs, and without dominance for
            GR, :math:`d = \sum_i g_i`), ``"primary_nonconflicting"`` (with a primary task,
            :math:`d \cdot g_p \ge 0` up to rounding), ``"non_conflicting"``
            (:math:`d \cdot g_i \ge 0` for every task, up to the method's documented
            regularisation).
    """

    needs_losses: bool = False
    trains_on_log_losses: ClassVar[bool] = False
    promises: ClassVar[frozenset[str]] = frozenset()

    def __call__(
        self, G: Tensor, *, primary: int | None = None, losses: Tensor | None = None
    ) -> Tensor:
        """Resolve the ``(T, P)`` matrix ``G`` into a ``(P,)`` direction."""
        return self.resolve_blocks(G, (G.shape[1],), primary=primary, losses=losses).direction

    @abstractmethod
    def resolve_blocks(
        self,
        G: Tensor,
        block_sizes: Sequence[int],
        *,
        primary: int | None = None,
        losses: Tensor | None = None,
        task_weights: Tensor | None = None,
    ) -> Resolution:
        """Resolve each column block of ``G`` on its own.

        Args:
            G: ``(T, P)`` task-gradient matrix, validated (finite, ``T >= 1``).
            block_sizes: sizes of consecutive column blocks, summing to ``P``; one block
                per parameter tensor for per-tensor granularity, ``(P,)`` for the whole
                vector.
            primary: index of the primary task, or ``None``.
            losses: ``(T,)`` loss values, or ``None``.
            task_weights: ``(T,)`` positive loss weights :math:`c`, or ``None``. The
                resolver sees the gradients of the weighted losses, :math:`c_i g_i`.
        """

    def state_dict(self) -> dict[str, Any]:
        """The state kept across steps (empty for a stateless resolver)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        if state_dict:
            raise ValueError(
                f"{type(self).__name__} is stateless; load_state_dict got keys {sorted(state_dict)}"
            )

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self._options().items())
        return f"{type(self).__name__}({options})"

    def _options(self) -> dict[str, Any]:
        """Hyper-parameters shown by ``repr``; subclasses with options override this."""
        return {}


def _runs(block_sizes: Sequence[int], columns: int) -> list[tuple[int, int, int]]:
    """Group consecutive blocks of equal size into runs ``(offset, count, size)``, after
    checking that the sizes are those of blocks of a matrix of ``columns`` columns."""
    runs: list[tuple[int, int, int]] = []
    offset = 0
    for size in block_sizes:
        if size < 0:
            raise ValueError(f"Invalid block_sizes: a negative size ({size})")
        if runs and runs[-1][2] == size:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, size)
        else:
            runs.append((offset, 1, size))
        offset += size
    _check_total(block_sizes, offset, columns)
    return runs


def _check_total(block_sizes: Sequence[int], total: int, columns: int) -> None:
    if not block_sizes or total != columns:
        raise ValueError(
            f"Invalid block_sizes: {len(block_sizes)} block(s) of {total} columns in all; "
            f"G has {columns} (the blocks must cover its columns exactly)"
        )


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision gradients are resolved in float32; float32 and float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_AXPY_MAX_TASKS = 8
"""Up to this many tasks, ``w^T G`` on the CPU is formed by scaled row additions (below)."""


def _axpy_sum(work: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """``w^T work`` for a ``(T, P)`` matrix as ``T`` scaled row additions (axpy).

    On the CPU a matrix-vector product with very few rows and millions of columns runs
    several times slower than streaming the rows through ``add_`` (measured in
    ``benchmarks/kernel.py``); the sums are the same up to rounding. A leading weight of
    exactly one, as for the plain sum, saves the first scaling pass. With ``out``, the sum
    is formed there.
    """
    coefficients = w.tolist()
    if len(coefficients) >= 2 and coefficients[0] == 1.0:
        direction = torch.add(work[0], work[1], alpha=coefficients[1], out=out)
        rest = zip(work[2:], coefficients[2:])
    else:
        direction = torch.mul(work[0], coefficients[0], out=out)
        rest = zip(work[1:], coefficients[1:])
    for row, coefficient in rest:
        direction.add_(row, alpha=coefficient)
    return direction


def gram_of_blocks(G: Tensor, block_sizes: Sequence[int]) -> Tensor:
    """The Gram matrix of each column block of ``G``, shape ``(B, T, T)``, in float64.

    Consecutive blocks of equal size are computed together by one batched matrix product,
    so a model with many same-shaped tensors costs a handful of kernel calls.

    Raises:
        ValueError: ``block_sizes`` empty, with a negative size, or not summing to ``P``.
    """
    T = G.shape[0]
    work = G if G.dtype == _working_dtype(G.dtype) else G.to(_working_dtype(G.dtype))
    grams = []
    for offset, count, size in _runs(block_sizes, G.shape[1]):
        if count == 1:
            block = work[:, offset : offset + size]
            gram = _gram_of_wide_block(block) if _is_wide(block) else block @ block.T
            grams.append(gram.to(torch.float64).unsqueeze(0))
        else:
            stacked = work[:, offset : offset + count * size].reshape(T, count, size)
            stacked = stacked.transpose(0, 1)  # (count, T, size)
            grams.append(torch.bmm(stacked, stacked.transpose(1, 2)).to(torch.float64))
    # Blocked products round the halves apart: the mean of the Gram and its transpose,
    # halved first (exactly) so that entries above half the range do not overflow.
    half = 0.5 * torch.cat(grams)
    return half + half.transpose(1, 2)


_WIDE_MIN_COLUMNS = 1 << 20
_WIDE_CHUNK_COLUMNS = 1 << 17


def _is_wide(block: Tensor) -> bool:
    """A block whose Gram the CPU's ``block @ block.T`` computes slowly: few rows, >= 1M columns."""
    return (
        block.device.type == "cpu" and block.shape[0] <= 8 and block.shape[1] >= _WIDE_MIN_COLUMNS
    )


def _gram_of_wide_block(block: Tensor) -> Tensor:
    """``block @ block.T`` for a ``(T, P)`` block with ``T <= 8`` and large ``P``, on the CPU.

    The CPU's matrix product is several times slower than a read of the block for such
    shapes (``benchmarks/kernel.py``). Column chunks small enough to stay in cache are
    multiplied one by one and summed in float64, which also bounds the round-off of a long
    float32 sum, which otherwise grows with the number of columns.
    """
    T = block.shape[0]
    gram = torch.zeros(T, T, dtype=torch.float64)
    for chunk in _column_chunks(block, _WIDE_CHUNK_COLUMNS):
        gram += chunk @ chunk.T
    return gram


def _column_chunks(block: Tensor, columns: int) -> Iterator[Tensor]:
    """``block``'s consecutive column slices of ``columns`` columns (the last may be
    narrower), as views."""
    for start in range(0, block.shape[1], columns):
        yield block[:, start : start + columns]


def gram_of_primary(G: Tensor, primary: int) -> Tensor:
    r"""The entries of ``G``'s Gram matrix that a primary/auxiliary method reads, shape
    ``(1, T, T)``, in float64: the squared norms :math:`\|g_i\|^2` on the diagonal and the
    dot products :math:`g_p \cdot g_i` with the primary gradient in row and column ``p``;
    every other entry is zero.

    These are :math:`2T - 1` dot products, :math:`O(TP)` arithmetic (two reads of ``G``),
    where the whole Gram matrix takes :math:`T(T + 1) / 2`, :math:`O(T^2 P)`: from about
    eight tasks on the CPU that is longer than reading ``G`` (``benchmarks/kernel.py``).
    On the CPU the columns are taken in chunks of :math:`2^{17}` whose dot products are
    summed in float64, which bounds the round-off of long float32 sums (it otherwise grows
    with the number of columns).
    """
    T, P = G.shape
    work = G if G.dtype == _working_dtype(G.dtype) else G.to(_working_dtype(G.dtype))
    chunk_columns = _WIDE_CHUNK_COLUMNS if G.device.type == "cpu" else max(P, 1)
    row = torch.zeros(T, dtype=torch.float64, device=G.device)
    squares = torch.zeros(T, dtype=torch.float64, device=G.device)
    for chunk in _column_chunks(work, chunk_columns):
        row += torch.mv(chunk, chunk[primary])
        squares += torch.stack([torch.dot(g, g) for g in chunk])
    gram = torch.diag_embed(squares)
    gram[primary] = row
    gram[:, primary] = row
    gram[primary, primary] = squares[primary]
    return gram.unsqueeze(0)


def weighted_sum_of_blocks(
    G: Tensor, weights: Tensor, block_sizes: Sequence[int], out: Tensor | None = None
) -> Tensor:
    """The direction ``d`` with ``d_b = weights_b^T G_b`` for each column block ``b``.

    Args:
        G: ``(T, P)`` matrix.
        weights: ``(B, T)`` weights, one row per block.
        block_sizes: sizes of the ``B`` blocks.
        out: ``None``, or a ``(P,)`` tensor of ``G``'s dtype and device that receives
            ``d`` and is returned. It is written directly when it is laid out as a new
            tensor would be (the working dtype, contiguous, 64-byte aligned: the CPU's
            matrix products choose their kernels by alignment, so another layout could
            round differently), saving a new tensor; otherwise ``d`` is formed as
            without it and copied in. The values are the same either way.

    Returns:
        ``(P,)`` direction in ``G``'s dtype (accumulated in float32 for half precision).

    Raises:
        ValueError: ``block_sizes`` empty, with a negative size, or not summing to ``P``;
            ``weights`` with another number of rows than blocks.
    """
    work_dtype = _working_dtype(G.dtype)
    work = G if G.dtype == work_dtype else G.to(work_dtype)
    w = weights.to(device=G.device, dtype=work_dtype)
    direct = out if out is not None and _like_a_new_tensor(out, work_dtype) else None
    if weights.shape[0] != len(block_sizes):
        raise ValueError(
            f"Invalid weights: {weights.shape[0]} row(s) for {len(block_sizes)} block(s)"
        )
    if len(block_sizes) == 1:
        _check_total(block_sizes, block_sizes[0], G.shape[1])
        if G.device.type == "cpu" and G.shape[0] <= _AXPY_MAX_TASKS:
            return _into(_axpy_sum(work, w[0], out=direct).to(G.dtype), out)
        if direct is None:
            return _into((w[0] @ work).to(G.dtype), out)
        # w @ work is computed as this product of (1, T) and (T, P), here into out's view.
        torch.mm(w[0].unsqueeze(0), work, out=direct.unsqueeze(0))
        return direct
    T = G.shape[0]
    if direct is not None:
        direction = direct
    else:
        direction = torch.empty(G.shape[1], dtype=work_dtype, device=G.device)
    block = 0
    for offset, count, size in _runs(block_sizes, G.shape[1]):
        if count == 1:
            direction[offset : offset + size] = w[block] @ work[:, offset : offset + size]
        else:
            stacked = work[:, offset : offset + count * size].reshape(T, count, size)
            rows = direction[offset : offset + count * size].view(count, size)
            torch.bmm(
                w[block : block + count].unsqueeze(1),
                stacked.transpose(0, 1),
                out=rows.unsqueeze(1),
            )
        block += count
    return _into(direction.to(G.dtype), out)


_ALIGNMENT = 64
"""Bytes to which torch's CPU allocator aligns every new tensor."""


def _like_a_new_tensor(out: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``out`` has ``dtype`` and the layout of a new tensor: contiguous, aligned."""
    return out.dtype == dtype and out.is_contiguous() and out.data_ptr() % _ALIGNMENT == 0


def _into(direction: Tensor, out: Tensor | None) -> Tensor:
    """``direction``, copied into ``out`` unless it already is ``out`` (or there is none)."""
    if out is None or direction is out:
        return direction
    return out.copy_(direction)


class GramResolver(Resolver):
    r"""A resolver that is a map from Gram matrices to task weights: :math:`d = w^\top G`.

    Subclasses implement :meth:`~gradsurgery.resolvers.GramResolver.weights`. Set the
    class attribute ``uses_gram = False`` when
    the weights do not depend on the Gram matrix (the plain sum, loss weightings): the Gram
    is then never computed, resolution costs one pass over ``G``, and the autograd glue
    needs no task gradients at all: it runs ONE backward pass of :math:`\sum_i w_i L_i`.
    Such a resolver that keeps state across calls (it overrides
    :meth:`~gradsurgery.resolvers.Resolver.state_dict`) has
    ``G`` checked for non-finite values before it runs in :func:`gradsurgery.resolve`, one
    more pass, so that an error leaves its state as it was.

    With the Gram, finite task gradients are checked to give a finite direction without a
    pass over it: in each block, :math:`|d_j| \le \sum_i |w_i| |g_{ij}| \le \sum_i |w_i|
    \|g_i\|`, read from the weights and the Gram's diagonal, proves :math:`d` finite while
    it stays below half the dtype's largest value (the half absorbs rounding), and each
    weight below half the largest value of the dtype the sum is formed in. Only where the
    bound fails is :math:`d` itself tested; a non-finite one is formed again in float64
    (a weight beyond the working dtype's range, on a gradient small enough, can still give
    a representable direction), and if that too overflows the gradients' dtype,
    :class:`~gradsurgery.resolvers.base.NonFiniteDirectionError` is raised. A direction the
    bound proves finite is never altered by the check.
    """

    uses_gram: bool = True
    reads_primary_only: ClassVar[bool] = False
    """Whether :meth:`~gradsurgery.resolvers.GramResolver.weights` reads only the Gram's
    diagonal and the primary task's row (GR, the cosine gate, ...). Where the full Gram
    matrix is not asked for (``full_gram=False``, as :func:`gradsurgery.resolve` does),
    such a resolver is handed :func:`~gradsurgery.resolvers.base.gram_of_primary` for a
    single block of three or more tasks: :math:`O(TP)` instead of :math:`O(T^2 P)`, the
    same entries up to rounding."""

    @abstractmethod
    def weights(self, gram: Tensor, *, primary: int | None, losses: Tensor | None) -> Tensor:
        """Task weights from Gram matrices.

        Args:
            gram: ``(B, T, T)`` float64 Gram matrices, one per block (a ``(B, T, T)`` tensor
                of NaN-free zeros shaped like the Gram when ``uses_gram`` is ``False``).
            primary: index of the primary task, or ``None``.
            losses: ``(T,)`` float64 loss values, or ``None``.

        Returns:
            ``(B, T)`` float64 weights, finite.
        """

    def resolve_blocks(
        self,
        G: Tensor,
        block_sizes: Sequence[int],
        *,
        primary: int | None = None,
        losses: Tensor | None = None,
        task_weights: Tensor | None = None,
        out: Tensor | None = None,
        full_gram: bool = True,
    ) -> Resolution:
        """:meth:`Resolver.resolve_blocks`, with two more arguments.

        Args:
            out: ``None``, or a ``(P,)`` tensor of ``G``'s dtype and device that receives
                the direction (see
                :func:`~gradsurgery.resolvers.base.weighted_sum_of_blocks`).
            full_gram: whether :attr:`Resolution.gram` must be the full Gram matrices. With
                ``False``, a resolver that :attr:`reads_primary_only` forms only the
                entries it reads (:func:`~gradsurgery.resolvers.base.gram_of_primary`) for
                a single block of three or more tasks, and returns ``gram=None`` then.
        """
        # Loss weights c are folded into the T x T algebra instead of scaling G:
        # Gram(diag(c) G) = c c^T * Gram(G), and w^T diag(c) G = (w * c)^T G.
        T = G.shape[0]
        c = None if task_weights is None else task_weights.to(G.device, torch.float64)
        unweighted: Tensor | None = None  # the Gram of G itself, for the direction's bound
        if self.uses_gram:
            partial = not full_gram and self.reads_primary_only and T >= 3 and len(block_sizes) == 1
            if partial:
                seen = unweighted = gram_of_primary(G, 0 if primary is None else primary)
            else:
                seen = unweighted = gram_of_blocks(G, block_sizes)
            if not bool(torch.isfinite(seen).all()):
                raise NonFiniteGramError("the Gram matrix of the task gradients is not finite")
            if c is not None:
                seen = seen * (c[:, None] * c[None, :])
                if not bool(torch.isfinite(seen).all()):  # the weights' product overflows
                    raise NonFiniteGramError(
                        "the Gram matrix of the weighted task gradients is not finite"
                    )
            gram: Tensor | None = None if partial else seen
        else:
            gram = None
            seen = torch.zeros(len(block_sizes), T, T, dtype=torch.float64, device=G.device)
        losses64 = None if losses is None else losses.to(device=G.device, dtype=torch.float64)
        weights = self.weights(seen, primary=primary, losses=losses64)
        if c is not None:
            weights = weights * c
        direction = weighted_sum_of_blocks(G, weights, block_sizes, out=out)
        if (
            unweighted is not None
            and not _bounded_below_overflow(weights, unweighted, G.dtype)
            and not all_finite(direction)
        ):
            # A weight beyond the working dtype's range (a huge one on a tiny gradient) can
            # still give a representable direction: form it in float64 before giving up.
            wide = weighted_sum_of_blocks(G.to(torch.float64), weights, block_sizes)
            narrowed = wide.to(G.dtype)
            if not all_finite(narrowed):
                raise NonFiniteDirectionError(
                    f"{type(self).__name__} gave a non-finite direction: its weights or their "
                    f"sum overflow {G.dtype}"
                )
            direction = _into(narrowed, out)
        return Resolution(direction, gram, weights)


_FEW_WEIGHTS = 12
"""Up to this many weights, the direction's bound is summed in Python floats (below)."""

_BOUND_LIMITS: dict[torch.dtype, tuple[float, float]] = {}


def _bound_limits(dtype: torch.dtype) -> tuple[float, float]:
    """For task gradients of ``dtype``: the largest bound that proves a direction finite,
    and the floor of the squared norms that also keeps each weight within its limit."""
    limits = _BOUND_LIMITS.get(dtype)
    if limits is None:
        direction_limit = 0.5 * torch.finfo(dtype).max
        weight_limit = 0.5 * torch.finfo(_working_dtype(dtype)).max
        limits = _BOUND_LIMITS[dtype] = (direction_limit, (direction_limit / weight_limit) ** 2)
    return limits


def _bounded_below_overflow(weights: Tensor, gram: Tensor, dtype: torch.dtype) -> bool:
    r"""Whether the weights and the Gram matrices of the unweighted task gradients prove
    the direction :math:`d = w^\top G` finite in ``dtype``.

    In each block, :math:`|d_j| \le \sum_i |w_i| |g_{ij}| \le \sum_i |w_i| \|g_i\|`, with
    :math:`\|g_i\|^2` the Gram's diagonal. The norms are floored at the ratio of the
    direction's limit to the weights' (1 for float32 and float64), so that the bound also
    exceeds every weight scaled to the direction's limit: a weight that overflows the
    dtype the sum is formed in (float32 for half precision), even on a zero gradient,
    fails it. A NaN or infinite weight fails it as well. The limits are half the largest
    values: the margin covers the rounding of the float32 Gram and of the sum.

    On the CPU the few numbers are read on the host (Python floats for a handful, float64
    NumPy above), which costs a few microseconds per call; elsewhere torch computes it
    on the device and the answer is copied back.
    """
    limit, floor = _bound_limits(dtype)
    if weights.is_cpu and gram.is_cpu:
        if weights.numel() <= _FEW_WEIGHTS:
            for row, block in zip(weights.tolist(), gram.tolist(), strict=True):
                bound = 0.0
                for i, weight in enumerate(row):
                    squared = block[i][i]
                    bound += abs(weight) * math.sqrt(squared if squared > floor else floor)
                if not bound < limit:  # a NaN fails too
                    return False
            return True
        norms = np.sqrt(np.maximum(np.diagonal(gram.numpy(), axis1=1, axis2=2), floor))
        with np.errstate(over="ignore"):  # a bound that overflows float64 fails, unwarned
            host_bound = float((np.abs(weights.detach().numpy()) * norms).sum(axis=1).max())
        return host_bound < limit  # False for a NaN (NumPy's max keeps it)
    return _bounded_on_device(weights, gram, limit, floor)


def _bounded_on_device(weights: Tensor, gram: Tensor, limit: float, floor: float) -> bool:
    """:func:`_bounded_below_overflow` in torch, on the Gram's device."""
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp(min=floor).sqrt()
    bound = (weights.to(norms.device).abs() * norms).sum(dim=1).max()
    return bool(bound < limit)  # False for a NaN


def all_finite(values: Tensor) -> bool:
    """Whether every entry of ``values`` is finite, at the cost of one reduction.

    The sum of the entries is finite only if every entry is (an infinity or a NaN
    anywhere makes it infinite or NaN), so a finite sum settles the question in one pass
    that writes nothing. A non-finite sum may also come from finite entries whose sum
    overflows; only then is the exact element-wise test run.
    """
    if bool(torch.isfinite(values.sum())):
        return True
    return bool(torch.isfinite(values).all())
