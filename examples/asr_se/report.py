"""The comparison report: ``RESULTS.md``, ``results/summary.json`` and the plots.

Every number comes from the finished runs gathered by :func:`examples.asr_se.compare.collect`;
``summary.json`` holds one record per system, seed and condition
(``system, seed, test_set, noise, snr, wer, words``) so that any table can be recomputed;
``cer.json`` the same in characters (``cer, characters`` in place of ``wer, words``);
``voices.json`` both by voice engine and condition (:mod:`examples.asr_se.voices`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.asr_se.config import Preset
from examples.asr_se.corpus.noise import noise_set
from examples.asr_se.provenance import machine
from examples.asr_se.rates import (
    BASELINE,
    TEST_SETS,
    Records,
    gaps_to_baseline,
    mean_std,
    noisy_in,
    noisy_rate,
    paired_rates,
    pooled_wer,
    seed_wers,
    select,
)


def spread(values: Sequence[float]) -> str:
    """``mean ± sd`` in percent over seeds; the mean alone (``(1 seed)``) for one value."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{percent(mean)} (1 seed)"
    return f"{percent(mean)} ± {percent(std)}"


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def relative(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "–"
    return f"{100 * (value - baseline) / baseline:+.1f}%"


# -- sections ------------------------------------------------------------------------------
def _overview(
    wer: Records,
    systems: Sequence[str],
    seeds: Sequence[int],
    rate: str = "wer",
    weight: str = "words",
) -> list[str]:
    def clean_real(r: dict[str, Any]) -> bool:
        return r["snr"] is None and r["test_set"] != "synthetic"

    unit = "word" if weight == "words" else "character"
    lines = [
        f"{rate.upper()} in percent (mean ± standard deviation over seeds), pooled over the "
        f"noisy conditions (every noise type and SNR, {unit}-weighted); `rel.` is the "
        f"relative change of the mean against the MTL baseline (`{BASELINE}`) on the same "
        "seeds (a system run on fewer seeds than the baseline is compared with the "
        "baseline's runs of those seeds): negative is better.",
        "",
        "| system | " + " | ".join(f"{t} | rel." for t in TEST_SETS) + " | clean, real voice |",
        "|" + " --- |" * (2 * len(TEST_SETS) + 2),
    ]

    def per_seed(system: str, keep: Any) -> list[float]:
        return seed_wers(wer, system, seeds, keep, rate, weight)

    for system in systems:
        cells = []
        for test_set in TEST_SETS:
            values = per_seed(system, noisy_in(test_set))
            change = paired_relative(wer, system, seeds, noisy_in(test_set), rate, weight)
            cells.append(f"{spread(values)} | {change}")
        clean = per_seed(system, clean_real)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {spread(clean)} |")
    return lines


def paired_relative(
    records: Records,
    system: str,
    seeds: Sequence[int],
    keep: Callable[[dict[str, Any]], bool],
    rate: str = "wer",
    weight: str = "words",
) -> str:
    """The relative change of ``system``'s mean rate against the baseline's, both over the
    seeds where each has records that ``keep`` accepts ("–" where none)."""
    pairs = paired_rates(records, system, seeds, keep, rate, weight).values()
    if not pairs:
        return "–"
    return relative(statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs))


