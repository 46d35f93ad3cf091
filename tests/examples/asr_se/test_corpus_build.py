"""Building the tiny corpus: audio format, SNR labels, leak checks, determinism, resumption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from examples.asr_se.corpus import build as build_mod
from examples.asr_se.corpus import build_corpus, sources
from examples.asr_se.corpus.audio import SAMPLE_RATE, read_wav
from examples.asr_se.corpus.errors import CorpusError
from examples.asr_se.corpus.mixing import measure_snr, mix, rms, scale_noise
from examples.asr_se.corpus.noise import SEEN_NOISES, UNSEEN_NOISES, radio_channel
from examples.asr_se.corpus.presets import PRESETS
from examples.asr_se.corpus.prompts import load_prompts
from examples.asr_se.corpus.tts import Voice

CFG = PRESETS["tiny"]


def records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def test_every_file_is_8khz_16bit_mono_with_the_manifest_length(tiny_root: Path) -> None:
    recs = records(tiny_root)
    assert recs
    for r in recs:
        clean, rate = read_wav(tiny_root / r["clean"])
        noisy, _ = read_wav(tiny_root / r["noisy"])
        assert rate == SAMPLE_RATE == r["sample_rate"]
        assert clean.size == noisy.size == r["num_samples"]
        assert r["duration"] == pytest.approx(r["num_samples"] / SAMPLE_RATE, abs=1e-4)
        assert 0.3 < r["duration"] < 15, r["id"]
        assert rms(clean) > 0


def test_snr_measured_back_matches_the_label(tiny_root: Path) -> None:
    checked = 0
    for r in records(tiny_root):
        if r["snr"] is None:
            assert r["noise"] == "none" and r["noisy"] == r["clean"] and r["noise_set"] == "clean"
            continue
        if r["channel"] == "radio":  # label = SNR of the static before the channel
            assert r["noise"] == "radio"
            continue
        clean, _ = read_wav(tiny_root / r["clean"])
        noisy, _ = read_wav(tiny_root / r["noisy"])
        assert abs(measure_snr(clean, noisy, r["gain"]) - r["snr"]) < 0.5, r["id"]
        checked += 1
    assert checked > 50


def test_radio_label_is_the_pre_channel_snr() -> None:
    rng = np.random.default_rng(0)
    clean = (0.05 * rng.standard_normal(8000) * np.hanning(8000) * 32768).astype(np.int16)
    noise = rng.standard_normal(8000)
    s = clean / 32768.0
    for snr in (-5.0, 0.0, 20.0):
        n = scale_noise(s, noise, snr)
        assert 10 * np.log10(np.mean(s**2) / np.mean(n**2)) == pytest.approx(snr, abs=1e-9)
    noisy, gain = mix(
        clean, noise, 5.0, channel=lambda y: radio_channel(y, np.random.default_rng(1))
    )
    assert noisy.dtype == np.int16 and noisy.size == clean.size and 0 < gain <= 1


def test_conditions_follow_the_config(tiny_root: Path) -> None:
    recs = records(tiny_root)
    by_source: dict[str, list[dict]] = {}
    for r in recs:
        by_source.setdefault(r["source"], []).append(r)
    expected = {("none", None)} | {
        (n, s) for n in (*CFG.test_noises_a, *CFG.test_noises_b) for s in CFG.test_snrs
    }
    counts = {"train": 0, "dev": 0, "synthetic": 0, "real_seen_text": 0, "real_unseen_text": 0}
    for rs in by_source.values():
        counts[rs[0]["test_set"]] += 1
        if rs[0]["split"] == "test":
            assert {(r["noise"], r["snr"]) for r in rs} == expected
            for r in rs:
                assert r["noise_set"] == (
                    "clean" if r["snr"] is None else "A" if r["noise"] in SEEN_NOISES else "B"
                )
        else:
            assert len(rs) == 1
            r = rs[0]
            assert r["noise"] in (*SEEN_NOISES, "none")
            if r["snr"] is not None:
                assert CFG.train_snr_range[0] <= r["snr"] <= CFG.train_snr_range[1]
    assert counts["train"] == CFG.n_train and counts["dev"] == CFG.n_dev
    assert counts["synthetic"] == CFG.n_synthetic
    assert counts["real_seen_text"] + counts["real_unseen_text"] == CFG.n_real
    assert counts["real_seen_text"] > 0 and counts["real_unseen_text"] > 0


def test_held_out_voices_never_train(tiny_root: Path) -> None:
    recs = records(tiny_root)
    train_voices = {r["voice"] for r in recs if r["split"] in ("train", "dev")}
    test_voices = {r["voice"] for r in recs if r["test_set"] == "synthetic"}
    assert train_voices and test_voices and not train_voices & test_voices
    assert "human:allison" not in train_voices
    held_out = set(CFG.test_variants) | set(CFG.babble_variants)
    for v in map(Voice.parse, train_voices):
        assert v.variant not in held_out and v.accent not in CFG.test_accents, v
    for v in map(Voice.parse, test_voices):
        assert v.variant in CFG.test_variants or v.accent in CFG.test_accents, v


def test_held_out_noises_never_train(tiny_root: Path) -> None:
    recs = records(tiny_root)
    lengths = {
        f"music_a:{t}": read_wav(sources.moh_track(t))[0].size for t in CFG.music_train_tracks
    }
    lengths["babble"] = read_wav(tiny_root / "noise/babble.wav")[0].size
    for r in recs:
        src = r["noise_source"]
        if r["split"] in ("train", "dev"):
            assert r["noise"] not in UNSEEN_NOISES and r["noise_set"] != "B"
        if src is None or src == "generated":
            continue
        name, start = src.rsplit("@", 1)
        assert name.startswith(r["noise"].split("_")[0]), r["id"]
        if name.startswith("music_b:"):
            assert r["split"] == "test" and r["noise_set"] == "B"
            continue
        cut = round(lengths[name] * (1 - CFG.test_noise_fraction))
        if r["split"] == "test":
            assert int(start) >= cut, r["id"]  # test set A: unseen tail of the recording
        else:
            assert int(start) < cut, r["id"]


def test_unseen_text_prompts_never_in_training_text(tiny_root: Path) -> None:
    recs = records(tiny_root)
    train_texts = {r["text"] for r in recs if r["split"] in ("train", "dev")}
    unseen = {
        p.text
        for p in load_prompts(check_audio=False)
        if p.text and p.test_set == "real_unseen_text"
    }
    assert not train_texts & unseen
    for u in unseen:
        if len(u.split()) >= 3:
            assert not any(f" {u} " in f" {t} " for t in train_texts), u
    assert all(r["split"] == "test" for r in recs if r["voice"] == "human:allison")


def test_same_seed_same_bytes_and_rerun_is_a_cheap_noop(
    tiny_root: Path, tmp_path: Path, tree_digest, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = tmp_path / "again"
    build_corpus("tiny", again, seed=0, progress=False, workers=2)  # 2 workers: order-independent
    assert tree_digest(again) == tree_digest(tiny_root)
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*.wav")}

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rerun on a complete corpus planned or rendered again")

    with monkeypatch.context() as patched:  # the no-op only checks the files, never plans
        patched.setattr(build_mod, "_validate_inputs", must_not_run)
        patched.setattr(build_mod, "_build_locked", must_not_run)
        assert build_corpus("tiny", again, seed=0, progress=False) == again / "manifest.jsonl"
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*.wav")} == before
    with pytest.raises(CorpusError, match="seed 0"):
        build_corpus("tiny", again, seed=1, progress=False)


def test_resume_after_interruption_gives_the_same_corpus(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree_digest
) -> None:
    out = tmp_path / "interrupted"
    seen: list[str] = []

    def crash(task: str) -> None:
        seen.append(task)
        if len(seen) == 12:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(build_mod, "_after_task", crash)
    with pytest.raises(KeyboardInterrupt):
        build_corpus("tiny", out, seed=0, progress=False)
    assert json.loads((out / "corpus.json").read_text())["complete"] is False
    assert not (out / "manifest.jsonl").exists()
    # Damage one finished file: the rerun must notice (hash) and redo that item.
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    victim = next(iter(progress[-1]["files"]))
    (out / victim).write_bytes(b"garbage")

    redone: list[str] = []
    monkeypatch.setattr(build_mod, "_after_task", redone.append)
    build_corpus("tiny", out, seed=0, progress=False)
    assert tree_digest(out) == tree_digest(tiny_root)
    all_tasks = {"noise:babble"} | {r["source"] for r in records(tiny_root)}
    # Exactly the unfinished items and the damaged one were rendered again.
    assert sorted(redone) == sorted(all_tasks - {e["task"] for e in progress[:-1]})


def test_rebuild_repairs_a_damaged_finished_corpus(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree_digest
) -> None:
    out = tmp_path / "damaged"
    shutil.copytree(tiny_root, out)
    rec = records(out)[-1]
    (out / rec["noisy"]).unlink()
    redone: list[str] = []
    monkeypatch.setattr(build_mod, "_after_task", redone.append)
    with pytest.warns(UserWarning, match="repairing"):
        build_corpus("tiny", out, seed=0, progress=False)
    assert redone == [rec["source"]]
    assert tree_digest(out) == tree_digest(tiny_root)
