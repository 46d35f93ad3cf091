r"""Conflict diagnostics computed from the Gram matrix a resolver already has.

Everything here is a function of the ``T x T`` Gram matrices :math:`G_b = J_b J_b^\top`
of the task gradients (one per resolved block) and the resolver's weights :math:`w_b`,
which :func:`gradsurgery.backward` returns in its :class:`~gradsurgery.BackwardResult`:
no extra pass over the gradients. For the resolved direction :math:`d`, with
:math:`d_b = w_b^\top J_b` on block :math:`b`,

.. math::

    d \cdot g_i = \sum_b (w_b^\top G_b)_i, \qquad
    \|d\|^2 = \sum_b w_b^\top G_b w_b, \qquad
    \|g_i\|^2 = \sum_b (G_b)_{ii}.

:class:`ConflictMonitor` keeps a per-step record (pairwise cosines, norm ratios, whether a
conflict or GR's dominance occurred, the angle between :math:`d` and each task gradient),
a running summary for logs, a CSV writer and a plot (matplotlib, imported only there).
"""

from __future__ import annotations

import csv
import math
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

import torch
from torch import Tensor

from gradsurgery._validation import normalize_primary
from gradsurgery.resolvers._options import real_option

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gradsurgery.autograd import BackwardResult

__all__ = [
    "ConflictMonitor",
    "ConflictStatistics",
    "conflict_statistics",
    "cosine_from_gram",
    "direction_cosine_from_gram",
    "norm_ratio_from_gram",
]


def cosine_from_gram(gram: Tensor) -> Tensor:
    r"""Pairwise cosine similarity :math:`\cos(g_i, g_j) = G_{ij} / \sqrt{G_{ii} G_{jj}}`.

    Works on ``(..., T, T)`` Gram matrices; a pair involving a zero gradient has cosine 0,
    one involving a non-finite entry NaN. The result is clamped to :math:`[-1, 1]`
    (rounding in a Gram of parallel gradients can put it a few ulps past 1), computed in
    float32 at least and returned in ``gram``'s dtype.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> cosine_from_gram(G @ G.T)
        tensor([[ 1.0000, -0.7071],
                [-0.7071,  1.0000]])
    """
    wide = _at_least_float32(gram)
    norms = torch.sqrt(torch.diagonal(wide, dim1=-2, dim2=-1).clamp(min=0))
    denominator = norms.unsqueeze(-1) * norms.unsqueeze(-2)
    cosine = _ratio_or_zero(wide, denominator).clamp(-1.0, 1.0)
    return cosine.to(gram.dtype)


def _at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is of a narrower floating dtype (half-precision Gram
    entries of small gradients lose most of their digits in the products)."""
    if tensor.is_floating_point() and torch.finfo(tensor.dtype).bits < 32:
        return tensor.to(torch.float32)
    return tensor


def _ratio_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, 0 where ``denominator`` is exactly 0 (a zero
    gradient), and NaN where either is not finite (a non-finite Gram: neither 0 nor the
    0 that a finite number over an infinite norm would give)."""
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)
    ratio = torch.where(zero, torch.zeros_like(numerator), numerator / safe)
    finite = torch.isfinite(numerator) & torch.isfinite(denominator)
    return torch.where(finite, ratio, torch.full_like(ratio, math.nan))


def norm_ratio_from_gram(gram: Tensor) -> Tensor:
    r"""Pairwise norm ratio :math:`\|g_i\| / \|g_j\|` from ``(..., T, T)`` Gram matrices.

    A zero denominator gives ``inf`` (or 1 when both norms are zero), a non-finite entry
    NaN or ``inf``; computed in float32 at least and returned in ``gram``'s dtype.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
        >>> norm_ratio_from_gram(G @ G.T)
        tensor([[1.0000, 0.2000],
                [5.0000, 1.0000]])
    """
    wide = _at_least_float32(gram)
    norms = torch.sqrt(torch.diagonal(wide, dim1=-2, dim2=-1).clamp(min=0))
    numerator = norms.unsqueeze(-1).expand(wide.shape)
    denominator = norms.unsqueeze(-2).expand(wide.shape)
    both_zero = (numerator == 0) & (denominator == 0)
    ratio = torch.where(both_zero, torch.ones_like(wide), numerator / denominator)
    return ratio.to(gram.dtype)


