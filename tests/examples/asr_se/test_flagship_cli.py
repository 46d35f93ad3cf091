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
    ],
)
def test_a_negative_seed_is_refused_before_the_corpus_is_built(
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
    assert f"{option} must be >= 0, got -" in capsys.readouterr().err
    assert not corpus.exists() and not runs.exists()
