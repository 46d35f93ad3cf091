"""``--resume`` with a narrower selection than the interrupted run keeps the rest."""

from __future__ import annotations

import json

import pytest

from benchmarks import _common, overhead, toy
from tests.benchmarks.interruption import (
    interrupt_at_call,
    method_of_toy_run,
    model_of_overhead_part,
)


def parts_in(path) -> set[str]:
    return set(json.loads(path.read_text())["parts"])


def test_drop_parts_deletes_the_file_only_when_the_outputs_hold_every_part(tmp_path):
    path = tmp_path / "partial.json"
    _common.keep_parts(path, {"code": "abc"}, {"a": 1, "b": 2})
    assert _common.drop_parts(path, ["a"]) == ["b"]
    assert parts_in(path) == {"a", "b"}
    assert _common.drop_parts(path, ["a", "b", "c"]) == []
    assert not path.exists()
    assert _common.drop_parts(path, []) == []  # no file: nothing to do
    path.write_text("not json")
    assert _common.drop_parts(path, []) == [] and not path.exists()


def test_toy_resumed_with_fewer_labels_keeps_the_other_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "_code_version", lambda: "0123456789ab")  # committed code
    arguments = ["--smoke", "--quiet", "--out", str(tmp_path)]
    calls = interrupt_at_call(monkeypatch, toy, "optimise", 3, label=method_of_toy_run)
    with pytest.raises(KeyboardInterrupt):
        toy.main([*arguments, "--labels", "sum", "gr", "mgda"])
    partial = tmp_path / toy.PARTIAL_FILE
    finished = parts_in(partial)
    assert len(finished) == 2
    narrower = sorted(finished)[:1]
    calls.clear()
    toy.main([*arguments, "--resume", "--labels", *narrower])
    assert calls == []
    assert set(json.loads((tmp_path / "toy.json").read_text())["results"]) == set(narrower)
    assert parts_in(partial) == finished  # the other finished run is still there
    calls.clear()
    resumed = toy.main([*arguments, "--resume", "--labels", "sum", "gr", "mgda"])
    assert len(calls) == 1 and sorted(resumed["machine"]["resumed"]) == sorted(finished)
    assert not partial.exists()  # everything it held is in the outputs now


def fake_part(args, model_name, tasks, selected, peers, progress) -> dict:
    """What ``overhead._measure_model`` returns, without timing anything."""
    records = [
        {
            "library": "gradsurgery",
            "model": model_name,
            "method": method,
            "granularity": "global",
            "tasks": tasks,
            "shared_parameters": 10,
            "parameters": 20,
            "ratio_time": 1.0,
            "ratio_time_q25": 1.0,
            "ratio_time_q75": 1.0,
            "ms_baseline": 1.0,
            "ratio_memory": None,
            "mib_baseline": None,
        }
        for method in selected
    ]
    return {"records": records, "head_to_head": [], "agreement": [], "ended": "now"}


def interrupted_overhead(tmp_path, monkeypatch, models: list[str]) -> tuple[list[str], list[str]]:
    """An ``overhead`` run of committed code over ``models`` (timing nothing), interrupted
    as its last model starts. Returns its arguments, less ``--models``, and the list of the
    models measured since (cleared)."""
    monkeypatch.setattr(_common, "code_version", lambda paths: "0123456789ab")  # committed
    arguments = ["--smoke", "--quiet", "--no-peers", "--methods", "sum", "--out", str(tmp_path)]
    calls = interrupt_at_call(
        monkeypatch,
        overhead,
        "_measure_model",
        len(models),
        label=model_of_overhead_part,
        instead=fake_part,
    )
    with pytest.raises(KeyboardInterrupt):
        overhead.main([*arguments, "--models", *models])
    calls.clear()
    return arguments, calls


