"""Every benchmark's ``--smoke`` mode runs and writes outputs of the documented structure.

Timings are never checked, only the shape of what is written. Each benchmark runs in this
process (one torch import for the whole file) into a temporary folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
import torch

import gradsurgery
from benchmarks import _common, digits, kernel, overhead, regression, toy
from benchmarks.peers import peer_methods
from gradsurgery.resolvers.base import Resolver
from tests.benchmarks.interruption import (
    interrupt_at_call,
    method_of_toy_run,
    model_of_overhead_part,
)

MODULES = [overhead, kernel, toy, regression, digits]
LIBRARIES = {"gradsurgery", "torchjd", "libmtl"}


def labels(methods: Sequence[str] | None = None) -> set[str]:
    return {label for label, _, _ in _common.variants(methods)}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_help_describes_the_benchmark(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "--smoke" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("module", "arguments"),
    [
        (overhead, ["--repeats", "0"]),
        (overhead, ["--warmup", "-1"]),
        (overhead, ["--memory-repeats", "0"]),
        (overhead, ["--min-seconds", "nan"]),
        (overhead, ["--threads", "0"]),
        (kernel, ["--sizes", "1e5", "-5"]),
        (kernel, ["--sizes", "1.5"]),
        (kernel, ["--tasks", "0"]),
        (kernel, ["--max-gib", "0"]),
        (kernel, ["--min-sample-ms", "-1"]),
        (toy, ["--steps", "0"]),
        (regression, ["--seeds", "0"]),
        (regression, ["--lr", "-1e-3"]),
        (regression, ["--primary-train", "0"]),
        (digits, ["--steps", "0"]),
        (digits, ["--batch", "x"]),
        (digits, ["--test-pairs", "0"]),
    ],
    ids=lambda value: value.__name__.split(".")[-1] if hasattr(value, "__name__") else None,
)
def test_a_bad_count_or_number_is_refused_with_its_option_named(module, arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--smoke", *arguments])
    assert exit_info.value.code == 2
    assert f"argument {arguments[0]}" in capsys.readouterr().err


def test_overhead_smoke(tmp_path):
    overhead.main(["--smoke", "--quiet", "--head-to-head-repeats", "3", "--out", str(tmp_path)])
    records = json.loads((tmp_path / "overhead.json").read_text())
    assert isinstance(records, list) and records
    required = {"library", "model", "method", "granularity", "tasks", "ratio_time", "ratio_memory"}
    for record in records:
        assert required <= set(record)
        assert record["library"] in LIBRARIES
        assert record["granularity"] in ("global", "tensor")
        if record.get("error"):
            assert record["ratio_time"] is None
        else:
            assert record["ratio_time"] > 0
            assert record["ratio_time_q25"] <= record["ratio_time_q75"]
    ours = {
        (r["method"], r["granularity"], r["model"])
        for r in records
        if r["library"] == "gradsurgery"
    }
    from benchmarks.models import MODELS

    expected = {
        (m, g, model)
        for m in gradsurgery.available()
        for g in ("global", "tensor")
        for model in MODELS
    }
    assert ours == expected
    # The flagship's SE+ASR model is timed too, and the plain sum runs on it.
    flagship = [r for r in records if r["model"] == "se_asr"]
    assert flagship and all(r["tasks"] == 2 for r in flagship)
    sums = [r for r in flagship if r["method"] == "sum" and r["library"] == "gradsurgery"]
    assert len(sums) == 2 and all(r["ratio_time"] > 0 for r in sums)
    run = json.loads((tmp_path / "overhead_run.json").read_text())
    assert {"machine", "direction_agreement", "peers_missing", "settings"} <= set(run)
    assert run["machine"]["torch"] == torch.__version__
    for row in run["direction_agreement"]:
        assert row["cosine"] is None or -1.0 - 1e-9 <= row["cosine"] <= 1.0 + 1e-9
    # sum is the same method everywhere: its directions must agree with every peer's.
    sums = [row for row in run["direction_agreement"] if row["method"] == "sum"]
    assert all(row["cosine"] == pytest.approx(1.0, abs=1e-5) for row in sums)
    assert (tmp_path / "overhead.md").read_text().startswith("# Overhead")
    assert (tmp_path / "overhead.png").stat().st_size > 0
    # Every method gradsurgery shares with an installed peer is timed head to head with it.
    peers, _ = peer_methods()
    shared = {(p.library, p.method) for p in peers if p.method in gradsurgery.available()}
    rows = run["head_to_head"]
    assert {(r["library"], r["method"]) for r in rows} == shared
    assert {(r["model"], r["tasks"]) for r in rows} == {(r["model"], r["tasks"]) for r in records}
    for row in rows:
        assert row.get("error") or (
            row["ratio_time"] > 0 and row["ratio_time_q25"] <= row["ratio_time_q75"]
        )
        assert row.get("error") or row["pairs"] == 3  # --head-to-head-repeats, not --repeats
    assert all(r["pairs"] == 2 for r in records if not r.get("error"))  # smoke's --repeats
    if rows:
        assert "head to head" in (tmp_path / "overhead.md").read_text()
        assert (tmp_path / "overhead_peers.png").stat().st_size > 0
    assert all(row["note"] == overhead.agreement_note(row) for row in run["direction_agreement"])
    # The JSON outputs hold all that the markdown is made from: --render gives it back.
    written = (tmp_path / "overhead.md").read_text()
    (tmp_path / "overhead.md").unlink()
    overhead.main(["--render", "--out", str(tmp_path)])
    assert (tmp_path / "overhead.md").read_text() == written


def test_kernel_smoke(tmp_path, capfd):
    kernel.main(["--smoke", "--quiet", "--profile", "--out", str(tmp_path)])
    assert "profiler_start" not in capfd.readouterr().err  # Kineto's log lines are dropped
    result = json.loads((tmp_path / "kernel.json").read_text())
    records = result["records"]
    configs = {(r["tasks"], r["size"]) for r in records}
    assert configs == {(2, 1000), (2, 10_000), (4, 1000), (4, 10_000)}
    for tasks, size in configs:
        assert {r["method"] for r in records if (r["tasks"], r["size"]) == (tasks, size)} == set(
            gradsurgery.available()
        )
    for record in records:
        assert record["copy_gb_per_s"] > 0
        assert record["cheap"] == kernel.is_cheap(record["method"], record["tasks"])
        assert record.get("error") or record["ratio_to_copy"] > 0
        if record["cheap"] and not record.get("error"):
            assert record.get("out_error") or (
                record["out_ratio_to_copy"] > 0 and record["fixed_ratio_to_copy"] > 0
            )
        else:
            assert "out_ratio_to_copy" not in record
            assert "fixed_ratio_to_copy" not in record
    profiles = result["profiles"]
    assert {"sum T=2 P=1e+03", "sum T=4 P=1e+03", "sum T=2 P=1e+04", "gr T=4 P=1e+04"} <= set(
        profiles
    )
    for profiled in profiles.values():
        assert profiled["wall_ms"] > 0 and profiled["operators_ms"] > 0
        assert 0 < len(profiled["top"]) <= 6
    report = (tmp_path / "kernel.md").read_text()
    assert "goal" in report and "fixed cost, x copy" in report
    assert (tmp_path / "kernel.png").stat().st_size > 0


def test_toy_smoke(tmp_path):
    toy.main(["--smoke", "--quiet", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "toy.json").read_text())
    assert set(result["results"]) == {"single_task_f1"} | labels()
    for label, entry in result["results"].items():
        if "error" in entry:
            continue
        assert len(entry["runs"]) == 2 * len(toy.NASH_MTL_STARTS)
        assert {r["scale"] for r in entry["runs"]} == set(toy.SCALES)
        for run_ in entry["runs"]:
            assert len(run_["end"]) == 2 and len(run_["path"]) >= 2
        assert (tmp_path / "toy" / f"{label}.png").stat().st_size > 0
    assert (tmp_path / "toy.png").stat().st_size > 0
    assert "Primary-task criterion" in (tmp_path / "toy.md").read_text()


def test_interrupted_toy_resumes_with_the_runs_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "_code_version", lambda: "0123456789ab")  # committed code
    arguments = ["--smoke", "--quiet", "--out", str(tmp_path), "--labels", "sum", "gr", "mgda"]
    straight = toy.main(arguments)  # (which deletes the parts it kept once written)
    optimise = toy.optimise
    calls = interrupt_at_call(monkeypatch, toy, "optimise", 3, label=method_of_toy_run)
    with pytest.raises(KeyboardInterrupt):
        toy.run(toy.parse_args(arguments))
    assert set(json.loads((tmp_path / toy.PARTIAL_FILE).read_text())["parts"]) == {"gr", "mgda"}
    calls.clear()
    resumed = toy.main([*arguments, "--resume"])
    assert calls == ["sum"]  # the two finished runs are kept
    assert resumed["machine"]["resumed"] == ["gr", "mgda"]
    for label, entry in straight["results"].items():
        assert resumed["results"][label]["runs"] == entry["runs"], label
    assert not (tmp_path / toy.PARTIAL_FILE).exists()
    monkeypatch.setattr(toy, "optimise", optimise)
    toy.run(toy.parse_args([*arguments[:-3], "gr"]))
    monkeypatch.setattr(toy, "_code_version", lambda: "fedcba987654")  # the code changed
    assert toy.run(toy.parse_args([*arguments, "--resume"]))["machine"]["resumed"] == []


def test_toy_f1_minimum_matches_the_literature():
    # min f1 is about -19.99, near (7, -8.43).
    assert toy._f1_minimum() == pytest.approx(toy.F1_MIN, abs=0.01)


def test_regression_smoke(tmp_path):
    regression.main(["--smoke", "--quiet", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "regression.json").read_text())
    assert set(result["results"]) == {
        "imbalanced",
        "primary",
        "imbalanced_centred",
        "primary_centred",
    }
    for problem in ("", "_centred"):
        assert set(result["results"]["imbalanced" + problem]) == {"train_mean"} | labels()
        expected = {"train_mean", "single_task"} | labels()
        assert set(result["results"]["primary" + problem]) == expected
    for table in result["results"].values():
        for entry in table.values():
            assert "error" in entry or entry["summary"]["score"]["mean"] >= 0
    assert (tmp_path / "regression.png").stat().st_size > 0


@pytest.mark.parametrize("problem", regression.PROBLEMS)
def test_regression_mean_predictor_scores_about_the_test_targets_variance(problem):
    # Predicting the training mean misses by the test targets' spread, plus the (small)
    # gap between the training and test means.
    args = regression.parse_args(["--smoke"])
    data = regression.setting_data("primary", 0, args, problem)
    variance = float(data["test_y"][0].var(0, unbiased=False).mean())
    score = regression.mean_predictor("primary", 0, args, problem)["score"]
    assert variance <= score <= variance + 0.05


def test_regression_centred_problem_has_tanh_arguments_of_unit_deviation():
    args = regression.parse_args(["--smoke"])
    data = regression.setting_data("imbalanced", 0, args, "centred")
    x = data["test_x"]
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and abs(float(x.mean())) < 0.02
    arguments = torch.atanh(data["test_y"][0].clamp(-1 + 1e-6, 1 - 1e-6))  # sigma = 1
    assert 0.9 < float(arguments.std()) < 1.1


def test_digits_smoke(tmp_path):
    digits.main(["--smoke", "--quiet", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "digits.json").read_text())
    assert set(result["results"]) == {"single_task"} | labels()
    for entry in result["results"].values():
        if "error" not in entry:
            for key in ("left", "right", "mean"):
                assert 0.0 <= entry["summary"][key]["mean"] <= 1.0
    assert (tmp_path / "digits.png").stat().st_size > 0


def test_digit_pairs_overlap_two_digits():
    x, y = digits.load_pairs(4, seed=0, train=True)
    assert x.shape == (4, 1, 8, 12) and y.shape == (4, 2)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # columns 0-3 hold only the left digit, columns 8-11 only the right one
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:1200], dtype=torch.float32) / 16
    for i in range(4):
        left = [j for j in range(1200) if torch.equal(images[j][:, :4], x[i, 0, :, :4])]
        assert left, "the left columns are a training digit"


class _Broken(Resolver):
    """A resolver that always fails, to check that benchmarks report instead of crashing."""

    def resolve_blocks(self, G, block_sizes, *, primary=None, losses=None, task_weights=None):
        raise RuntimeError("broken on purpose")


def test_a_failing_resolver_is_reported_not_fatal(tmp_path, monkeypatch):
    from gradsurgery import registry

    monkeypatch.setitem(registry._REGISTRY, "broken_on_purpose", _Broken)
    result = overhead.run(
        overhead.parse_args(
            [
                "--smoke",
                "--quiet",
                "--no-peers",
                "--models",
                "mlp",
                "--methods",
                "broken_on_purpose",
                "sum",
                "--out",
                str(tmp_path),
            ]
        )
    )
    broken = [r for r in result["records"] if r["method"] == "broken_on_purpose"]
    assert len(broken) == 2 and all("broken on purpose" in r["error"] for r in broken)
    assert all(r.get("ratio_time") for r in result["records"] if r["method"] == "sum")
    toy_result = toy.run(
        toy.parse_args(
            ["--smoke", "--quiet", "--methods", "broken_on_purpose", "--out", str(tmp_path)]
        )
    )
    assert "broken on purpose" in toy_result["results"]["broken_on_purpose"]["error"]


def test_interrupted_overhead_resumes_with_the_models_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "code_version", lambda paths: "0123456789ab")  # committed
    arguments = ["--smoke", "--quiet", "--no-peers", "--out", str(tmp_path)]
    arguments += ["--methods", "sum", "gr", "--models", "mlp", "conv"]
    measure_model = overhead._measure_model
    calls = interrupt_at_call(
        monkeypatch, overhead, "_measure_model", 2, label=model_of_overhead_part
    )
    interrupted_at_the_second = overhead._measure_model
    with pytest.raises(KeyboardInterrupt):
        overhead.main(arguments)
    kept = json.loads((tmp_path / overhead.PARTIAL_FILE).read_text())["parts"]
    assert list(kept) == ["mlp-T2"]
    calls.clear()
    resumed = overhead.main([*arguments, "--resume"])
    assert calls == ["conv"]  # the finished model is kept, its records as they were
    assert list(resumed["machine"]["resumed"]) == ["mlp-T2"]
    assert [r for r in resumed["records"] if r["model"] == "mlp"] == kept["mlp-T2"]["records"]
    assert {r["model"] for r in resumed["records"]} == {"mlp", "conv"}
    assert "resumed" in (tmp_path / "overhead.md").read_text()
    assert not (tmp_path / overhead.PARTIAL_FILE).exists()
    # other settings, or code changed since: nothing is taken back
    monkeypatch.setattr(overhead, "_measure_model", measure_model)
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(overhead, "_measure_model", interrupted_at_the_second)
        calls.clear()
        overhead.main(arguments)
    monkeypatch.setattr(overhead, "_measure_model", measure_model)
    other = overhead.run(overhead.parse_args([*arguments, "--resume", "--repeats", "3"]))
    assert other["machine"]["resumed"] == {}
    monkeypatch.setattr(_common, "code_version", lambda paths: "fedcba987654")
    assert overhead.run(overhead.parse_args([*arguments, "--resume"]))["machine"]["resumed"] == {}


def test_progress_prints_each_line_above_a_bar_that_reaches_its_total(capsys):
    with _common.Progress(2, "demo") as progress:
        progress.advance("first done")
        progress.advance()
    out, err = capsys.readouterr()
    assert "first done" in out and "2/2" in err
    with _common.Progress(2, "demo", enabled=False) as quiet:
        quiet.advance("not shown")
    assert capsys.readouterr() == ("", "")
