"""The report's pictures: WER against SNR per system, each system's gap to the baseline seed
by seed, and gradient conflict over training."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.asr_se.rates import (
    BASELINE,
    TEST_SETS,
    gaps_to_baseline,
    mean_std,
    noisy_in,
    seed_wers,
    select,
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_wer_vs_snr(
    systems: Sequence[str],
    wer: list[dict[str, Any]],
    out_dir: Path,
    cer: list[dict[str, Any]] | None = None,
) -> str:
    """One panel per test set: WER (mean over seeds, a band of one standard deviation
    where there are several) against SNR, a line per system. Below it, each system's WER
    minus the baseline's at each SNR, averaged over the seeds both ran
    (:func:`~examples.asr_se.rates.gaps_to_baseline`): gaps of a point or two, lost
    among the curves of the first row, show there. With ``cer`` records, a last row of
    the first in characters. The panels of a row share their y axis, so that test sets
    compare at a glance."""
    plt = _pyplot()
    rows: list[tuple[str, list[dict[str, Any]], str, str, bool]] = [
        ("WER (%)", wer, "wer", "words", False)
    ]
    if BASELINE in systems and len(systems) > 1:
        rows.append((f"WER minus {BASELINE}'s (points)", wer, "wer", "words", True))
    if cer:
        rows.append(("CER (%)", cer, "cer", "characters", False))
    figure, axes = plt.subplots(
        len(rows),
        len(TEST_SETS),
        figsize=(5 * len(TEST_SETS), 4 * len(rows)),
        squeeze=False,
        sharey="row",
    )
    colours = line_styles(systems)
    for row, (label, records, rate, weight, gap) in zip(axes, rows, strict=True):
        for axis, test_set in zip(row, TEST_SETS, strict=True):
            snrs = sorted(
                {r["snr"] for r in select(records, test_set=test_set) if r["snr"] is not None}
            )
            if gap:
                _draw_gaps_by_snr(axis, systems, records, test_set, snrs, colours)
            else:
                _draw_rates_by_snr(axis, systems, records, test_set, snrs, rate, weight, colours)
            axis.set_title(test_set)
            axis.set_xlabel("SNR (dB)")
            axis.grid(alpha=0.3)
        row[0].set_ylabel(label)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    name = "wer_vs_snr.png"
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def _draw_rates_by_snr(
    axis: Any,
    systems: Sequence[str],
    records: list[dict[str, Any]],
    test_set: str,
    snrs: list[float],
    rate: str,
    weight: str,
    colours: dict[str, dict[str, str]],
) -> None:
    """A line per system: its pooled rate at each SNR, mean over seeds with a band of one
    standard deviation where there are several."""
    for system in systems:
        seeds = sorted({r["seed"] for r in select(records, system=system)})
        spread = [
            mean_std(seed_wers(records, system, seeds, _at_snr(test_set, snr), rate, weight))
            for snr in snrs
        ]
        means = [100 * mean for mean, _ in spread]
        axis.plot(snrs, means, marker="o", label=system, **colours[system])
        if len(seeds) > 1:
            low = [100 * (mean - std) for mean, std in spread]
            high = [100 * (mean + std) for mean, std in spread]
            axis.fill_between(snrs, low, high, color=colours[system]["color"], alpha=0.15)


def _draw_gaps_by_snr(
    axis: Any,
    systems: Sequence[str],
    records: list[dict[str, Any]],
    test_set: str,
    snrs: list[float],
    colours: dict[str, dict[str, str]],
) -> None:
    """A line per system other than the baseline: at each SNR, the mean over seeds of its
    WER minus the baseline's of the same seed, in points (no point where no seed pairs)."""
    seeds = sorted({r["seed"] for r in records})
    for system in systems:
        if system == BASELINE:
            continue
        means = []
        for snr in snrs:
            gaps = gaps_to_baseline(records, [system], seeds, _at_snr(test_set, snr))[system]
            means.append(100 * statistics.fmean(gaps.values()) if gaps else math.nan)
        axis.plot(snrs, means, marker="o", label=system, **colours[system])
    axis.axhline(0.0, color="black", linewidth=0.8)


def line_styles(systems: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each system's line colour and style, by its place in ``systems`` (the same in every
    figure of a report): ten colours, then the same ten dashed, then dotted."""
    styles = ("-", "--", ":")
    return {
        system: {"color": f"C{index % 10}", "linestyle": styles[(index // 10) % len(styles)]}
        for index, system in enumerate(systems)
    }


def _at_snr(test_set: str, snr: float) -> Callable[[dict[str, Any]], bool]:
    """The predicate of ``test_set``'s records at ``snr`` (every noise)."""
    return lambda r: bool(r["test_set"] == test_set and r["snr"] == snr)