def direction_cosine_from_gram(gram: Tensor, weights: Tensor) -> Tensor:
    r"""Cosine between the resolved direction :math:`d` and each whole task gradient.

    With :math:`d_b = w_b^\top J_b` on each block,
    :math:`\cos(d, g_i) = \sum_b (w_b^\top G_b)_i \,/\, (\|d\|\, \|g_i\|)`; a zero
    :math:`d` or :math:`g_i` gives 0, a non-finite Gram entry or weight NaN.

    Args:
        gram: ``(B, T, T)`` Gram matrices, one per block (or one ``(T, T)``).
        weights: ``(B, T)`` weights, one row per block (or one ``(T,)`` when ``B = 1``).

    Returns:
        ``(T,)`` float64 cosines.

    Raises:
        TypeError: ``gram`` or ``weights`` is not a tensor.
        ValueError: ``gram`` is not ``(T, T)`` or ``(B, T, T)`` with ``B, T >= 1``, or
            ``weights`` is not ``(B, T)`` (or ``(T,)`` for one block) for that ``gram``.

    Example:
        >>> import torch
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # d = g_0 + g_1 = (1, 1)
        >>> direction_cosine_from_gram(J @ J.T, torch.tensor([1.0, 1.0]))
        tensor([0.7071, 0.7071], dtype=torch.float64)
    """
    gram = _checked_gram(gram).to(torch.float64)
    w = _checked_weights(weights, gram.shape[0], gram.shape[-1])
    w = w.to(device=gram.device, dtype=torch.float64)
    dot = torch.einsum("bt,bts->s", w, gram)
    squared_d = torch.einsum("bt,bts,bs->", w, gram, w).clamp(min=0)
    squared_g = torch.diagonal(gram, dim1=-2, dim2=-1).sum(dim=0).clamp(min=0)
    denominator = torch.sqrt(squared_d * squared_g)
    return _ratio_or_zero(dot, denominator).clamp(-1.0, 1.0)


def _checked_gram(gram: object) -> Tensor:
    """``gram`` as ``(B, T, T)`` (a ``(T, T)`` one gets ``B = 1``), or an error naming it."""
    if not isinstance(gram, Tensor):
        raise TypeError(f"Invalid gram: expected a tensor, got {type(gram).__name__}")
    shape = tuple(gram.shape)
    if gram.dim() == 2:
        gram = gram.unsqueeze(0)
    if gram.dim() != 3 or gram.shape[-1] != gram.shape[-2] or 0 in gram.shape:
        raise ValueError(
            f"Invalid gram: shape {shape} (expected (T, T) or (B, T, T) Gram "
            "matrices with B, T >= 1)"
        )
    return gram


def _checked_weights(weights: object, blocks: int, T: int) -> Tensor:
    """``weights`` as ``(blocks, T)`` (a ``(T,)`` one for a single block), or an error
    naming it."""
    if not isinstance(weights, Tensor):
        raise TypeError(f"Invalid weights: expected a tensor, got {type(weights).__name__}")
    shape = tuple(weights.shape)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if weights.dim() != 2 or weights.shape[-1] != T:
        raise ValueError(
            f"Invalid weights: shape {shape} for {T} task(s) "
            f"(expected (B, {T}), one row per Gram matrix, or ({T},) for one)"
        )
    if weights.shape[0] != blocks:
        raise ValueError(
            f"Invalid weights: {weights.shape[0]} blocks of weights for {blocks} Gram matrices"
        )
    return weights


def _checked_primary(primary: SupportsIndex | str | None, T: int) -> int | None:
    """The primary task's index in ``range(T)``, or an error naming ``primary``: a Gram
    matrix has no task names, so a name is refused."""
    if isinstance(primary, str):
        raise TypeError(
            f"Invalid primary: {primary!r} (expected a task index: a Gram matrix has no "
            "task names; ConflictMonitor takes names)"
        )
    return normalize_primary(primary, None, T)


@dataclass(frozen=True, eq=False)
class ConflictStatistics:
    """The conflict picture of one step (or one parameter group of it). Compared by
    identity (its fields are tensors).

    Attributes:
        cosine: ``(T, T)`` pairwise cosines of the task gradients.
        norms: ``(T,)`` task-gradient norms.
        norm_ratio: ``(T, T)`` ratios :math:`\\|g_i\\| / \\|g_j\\|`.
        direction_cosine: ``(T,)`` cosines between the resolved direction and each task
            gradient, or ``None`` when the resolver reported no weights.
        conflict: whether a pair conflicts (:math:`g_i \\cdot g_j < 0`); with a primary
            task, only pairs with the primary count, as in GR.
        dominance: whether a norm ratio exceeds :math:`K` (with a primary task:
            :math:`\\|g_a\\| / \\|g_p\\| > K` for an auxiliary :math:`a`, GR's rescale
            condition).
        conflict_blocks: the share of blocks (parameter tensors, with per-tensor
            granularity) in which that conflict occurred.
        dominance_blocks: the share of blocks in which that dominance occurred (what GR's
            per-tensor rescale acts on).
    """

    cosine: Tensor
    norms: Tensor
    norm_ratio: Tensor
    direction_cosine: Tensor | None
    conflict: bool
    dominance: bool
    conflict_blocks: float
    dominance_blocks: float

    @property
    def angles(self) -> Tensor | None:
        """``(T,)`` angles in degrees between the resolved direction and each task gradient."""
        if self.direction_cosine is None:
            return None
        return torch.rad2deg(torch.arccos(self.direction_cosine))


