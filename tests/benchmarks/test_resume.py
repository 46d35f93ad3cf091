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


def test_overhead_resumed_with_fewer_models_keeps_the_other_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "code_version", lambda paths: "0123456789ab")  # committed
    arguments = ["--smoke", "--quiet", "--no-peers", "--methods", "sum", "--out", str(tmp_path)]
    calls = interrupt_at_call(
        monkeypatch, overhead, "_measure_model", 3, label=model_of_overhead_part, instead=fake_part
    )
    with pytest.raises(KeyboardInterrupt):
        overhead.main([*arguments, "--models", "mlp", "conv", "se_asr"])
    partial = tmp_path / overhead.PARTIAL_FILE
    assert parts_in(partial) == {"mlp-T2", "conv-T2"}
    calls.clear()
    overhead.main([*arguments, "--models", "mlp", "--resume"])
    assert calls == []
    written = json.loads((tmp_path / "overhead.json").read_text())
    assert {(r["model"], r["tasks"]) for r in written} == {("mlp", 2)}
    assert parts_in(partial) == {"mlp-T2", "conv-T2"}  # conv is still there
    resumed = overhead.main([*arguments, "--models", "mlp", "conv", "se_asr", "--resume"])
    assert calls == ["se_asr"]
    assert set(resumed["machine"]["resumed"]) == {"mlp-T2", "conv-T2"}
    assert not partial.exists()
