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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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

    Works on ``(..., T, T)`` Gram matrices; a pair involving a zero gradient has cosine 0.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> cosine_from_gram(G @ G.T)
        tensor([[ 1.0000, -0.7071],
                [-0.7071,  1.0000]])
    """
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0))
    denominator = norms.unsqueeze(-1) * norms.unsqueeze(-2)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, gram / safe, torch.zeros_like(gram))


def norm_ratio_from_gram(gram: Tensor) -> Tensor:
    r"""Pairwise norm ratio :math:`\|g_i\| / \|g_j\|` from ``(..., T, T)`` Gram matrices.

    A zero denominator gives ``inf`` (or 1 when both norms are zero).

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
        >>> norm_ratio_from_gram(G @ G.T)
        tensor([[1.0000, 0.2000],
                [5.0000, 1.0000]])
    """
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=0))
    numerator = norms.unsqueeze(-1).expand(gram.shape)
    denominator = norms.unsqueeze(-2).expand(gram.shape)
    both_zero = (numerator == 0) & (denominator == 0)
    return torch.where(both_zero, torch.ones_like(gram), numerator / denominator)


def direction_cosine_from_gram(gram: Tensor, weights: Tensor) -> Tensor:
    r"""Cosine between the resolved direction :math:`d` and each whole task gradient.

    With :math:`d_b = w_b^\top J_b` on each block,
    :math:`\cos(d, g_i) = \sum_b (w_b^\top G_b)_i \,/\, (\|d\|\, \|g_i\|)`; a zero
    :math:`d` or :math:`g_i` gives 0.

    Args:
        gram: ``(B, T, T)`` Gram matrices, one per block (or one ``(T, T)``).
        weights: ``(B, T)`` weights, one row per block (or one ``(T,)``).

    Returns:
        ``(T,)`` float64 cosines.

    Example:
        >>> import torch
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # d = g_0 + g_1 = (1, 1)
        >>> direction_cosine_from_gram(J @ J.T, torch.tensor([1.0, 1.0]))
        tensor([0.7071, 0.7071], dtype=torch.float64)
    """
    gram = gram.to(torch.float64).reshape(-1, gram.shape[-2], gram.shape[-1])
    w = weights.to(device=gram.device, dtype=torch.float64).reshape(-1, gram.shape[-1])
    if w.shape[0] != gram.shape[0]:
        raise ValueError(
            f"Invalid weights: {w.shape[0]} blocks of weights for {gram.shape[0]} Gram matrices"
        )
    dot = torch.einsum("bt,bts->s", w, gram)
    squared_d = torch.einsum("bt,bts,bs->", w, gram, w).clamp(min=0)
    squared_g = torch.diagonal(gram, dim1=-2, dim2=-1).sum(dim=0).clamp(min=0)
    denominator = torch.sqrt(squared_d * squared_g)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    cosine = torch.where(denominator > 0, dot / safe, torch.zeros_like(dot))
    return cosine.clamp(-1.0, 1.0)


@dataclass(frozen=True)
class ConflictStatistics:
    """The conflict picture of one step (or one parameter group of it).

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
    gram: Tensor, weights: Tensor | None = None, *, k: float = 5.0, primary: int | None = None
) -> ConflictStatistics:
    r"""Cosines, norm ratios, conflict, dominance and the direction's angles for one step.

    Args:
        gram: ``(B, T, T)`` Gram matrices of the task gradients, one per block.
        weights: ``(B, T)`` resolver weights, or ``None``.
        k: the dominance threshold :math:`K` (GR's default 5).
        primary: index of the primary task, or ``None`` (then every pair counts).

    Example:
        >>> import torch
        >>> J = torch.tensor([[1.0, 0.0], [-6.0, 1.0]])
        >>> stats = conflict_statistics((J @ J.T).unsqueeze(0), primary=0)
        >>> stats.conflict, stats.dominance, round(float(stats.cosine[0, 1]), 4)
        (True, True, -0.9864)
    """
    if gram.dim() == 2:
        gram = gram.unsqueeze(0)
    gram = gram.detach().to("cpu", torch.float64)
    T = gram.shape[-1]
    total = gram.sum(dim=0)
    cosine = cosine_from_gram(total)
    norms = torch.sqrt(torch.diagonal(total).clamp(min=0))
    ratio = norm_ratio_from_gram(total)
    if primary is None:
        pairs = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        ratio_mask = ~torch.eye(T, dtype=torch.bool)
    else:
        pairs = torch.zeros(T, T, dtype=torch.bool)
        pairs[primary, :] = True
        pairs[primary, primary] = False
        ratio_mask = torch.zeros(T, T, dtype=torch.bool)
        ratio_mask[:, primary] = True
        ratio_mask[primary, primary] = False
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
    :class:`ConflictStatistics`), the share of blocks in conflict, and the angle between
    the resolved direction and each task gradient. :meth:`state_dict` and
    :meth:`load_state_dict` carry the record in a checkpoint.

    Args:
        task_names: the tasks, in the order of the losses given to
            :func:`gradsurgery.backward` (for a sequence of losses: ``["0", "1", ...]``).
        k: the dominance threshold :math:`K` (GR's default 5).
        primary: the primary task (name or index); conflicts and dominance then count
            only against it, as in GR. ``None`` counts every pair.
        groups: optional parameter groups, name -> parameters (e.g.
            ``{"frontend": model.se.parameters()}``), each recorded on its own beside the
            group ``"all"``. Needs ``granularity="tensor"`` in :func:`gradsurgery.backward`
            so that each resolved block lies in one group.

    A loss weighting (``sum``, ``mean``) forms task gradients only with
    ``diagnostics=True``. Steps left to a ``GradScaler`` (non-finite) are counted in
    :attr:`skipped_steps` and not recorded.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        *,
        k: float = 5.0,
        primary: SupportsIndex | str | None = None,
        groups: Mapping[str, Iterable[Tensor]] | None = None,
    ) -> None:
        if isinstance(task_names, str) or not all(isinstance(n, str) for n in task_names):
            raise TypeError(f"Invalid task_names: {task_names!r} (expected a list of str)")
        names = list(task_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Invalid task_names: {names} (expected distinct names, T >= 1)")
        self.task_names = tuple(names)
        self.k = real_option("k", k, minimum=0, above_minimum=True)
        self.primary: int | None = normalize_primary(primary, names, len(names))
        self._groups: dict[str, set[int]] = {}
        for group, parameters in (groups or {}).items():
            if group == "all":
                raise ValueError("Invalid groups: 'all' is reserved for the whole model")
            self._groups[group] = {id(p) for p in parameters}
        self._columns = self._column_names()
        self._rows: dict[str, list[list[float]]] = {g: [] for g in ["all", *self._groups]}
        self.skipped_steps: list[int] = []
        self._updates = 0

    @property
    def groups(self) -> tuple[str, ...]:
        """The recorded groups: ``"all"`` first, then the user's."""
        return tuple(self._rows)

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of the recorded quantities, as in the CSV header (after step, group)."""
        return tuple(self._columns)

    def _column_names(self) -> list[str]:
        names = self.task_names
        T = len(names)
        pairs = [(i, j) for i in range(T) for j in range(i + 1, T)]
        columns = ["conflict", "dominance", "conflict_blocks", "dominance_blocks"]
        columns += [f"cos_{names[i]}_{names[j]}" for i, j in pairs]
        columns += [f"ratio_{names[i]}_{names[j]}" for i, j in pairs]
        columns += [f"norm_{name}" for name in names]
        columns += [f"angle_{name}" for name in names]
        return columns

    def update(self, result: BackwardResult, *, step: int | None = None) -> None:
        """Record one step's :class:`~gradsurgery.BackwardResult`.

        Args:
            result: what :func:`gradsurgery.backward` (or :meth:`Accumulator.resolve`)
                returned.
            step: the training step (default: the number of earlier updates).

        Raises:
            ValueError: tasks other than ``task_names``, or a result without a Gram matrix
                (a loss weighting without ``diagnostics=True``), or a block that straddles
                two groups.
        """
        if tuple(result.task_names) != self.task_names:
            raise ValueError(
                f"Invalid result: its tasks {list(result.task_names)} are not the monitor's "
                f"{list(self.task_names)}"
            )
        step = self._updates if step is None else int(step)
        if not result.finite:
            self._updates += 1
            self.skipped_steps.append(step)
            return
        if result.gram is None:
            raise ValueError(
                "Invalid result: it has no Gram matrix; pass diagnostics=True to "
                "gradsurgery.backward (loss weightings such as 'sum' form no task gradients "
                "otherwise)"
            )
        chosen = {group: self._group_blocks(group, result) for group in self._groups}
        # checked: nothing is recorded for a result refused above
        self._updates += 1
        gram, weights = result.gram, result.gram_weights
        self._record("all", step, gram, weights)
        for group, blocks in chosen.items():
            if blocks:
                select = torch.tensor(blocks)
                group_weights = None if weights is None else weights[select.to(weights.device)]
                self._record(group, step, gram[select.to(gram.device)], group_weights)

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

    def _record(self, group: str, step: int, gram: Tensor, weights: Tensor | None) -> None:
        stats = conflict_statistics(gram, weights, k=self.k, primary=self.primary)
        T = len(self.task_names)
        upper = torch.triu_indices(T, T, offset=1)
        angles = stats.angles
        row = [
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
        self._rows[group].append(row)

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
        """
        history = self.history(group)
        steps = len(history["step"])

        def mean(values: list[float]) -> float:
            return float(sum(values) / len(values)) if values else math.nan

        def quantiles(values: list[float]) -> dict[str, float]:
            if not values:
                return {f"q{round(100 * q)}": math.nan for q in _QUANTILES}
            data = torch.tensor(values, dtype=torch.float64)
            points = torch.quantile(data, torch.tensor(_QUANTILES, dtype=torch.float64))
            return {f"q{round(100 * q)}": float(v) for q, v in zip(_QUANTILES, points)}

        names = self.task_names
        T = len(names)
        pairs = [f"{names[i]}_{names[j]}" for i in range(T) for j in range(i + 1, T)]
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
        """Write every recorded step, one row per step and group, with a header."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "group", *self._columns])
            for group, rows in self._rows.items():
                for row in rows:
                    writer.writerow([int(row[0]), group, *(repr(value) for value in row[1:])])

    def plot(self, path: str | Path | None = None, *, group: str = "all") -> Figure:
        """Plot the record of ``group``; save it to ``path`` when given.

        Four panels: the share of conflicting (and dominated) steps over training, as a
        moving average over a twentieth of the run; the distribution of the norm ratios
        (log scale, with :math:`K` marked); the distribution of the pairwise cosines; the
        angle between the resolved direction and each task gradient over training.

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
        names = self.task_names
        T = len(names)
        pairs = [f"{names[i]}_{names[j]}" for i in range(T) for j in range(i + 1, T)]
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
        for pair in pairs:
            axes[1, 0].hist(history[f"cos_{pair}"], bins=40, range=(-1, 1), alpha=0.6, label=pair)
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

        Raises:
            ValueError: the saved tasks, ``k``, ``primary`` or groups differ from this
                monitor's.
        """
        for key, mine in (
            ("task_names", list(self.task_names)),
            ("k", self.k),
            ("primary", self.primary),
            ("columns", list(self._columns)),
        ):
            if state_dict.get(key) != mine:
                raise ValueError(
                    f"ConflictMonitor.load_state_dict: saved {key} {state_dict.get(key)!r} "
                    f"differs from this monitor's {mine!r}"
                )
        rows = state_dict["rows"]
        if set(rows) != set(self._rows):
            raise ValueError(
                f"ConflictMonitor.load_state_dict: saved groups {sorted(rows)} differ from "
                f"this monitor's {sorted(self._rows)}"
            )
        self._rows = {group: [list(row) for row in rows[group]] for group in self._rows}
        self.skipped_steps = list(state_dict["skipped_steps"])
        self._updates = int(state_dict["updates"])


def _moving_average(values: list[float], window: int) -> list[float]:
    averaged = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged
