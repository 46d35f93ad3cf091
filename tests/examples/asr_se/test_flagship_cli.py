"""The flagship's command line: bad input is refused before any work, in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from examples.asr_se.__main__ import main


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--system", "gr_typo"], r"unknown system 'gr_typo'; systems: .*gr,"),
        (["evaluate", "--system", "gr:kk=2"], r"system 'gr:kk=2'.*unknown option\(s\) kk"),
        (["compare", "--systems", "sum", "nope"], r"unknown system 'nope'"),
        (["tempo-probe", "--systems", "gr:k=-1"], r"system 'gr:k=-1': Invalid k: -1"),
    ],
)
def test_a_bad_system_is_refused_before_the_corpus_is_built(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, runs = tmp_path / "corpus", tmp_path / "runs"
    folders = ["--preset", "tiny", "--corpus-dir", str(corpus), "--runs", str(runs)]
    with pytest.raises(SystemExit) as exited:
        main([*arguments, *folders, "--no-progress"])
    assert exited.value.code == 2  # argparse's usage error
    assert re.search(message, capsys.readouterr().err)
    assert not corpus.exists() and not runs.exists()


def test_evaluating_an_untrained_run_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--runs", str(tmp_path)]
    assert main(["evaluate", "--system", "gr", "--seed", "3", *folders, "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(r"error: no checkpoint at \S+final\.pt\n", error), error


@pytest.mark.parametrize(
    "arguments",
    [
        ["train", "--system", "sum", "--seed", "-1"],
        ["compare", "--systems", "sum", "--seeds", "0", "-2"],
        ["tempo-probe", "--seed", "-3"],
        ["train", "--system", "sum", "--seed", str(2**64)],  # beyond torch.manual_seed
    ],
)
def test_a_seed_out_of_range_is_refused_before_the_corpus_is_built(
    arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # NumPy's generators, which draw the batches, take no negative seed: the run would
    # fail at its first batch, after the corpus and the model were built
    corpus, runs = tmp_path / "corpus", tmp_path / "runs"
    folders = ["--preset", "tiny", "--corpus-dir", str(corpus), "--runs", str(runs)]
    with pytest.raises(SystemExit) as exited:
        main([*arguments, *folders, "--no-progress"])
    assert exited.value.code == 2
    option = "--seeds" if "--seeds" in arguments else "--seed"
    assert f"{option} must be in [0, 2**64), got " in capsys.readouterr().err
    assert not corpus.exists() and not runs.exists()


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("")
    return path


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        (["compare", "--systems", "sum", "--out", "{file}"], "--out"),
        (["compare", "--systems", "sum", "--out", "{file}/report"], "--out"),
        (["tempo-probe", "--out", "{file}"], "--out"),
        (["train", "--system", "sum", "--runs", "{file}/runs"], "--runs"),
        (["evaluate", "--system", "sum", "--corpus-dir", "{file}"], "--corpus-dir"),
    ],
)
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(
    arguments: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # found only when the results were written, after the training and scoring
    file = _a_file(tmp_path)
    corpus, runs = tmp_path / "corpus", tmp_path / "runs"
    given = [a.replace("{file}", str(file)) for a in arguments]
    for default, folder in (("--corpus-dir", corpus), ("--runs", runs)):
        if default not in given:
            given += [default, str(folder)]
    with pytest.raises(SystemExit) as exited:
        main([*given, "--preset", "tiny", "--no-progress"])
    assert exited.value.code == 2
    assert re.search(f"{option} '[^']*': (.* is )?not a folder", capsys.readouterr().err)
    assert not corpus.exists() and not runs.exists()


@pytest.mark.parametrize("tempo", ["0.05", "150"])
def test_a_tempo_sox_cannot_play_is_refused_before_any_work(
    tempo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    arguments = ["tempo-probe", "--preset", "tiny", "--corpus-dir", str(corpus), "--tempos"]
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "1", tempo, "--runs", str(tmp_path / "runs"), "--no-progress"])
    assert exited.value.code == 2
    assert "--tempos must be factors in [0.1, 100]" in capsys.readouterr().err
    assert not corpus.exists()


def test_build_corpus_takes_no_training_options(capsys: pytest.CaptureFixture[str]) -> None:
    for option in (["--steps", "5"], ["--runs", "/nonexistent"]):
        with pytest.raises(SystemExit) as exited:
            main(["build-corpus", "--preset", "tiny", *option])
        assert exited.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
