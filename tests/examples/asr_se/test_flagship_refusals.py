"""Refusals of the command lines (one line, no traceback) and what the report states."""

from __future__ import annotations

import json
import re
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import pytest

import examples.asr_se.__main__ as cli
from examples.asr_se.compare import check_records
from examples.asr_se.config import Preset, get_preset
from examples.asr_se.records import RecordError, record_dir_for
from examples.asr_se.report import _conflicts, _enhancement, with_counts
from examples.asr_se.train import SettingsError, run_identity

TINY = get_preset("tiny")
ONE_ERROR_LINE = r"error: [^\n]+\n"


def _record(root: Path, preset: Preset, system: str, seed: int) -> Path:
    """A complete record of ``(system, seed)`` made with ``preset``'s settings."""
    folder = record_dir_for(root, system, seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(run_identity(preset, system, seed)))
    (folder / "evaluation.json").write_text("{}")
    return folder


# -- records of other settings -------------------------------------------------------------
def test_records_of_other_settings_are_named_and_refused(tmp_path: Path) -> None:
    longer = replace(TINY, train=replace(TINY.train, steps=3))
    _record(tmp_path, TINY, "sum", 0)
    _record(tmp_path, longer, "gr", 0)
    _record(tmp_path, longer, "gr:k=20", 1)
    check_records(longer, [("gr", 0), ("gr:k=20", 1)], tmp_path)  # its own: accepted
    with pytest.raises(SettingsError, match=r"other settings .*\(sum seed 0; see") as refused:
        check_records(longer, [("gr", 0), ("sum", 0)], tmp_path)
    assert "gr seed 0" not in str(refused.value)
    with pytest.raises(SettingsError, match=r"\(gr seed 0, gr:k=20 seed 1; see"):
        check_records(TINY, [("gr", 0), ("gr:k=20", 1), ("sum", 0)], tmp_path)


