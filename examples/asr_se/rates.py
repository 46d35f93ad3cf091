"""Error rates from the flagship's records: select them, pool them over conditions
(weighted by reference words or characters), average over seeds, and compare each run
with the baseline run of the same seed.

A record is one system, seed and condition: ``system, seed, test_set, noise, snr`` and
``wer, words`` (or ``cer, characters``), as ``results/summary.json`` holds them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

TEST_SETS = ("real_seen_text", "real_unseen_text", "synthetic")
BASELINE = "sum"
Records = list[dict[str, Any]]


def pooled_wer(records: Records, rate: str = "wer", weight: str = "words") -> float:
    """Word-weighted WER over several conditions: total errors over total reference words
    (``rate="cer", weight="characters"``: the character-weighted CER)."""
    total = sum(r[weight] for r in records)
    return sum(r[rate] * r[weight] for r in records) / total if total else math.nan


def select(records: Records, **match: Any) -> Records:
    """The records whose fields equal ``match``."""
    return [r for r in records if all(r[k] == v for k, v in match.items())]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def seed_wers(
    records: Records,
    system: str,
    seeds: Sequence[int],
    keep: Any,
    rate: str = "wer",
    weight: str = "words",
) -> list[float]:
    """One pooled WER (or ``rate``) per seed of ``system``, over the records that
    ``keep(record)`` accepts."""
    values = []
    for seed in seeds:
        chosen = [r for r in select(records, system=system, seed=seed) if keep(r)]
        if chosen:
            values.append(pooled_wer(chosen, rate, weight))
    return values


def noisy_in(test_set: str) -> Callable[[dict[str, Any]], bool]:
    """The predicate of ``test_set``'s noisy conditions (every noise and SNR; not clean)."""
    return lambda r: bool(r["test_set"] == test_set and r["snr"] is not None)


def noisy_rate(
    records: Records,
    system: str,
    seed: int,
    test_set: str = "synthetic",
    rate: str = "wer",
    weight: str = "words",
) -> float:
    """One run's WER (or ``rate``) on ``test_set``, pooled over its noisy conditions (every
    noise and SNR); NaN when the run is not among ``records``."""
    return run_rate(records, system, seed, noisy_in(test_set), rate, weight)


def run_rate(
    records: Records,
    system: str,
    seed: int,
    keep: Callable[[dict[str, Any]], bool],
    rate: str = "wer",
    weight: str = "words",
) -> float:
    """One run's WER (or ``rate``) pooled over the records ``keep`` accepts; NaN when the
    run has none."""
    values = seed_wers(records, system, [seed], keep, rate, weight)
    return values[0] if values else math.nan


def paired_rates(
    records: Records,
    system: str,
    seeds: Sequence[int],
    keep: Callable[[dict[str, Any]], bool],
    rate: str = "wer",
    weight: str = "words",
) -> dict[int, tuple[float, float]]:
    """``(system's rate, baseline's rate)`` over the records ``keep`` accepts, for each
    seed where both runs have such records (:func:`run_rate`)."""
    pairs = {}
    for seed in seeds:
        ours = run_rate(records, system, seed, keep, rate, weight)
        base = run_rate(records, BASELINE, seed, keep, rate, weight)
        if not (math.isnan(ours) or math.isnan(base)):
            pairs[seed] = (ours, base)
    return pairs


def gaps_to_baseline(
    records: Records,
    systems: Sequence[str],
    seeds: Sequence[int],
    keep: Callable[[dict[str, Any]], bool] | None = None,
    rate: str = "wer",
    weight: str = "words",
) -> dict[str, dict[int, float]]:
    """Each system's :func:`run_rate` over the records ``keep`` accepts (by default the
    synthetic voices' noisy conditions) minus the baseline's on the same seed, as a
    fraction, for every seed where both runs have such records (:func:`paired_rates`); the
    baseline itself is left out. Within a seed the runs share data order (and the joint
    systems their initial weights), so these differences show whether a gap between means
    holds seed by seed."""
    keep = noisy_in("synthetic") if keep is None else keep
    return {
        system: {
            seed: ours - base
            for seed, (ours, base) in paired_rates(
                records, system, seeds, keep, rate, weight
            ).items()
        }
        for system in systems
        if system != BASELINE
    }
