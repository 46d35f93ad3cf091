"""The training loop the quality benchmarks share: any resolver, or one task alone."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import gradsurgery
from benchmarks import _common

SINGLE_TASK = "single_task"
"""Label of the reference run that trains on task 0's loss alone."""


def train(
    model: nn.Module,
    losses_at: Callable[[int], list[Tensor]],
    *,
    method: str | None,
    primary: int | None,
    steps: int,
    lr: float,
) -> None:
    """Adam for ``steps`` steps; ``losses_at(step)`` gives the task losses on a batch.

    ``method=None`` trains on the first task's loss alone (the single-task reference).
    """
    parameters = list(model.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    resolver = gradsurgery.get_resolver(method) if method is not None else None
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        losses = losses_at(step)
        if resolver is None:
            torch.autograd.backward(losses[0])
        else:
            gradsurgery.backward(losses, parameters, resolver=resolver, primary=primary)
        optimizer.step()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def entries(
    variants: list[tuple[str, str, int | None]],
) -> list[tuple[str, str | None, int | None]]:
    """The single-task reference first, then every ``(label, method, primary)`` variant."""
    out: list[tuple[str, str | None, int | None]] = [(SINGLE_TASK, None, None)]
    out += variants
    return out


def summarise(scores: dict[str, list[float]]) -> dict[str, Any]:
    return {name: dict(zip(("mean", "std"), mean_std(values))) for name, values in scores.items()}


def scored_over_seeds(
    run_seed: Callable[[int], dict[str, float]], seeds: Sequence[int]
) -> dict[str, Any]:
    """One table entry: ``run_seed(seed)``'s scores for every seed, their summary and the
    seconds it took; or the error that stopped it (``{"error": ..., "seconds": ...}``)."""
    start = time.perf_counter()
    entry: dict[str, Any]
    scores: dict[str, list[float]] = {}
    try:
        for seed in seeds:
            for key, value in run_seed(seed).items():
                scores.setdefault(key, []).append(value)
        entry = {"scores": scores, "summary": summarise(scores)}
    except Exception as error:
        entry = {"error": _common.error_text(error)}
    entry["seconds"] = time.perf_counter() - start
    return entry