def conflict_statistics(
    gram: Tensor,
    weights: Tensor | None = None,
    *,
    k: float = 5.0,
    primary: SupportsIndex | None = None,
) -> ConflictStatistics:
    r"""Cosines, norm ratios, conflict, dominance and the direction's angles for one step.

    Args:
        gram: ``(B, T, T)`` Gram matrices of the task gradients, one per block (or one
            ``(T, T)``).
        weights: ``(B, T)`` resolver weights (``(T,)`` for one block), or ``None``.
        k: the dominance threshold :math:`K` (GR's default 5).
        primary: index of the primary task (negative counts from the end), or ``None``
            (then every pair counts).

    Raises:
        TypeError: ``gram`` or ``weights`` is not a tensor, ``primary`` is not an
            integer (a task name included: a Gram matrix has none), or ``k`` is not a
            real number.
        ValueError: ``gram`` is not ``(T, T)`` or ``(B, T, T)`` or has a non-finite
            entry (a step a ``GradScaler`` skips has no conflict picture), ``weights``
            does not have one row of ``T`` per block, ``primary`` is out of range, or
            ``k`` is not a finite number above 0.

    Example:
        >>> import torch
        >>> J = torch.tensor([[1.0, 0.0], [-6.0, 1.0]])
        >>> stats = conflict_statistics((J @ J.T).unsqueeze(0), primary=0)
        >>> stats.conflict, stats.dominance, round(float(stats.cosine[0, 1]), 4)
        (True, True, -0.9864)
    """
    gram = _checked_gram(gram).detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("Invalid gram: it has non-finite entries")
    T = gram.shape[-1]
    index = _checked_primary(primary, T)
    k = real_option("k", k, minimum=0, above_minimum=True)
    if weights is not None:
        weights = _checked_weights(weights, gram.shape[0], T)
    total = gram.sum(dim=0)
    cosine = cosine_from_gram(total)
    norms = torch.sqrt(torch.diagonal(total).clamp(min=0))
    ratio = norm_ratio_from_gram(total)
    if index is None:
        pairs = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        ratio_mask = ~torch.eye(T, dtype=torch.bool)
    else:
        pairs = torch.zeros(T, T, dtype=torch.bool)
        pairs[index, :] = True
        pairs[index, index] = False
        ratio_mask = torch.zeros(T, T, dtype=torch.bool)
        ratio_mask[:, index] = True
        ratio_mask[index, index] = False
    block_conflicts = ((gram < 0) & pairs).flatten(1).any(dim=1)
    block_dominance = ((norm_ratio_from_gram(gram) > k) & ratio_mask).flatten(1).any(dim=1)
    direction = None
    if weights is not None:
        direction = direction_cosine_from_gram(gram, weights.detach().to("cpu"))
    return ConflictStatistics(
        cosine=cosine,
        norms=norms,
        norm_ratio=ratio,
        direction_cosine=direction,
        conflict=bool(((total < 0) & pairs).any()),
        dominance=bool(((ratio > k) & ratio_mask).any()),
        conflict_blocks=float(block_conflicts.to(torch.float64).mean()),
        dominance_blocks=float(block_dominance.to(torch.float64).mean()),
    )


_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class ConflictMonitor:
    r"""A per-step record of the conflicts between task gradients, and what the resolver did.

    Feed it the :class:`~gradsurgery.BackwardResult` of each step; it costs a few
    operations on ``T x T`` matrices (no pass over the gradients)::

        monitor = gradsurgery.ConflictMonitor(["asr", "se"], k=5.0, primary="asr")
        for step, batch in enumerate(loader):
            result = gradsurgery.backward(losses, model.parameters(), resolver="gr",
                                          primary="asr", diagnostics=True)
            optimizer.step()
            monitor.update(result, step=step)
        print(monitor.summary())
        monitor.to_csv("conflicts.csv")
        monitor.plot("conflicts.png")

    Each step records, per parameter group: the pairwise cosines and norm ratios of the
    task gradients, their norms, whether a conflict and GR's dominance occurred (see
    :class:`~gradsurgery.diagnostics.ConflictStatistics`), the share of blocks in
    conflict, and the angle between the resolved direction and each task gradient.
    :meth:`state_dict` and :meth:`load_state_dict` carry the record in a checkpoint.

    Args:
        task_names: the tasks, in the order of the losses given to
            :func:`gradsurgery.backward` (for a sequence of losses: ``["0", "1", ...]``).
        k: the dominance threshold :math:`K` (GR's default 5).
        primary: the primary task (name or index); conflicts and dominance then count
            only against it, as in GR. ``None`` counts every pair.
        groups: optional parameter groups, a mapping name -> iterable of parameter
            tensors (e.g. ``{"frontend": model.se.parameters()}``, or ``{"w": [w]}`` for a
            single tensor), each recorded on its own beside the group ``"all"``. Needs
            ``granularity="tensor"`` in :func:`gradsurgery.backward` so that each
            resolved block lies in one group.

    Raises:
        TypeError: ``task_names`` is not a sequence of str; ``groups`` is not a mapping
            of str -> iterable of tensors (a bare tensor or a module as a group's value
            included: wrap a tensor in a list, pass a module's ``parameters()``).
        ValueError: ``task_names`` empty or repeated, or two pairs of tasks whose column
            names coincide (``"a_b", "c"`` and ``"a", "b_c"`` both give ``cos_a_b_c``);
            ``k`` not positive; ``primary`` not a task; a group named ``"all"`` or with
            no parameters.

    The task gradients are those the resolver saw: of the weighted losses
    :math:`c_i L_i` where :func:`gradsurgery.backward` was given ``weights=`` (so a task
    of weight 0 has a zero gradient: a cosine of 0, an angle of 90 degrees, and a norm
    ratio of 0 in the pairs where it is the numerator, inf where it is the denominator).
    A loss weighting (``sum``, ``mean``) forms task gradients only with
    ``diagnostics=True``. Steps left to a ``GradScaler`` (non-finite) are counted in
    :attr:`skipped_steps` and not recorded.

    Attributes:
        task_names: the tasks, as a tuple.
        k: the dominance threshold, as a float.
        primary: the primary task's index, or ``None``.
        skipped_steps: the steps whose result was left to a ``GradScaler``
            (``result.finite`` false), in order; they are not recorded.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        *,
        k: float = 5.0,
        primary: SupportsIndex | str | None = None,
        groups: Mapping[str, Iterable[Tensor]] | None = None,
    ) -> None:
        if (
            isinstance(task_names, str)
            or not isinstance(task_names, Sequence)
            or not all(isinstance(n, str) for n in task_names)
        ):
            raise TypeError(f"Invalid task_names: {task_names!r} (expected a list of str)")
        names = list(task_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Invalid task_names: {names} (expected distinct names, T >= 1)")
        self.task_names = tuple(names)
        self.k = real_option("k", k, minimum=0, above_minimum=True)
        self.primary: int | None = normalize_primary(primary, names, len(names))
        self._groups = _group_members(groups)
        self._pairs = _pair_labels(self.task_names)
        self._columns = self._column_names()
        self._rows: dict[str, list[list[float]]] = {g: [] for g in ["all", *self._groups]}
        self.skipped_steps: list[int] = []
        self._updates = 0

    @property
    def groups(self) -> tuple[str, ...]:
        """The recorded groups, ``"all"`` first, then the user's."""
        return tuple(self._rows)

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of the recorded quantities, as in the CSV header (after step, group)."""
        return tuple(self._columns)

    def _column_names(self) -> list[str]:
        """The recorded quantities' names; distinct, since the pair labels are (see
        :func:`_pair_labels`) and no prefix (``cos_``, ``ratio_``, ``norm_``, ``angle_``,
        the four fixed names) begins another."""
        columns = ["conflict", "dominance", "conflict_blocks", "dominance_blocks"]
        columns += [f"cos_{pair}" for pair in self._pairs]
        columns += [f"ratio_{pair}" for pair in self._pairs]
        columns += [f"norm_{name}" for name in self.task_names]
        columns += [f"angle_{name}" for name in self.task_names]
        return columns

    def update(self, result: BackwardResult, *, step: SupportsIndex | None = None) -> None:
        """Record one step's :class:`~gradsurgery.BackwardResult`.

        Args:
            result: what :func:`gradsurgery.backward` (or :meth:`Accumulator.resolve`)
                returned.
            step: the training step (default: the number of earlier updates).

        Raises:
            TypeError: ``result`` is not a :class:`~gradsurgery.BackwardResult` (such as
                the ``None`` that :meth:`Accumulator.backward` returns with
                ``resolution="window"``: record what :meth:`Accumulator.resolve`
                returns), or ``step`` is not an integer.
            ValueError: tasks other than ``task_names``; a finite result without a Gram
                matrix (``result.shared_parameters == 0``: the tasks share no parameter,
                or a loss weighting such as ``sum`` ran without ``diagnostics=True``; or a
                resolver that forms no Gram matrix ran without ``diagnostics=True``); a
                Gram matrix that is not ``(B, T, T)`` for the monitor's ``T`` tasks, or is
                not finite, weights that are not ``(B, T)``, or, with ``groups``, not one
                block of parameters per Gram matrix; a block that straddles two groups.
                Nothing is recorded or counted then.
        """
        from gradsurgery.autograd import BackwardResult  # (it imports this module)

        if not isinstance(result, BackwardResult):
            raise TypeError(
                f"Invalid result: expected a gradsurgery.BackwardResult, got "
                f"{type(result).__name__} (Accumulator.backward returns None with "
                "resolution='window': record what Accumulator.resolve() returns)"
            )
        if tuple(result.task_names) != self.task_names:
            raise ValueError(
                f"Invalid result: its tasks {list(result.task_names)} are not the monitor's "
                f"{list(self.task_names)}"
            )
        step = self._updates if step is None else _step_number(step)
        if not result.finite:
            self._updates += 1
            self.skipped_steps.append(step)
            return
        if result.gram is None:
            raise ValueError(_no_gram_message(result))
        gram, weights = self._checked_result(result)
        rows = {"all": self._row(step, gram, weights)}
        for group in self._groups:
            blocks = self._group_blocks(group, result)
            if blocks:
                select = torch.tensor(blocks)
                group_weights = None if weights is None else weights[select.to(weights.device)]
                rows[group] = self._row(step, gram[select.to(gram.device)], group_weights)
        # every check passed: only now is the step counted and recorded
        self._updates += 1
        for group, row in rows.items():
            self._rows[group].append(row)

    def _checked_result(self, result: BackwardResult) -> tuple[Tensor, Tensor | None]:
        """``result``'s Gram matrices and weights, checked against the monitor's tasks (and
        its blocks against its Gram matrices, where groups need them)."""
        gram, weights, T = result.gram, result.gram_weights, len(self.task_names)
        if not isinstance(gram, Tensor) or gram.dim() != 3 or gram.shape[1:] != (T, T):
            shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
            raise ValueError(
                f"Invalid result: its gram is {shape}, expected (B, {T}, {T}) Gram matrices "
                f"for the monitor's {T} tasks"
            )
        B = gram.shape[0]
        if weights is not None and (not isinstance(weights, Tensor) or weights.shape != (B, T)):
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(f"Invalid result: its weights are {shape}, expected ({B}, {T})")
        if not bool(torch.isfinite(gram).all()):
            raise ValueError(
                "Invalid result: its Gram matrix has non-finite entries, yet result.finite is True"
            )
        if self._groups and len(result.blocks) != B:
            raise ValueError(
                f"Invalid result: {len(result.blocks)} blocks of parameters for {B} Gram "
                "matrices (the groups need one per Gram matrix)"
            )
        return gram, weights

    def _group_blocks(self, group: str, result: BackwardResult) -> list[int]:
        """The indices of ``result``'s blocks inside ``group``.

        Raises:
            ValueError: a block with parameters both inside and outside the group.
        """
        members = self._groups[group]
        chosen = []
        for index, block in enumerate(result.blocks):
            inside = [id(p) in members for p in block]
            if all(inside):
                chosen.append(index)
            elif any(inside):
                raise ValueError(
                    f"Invalid result: a resolved block straddles group {group!r}; use "
                    "granularity='tensor' for per-group diagnostics"
                )
        return chosen

    def _row(self, step: int, gram: Tensor, weights: Tensor | None) -> list[float]:
        """One recorded row: the step, then the :attr:`columns`."""
        stats = conflict_statistics(gram, weights, k=self.k, primary=self.primary)
        T = len(self.task_names)
        upper = torch.triu_indices(T, T, offset=1)
        angles = stats.angles
        return [
            float(step),
            float(stats.conflict),
            float(stats.dominance),
            stats.conflict_blocks,
            stats.dominance_blocks,
            *stats.cosine[upper[0], upper[1]].tolist(),
            *stats.norm_ratio[upper[0], upper[1]].tolist(),
            *stats.norms.tolist(),
            *(angles.tolist() if angles is not None else [math.nan] * T),
        ]

    def history(self, group: str = "all") -> dict[str, list[float]]:
        """The record of ``group`` as columns: ``{"step": [...], "conflict": [...], ...}``."""
        rows = self._group_rows(group)
        names = ["step", *self._columns]
        return {name: [row[i] for row in rows] for i, name in enumerate(names)}

    def _group_rows(self, group: str) -> list[list[float]]:
        if group not in self._rows:
            raise ValueError(f"Invalid group: {group!r}; groups: {list(self._rows)}")
        return self._rows[group]

    def summary(self, group: str = "all") -> dict[str, Any]:
        """A compact summary for logs.

        Returns:
            ``steps`` (recorded), ``skipped_steps``, ``conflict_share`` and
            ``dominance_share`` (shares of recorded steps), ``mean_conflict_blocks`` and
            ``mean_dominance_blocks`` (mean shares of blocks),
            ``mean_cosine`` per pair, ``norm_ratio_quantiles`` per pair (5, 25, 50, 75 and
            95 %), ``mean_angle`` per task (degrees; NaN without weights). Shares and
            means are NaN before the first step.

        The quantiles interpolate linearly between order statistics (NumPy's and
        PyTorch's default ``"linear"`` rule), except that an infinite neighbour gives that
        infinity (the interpolation's limit): a step with a zero task gradient has a norm
        ratio ``inf``, and the quantiles that reach it are ``inf``, never NaN.
        """
        history = self.history(group)
        steps = len(history["step"])

        def mean(values: list[float]) -> float:
            return float(sum(values) / len(values)) if values else math.nan

        def quantiles(values: list[float]) -> dict[str, float]:
            data = sorted(values)
            nan = not data or any(map(math.isnan, data))
            return {
                f"q{round(100 * q)}": math.nan if nan else _quantile(data, q) for q in _QUANTILES
            }

        names, pairs = self.task_names, self._pairs
        return {
            "steps": steps,
            "skipped_steps": len(self.skipped_steps),
            "conflict_share": mean(history["conflict"]),
            "dominance_share": mean(history["dominance"]),
            "mean_conflict_blocks": mean(history["conflict_blocks"]),
            "mean_dominance_blocks": mean(history["dominance_blocks"]),
            "mean_cosine": {pair: mean(history[f"cos_{pair}"]) for pair in pairs},
            "norm_ratio_quantiles": {pair: quantiles(history[f"ratio_{pair}"]) for pair in pairs},
            "mean_angle": {name: mean(history[f"angle_{name}"]) for name in names},
        }

    def to_csv(self, path: str | Path) -> None:
        """Write every recorded step, one row per step and group, with a header.

        The file is written beside ``path`` and then moved onto it, so an interrupted
        write leaves the earlier file whole.

        Raises:
            FileNotFoundError: ``path``'s folder does not exist.
        """
        target = Path(path)
        if not target.parent.is_dir():
            raise FileNotFoundError(f"Invalid path: {str(path)!r} (its folder does not exist)")
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["step", "group", *self._columns])
                for group, rows in self._rows.items():
                    for row in rows:
                        writer.writerow([int(row[0]), group, *(repr(value) for value in row[1:])])
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def plot(self, path: str | Path | None = None, *, group: str = "all") -> Figure:
        """Plot the record of ``group``; save it to ``path`` when given.

        Four panels: the share of conflicting (and dominated) steps over training, as a
        moving average over a twentieth of the run; the distribution of the norm ratios
        (log scale, with :math:`K` marked; a ratio of 0 or ``inf``, from a zero task
        gradient, has no place on it and is left out); the distribution of the pairwise
        cosines; the angle between the resolved direction and each task gradient over
        training.

        Needs matplotlib (the optional ``plot`` extra, ``pip install gradsurgery[plot]``;
        imported here only).
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "ConflictMonitor.plot needs matplotlib: pip install 'gradsurgery[plot]' "
                "(or pip install matplotlib)"
            ) from error
        history = self.history(group)
        steps = history["step"]
        names, pairs = self.task_names, self._pairs
        figure = Figure(figsize=(11, 7), layout="constrained")
        axes = figure.subplots(2, 2)
        window = max(1, len(steps) // 20)
        for key, label in (("conflict", "conflict"), ("dominance", f"norm ratio > K={self.k:g}")):
            axes[0, 0].plot(steps, _moving_average(history[key], window), label=label)
        axes[0, 0].set(
            xlabel="step", ylabel=f"share of steps (moving average of {window})", ylim=(-0.02, 1.02)
        )
        axes[0, 0].set_title("Conflicting steps")
        axes[0, 0].legend()
        for pair in pairs:
            ratios = [r for r in history[f"ratio_{pair}"] if r > 0 and math.isfinite(r)]
            if ratios:
                axes[0, 1].hist([math.log10(r) for r in ratios], bins=40, alpha=0.6, label=pair)
        axes[0, 1].axvline(math.log10(self.k), color="black", linestyle="--", linewidth=1)
        axes[0, 1].axvline(-math.log10(self.k), color="black", linestyle="--", linewidth=1)
        axes[0, 1].set(xlabel="log10 norm ratio |g_i| / |g_j|", ylabel="steps")
        axes[0, 1].set_title("Norm ratios")
        for pair in pairs:  # (clipped: a record of older code may hold 1 + 1 ulp)
            cosines = [min(1.0, max(-1.0, c)) for c in history[f"cos_{pair}"]]
            axes[1, 0].hist(cosines, bins=40, range=(-1, 1), alpha=0.6, label=pair)
        axes[1, 0].axvline(0.0, color="black", linestyle="--", linewidth=1)
        axes[1, 0].set(xlabel="cosine", ylabel="steps")
        axes[1, 0].set_title("Task-gradient cosines")
        for name in names:
            axes[1, 1].plot(steps, history[f"angle_{name}"], label=name, linewidth=0.8)
        axes[1, 1].set(xlabel="step", ylabel="degrees")
        axes[1, 1].set_title("Angle between the update and each task gradient")
        for ax in (axes[0, 1], axes[1, 0], axes[1, 1]):
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        figure.suptitle(f"gradsurgery conflict monitor ({group})")
        if path is not None:
            figure.savefig(path, dpi=120)
        return figure

    def state_dict(self) -> dict[str, Any]:
        """The whole record, as plain Python lists (for ``torch.save`` or JSON)."""
        return {
            "task_names": list(self.task_names),
            "k": self.k,
            "primary": self.primary,
            "columns": list(self._columns),
            "rows": {group: [list(row) for row in rows] for group, rows in self._rows.items()},
            "skipped_steps": list(self.skipped_steps),
            "updates": self._updates,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a record saved by :meth:`state_dict`, to resume with a checkpoint.

        Every key is checked before anything is assigned: after an error the monitor is
        as it was.

        Raises:
            TypeError: ``state_dict`` is not a mapping.
            ValueError: a key of :meth:`state_dict` is missing; the saved tasks, ``k``,
                ``primary``, columns or groups differ from this monitor's; or the saved
                rows, ``skipped_steps`` or ``updates`` are malformed.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"Invalid state_dict: expected a mapping, got {type(state_dict).__name__}"
            )
        missing = [key for key in _STATE_KEYS if key not in state_dict]
        if missing:
            raise ValueError(
                f"Invalid state_dict: it lacks {missing} (ConflictMonitor.load_state_dict "
                "needs every key of ConflictMonitor.state_dict())"
            )
        for key, mine in (
            ("task_names", list(self.task_names)),
            ("k", self.k),
            ("primary", self.primary),
            ("columns", list(self._columns)),
        ):
            if state_dict[key] != mine:
                raise ValueError(
                    f"ConflictMonitor.load_state_dict: saved {key} {state_dict[key]!r} "
                    f"differs from this monitor's {mine!r}"
                )
        rows = self._loaded_rows(state_dict["rows"])
        skipped = [
            _count(step, "skipped_steps", signed=True)
            for step in _as_list(state_dict, "skipped_steps")
        ]
        updates = _count(state_dict["updates"], "updates")
        self._rows, self.skipped_steps, self._updates = rows, skipped, updates

    def _loaded_rows(self, rows: object) -> dict[str, list[list[float]]]:
        """The saved ``rows``, checked against this monitor's groups and columns, copied."""
        if not isinstance(rows, Mapping) or set(rows) != set(self._rows):
            saved = sorted(rows) if isinstance(rows, Mapping) else type(rows).__name__
            raise ValueError(
                f"ConflictMonitor.load_state_dict: saved groups {saved} differ from "
                f"this monitor's {sorted(self._rows)}"
            )
        width = 1 + len(self._columns)
        loaded = {}
        for group in self._rows:
            records = _as_list(rows, group, "rows")
            if not all(_is_row(row, width) for row in records):
                raise ValueError(
                    f"Invalid state_dict: rows[{group!r}] holds a row that is not {width} "
                    "numbers (step and columns)"
                )
            loaded[group] = [[float(value) for value in row] for row in records]
        return loaded


_STATE_KEYS = ("task_names", "k", "primary", "columns", "rows", "skipped_steps", "updates")


def _as_list(state: Mapping[Any, Any], key: str, where: str = "") -> list[Any]:
    """``state[key]`` as a list, when it is a list or tuple; an error naming it otherwise."""
    value = state[key]
    if not isinstance(value, (list, tuple)):
        name = f"{where}[{key!r}]" if where else key
        raise ValueError(
            f"Invalid state_dict: {name} is of type {type(value).__name__}, expected a list"
        )
    return list(value)


def _is_row(row: object, width: int) -> bool:
    """Whether ``row`` is a list of ``width`` real numbers (no ``bool``), the first, the
    step, a whole number."""
    return (
        isinstance(row, (list, tuple))
        and len(row) == width
        and all(isinstance(value, Real) and not isinstance(value, bool) for value in row)
        and math.isfinite(row[0])
        and float(row[0]).is_integer()
    )


def _step_number(step: object) -> int:
    """``step`` as an ``int``, or an error naming it (a float, a string or a ``bool`` is
    refused rather than truncated or parsed)."""
    if isinstance(step, bool):
        raise TypeError(f"Invalid step: {step!r} (expected an int)")
    try:
        return operator.index(step)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"Invalid step: {step!r} (expected an int)") from None


def _count(value: object, key: str, *, signed: bool = False) -> int:
    """``value`` as an ``int`` (non-negative unless ``signed``), or an error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or (value < 0 and not signed):
        expected = "an int" if signed else "an int >= 0"
        raise ValueError(f"Invalid state_dict: {key} holds {value!r}, expected {expected}")
    return int(value)


def _no_gram_message(result: BackwardResult) -> str:
    """Why a finite ``result`` has no Gram matrix, as far as it tells, for the error."""
    if result.shared_parameters > 0:
        return (
            f"Invalid result: it has no Gram matrix: the resolver formed none for its "
            f"{result.shared_parameters} shared parameters; pass diagnostics=True to "
            "gradsurgery.backward (or Accumulator) to have it formed"
        )
    return (
        "Invalid result: it has no Gram matrix and result.shared_parameters == 0: no task "
        "gradient of a shared parameter was formed. Either the tasks share no parameter "
        "(then there is no conflict to monitor), or a loss weighting (such as 'sum' or "
        "'mean') ran without diagnostics=True; only in that case, pass diagnostics=True"
    )


def _quantile(data: Sequence[float], q: float) -> float:
    r"""The ``q``-quantile of sorted ``data`` (non-empty, no NaN), infinities allowed.

    With :math:`h = q (n - 1)`, :math:`x_- = x_{\lfloor h \rfloor}`,
    :math:`x_+ = x_{\lceil h \rceil}` and :math:`f = h - \lfloor h \rfloor`, it is
    :math:`x_- + f (x_+ - x_-)` (the ``"linear"`` rule of :func:`torch.quantile`), taken
    as its limit where a neighbour is infinite: :math:`x_-` when :math:`f = 0` or
    :math:`x_- = x_+`, otherwise the infinite neighbour (:math:`+\infty` for
    :math:`x_+ = +\infty`, :math:`-\infty` for :math:`x_- = -\infty`), and where both
    are (:math:`-\infty, +\infty`: no limit) the nearer one, :math:`x_+` from
    :math:`f \ge 1/2`. So finite-or-infinite data never gives NaN.
    """
    position = q * (len(data) - 1)
    low = math.floor(position)
    below, above = data[low], data[math.ceil(position)]
    fraction = position - low
    if fraction == 0 or below == above:
        return below
    if math.isinf(below) and math.isinf(above):
        return above if fraction >= 0.5 else below
    if math.isinf(below):
        return below
    if math.isinf(above):
        return above
    return below + fraction * (above - below)


def _pair_labels(names: Sequence[str]) -> list[str]:
    """``"{a}_{b}"`` for each pair of tasks ``a`` before ``b``: how columns (``cos_a_b``)
    and summary keys name the pair.

    Raises:
        ValueError: two pairs with the same label (distinct names joined by ``_`` can
            coincide), which would record one pair's values under the other's name.
    """
    labels: dict[str, tuple[str, str]] = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            label = f"{first}_{second}"
            if label in labels:
                raise ValueError(
                    f"Invalid task_names: the pairs {labels[label]} and {(first, second)} "
                    f"would both be recorded as {label!r} (columns cos_{label}, "
                    f"ratio_{label}); rename a task (e.g. without '_')"
                )
            labels[label] = (first, second)
    return list(labels)


def _group_members(groups: object) -> dict[str, set[int]]:
    """The ids of each group's parameters, from the ``groups`` argument, checked.

    Raises:
        TypeError: ``groups`` is not a mapping of str -> iterable of tensors.
        ValueError: a group named ``"all"`` or with no parameters.
    """
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise TypeError(
            "Invalid groups: expected a mapping of group name -> parameters (e.g. "
            f"{{'frontend': model.frontend.parameters()}}), got {type(groups).__name__}"
        )
    members: dict[str, set[int]] = {}
    for group, parameters in groups.items():
        if not isinstance(group, str):
            raise TypeError(f"Invalid groups: group names must be str, got {group!r}")
        if group == "all":
            raise ValueError("Invalid groups: 'all' is reserved for the whole model")
        members[group] = _parameter_ids(group, parameters)
    return members


def _parameter_ids(group: str, parameters: object) -> set[int]:
    """The ids of the tensors of one group's iterable, or an error naming ``groups``.

    A bare tensor is refused: iterating it would give its rows, new views that match no
    parameter, and the group would silently record nothing.

    Raises:
        TypeError: ``parameters`` is a tensor, a module, or not an iterable of tensors.
        ValueError: ``parameters`` is empty.
    """
    if isinstance(parameters, Tensor):
        raise TypeError(
            f"Invalid groups: group {group!r} is a bare tensor (it would be iterated row by "
            f"row); wrap it in a list: {{{group!r}: [tensor]}}"
        )
    if isinstance(parameters, torch.nn.Module):
        raise TypeError(
            f"Invalid groups: group {group!r} is a module; pass its parameters: "
            f"{{{group!r}: module.parameters()}}"
        )
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"Invalid groups: group {group!r} is of type {type(parameters).__name__}, "
            "not an iterable of parameter tensors"
        )
    ids = set()
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, Tensor):
            raise TypeError(
                f"Invalid groups: item {index} of group {group!r} is of type "
                f"{type(parameter).__name__}, not a tensor"
            )
        ids.add(id(parameter))
    if not ids:
        raise ValueError(f"Invalid groups: group {group!r} has no parameters")
    return ids


def _moving_average(values: list[float], window: int) -> list[float]:
    averaged = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged
