"""NoisySpeechDataset and collate_batch over the tiny corpus, and manifest/file mismatches."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from examples.asr_se.corpus import CorpusError, NoisySpeechDataset, collate_batch, verify_corpus
from examples.asr_se.corpus.text import ALPHABET

KEYS = {"id", "noisy", "clean", "text", "voice", "noise", "snr", "split", "test_set", "noise_set"}


def test_items_and_filters(tiny_manifest: Path) -> None:
    train = NoisySpeechDataset(tiny_manifest, "train")
    assert len(train) == 24
    item = train[0]
    assert set(item) == KEYS
    assert item["noisy"].dtype == torch.float32 and item["noisy"].ndim == 1
    assert item["noisy"].shape == item["clean"].shape
    assert float(item["noisy"].abs().max()) <= 1.0
    assert set(item["text"]) <= set(ALPHABET)
    assert len(NoisySpeechDataset(tiny_manifest, "dev")) == 4

    radio = NoisySpeechDataset(tiny_manifest, "test", test_set="synthetic", noise="radio", snr=0)
    assert len(radio) == 4
    assert {it["noise_set"] for it in radio} == {"B"}
    clean = NoisySpeechDataset(tiny_manifest, "test", noise="none")
    assert all(math.isinf(it["snr"]) and it["noise_set"] == "clean" for it in clean)
    assert all(torch.equal(it["noisy"], it["clean"]) for it in clean)
    real = NoisySpeechDataset(
        tiny_manifest, "test", test_set=["real_seen_text", "real_unseen_text"], snr=[float("inf")]
    )
    assert len(real) == 6 and {it["voice"] for it in real} == {"human:allison"}


def test_noisy_minus_clean_is_the_noise_at_the_labelled_snr(tiny_manifest: Path) -> None:
    ds = NoisySpeechDataset(tiny_manifest, "test", noise=["white", "babble", "music_b"], snr=-5)
    for it in ds:
        n = it["noisy"].double() - it["clean"].double()
        snr = 10 * torch.log10(it["clean"].double().pow(2).mean() / n.pow(2).mean())
        assert float(snr) == pytest.approx(-5, abs=0.5)


def test_collate_pads_and_keeps_lengths(tiny_manifest: Path) -> None:
    ds = NoisySpeechDataset(tiny_manifest, "train")
    items = [ds[i] for i in range(5)]
    batch = collate_batch(items)
    lengths = [it["noisy"].numel() for it in items]
    assert batch["noisy"].shape == batch["clean"].shape == (5, max(lengths))
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].tolist() == lengths
    for i, it in enumerate(items):
        assert torch.equal(batch["noisy"][i, : lengths[i]], it["noisy"])
        assert not batch["noisy"][i, lengths[i] :].any()
    assert batch["texts"] == [it["text"] for it in items]
    assert batch["ids"] == [it["id"] for it in items]
    for key in ("voices", "noises", "snrs", "splits", "test_sets", "noise_sets"):
        assert len(batch[key]) == 5
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=collate_batch)
    assert sum(len(b["ids"]) for b in loader) == len(ds)


def test_bad_arguments_are_named(tiny_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        NoisySpeechDataset(tiny_manifest, "validation")
    with pytest.raises(ValueError, match="no example"):
        NoisySpeechDataset(tiny_manifest, "train", noise="radio")
    with pytest.raises(CorpusError, match="manifest not found"):
        NoisySpeechDataset(tmp_path / "nope.jsonl", "train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1"):
        NoisySpeechDataset(bad, "train")


@pytest.fixture
def corpus_copy(tiny_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_root, dst)
    return dst


def test_missing_file_is_named(corpus_copy: Path) -> None:
    rec = json.loads((corpus_copy / "manifest.jsonl").read_text().splitlines()[3])
    (corpus_copy / rec["noisy"]).unlink()
    with pytest.raises(CorpusError, match=rf"{rec['noisy']}.*missing"):
        NoisySpeechDataset(corpus_copy / "manifest.jsonl", rec["split"])
    with pytest.raises(CorpusError, match="missing"):
        verify_corpus(corpus_copy)


def test_changed_file_is_named(corpus_copy: Path) -> None:
    rec = json.loads((corpus_copy / "manifest.jsonl").read_text().splitlines()[0])
    path = corpus_copy / rec["clean"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    NoisySpeechDataset(corpus_copy / "manifest.jsonl", "train")  # cheap check: sizes only
    with pytest.raises(CorpusError, match=rf"{rec['clean']} does not match the manifest"):
        NoisySpeechDataset(corpus_copy / "manifest.jsonl", "train", verify=True)
    with pytest.raises(CorpusError, match="SHA-256"):
        verify_corpus(corpus_copy)
    path.write_bytes(b"RIFF")
    with pytest.raises(CorpusError, match=rf"{rec['clean']} has 4 bytes"):
        NoisySpeechDataset(corpus_copy / "manifest.jsonl", "train")
