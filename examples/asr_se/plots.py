"""The report's pictures: WER against SNR per system, each system's gap to the baseline seed
by seed, and gradient conflict over training."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples.asr_se.report import (
    BASELINE,
    TEST_SETS,
    gaps_to_baseline,
    mean_std,
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
    where there are several) against SNR, a line per system; with ``cer`` records, a second
    row of the same in characters. The panels of a row share their y axis, so that test
    sets compare at a glance."""
    plt = _pyplot()
    rows = [("WER (%)", wer, "wer", "words")]
    if cer:
        rows.append(("CER (%)", cer, "cer", "characters"))
    figure, axes = plt.subplots(
        len(rows),
        len(TEST_SETS),
        figsize=(5 * len(TEST_SETS), 4 * len(rows)),
        squeeze=False,
        sharey="row",
    )
    for row, (label, records, rate, weight) in zip(axes, rows, strict=True):
        for axis, test_set in zip(row, TEST_SETS, strict=True):
            snrs = sorted(
                {r["snr"] for r in select(records, test_set=test_set) if r["snr"] is not None}
            )
            for system in systems:
                seeds = sorted({r["seed"] for r in select(records, system=system)})
                spread = [
                    mean_std(
                        seed_wers(
                            records,
                            system,
                            seeds,
                            lambda r, s=snr, t=test_set: r["test_set"] == t and r["snr"] == s,
                            rate,
                            weight,
                        )
                    )
                    for snr in snrs
                ]
                means = [100 * mean for mean, _ in spread]
                (line,) = axis.plot(snrs, means, marker="o", label=system)
                if len(seeds) > 1:
                    low = [100 * (mean - std) for mean, std in spread]
                    high = [100 * (mean + std) for mean, std in spread]
                    axis.fill_between(snrs, low, high, color=line.get_color(), alpha=0.15)
            axis.set_title(test_set)
            axis.set_xlabel("SNR (dB)")
            axis.grid(alpha=0.3)
        row[0].set_ylabel(label)
    axes[0][-1].legend()
    figure.tight_layout()
    name = "wer_vs_snr.png"
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


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
            records, compared, sorted({r["seed"] for r in records}), test_set, rate, weight
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
    """Share of conflicting front-end tensors and the whole-front-end cosine over training."""
    traced = [run for run in runs if "conflict" in run]
    if not traced:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for system in systems:
        for run in select(traced, system=system)[:1]:
            steps, share, cosine = zip(*run["conflict"]["trace"], strict=True)
            window = max(1, len(share) // 30)
            left.plot(steps[window - 1 :], _rolling(share, window), label=system)
            right.plot(steps[window - 1 :], _rolling(cosine, window), label=system)
    left.set_title("share of front-end tensors in conflict")
    right.set_title("cosine(g_ASR, g_SE), whole front end")
    for axis in (left, right):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    right.axhline(0.0, color="black", linewidth=0.8)
    left.legend()
    figure.tight_layout()
    name = "conflict_over_training.png"
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def _rolling(values: Sequence[float], window: int) -> list[float]:
    return [
        statistics.fmean(values[i - window + 1 : i + 1]) for i in range(window - 1, len(values))
    ]
