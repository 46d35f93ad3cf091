"""The speaking-rate probe: sox's tempo effect, and the probe command on the tiny corpus."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from examples.asr_se.__main__ import main
from examples.asr_se.config import get_preset
from examples.asr_se.corpus.errors import MissingPackageError
from examples.asr_se.tempo import stretch
from examples.asr_se.train import Trainer

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")


@needs_sox
@pytest.mark.parametrize("factor", [0.7, 1.4])
def test_tempo_changes_the_duration_and_keeps_the_pitch(factor):
    rate = 8000
    time = torch.arange(2 * rate) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 440.0 * time)
    stretched = stretch(tone, factor, rate)
    assert stretched.dtype == torch.float32
    assert stretched.numel() == pytest.approx(tone.numel() / factor, rel=0.02)
    spectrum = torch.fft.rfft(stretched[rate // 4 : -rate // 4]).abs()
    peak = float(spectrum.argmax()) * rate / (stretched.numel() - rate // 2)
    assert peak == pytest.approx(440.0, abs=5.0)


@needs_sox
def test_tempo_is_repeatable():
    samples = torch.sin(torch.arange(4000) * 0.05) * 0.3 + 0.01 * torch.randn(4000)
    assert torch.equal(stretch(samples, 1.3, 8000), stretch(samples, 1.3, 8000))


def test_tempo_one_is_the_identity_and_a_bad_factor_is_named():
    samples = torch.rand(100) - 0.5
    assert stretch(samples, 1.0, 8000) is samples
    with pytest.raises(ValueError, match="factor"):
        stretch(samples, 0.0, 8000)


def test_missing_sox_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingPackageError, match="apt-get install sox"):
        stretch(torch.zeros(10), 1.2, 8000)


@needs_sox
def test_probe_scores_every_engine_at_every_tempo(tiny_root, tmp_path, capsys):
    tiny = get_preset("tiny")
    runs = tmp_path / "runs"
    run_dir = runs / "tiny" / "sum" / "seed0"
    Trainer(tiny, "sum", 0, tiny_root / "manifest.jsonl", run_dir, progress=False).train()
    arguments = ["--preset", "tiny", "--corpus-dir", str(tiny_root), "--runs", str(runs)]
    out = tmp_path / "probe"
    tempos = ["0.8", "1", "1.25"]
    main(["tempo-probe", *arguments, "--systems", "sum", "--tempos", *tempos, "--out", str(out)])
    probe = json.loads((out / "tempo_probe.json").read_text())
    assert probe["command"].startswith("python -m examples.asr_se tempo-probe")
    assert probe["training_pace"] > 0 and "commit" in probe["code"]
    records = probe["records"]
    engines = {r["engine"] for r in records}
    assert "human" in engines
    assert sorted({r["tempo"] for r in records}) == [0.8, 1.0, 1.25]
    assert len(records) == 3 * len(engines)
    for engine in engines:
        pace = {r["tempo"]: r["characters_per_second"] for r in records if r["engine"] == engine}
        # a faster tempo plays the same characters in less time
        assert pace[0.8] < pace[1.0] < pace[1.25]
        assert pace[1.25] / pace[1.0] == pytest.approx(1.25, rel=0.05)
    assert all(r["system"] == "sum" and r["condition"] == "clean" for r in records)
    assert (out / "tempo_probe.png").stat().st_size > 0
    assert "tempo 1.25" in capsys.readouterr().out
    # an untrained system stops the probe before any decoding, naming the checkpoint in
    # one line
    out_x = str(tmp_path / "x")
    assert main(["tempo-probe", *arguments, "--systems", "sum", "gr", "--out", out_x]) == 1
    assert re.search(r"^error: no checkpoint at .*final\.pt$", capsys.readouterr().err, re.M)
    assert not (tmp_path / "x").exists()


def test_a_bad_tempo_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["tempo-probe", "--preset", "tiny", "--tempos", "1", "-0.5"])
    assert "--tempos" in capsys.readouterr().err
