"""Run records: what a grid keeps of each scored run, and when a record counts as complete."""

from __future__ import annotations

import gzip

import pytest

from examples.asr_se.records import (
    RECORD_FILES,
    is_recorded,
    record_dir_for,
    record_run,
    recorded_name,
)


def scored_run(folder, names=RECORD_FILES):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(f"contents of {name}")
    return folder


def test_a_record_copies_every_record_file(tmp_path):
    run = scored_run(tmp_path / "run")
    (run / "final.pt").write_bytes(b"weights")
    record = record_run(run, record_dir_for(tmp_path / "records", "gr", 2))
    assert record == tmp_path / "records" / "gr" / "seed2"
    assert sorted(p.name for p in record.iterdir()) == sorted(map(recorded_name, RECORD_FILES))
    assert (record / "train_log.csv").read_text() == "contents of train_log.csv"
    packed = (record / "hypotheses.jsonl.gz").read_bytes()
    assert gzip.decompress(packed) == b"contents of hypotheses.jsonl"
    assert is_recorded(record)
    record_run(run, record)  # recording again writes the same bytes
    assert (record / "hypotheses.jsonl.gz").read_bytes() == packed


def test_conflicts_are_optional(tmp_path):
    run = scored_run(tmp_path / "run", [n for n in RECORD_FILES if n != "conflicts.json"])
    record = record_run(run, tmp_path / "record")
    assert is_recorded(record) and not (record / "conflicts.json").exists()


def test_an_unscored_run_is_refused_and_nothing_is_copied(tmp_path):
    run = scored_run(tmp_path / "run", ["config.json", "train_log.csv"])
    with pytest.raises(FileNotFoundError, match=r"hypotheses\.jsonl, evaluation\.json"):
        record_run(run, tmp_path / "record")
    assert not (tmp_path / "record").exists()


def test_a_record_being_rewritten_is_incomplete_until_its_scores_are_copied(tmp_path, monkeypatch):
    import shutil

    run = scored_run(tmp_path / "run")
    record = record_run(run, tmp_path / "record")
    original = shutil.copyfile

    def interrupted(source, target):
        if str(source).endswith("conflicts.json"):
            raise KeyboardInterrupt
        return original(source, target)

    monkeypatch.setattr(shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record_run(run, record)
    assert not is_recorded(record)
