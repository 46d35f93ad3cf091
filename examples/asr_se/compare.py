"""The comparison grid (systems x seeds), and the gathering of its finished runs.

The grid is resumable: a recorded run (see :mod:`examples.asr_se.records`) is kept and
skipped, a scored run folder is recorded, a run with a checkpoint resumes from it, so the
grid can be completed across several sittings, on fresh clones too once its records are
committed.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples.asr_se.config import Preset
from examples.asr_se.evaluate import evaluate_run
from examples.asr_se.provenance import SITTINGS_FILE
from examples.asr_se.records import is_recorded, record_dir_for, record_run
from examples.asr_se.systems import get_system
from examples.asr_se.train import SettingsError, Trainer, run_dir_for, run_identity, same_run
from examples.asr_se.voices import read_hypotheses, read_test_split, score_by_engine


def run_grid(
    preset: Preset,
    systems: Sequence[str],
    seeds: Sequence[int],
    runs_root: Path,
    manifest: Path,
    records_root: Path,
    *,
    progress: bool = True,
) -> None:
    """Train, evaluate and record every (system, seed) not recorded under
    ``records_root`` yet; resume interrupted ones.

    Seed by seed: a grid stopped part-way has every system on the first seeds, so the
    report of an unfinished grid still compares all of them.
    """
    for system in systems:
        get_system(system)  # fail before any work on an unknown name
    for seed in seeds:
        for system in systems:
            identity = run_identity(preset, system, seed)
            record_dir = record_dir_for(records_root, system, seed)
            run_dir = run_dir_for(runs_root, preset.name, system, seed)
            _check_settings(record_dir, identity)
            _check_settings(run_dir, identity)
            if is_recorded(record_dir):
                print(f"[compare] {system} seed {seed}: recorded, kept")
                continue
            if not (run_dir / "evaluation.json").exists():
                if not (run_dir / "final.pt").exists():
                    trainer = Trainer(preset, system, seed, manifest, run_dir, progress=progress)
                    resume = trainer.checkpoint_path.exists()
                    state = "resuming" if resume else "training"
                    print(f"[compare] {system} seed {seed}: {state}")
                    trainer.train(resume=resume)
                evaluate_run(preset, system, run_dir, manifest, progress=progress)
            record_run(run_dir, record_dir)
            print(f"[compare] {system} seed {seed}: recorded in {record_dir}")


def report_scope(
    preset: Preset,
    systems: Sequence[str],
    seeds: Sequence[int],
    recorded: Sequence[tuple[str, int]] = (),
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The systems and seeds a report covers: the preset's grid, then the systems and seeds
    of the ``recorded`` runs (:func:`examples.asr_se.records.recorded_runs`), then any
    others asked for.

    ``compare --systems gr:k=20 --seeds 0`` trains that one run; its report still holds
    every recorded run, of the grid and beside it, so a run added beside the grid never
    replaces the report with a smaller one, and ``--report-only`` alone rewrites it whole.
    """
    return (
        tuple(dict.fromkeys((*preset.systems, *(s for s, _ in recorded), *systems))),
        tuple(sorted({*preset.seeds, *(seed for _, seed in recorded), *seeds})),
    )