def plot_seed_gaps(
    systems: Sequence[str],
    wer: list[dict[str, Any]],
    out_dir: Path,
    cer: list[dict[str, Any]] | None = None,
    test_set: str = "synthetic",
) -> str | None:
    """Each system's difference in points from the baseline run of the same seed, WER (and
    CER) pooled over the noisy conditions of ``test_set``: a dot per seed, a bar at their
    mean. Differences of one or two points, lost among the curves of
    :func:`plot_wer_vs_snr`, show here with their sign on every seed. ``None`` when no
    seed has both a baseline run and another system's."""
    compared = [s for s in systems if s != BASELINE]
    rows = [("WER", wer, "wer", "words")] + ([("CER", cer, "cer", "characters")] if cer else [])
    gaps = {
        label: gaps_to_baseline(
            records,
            compared,
            sorted({r["seed"] for r in records}),
            noisy_in(test_set),
            rate,
            weight,
        )
        for label, records, rate, weight in rows
    }
    if not any(gaps["WER"].values()):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, len(rows), figsize=(5.5 * len(rows), 0.5 * len(compared) + 1.5), squeeze=False
    )
    markers = "osD^v<>"
    for axis, (label, *_) in zip(axes[0], rows, strict=True):
        for position, system in enumerate(compared):
            points = {seed: 100 * gap for seed, gap in gaps[label][system].items()}
            for seed, gap in points.items():
                axis.plot(gap, position, markers[seed % len(markers)], color="C0", alpha=0.8)
            if points:
                mean = statistics.fmean(points.values())
                axis.plot([mean, mean], [position - 0.3, position + 0.3], color="black")
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_yticks(range(len(compared)), compared)
        axis.invert_yaxis()
        axis.set_xlabel(f"{label} minus {BASELINE}'s, same seed (points; left is better)")
        axis.set_title(f"{label}, {test_set}, noisy conditions")
        axis.grid(axis="x", alpha=0.3)
    seeds_drawn = sorted({seed for points in gaps["WER"].values() for seed in points})
    handles = [
        plt.Line2D([], [], linestyle="", marker=markers[s % len(markers)], color="C0")
        for s in seeds_drawn
    ]
    axes[0][-1].legend(handles, [f"seed {s}" for s in seeds_drawn], fontsize=8)
    figure.tight_layout()
    name = "seed_gaps.png"
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def plot_conflicts(systems: Sequence[str], runs: list[dict[str, Any]], out_dir: Path) -> str | None:
    """Share of conflicting front-end tensors and the whole-front-end cosine over training,
    a line per system: the mean over its seeds at each monitored step, then a moving
    average over a tenth of training. Every system is smoothed over the same span of
    steps; one monitored on fewer steps (``sum``, every ``monitor_every``-th step, where
    the others are monitored on every step) averages fewer points and looks noisier,
    which its label says."""
    traced = [run for run in runs if "conflict" in run and run["conflict"]["trace"]]
    if not traced:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    last_step = max(run["conflict"]["trace"][-1][0] for run in traced)
    span = max(1, round(last_step / 10))
    styles = line_styles(systems)
    for system in systems:
        mine = select(traced, system=system)
        if not mine:
            continue
        steps, share, cosine = _mean_over_seeds([run["conflict"]["trace"] for run in mine])
        interval = steps[1] - steps[0] if len(steps) > 1 else 1.0
        window = max(1, round(span / interval))
        label = f"{system} ({len(mine)} seed{'s' if len(mine) > 1 else ''}"
        label += f", every {interval:g} steps)" if interval > 1 else ")"
        left.plot(steps[window - 1 :], _rolling(share, window), label=label, **styles[system])
        right.plot(steps[window - 1 :], _rolling(cosine, window), label=label, **styles[system])
    left.set_title("share of front-end tensors in conflict")
    right.set_title("cosine(g_ASR, g_SE), whole front end")
    for axis in (left, right):
        axis.set_xlabel(f"step (moving average over {span:g} steps)")
        axis.grid(alpha=0.3)
    right.axhline(0.0, color="black", linewidth=0.8)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    name = "conflict_over_training.png"
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def _mean_over_seeds(
    traces: Sequence[Sequence[Sequence[float]]],
) -> tuple[list[float], list[float], list[float]]:
    """Steps, conflict share and cosine, each the mean over the traces (``[step, share,
    cosine]`` rows) that monitored that step."""
    by_step: dict[float, list[Sequence[float]]] = {}
    for trace in traces:
        for row in trace:
            by_step.setdefault(row[0], []).append(row)
    steps = sorted(by_step)
    share = [statistics.fmean(row[1] for row in by_step[step]) for step in steps]
    cosine = [statistics.fmean(row[2] for row in by_step[step]) for step in steps]
    return steps, share, cosine


def _rolling(values: Sequence[float], window: int) -> list[float]:
    return [
        statistics.fmean(values[i - window + 1 : i + 1]) for i in range(window - 1, len(values))
    ]
