"""The whole flagship pipeline on the tiny corpus: train, resume, evaluate, compare."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from examples.asr_se import provenance
from examples.asr_se.compare import collect, run_grid
from examples.asr_se.config import get_preset
from examples.asr_se.corpus import CorpusError
from examples.asr_se.rates import select
from examples.asr_se.report import write_report
from examples.asr_se.train import CheckpointError, Trainer

TINY = get_preset("tiny")


def trainer(manifest: Path, run_dir: Path, system: str = "gr", steps: int = 2) -> Trainer:
    preset = replace(TINY, train=replace(TINY.train, steps=steps))
    return Trainer(preset, system, 0, manifest, run_dir, progress=False)


def test_grid_trains_scores_and_reports_every_system(tiny_manifest, tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "report" / "results" / "runs"
    run_grid(TINY, TINY.systems, TINY.seeds, runs, tiny_manifest, records, progress=False)
    results = collect(TINY.systems, TINY.seeds, records, tiny_manifest)
    assert {r["system"] for r in results["wer"]} == set(TINY.systems)
    for record in results["wer"]:
        assert set(record) == {"system", "seed", "test_set", "noise", "snr", "wer", "words"}
        assert record["words"] > 0 and record["wer"] >= 0
    assert {r["test_set"] for r in results["wer"]} == {
        "real_seen_text",
        "real_unseen_text",
        "synthetic",
    }
    assert {r["system"] for r in results["se"]} == set(TINY.systems) - {"noisy_asr"}
    final_se = {run["system"]: run["final_loss_se"] for run in results["runs"]}
    assert final_se.pop("noisy_asr") is None and all(v > 0 for v in final_se.values())
    report = write_report(
        TINY, TINY.systems, TINY.seeds, results, tmp_path / "report", command="test"
    )
    summary = json.loads((tmp_path / "report" / "results" / "summary.json").read_text())
    assert summary == results["wer"]
    cer = json.loads((tmp_path / "report" / "results" / "cer.json").read_text())
    assert len(cer) == len(summary) and cer == results["cer"]
    condition = ("system", "seed", "test_set", "noise", "snr")
    for characters, words in zip(cer, summary, strict=True):
        assert [characters[k] for k in condition] == [words[k] for k in condition]
        assert characters["characters"] >= words["words"] and characters["cer"] >= 0
    run_dir = runs / "tiny" / "gr" / "seed0"
    scored = json.loads((run_dir / "evaluation.json").read_text())["wer"]
    decoded = [json.loads(line) for line in (run_dir / "hypotheses.jsonl").read_text().splitlines()]
    assert len(decoded) == sum(r["utterances"] for r in scored)
    by_voice = select(results["voices"], system="gr", seed=0)
    assert sum(r["utterances"] for r in by_voice) == len(decoded)
    assert {r["engine"] for r in by_voice} >= {"human"}
    voices = json.loads((tmp_path / "report" / "results" / "voices.json").read_text())
    assert voices == results["voices"]
    assert [d["id"] for d in decoded] == sorted({d["id"] for d in decoded})
    text = report.read_text()
    grid = len(TINY.systems) * len(TINY.seeds)
    assert f"Finished runs of the preset's grid: {grid} of {grid} (" in text
    for system in TINY.systems:
        assert f"| {system} |" in text
    assert "## Error rate by voice" in text and "| human clean | human noisy |" in text
    commit = (provenance.PROCESS_CODE["commit"] or "unknown")[:12]
    assert f"| gr | 0 | step 0: {commit}" in text  # the Code section, from the sittings
    levels = [len(line) - len(line.lstrip("#")) for line in text.splitlines() if line[:1] == "#"]
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels  # docs build needs it
    assert (tmp_path / "report" / "results" / "wer_vs_snr.png").stat().st_size > 0
    joint_log = (runs / "tiny" / "gr" / "seed0" / "conflicts.csv").read_text().splitlines()
    assert joint_log[0].startswith("step,group,conflict") and len(joint_log) == 1 + TINY.train.steps
    # a second grid run keeps the finished runs
    before = (runs / "tiny" / "gr" / "seed0" / "evaluation.json").stat().st_mtime_ns
    run_grid(TINY, ("gr",), TINY.seeds, runs, tiny_manifest, records, progress=False)
    assert (runs / "tiny" / "gr" / "seed0" / "evaluation.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("system", ["gr", "gradnorm", "frozen_se"])
def test_resume_takes_the_same_steps_as_an_uninterrupted_run(
    tiny_manifest, tmp_path, system, monkeypatch
):
    steps = 3
    straight = trainer(tiny_manifest, tmp_path / "straight", system, steps)
    straight.train()
    expected = torch.load(straight.final_path, weights_only=False)["model"]

    interrupted = trainer(tiny_manifest, tmp_path / "interrupted", system, steps)
    original_step = Trainer._step
    calls = {"n": 0}

    def failing_step(self, batch, stage):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original_step(self, batch, stage)

    monkeypatch.setattr(Trainer, "_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    monkeypatch.setattr(Trainer, "_step", original_step)
    assert not interrupted.final_path.exists()
    resumed = trainer(tiny_manifest, tmp_path / "interrupted", system, steps)
    resumed_from = torch.load(interrupted.checkpoint_path, weights_only=False)["position"]["step"]
    resumed.train(resume=True)
    actual = torch.load(resumed.final_path, weights_only=False)["model"]
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    log = (tmp_path / "interrupted" / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == [str(s) for s in range(resumed.total_steps)]
    sittings = (tmp_path / "interrupted" / "sittings.jsonl").read_text().splitlines()
    starts = [json.loads(line) for line in sittings]
    assert [start["step"] for start in starts] == [0, resumed_from]
    assert all(start["commit"] == provenance.PROCESS_CODE["commit"] for start in starts)


def test_a_fresh_start_after_a_sitting_without_checkpoint_logs_each_step_once(
    tiny_manifest, tmp_path
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a sitting stopped before its first checkpoint: rows for steps 0 and 1, no checkpoint
    abandoned = "step,epoch,stage\n0,0,joint\n1,0,joint\n"
    (run_dir / "train_log.csv").write_text(abandoned)
    run = trainer(tiny_manifest, run_dir, steps=3)
    run.train()
    with (run_dir / "train_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert all(row["seconds"] for row in rows)  # the new run's rows, not the stub's


def test_fresh_start_over_a_checkpoint_is_refused(tiny_manifest, tmp_path):
    trainer(tiny_manifest, tmp_path, steps=1).train()
    with pytest.raises(FileExistsError, match="--resume"):
        trainer(tiny_manifest, tmp_path, steps=1).train()


def test_corrupt_or_missing_checkpoint_is_a_clear_error_and_loses_nothing(tiny_manifest, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        trainer(tiny_manifest, tmp_path / "none").train(resume=True)
    run = trainer(tiny_manifest, tmp_path / "run", steps=1)
    run.train()
    log = (tmp_path / "run" / "train_log.csv").read_bytes()
    run.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer(tiny_manifest, tmp_path / "run", steps=2).train(resume=True)
    assert (tmp_path / "run" / "train_log.csv").read_bytes() == log
    assert run.final_path.exists()


def test_checkpoint_of_another_run_is_refused(tiny_manifest, tmp_path):
    trainer(tiny_manifest, tmp_path, "gr", steps=1).train()
    with pytest.raises(CheckpointError, match="another run"):
        trainer(tiny_manifest, tmp_path, "pcgrad", steps=1).train(resume=True)


def test_unknown_resolver_fails_before_any_work(tiny_manifest, tmp_path):
    with pytest.raises(ValueError, match="unknown system 'grr'"):
        run_grid(TINY, ("sum", "grr"), (0,), tmp_path, tiny_manifest, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_manifest_with_a_missing_file_is_named(tiny_root, tmp_path):
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(tiny_root, copy)
    victim = next((copy / "noisy" / "train").iterdir())
    victim.unlink()
    with pytest.raises(CorpusError, match=victim.name):
        trainer(copy / "manifest.jsonl", tmp_path / "run")


def test_speed_benchmark_reports_both_ratios(tiny_manifest):
    from examples.asr_se.speed import measure

    result = measure("tiny", steps=1, warmup=0, threads=1, manifest=tiny_manifest)
    assert set(result["median_step_seconds"]) == {"sum", "gr"}
    assert result["ratio_gr_to_sum"] > 0
    assert 0 < result["resolver_share_of_gr_step"] < 1


def test_grid_refuses_a_finished_run_of_other_settings(tiny_manifest, tmp_path):
    records = tmp_path / "records"
    run_grid(TINY, ("sum",), (0,), tmp_path, tiny_manifest, records, progress=False)
    longer = replace(TINY, train=replace(TINY.train, steps=3))
    with pytest.raises(ValueError, match="records/sum/seed0 holds a run with other settings"):
        run_grid(longer, ("sum",), (0,), tmp_path, tiny_manifest, records, progress=False)
    with pytest.raises(ValueError, match="tiny/sum/seed0 holds a run with other settings"):
        run_grid(longer, ("sum",), (0,), tmp_path, tiny_manifest, tmp_path / "new", progress=False)


def test_a_preset_with_more_systems_or_seeds_keeps_its_finished_runs(tiny_manifest, tmp_path):
    records = tmp_path / "records"
    run_grid(TINY, ("sum",), (0,), tmp_path, tiny_manifest, records, progress=False)
    evaluation = records / "sum" / "seed0" / "evaluation.json"
    before = evaluation.stat().st_mtime_ns
    grown = replace(TINY, systems=(*TINY.systems, "pcgrad"), seeds=(0, 1))
    run_grid(grown, ("sum",), (0,), tmp_path, tiny_manifest, records, progress=False)
    assert evaluation.stat().st_mtime_ns == before


def test_a_recorded_run_is_kept_without_its_run_folder(tiny_manifest, tmp_path, monkeypatch):
    """A fresh clone has the committed records but no run folders: nothing is retrained,
    and the report is the same."""
    import shutil

    records = tmp_path / "records"
    run_grid(TINY, ("sum",), (0,), tmp_path / "runs", tiny_manifest, records, progress=False)
    before = collect(("sum",), (0,), records)
    shutil.rmtree(tmp_path / "runs")

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr(Trainer, "train", no_training)
    run_grid(TINY, ("sum",), (0,), tmp_path / "runs", tiny_manifest, records, progress=False)
    assert collect(("sum",), (0,), records) == before
    assert not (tmp_path / "runs").exists()


def test_a_scored_run_folder_is_recorded_without_scoring_it_again(
    tiny_manifest, tmp_path, monkeypatch
):
    import gzip

    import examples.asr_se.compare as compare_module
    from examples.asr_se.records import COMPRESSED, RECORD_FILES, recorded_name

    runs = tmp_path / "runs"
    run_grid(TINY, ("gr",), (0,), runs, tiny_manifest, tmp_path / "first", progress=False)

    def no_scoring(*args, **kwargs):
        raise AssertionError("a scored run was scored again")

    monkeypatch.setattr(compare_module, "evaluate_run", no_scoring)
    records = tmp_path / "records"
    run_grid(TINY, ("gr",), (0,), runs, tiny_manifest, records, progress=False)
    for name in RECORD_FILES:
        copied = (records / "gr" / "seed0" / recorded_name(name)).read_bytes()
        if name in COMPRESSED:
            copied = gzip.decompress(copied)
        assert copied == (runs / "tiny" / "gr" / "seed0" / name).read_bytes(), name


def test_runs_recorded_with_their_grid_fields_still_match():
    from examples.asr_se.train import run_identity, same_run

    identity = run_identity(TINY, "sum", 0)
    assert "systems" not in identity["preset"] and "seeds" not in identity["preset"]
    recorded = {"preset": TINY.to_dict(), "system": "sum", "seed": 0}  # the older form
    assert same_run(recorded, identity)
    assert not same_run({**recorded, "seed": 1}, identity)
    assert not same_run(None, identity)


def test_runs_recorded_before_a_setting_was_added_match_only_at_its_default():
    from examples.asr_se.augment import AugmentConfig
    from examples.asr_se.train import run_identity, same_run

    plain = replace(TINY, model=replace(TINY.model, augment=AugmentConfig()))
    recorded = json.loads(json.dumps(run_identity(plain, "sum", 0)))
    del recorded["preset"]["model"]["augment"]  # written before the setting existed
    assert same_run(recorded, run_identity(plain, "sum", 0))
    assert not same_run(recorded, run_identity(TINY, "sum", 0))  # TINY augments


def test_scoring_a_run_under_other_settings_is_refused(tiny_manifest, tmp_path):
    from examples.asr_se.evaluate import evaluate_run

    run = trainer(tiny_manifest, tmp_path, "sum", steps=1)
    run.train()
    other = replace(TINY, train=replace(TINY.train, steps=1, lr=5e-4))
    with pytest.raises(CheckpointError, match="not trained as system 'sum'"):
        evaluate_run(other, "sum", tmp_path, tiny_manifest, progress=False)
    with pytest.raises(CheckpointError, match="not trained as system 'gr'"):
        evaluate_run(
            replace(TINY, train=replace(TINY.train, steps=1)),
            "gr",
            tmp_path,
            tiny_manifest,
            progress=False,
        )
    assert not (tmp_path / "evaluation.json").exists()


def test_a_resolver_variant_trains_with_its_own_options(tiny_manifest, tmp_path):
    variant = trainer(tiny_manifest, tmp_path / "variant", "gr:k=20,granularity=global", steps=1)
    assert variant.granularity == "global" and variant.resolver.k == 20.0
    assert variant.monitor is not None and variant.monitor.k == 20.0
    variant.train()
    assert variant.final_path.exists()


def test_sittings_name_the_commit_or_none_outside_a_repository(tmp_path, monkeypatch):
    version = provenance.code_version()
    assert version["commit"] is None or len(version["commit"]) == 40
    monkeypatch.setattr(provenance, "_REPOSITORY", tmp_path)  # no git repository here
    assert provenance.code_version() == {"commit": None, "dirty": None}
    line = provenance.record_sitting(tmp_path, 7)
    assert json.loads((tmp_path / "sittings.jsonl").read_text()) == line
    assert line["step"] == 7 and "torch" in line["machine"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_results_written_by_runs_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    def git(*arguments: str) -> None:
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)

    results = tmp_path / "examples" / "asr_se" / "results"
    results.mkdir(parents=True)
    (results / "summary.json").write_text("[]\n")
    report = tmp_path / "examples" / "asr_se" / "RESULTS.md"  # where compare writes it
    report.write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "library.py").write_text("y = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(provenance, "_REPOSITORY", tmp_path)
    version_before = provenance.code_version()
    assert version_before["dirty"] is False
    report.write_text("new\n")
    (results / "summary.json").write_text("[{}]\n")
    assert provenance.code_version()["dirty"] is False
    assert provenance.last_clean_change(["code.py"]) == version_before["commit"]
    (tmp_path / "code.py").write_text("x = 2\n")
    version = provenance.code_version()
    assert version["dirty"] is True and version["commit"] == version_before["commit"]
    assert provenance.last_clean_change(["code.py"]) is None
    assert provenance.last_clean_change(["library.py"]) == version_before["commit"]