def _made_otherwise(folder: Path, identity: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a ``config.json`` of a run other than ``identity``'s.

    Raises:
        SettingsError: a ``config.json`` that is not JSON (cut short, edited by hand).
    """
    path = folder / "config.json"
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text())
    except ValueError as error:
        raise SettingsError(f"{path} is damaged ({error}); move its folder away") from None
    return not same_run(stored, identity)


def _check_settings(folder: Path, identity: dict[str, Any]) -> None:
    """Refuse to keep or resume a run folder or record made with other settings.

    Raises:
        SettingsError: its ``config.json`` names another run.
    """
    if _made_otherwise(folder, identity):
        raise SettingsError(
            f"{folder} holds a run with other settings than the preset's now (see its "
            "config.json); move it away, or pass --runs or --out with another folder"
        )


def check_records(preset: Preset, runs: Sequence[tuple[str, int]], records_root: Path) -> None:
    """Refuse to report, or train beside, records made with settings other than
    ``preset``'s now: every ``(system, seed)`` of ``runs`` recorded under ``records_root``
    must match its :func:`examples.asr_se.train.run_identity`.

    Raises:
        SettingsError: naming every record that does not.
    """
    foreign = [
        f"{system} seed {seed}"
        for system, seed in runs
        if _made_otherwise(
            record_dir_for(records_root, system, seed), run_identity(preset, system, seed)
        )
    ]
    if foreign:
        raise SettingsError(
            f"{records_root} holds records made with other settings than preset "
            f"{preset.name!r} now ({', '.join(foreign)}; see their config.json); move them "
            "away, or pass --out with another folder"
        )


def collect(
    systems: Sequence[str],
    seeds: Sequence[int],
    records_root: Path,
    manifest: Path | None = None,
) -> dict[str, Any]:
    """Gather the recorded runs' numbers: WER and CER records, SE records, timings,
    conflicts. Runs scored before CER was recorded contribute no CER records.

    ``utterances`` holds the number of test utterances scored in each condition (system,
    seed, test set, noise, SNR), from the WER records: what the SE records of runs scored
    before they held their own count are averages over (every utterance of a noisy
    condition is scored for both).

    With the corpus ``manifest``, also the error rates by voice engine
    (:func:`examples.asr_se.voices.score_by_engine`, key ``voices``), recomputed from each
    record's decoded utterances; without it, ``voices`` is empty.
    """
    test_split = read_test_split(manifest) if manifest is not None else None
    voices: list[dict[str, Any]] = []
    wer: list[dict[str, Any]] = []
    cer: list[dict[str, Any]] = []
    se: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    utterances: list[dict[str, Any]] = []
    for system in systems:
        for seed in seeds:
            record_dir = record_dir_for(records_root, system, seed)
            if not is_recorded(record_dir):
                continue
            evaluation = json.loads((record_dir / "evaluation.json").read_text())
            for record in evaluation["wer"]:
                condition = {"system": system, "seed": seed, **_condition(record)}
                wer.append({**condition, "wer": record["wer"], "words": record["words"]})
                if "cer" in record:
                    cer.append(
                        {**condition, "cer": record["cer"], "characters": record["characters"]}
                    )
            se.extend({"system": system, "seed": seed, **record} for record in evaluation["se"])
            utterances.extend(
                {"system": system, "seed": seed, **_condition(record), "utterances": count}
                for record in evaluation["wer"]
                if (count := record.get("utterances")) is not None
            )
            if test_split is not None:
                by_engine = score_by_engine(read_hypotheses(record_dir), test_split)
                voices.extend({"system": system, "seed": seed, **record} for record in by_engine)
            runs.append(
                {
                    "system": system,
                    "seed": seed,
                    **_run_statistics(record_dir),
                    "examples": evaluation["examples"],
                }
            )
    return {
        "wer": wer,
        "cer": cer,
        "se": se,
        "runs": runs,
        "voices": voices,
        "utterances": utterances,
    }


def _condition(record: dict[str, Any]) -> dict[str, Any]:
    """The condition (test set, noise, SNR) of a WER record."""
    return {key: record[key] for key in ("test_set", "noise", "snr")}


def _run_statistics(record_dir: Path) -> dict[str, Any]:
    with (record_dir / "train_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # the last row of each step: before a fix, a fresh start after a sitting stopped short
    # of its first checkpoint appended to that sitting's rows instead of replacing them
    steps = list({row["step"]: row for row in rows}.values())
    seconds = sum(float(row["seconds"]) for row in steps)
    joint = [float(row["seconds"]) for row in steps if row["stage"] == "joint"]
    statistics_: dict[str, Any] = {
        "train_seconds": seconds,
        "steps": len(steps),
        "median_step_seconds": statistics.median(joint) if joint else None,
        "final_loss_asr": _tail_mean([float(row["loss_asr"]) for row in steps]),
        # no SE loss without a front end (logged as nan)
        "final_loss_se": _tail_mean(
            [float(row["loss_se"]) for row in steps if math.isfinite(float(row["loss_se"]))]
        ),
        "skipped_steps": sum(int(row["skipped"]) for row in steps),
    }
    sittings_path = record_dir / SITTINGS_FILE  # absent for runs trained before it existed
    if sittings_path.exists():
        statistics_["sittings"] = [
            {key: sitting[key] for key in ("started", "step", "commit", "dirty")}
            for sitting in map(json.loads, sittings_path.read_text().splitlines())
        ]
    conflicts_path = record_dir / "conflicts.json"  # gradsurgery.ConflictMonitor.summary()
    if conflicts_path.exists():
        summary = json.loads(conflicts_path.read_text())
        trace = summary["trace"]
        statistics_["conflict"] = {
            "monitored_steps": summary["steps"],
            "conflicting_steps": summary["conflict_share"],
            "mean_cosine": summary["mean_cosine"]["asr_se"],
            # the monitor's ratio is ||g_asr|| / ||g_se||: the inverse of its median is the
            # median of the inverse up to the interpolation between the two middle steps
            "median_norm_ratio": 1.0 / summary["norm_ratio_quantiles"]["asr_se"]["q50"],
            "mean_conflict_share": summary["mean_conflict_blocks"],
            "mean_dominance_share": summary["mean_dominance_blocks"],
            "trace": list(
                zip(trace["step"], trace["conflict_blocks"], trace["cos_asr_se"], strict=True)
            ),
        }
    return statistics_


def _tail_mean(values: list[float], fraction: float = 0.1) -> float | None:
    tail = values[-max(1, int(len(values) * fraction)) :] if values else []
    return statistics.fmean(tail) if tail else None