@pytest.fixture(scope="module")
def recorded_sum(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The options of a compare run whose report holds a recorded 2-step ``sum`` run."""
    folder = tmp_path_factory.mktemp("recorded_sum")
    options = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--no-progress"]
    options += ["--runs", str(folder / "runs"), "--out", str(folder / "out")]
    assert cli.main(["compare", "--systems", "sum", *options]) == 0
    return options


@pytest.mark.parametrize(
    "arguments",
    [["--report-only"], ["--systems", "gr"], ["--systems", "sum"]],
    ids=["report-only", "another system", "the same system"],
)
def test_compare_refuses_to_report_records_of_other_settings_in_one_line(
    recorded_sum: list[str], arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(recorded_sum[recorded_sum.index("--out") + 1])
    report = (out / "RESULTS.md").read_bytes()
    capsys.readouterr()
    assert cli.main(["compare", "--steps", "3", *arguments, *recorded_sum]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(ONE_ERROR_LINE, error), error
    assert "other settings than preset 'tiny-3steps'" in error and "(sum seed 0;" in error
    assert (out / "RESULTS.md").read_bytes() == report
    runs = Path(recorded_sum[recorded_sum.index("--runs") + 1])
    assert not (runs / "tiny-3steps").exists()  # refused before any training


def test_compare_reports_its_own_records_again(recorded_sum: list[str]) -> None:
    assert cli.main(["compare", "--report-only", *recorded_sum]) == 0


# -- bad state is one line; a bug keeps its traceback ----------------------------------------
def test_a_second_fresh_start_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--runs", str(tmp_path)]
    arguments = ["train", "--system", "sum", "--steps", "1", *options, "--no-progress"]
    assert cli.main(arguments) == 0
    capsys.readouterr()
    assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(ONE_ERROR_LINE, error), error
    assert "already holds a checkpoint: pass --resume" in error


def test_a_damaged_record_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    folder = _record(out / "results" / "runs", TINY, "sum", 0)
    (folder / "config.json").write_text("{")
    options = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--runs", str(tmp_path)]
    assert cli.main(["compare", "--report-only", "--out", str(out), *options]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(ONE_ERROR_LINE, error) and "the record is damaged" in error, error


@pytest.mark.parametrize("error", [ValueError("a bug"), FileExistsError("a bug")])
def test_other_errors_are_not_swallowed(
    error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: Namespace, preset: Preset, argv: list[str] | None) -> int:
        raise error

    monkeypatch.setattr(cli, "_dispatch", broken)
    with pytest.raises(type(error), match="a bug"):
        cli.main(["train", "--system", "sum", "--runs", str(tmp_path)])


def test_the_errors_caught_are_the_example_own() -> None:
    assert issubclass(RecordError, ValueError) and issubclass(SettingsError, ValueError)
    assert ValueError not in cli.USER_ERRORS and FileExistsError not in cli.USER_ERRORS


# -- demo --------------------------------------------------------------------------------
def test_the_demo_takes_no_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []

    def dispatch(args: Namespace, preset: Preset, argv: list[str] | None) -> int:
        seen.append(preset.name)
        return 0

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--preset", "tiny", "--runs", str(tmp_path)])
    assert exited.value.code == 2
    assert "unrecognized arguments: --preset tiny" in capsys.readouterr().err
    assert cli.main(["demo", "--runs", str(tmp_path)]) == 0  # what `make demo` runs
    assert cli.main(["demo", "--steps", "5", "--runs", str(tmp_path)]) == 0
    assert seen == ["quick", "quick-5steps"]


# -- speed -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--preset", "bogus"], "argument --preset: invalid choice: 'bogus'"),
    ],
)
def test_speed_refuses_bad_arguments_before_any_work(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.asr_se.speed import main

    corpus = tmp_path / "corpus"
    with pytest.raises(SystemExit) as exited:
        main(["--preset", "tiny", "--corpus-dir", str(corpus), *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not corpus.exists()


# -- the report's SE table and conflict caption --------------------------------------------
def _se(system: str, test_set: str, gain: float, **counts: int) -> dict:
    return {
        "system": system,
        "seed": 0,
        "test_set": test_set,
        "noise": "babble",
        "snr": 5.0,
        "si_snr_noisy": 0.0,
        "si_snr_enhanced": gain,
        "si_snr_gain": gain,
        "stoi_noisy": 0.5,
        "stoi_enhanced": 0.5 + gain / 100,
        **counts,
    }


def _row(lines: list[str], system: str) -> list[str]:
    return next(line for line in lines if line.startswith(f"| {system} |")).split(" | ")


def test_the_se_table_averages_over_utterances() -> None:
    # 60 utterances gain 1 dB, 40 gain 6 dB: 3 dB per utterance, not 3.5 per condition;
    # STOI is scored on 20 and 5 of them: (20 * 0.51 + 5 * 0.56) / 25
    records = [
        _se("sum", "synthetic", 1.0, utterances=60, stoi_utterances=20),
        _se("sum", "real_seen_text", 6.0, utterances=40, stoi_utterances=5),
        _se("sum", "real_seen_text", -40.0, utterances=40) | {"noise": "radio"},  # left out
    ]
    lines = _enhancement(records, ["sum"])
    assert _row(lines, "sum")[1:4] == ["0.00", "3.00", "+3.00"]
    assert _row(lines, "sum")[5] == "0.520 |"
    assert "every noisy test utterance and seed" in "".join(lines)
    assert "lack utterance counts" not in "".join(lines)


def test_se_records_without_counts_take_their_conditions_or_say_so() -> None:
    records = [_se("sum", "synthetic", 1.0), _se("sum", "real_seen_text", 6.0)]
    counts = [
        {key: r[key] for key in ("system", "seed", "test_set", "noise", "snr")} | {"utterances": n}
        for r, n in zip(records, (60, 40), strict=True)
    ]
    assert _row(_enhancement(with_counts(records, counts), ["sum"]), "sum")[3] == "+3.00"
    lines = _enhancement(records, ["sum"])  # older records, no counts anywhere
    assert _row(lines, "sum")[3] == "+3.50"
    assert "Records of `sum` lack utterance counts" in "".join(lines)


def test_the_conflict_caption_names_loss_weightings_not_sum_alone() -> None:
    caption = _conflicts([], [], monitor_every=10)[2]
    assert "except under a loss weighting (`sum`, `mean`, `uw`, ...)" in caption
    assert "every 10th step" in caption and "for `sum`, every" not in caption


# -- refusals before the corpus is built ----------------------------------------------------
def test_compare_refuses_records_of_other_settings_before_building_the_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longer = replace(TINY, train=replace(TINY.train, steps=3))
    _record(tmp_path / "out" / "results" / "runs", longer, "sum", 0)
    corpus = tmp_path / "corpus"
    options = ["--preset", "tiny", "--corpus-dir", str(corpus), "--no-progress"]
    options += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert cli.main(["compare", "--systems", "sum", "--report-only", *options]) == 1
    assert "other settings than preset 'tiny'" in capsys.readouterr().err
    assert not corpus.exists()


def test_tempo_probe_keeps_a_probe_of_other_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    probe = {"records": [{"system": "sum", "seed": 0, "tempo": 1.0}]}
    (out / "tempo_probe.json").write_text(json.dumps(probe))
    corpus = tmp_path / "corpus"
    options = ["--preset", "tiny", "--corpus-dir", str(corpus), "--runs", str(tmp_path)]
    options += ["--out", str(out), "--no-progress"]
    assert cli.main(["tempo-probe", "--systems", "sum", "gr", "--seed", "1", *options]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(ONE_ERROR_LINE, error), error
    assert "holds the probe of other runs [('sum', 0)]" in error
    assert not corpus.exists()
    (out / "tempo_probe.json").write_text("{")  # damaged: named, not replaced
    assert cli.main(["tempo-probe", "--systems", "sum", *options]) == 1
    assert "is not a tempo probe" in capsys.readouterr().err


def test_speed_refuses_a_json_path_it_cannot_write_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.asr_se.speed import main

    (tmp_path / "a_file").write_text("")
    corpus = tmp_path / "corpus"
    for json_path, reason in (
        (tmp_path / "a_file" / "x.json", "is not a folder"),
        (tmp_path, "it is a folder"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["--preset", "tiny", "--corpus-dir", str(corpus), "--json", str(json_path)])
        assert exited.value.code == 2
        assert reason in capsys.readouterr().err
    assert not corpus.exists()
    assert main(["--preset", "tiny", "--corpus-dir", str(tmp_path / "a_file")]) == 1
    assert re.fullmatch(ONE_ERROR_LINE, capsys.readouterr().err)


def test_a_damaged_config_of_a_run_folder_is_named(tmp_path: Path) -> None:
    from examples.asr_se.compare import _check_settings

    (tmp_path / "config.json").write_text('{"preset": ')  # cut short
    with pytest.raises(SettingsError, match=r"config\.json is damaged"):
        _check_settings(tmp_path, run_identity(TINY, "sum", 0))


def test_resuming_from_a_file_that_is_not_a_resumable_checkpoint_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from examples.asr_se.train import run_dir_for

    run_dir = run_dir_for(tmp_path, "tiny", "sum", 0)
    run_dir.mkdir(parents=True)
    identity = run_identity(TINY, "sum", 0)
    torch.save({"identity": identity, "model": {}}, run_dir / "checkpoint.pt")  # as final.pt
    options = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--runs", str(tmp_path)]
    assert cli.main(["train", "--system", "sum", "--resume", *options, "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(ONE_ERROR_LINE, error), error
    assert "lacks ['position', 'optimizer'" in error