def test_overhead_resumed_with_fewer_models_keeps_the_other_finished_ones(tmp_path, monkeypatch):
    arguments, calls = interrupted_overhead(tmp_path, monkeypatch, ["mlp", "conv", "se_asr"])
    partial = tmp_path / overhead.PARTIAL_FILE
    assert parts_in(partial) == {"mlp-T2", "conv-T2"}
    overhead.main([*arguments, "--models", "mlp", "--resume"])
    assert calls == []
    written = json.loads((tmp_path / "overhead.json").read_text())
    assert {(r["model"], r["tasks"]) for r in written} == {("mlp", 2)}
    assert parts_in(partial) == {"mlp-T2", "conv-T2"}  # conv is still there
    resumed = overhead.main([*arguments, "--models", "mlp", "conv", "se_asr", "--resume"])
    assert calls == ["se_asr"]
    assert set(resumed["machine"]["resumed"]) == {"mlp-T2", "conv-T2"}
    assert not partial.exists()


def test_a_run_without_resume_refuses_to_overwrite_an_interrupted_runs_work(tmp_path, monkeypatch):
    arguments, calls = interrupted_overhead(tmp_path, monkeypatch, ["mlp", "conv"])
    partial = tmp_path / overhead.PARTIAL_FILE
    held = partial.read_bytes()
    with pytest.raises(SystemExit, match=r"holds the finished parts \['mlp-T2'\].*--resume"):
        overhead.main([*arguments, "--models", "mlp", "conv"])
    assert calls == [] and partial.read_bytes() == held  # nothing measured, nothing lost
    resumed = overhead.main([*arguments, "--models", "mlp", "conv", "--resume"])
    assert calls == ["conv"] and list(resumed["machine"]["resumed"]) == ["mlp-T2"]


def test_a_resume_with_other_settings_says_why_it_starts_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(toy, "_code_version", lambda: "0123456789ab")  # committed code
    arguments = ["--smoke", "--quiet", "--out", str(tmp_path), "--labels", "sum", "gr"]
    interrupt_at_call(monkeypatch, toy, "optimise", 2, label=method_of_toy_run)
    with pytest.raises(KeyboardInterrupt):
        toy.main(arguments)
    capsys.readouterr()
    partial = tmp_path / toy.PARTIAL_FILE
    assert (
        toy.run(toy.parse_args([*arguments, "--resume", "--steps", "6"]))["machine"]["resumed"]
        == []
    )
    assert (
        f"nothing taken back from {partial} (it was made with other steps)"
        in capsys.readouterr().err
    )
    monkeypatch.setattr(toy, "_code_version", lambda: None)  # uncommitted changes
    assert toy.run(toy.parse_args([*arguments, "--resume"]))["machine"]["resumed"] == []
    assert "uncommitted changes" in capsys.readouterr().err
    # what that run kept has no commit to be taken back by: it is overwritten without a word
    assert json.loads(partial.read_text())["key"]["code"] is None
    toy.run(toy.parse_args(arguments))
    assert capsys.readouterr().err == ""


def test_kept_parts_reads_a_damaged_or_empty_file_as_nothing_kept(tmp_path):
    path = tmp_path / "partial.json"
    key = {"code": "abc"}
    for text in ("not json", "[]", '{"parts": {}}', '{"parts": {"a": 1}}'):
        path.write_text(text)
        assert _common.kept_parts(path, key, resume=False) == {}
    _common.keep_parts(path, key, {"a": 1})
    assert _common.kept_parts(path, key, resume=True) == {"a": 1}
    with pytest.raises(SystemExit, match="delete the file to start over"):
        _common.kept_parts(path, key, resume=False)


def test_a_resume_from_a_damaged_file_says_so(tmp_path, capsys):
    path = tmp_path / "partial.json"
    path.write_text('{"parts": {"a"')  # cut off mid-write by hand
    assert _common.kept_parts(path, {"code": "abc"}, resume=True) == {}
    assert "is damaged (not JSON); starting over" in capsys.readouterr().err