def _cer_overview(cer: Records, systems: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """The overview in characters: on the real voice WER sits near 100% for every system
    (most of its prompts are one or two words), while CER still tells them apart."""
    if not cer:
        return []
    scored = sorted({(r["system"], r["seed"]) for r in cer})
    return [
        "## Character error rate",
        "",
        "The same table in characters (`results/cer.json`; spaces count as characters). "
        f"Runs with CER: {', '.join(f'{system} seed {seed}' for system, seed in scored)}.",
        "",
        *_overview(cer, systems, seeds, rate="cer", weight="characters"),
    ]


def _by_seed(
    wer: Records, systems: Sequence[str], seeds: Sequence[int], test_set: str = "synthetic"
) -> list[str]:
    """The table of each run's pooled noisy WER on ``test_set`` with its
    :func:`gaps_to_baseline` in brackets; empty when fewer than two seeds ran."""
    present = [seed for seed in seeds if any(select(wer, system=s, seed=seed) for s in systems)]
    if len(present) < 2:
        return []

    gaps = gaps_to_baseline(wer, systems, present, noisy_in(test_set))
    lines = [
        f"## Seed by seed: `{test_set}`, noisy conditions",
        "",
        f"WER in percent of each run, pooled as in the first table, and in brackets its "
        f"difference in points from the `{BASELINE}` run of the same seed (negative is "
        "better). A seed fixes the data order, and the initial weights of the systems that "
        "share a model.",
        "",
        "| system | " + " | ".join(f"seed {seed}" for seed in present) + " |",
        "|" + " --- |" * (1 + len(present)),
    ]
    for system in systems:
        cells = []
        for seed in present:
            value = noisy_rate(wer, system, seed, test_set)
            gap = gaps.get(system, {}).get(seed)
            if math.isnan(value):
                cells.append("–")
            elif gap is None:
                cells.append(percent(value))
            else:
                cells.append(f"{percent(value)} ({100 * gap:+.1f})")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines


def _by_snr(wer: Records, systems: Sequence[str], seeds: Sequence[int], test_set: str) -> list[str]:
    snrs = sorted({r["snr"] for r in select(wer, test_set=test_set) if r["snr"] is not None})[::-1]
    lines = [
        f"## WER by SNR: `{test_set}` (set A: seen noises, set B: unseen noises)",
        "",
        "| system | clean | " + " | ".join(f"A {s:g} dB | B {s:g} dB" for s in snrs) + " |",
        "|" + " --- |" * (2 + 2 * len(snrs)),
    ]
    for system in systems:
        row = [system]
        row.append(
            percent(
                mean_std(
                    seed_wers(
                        wer, system, seeds, lambda r: r["test_set"] == test_set and r["snr"] is None
                    )
                )[0]
            )
        )
        for snr in snrs:
            for group in ("A", "B"):

                def keep(r: dict[str, Any], snr: float = snr, group: str = group) -> bool:
                    return (
                        r["test_set"] == test_set
                        and r["snr"] == snr
                        and noise_set(r["noise"]) == group
                    )

                row.append(percent(mean_std(seed_wers(wer, system, seeds, keep))[0]))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _by_voice(voices: Records, systems: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """WER and CER by voice engine (:mod:`examples.asr_se.voices`): whether the recogniser
    fails on the human voice alone or on every voice unlike its training voices."""
    if not voices:
        return []
    # in the order score_by_engine gives them: the voices least like the training ones first
    present = list(dict.fromkeys(r["engine"] for r in voices))
    conditions = list(dict.fromkeys(r["condition"] for r in voices))
    first = voices[0]
    named = []
    for engine in present:
        names = sorted(
            {v.split(":", 1)[1] for r in select(voices, engine=engine) for v in r["voices"]}
        )
        count = sum(
            r["utterances"]
            for r in select(voices, engine=engine, system=first["system"], seed=first["seed"])
        )
        voice_list = ", ".join(names) if len(names) <= 3 else f"{len(names)} voices"
        named.append(f"`{engine}`: {voice_list}, {count} utterances")
    lines = [
        "## Error rate by voice",
        "",
        "Every test set split by the engine of its voice, none of them heard in training "
        f"({'; '.join(named)} per run), clean and noisy conditions (every noise and SNR "
        "pooled). "
        "WER in percent, mean ± standard deviation over seeds, and CER (mean) in brackets; "
        "recomputed from the records' decoded utterances (`results/voices.json`).",
        "",
        "| system | " + " | ".join(f"{e} {c}" for e in present for c in conditions) + " |",
        "|" + " --- |" * (1 + len(present) * len(conditions)),
    ]
    for system in systems:
        cells = []
        for engine in present:
            for condition in conditions:

                def keep(
                    r: dict[str, Any], engine: str = engine, condition: str = condition
                ) -> bool:
                    return bool(r["engine"] == engine and r["condition"] == condition)

                words = seed_wers(voices, system, seeds, keep)
                characters = seed_wers(voices, system, seeds, keep, "cer", "characters")
                cells.append(
                    f"{spread(words)} ({percent(mean_std(characters)[0])})" if words else "–"
                )
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines


_SE_WEIGHTS = {
    "si_snr_noisy": "utterances",
    "si_snr_enhanced": "utterances",
    "si_snr_gain": "utterances",
    "stoi_noisy": "stoi_utterances",
    "stoi_enhanced": "stoi_utterances",
}
"""The count of utterances each per-condition mean of an SE record is taken over."""


def with_counts(se: Records, utterances: Records) -> Records:
    """The SE records ``se``, each with its ``utterances``: its own, else the count of its
    run and condition in ``utterances`` (:func:`examples.asr_se.compare.collect`'s), else
    none (a run scored before either was recorded)."""
    keys = ("system", "seed", "test_set", "noise", "snr")
    counts = {tuple(r[k] for k in keys): r["utterances"] for r in utterances}
    completed = []
    for record in se:
        count = record.get("utterances", counts.get(tuple(record[k] for k in keys)))
        completed.append(record if count is None else {**record, "utterances": count})
    return completed


def utterance_mean(records: Records, key: str) -> tuple[float, bool]:
    """The mean of ``key`` over the utterances behind ``records`` (per-condition means,
    weighted by their :data:`_SE_WEIGHTS` count), and ``True``; where a record lacks its
    count, the plain mean over the records, and ``False``. NaN where none has ``key``."""
    scored = [r for r in records if key in r and not math.isnan(r[key])]
    if not scored:
        return math.nan, True
    weight = _SE_WEIGHTS[key]
    if not all(weight in r for r in scored):
        return statistics.fmean(r[key] for r in scored), False
    total = sum(r[weight] for r in scored)
    return sum(r[key] * r[weight] for r in scored) / total, True


def _enhancement(se: Records, systems: Sequence[str]) -> list[str]:
    rows, unweighted = [], []
    for system in systems:
        records = [r for r in select(se, system=system) if r["noise"] != "radio"]
        if not records:
            rows.append(f"| {system} | – | – | – | – | – |")
            continue
        means = {key: utterance_mean(records, key) for key in _SE_WEIGHTS}
        if not all(weighted for _, weighted in means.values()):
            unweighted.append(system)
        value = {key: mean for key, (mean, _) in means.items()}
        rows.append(
            f"| {system} | {value['si_snr_noisy']:.2f} | {value['si_snr_enhanced']:.2f} | "
            f"{value['si_snr_gain']:+.2f} | {value['stoi_noisy']:.3f} | "
            f"{value['stoi_enhanced']:.3f} |"
        )
    fallback = (
        f" Records of {', '.join(f'`{s}`' for s in unweighted)} lack utterance counts: "
        "their figures are plain means over the conditions and seeds."
        if unweighted
        else ""
    )
    return [
        "## Speech enhancement quality",
        "",
        "SI-SNR (dB) of the noisy input and of the enhanced signal (resynthesised with the "
        "noisy phase) against the clean speech, averaged over every noisy test utterance and "
        "seed; STOI (pystoi) over a fixed subset of each noisy condition (20 utterances, "
        "chosen by a hash of their ids), averaged over those utterances. The radio noise is "
        "left out: its channel shifts the carrier, so a sample-domain comparison with the "
        "clean speech says nothing (SI-SNR is around -45 dB for the noisy input at every "
        f"SNR).{fallback}",
        "",
        "| system | SI-SNR noisy | SI-SNR enhanced | gain | STOI noisy | STOI enhanced |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def _code_versions(runs: Records) -> list[str]:
    """Which commit each sitting of each run trained on (its ``sittings.jsonl``)."""
    lines = [
        "## Code",
        "",
        "The git commit each run was trained on, per sitting (a fresh start or a resume, from "
        "the step given), from the `sittings.jsonl` of its record; *dirty*: tracked files "
        "differed from the commit. Runs trained before sittings were recorded have none; a "
        "run whose first sitting starts after step 0 was begun before then; a sitting "
        "*stopped before a checkpoint* left nothing the next one could resume from.",
        "",
        "| system | seed | sittings |",
        "| --- | --- | --- |",
    ]
    for run in runs:
        sittings = run.get("sittings")
        cells = "; ".join(_sitting_cells(sittings)) if sittings else "not recorded"
        lines.append(f"| {run['system']} | {run['seed']} | {cells} |")
    return lines


def _sitting_cells(sittings: Records) -> list[str]:
    """A run's sittings as ``step N: commit``, each marked *dirty* where tracked files
    differed from the commit and *stopped before a checkpoint* where the next sitting
    starts from the same step."""
    cells = []
    for index, sitting in enumerate(sittings):
        cell = f"step {sitting['step']}: {(sitting['commit'] or 'unknown')[:12]}"
        notes = ["dirty"] if sitting["dirty"] else []
        later = sittings[index + 1 :]
        if later and later[0]["step"] == sitting["step"]:
            notes.append("stopped before a checkpoint")
        cells.append(cell + (f" ({', '.join(notes)})" if notes else ""))
    return cells


def _conflicts(runs: Records, systems: Sequence[str], monitor_every: int) -> list[str]:
    lines = [
        "## Gradient conflict between ASR and SE on the front end",
        "",
        "From the Gram matrices the resolver saw: every step, except under a loss weighting "
        "(`sum`, `mean`, `uw`, ...), whose step forms no task gradients, so that they are "
        f"formed for the monitor every {monitor_every}th step. *conflicting steps*: share of "
        "monitored steps where the whole front-end gradients conflict (cosine < 0); *tensor "
        "conflicts*: mean share of front-end tensors whose gradients conflict; *SE "
        "dominates*: mean share of tensors where ‖g_SE‖ > K ‖g_ASR‖ (K = 5, the paper's, "
        "unless the system sets its own `k`, as `gr:k=20` does); gradients are those of the "
        "weighted losses (0.7 ASR, 0.3 SE); *late*: the same over the second half of "
        "training (the steps of the runs' traces "
        "from half their last step on).",
        "",
        "| system | monitored steps | conflicting steps | tensor conflicts | tensor conflicts, "
        "late | mean cosine | mean cosine, late | median ‖g_SE‖/‖g_ASR‖ | SE dominates "
        "| median step (s) |",
        "|" + " --- |" * 10,
    ]
    for system in systems:
        chosen = select(runs, system=system)
        conflicts = [run["conflict"] for run in chosen if "conflict" in run]
        steps = [run["median_step_seconds"] for run in chosen if run["median_step_seconds"]]
        step_cell = f"{statistics.fmean(steps):.2f}" if steps else "–"
        if not conflicts:
            lines.append(f"| {system} |" + " – |" * 8 + f" {step_cell} |")
            continue

        def mean_of(key: str, conflicts: Records = conflicts) -> float:
            return statistics.fmean(c[key] for c in conflicts)

        lines.append(
            f"| {system} | {sum(c['monitored_steps'] for c in conflicts)} "
            f"| {100 * mean_of('conflicting_steps'):.1f}% "
            f"| {100 * mean_of('mean_conflict_share'):.1f}% "
            f"| {100 * late_mean(conflicts, 1):.1f}% | {mean_of('mean_cosine'):+.3f} "
            f"| {late_mean(conflicts, 2):+.3f} "
            f"| {mean_of('median_norm_ratio'):.2f} | {100 * mean_of('mean_dominance_share'):.1f}% "
            f"| {step_cell} |"
        )
    return lines


def late_mean(conflicts: Records, column: int) -> float:
    """The mean over runs of ``column`` of each run's conflict trace (rows ``[step,
    tensor conflict share, cosine]``) over its second half: the rows from half the
    trace's last step on."""
    means = []
    for conflict in conflicts:
        trace = conflict["trace"]
        half = trace[-1][0] / 2
        means.append(statistics.fmean(row[column] for row in trace if row[0] >= half))
    return statistics.fmean(means)


def _examples(runs: Records, systems: Sequence[str]) -> list[str]:
    lines = ["## Decoded examples (clean condition, first seed of each system)", ""]
    for system in systems:
        chosen = select(runs, system=system)
        if not chosen:
            continue
        lines += [f"**{system}**", ""]
        for example in chosen[0]["examples"][:6]:
            lines.append(
                f"- `{example['test_set']}` ref: *{example['reference']}* — "
                f"hyp: *{example['hypothesis'] or '(empty)'}*"
            )
        lines.append("")
    return lines


def finished_runs(preset: Preset, runs: Records) -> str:
    """The report's count of finished runs: those of the preset's grid (systems x seeds)
    against its size, then any run beside it (a variant such as ``gr:k=20``, a seed
    outside the preset's)."""

    def named(chosen: Records) -> str:
        return ", ".join(f"{run['system']} seed {run['seed']}" for run in chosen)

    def of_grid(run: dict[str, Any]) -> bool:
        return run["system"] in preset.systems and run["seed"] in preset.seeds

    in_grid = [run for run in runs if of_grid(run)]
    beside = [run for run in runs if not of_grid(run)]
    text = (
        f"Finished runs of the preset's grid: {len(in_grid)} of "
        f"{len(preset.systems) * len(preset.seeds)} ({named(in_grid)})"
    )
    return text + (f"; beside the grid: {named(beside)}" if beside else "")


def write_report(
    preset: Preset,
    systems: Sequence[str],
    seeds: Sequence[int],
    results: dict[str, Any],
    out_dir: Path,
    *,
    command: str,
    grid_seconds: float | None = None,
) -> Path:
    """Write ``RESULTS.md`` and ``results/`` (summary.json, SE, runs, plots) under ``out_dir``."""
    results_dir = out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "summary.json").write_text(json.dumps(results["wer"], indent=1))
    (results_dir / "cer.json").write_text(json.dumps(results.get("cer", []), indent=1))
    (results_dir / "se_quality.json").write_text(json.dumps(results["se"], indent=1))
    (results_dir / "voices.json").write_text(json.dumps(results.get("voices", []), indent=1))
    public_runs = [{k: v for k, v in run.items() if k != "examples"} for run in results["runs"]]
    (results_dir / "runs.json").write_text(json.dumps(public_runs, indent=1))
    present = [s for s in systems if select(results["wer"], system=s)]
    from examples.asr_se.plots import plot_conflicts, plot_seed_gaps, plot_wer_vs_snr

    plots = [plot_wer_vs_snr(present, results["wer"], results_dir, results.get("cer"))]
    seed_gaps = plot_seed_gaps(present, results["wer"], results_dir, results.get("cer"))
    if seed_gaps:
        plots.append(seed_gaps)
    conflict_plot = plot_conflicts(present, results["runs"], results_dir)
    if conflict_plot:
        plots.append(conflict_plot)

    train_hours = sum(run["train_seconds"] for run in results["runs"]) / 3600
    sitting = (
        f"; this sitting took {grid_seconds / 3600:.2f} h of wall time" if grid_seconds else ""
    )
    per_condition = preset.train.test_per_condition
    test_scope = (
        "the whole test split"
        if per_condition is None
        else f"at most {per_condition} test utterances per condition (test set, noise, SNR), "
        "the same ones for every system and seed (the lowest CRC-32 of their ids)"
    )
    finished = finished_runs(preset, results["runs"])
    lines = [
        f"# Results: preset `{preset.name}`",
        "",
        "Produced by",
        "",
        f"    {command}",
        "",
        f"on {machine()}. Systems: {', '.join(present)}; seeds: {', '.join(map(str, seeds))}. "
        f"{finished}. "
        f"Training time summed over the finished runs: {train_hours:.2f} h{sitting}. "
        f"Evaluated on {test_scope}.",
        "",
        *_overview(results["wer"], present, seeds),
        "",
        *_cer_overview(results.get("cer", []), present, seeds),
    ]
    by_seed = _by_seed(results["wer"], present, seeds)
    lines += ["", *by_seed] if by_seed else []
    for test_set in TEST_SETS:
        lines += ["", *_by_snr(results["wer"], present, seeds, test_set)]
    by_voice = _by_voice(results.get("voices", []), present, seeds)
    lines += ["", *by_voice] if by_voice else []
    se = with_counts(results["se"], results.get("utterances", []))
    lines += ["", *_enhancement(se, present)]
    lines += ["", *_conflicts(results["runs"], present, preset.train.monitor_every)]
    lines += ["", *_code_versions(results["runs"])]
    lines += ["", "## Plots", "", *_plot_lines(plots), ""]
    lines += _examples(results["runs"], present)
    lines += ["## Configuration", "", "```json", preset.to_json(), "```", ""]
    path = out_dir / "RESULTS.md"
    path.write_text("\n".join(lines))
    return path


_PLOT_CAPTIONS = {
    "wer_vs_snr.png": "WER against SNR per test set (mean over seeds, a band of one standard "
    f"deviation); below, each system's WER minus `{BASELINE}`'s of the same seeds; last, CER.",
    "seed_gaps.png": f"Each run's noisy WER and CER on the synthetic voices minus the `{BASELINE}` "
    "run of the same seed: a dot per seed, a bar at the mean.",
    "conflict_over_training.png": "Conflict between the ASR and SE gradients on the front end "
    "over training: mean over each system's seeds, moving average over a tenth of training.",
}
"""What each plot of the report shows, written under it."""


def _plot_lines(plots: Sequence[str]) -> list[str]:
    lines = []
    for name in plots:
        lines += [f"![{name}](results/{name})", "", _PLOT_CAPTIONS.get(name, ""), ""]
    return lines[:-1]


def print_table(results: dict[str, Any], systems: Sequence[str]) -> None:
    """A short WER table on the terminal: per test set, pooled over noisy conditions and seeds."""
    wer = results["wer"]
    print(f"\n{'system':<12}" + "".join(f"{t:>18}" for t in TEST_SETS) + f"{'clean (real)':>14}")
    for system in systems:
        records = select(wer, system=system)
        if not records:
            continue
        noisy = [r for r in records if r["snr"] is not None]
        cells = "".join(f"{percent(pooled_wer(select(noisy, test_set=t))):>18}" for t in TEST_SETS)
        clean = pooled_wer(
            [r for r in records if r["snr"] is None and r["test_set"] != "synthetic"]
        )
        print(f"{system:<12}{cells}{percent(clean):>14}")
    print("(WER in %, pooled over the noisy conditions and the seeds)")
    snrs = sorted({r["snr"] for r in wer if r["snr"] is not None}, reverse=True)
    print(
        f"\nreal human voice, WER (%) by SNR\n{'system':<12}{'clean':>8}"
        + "".join(f"{s:>8g}" for s in snrs)
    )
    for system in systems:
        real = [r for r in select(wer, system=system) if r["test_set"] != "synthetic"]
        if real:
            by_snr = [pooled_wer([r for r in real if r["snr"] == snr]) for snr in [None, *snrs]]
            print(f"{system:<12}" + "".join(f"{percent(c):>8}" for c in by_snr))
