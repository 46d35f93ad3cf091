"""Scoring a trained system: WER by test condition, and the front end's SE quality.

WER is computed by ``jiwer`` over all utterances of a condition (test set x noise x SNR);
SE quality is the SI-SNR gain of the resynthesised enhanced signal (noisy phase) over the
noisy input and, where ``pystoi`` is installed, STOI of both.
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jiwer
import torch
from torch import Tensor

from examples.asr_se import vocabulary
from examples.asr_se.config import Preset
from examples.asr_se.corpus import NoisySpeechDataset, collate_batch
from examples.asr_se.model import JointModel
from examples.asr_se.systems import get_system
from examples.asr_se.train import (
    CheckpointError,
    atomic_write_text,
    build_model,
    progress_bar,
    read_checkpoint,
    run_identity,
    same_run,
)

_EXAMPLE_MIN_WORDS = 3
"""Decoded examples are clean utterances of at least this many words (the shortest such,
since decoding runs in order of duration): single letters say little about a recogniser."""

Condition = tuple[str, str, float | None]
"""(test_set, noise, snr); ``snr`` is ``None`` for the clean condition."""


def word_error_rate(references: list[str], hypotheses: list[str]) -> tuple[float, int]:
    """Corpus-level WER (a fraction) and the number of reference words, by ``jiwer``."""
    output = jiwer.process_words(references, hypotheses)
    words = output.hits + output.substitutions + output.deletions
    return float(output.wer), int(words)


def character_error_rate(references: list[str], hypotheses: list[str]) -> tuple[float, int]:
    """Corpus-level CER (a fraction, spaces counted) and the number of reference characters,
    by ``jiwer``. Where WER saturates near 100%, CER still shows partial recognition."""
    output = jiwer.process_characters(references, hypotheses)
    characters = output.hits + output.substitutions + output.deletions
    return float(output.cer), int(characters)


def si_snr(estimate: Tensor, reference: Tensor) -> Tensor:
    """Scale-invariant signal-to-noise ratio in dB, per row of ``(B, N)`` signals."""
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / reference.pow(2).sum(
        -1, keepdim=True
    ).clamp(min=1e-12)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10(
        target.pow(2).sum(-1).clamp(min=1e-12) / noise.pow(2).sum(-1).clamp(min=1e-12)
    )


_STOI_PLACEHOLDER_WARNING = "Not enough STFT frames"
"""The start of pystoi's warning when it returns its placeholder instead of a score."""


def _stoi(clean: Tensor, signal: Tensor, sample_rate: int) -> float | None:
    """STOI, or ``None`` without pystoi or for an utterance too short to score.

    pystoi returns a placeholder 1e-5 (with a warning) when too few frames remain after
    removing silence; such utterances are left out rather than averaged in. Any other
    warning is passed on, and the utterance is scored.
    """
    try:
        from pystoi import stoi
    except ImportError:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(clean.numpy(), signal.numpy(), sample_rate, extended=False))
    too_short = False
    for warning in caught:
        if _STOI_PLACEHOLDER_WARNING in str(warning.message):
            too_short = True
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return None if too_short else value


def load_trained(preset: Preset, system_name: str, checkpoint: Path) -> JointModel:
    """The model of a finished run (``final.pt``) or any checkpoint of it.

    Raises:
        CheckpointError: a missing or corrupt file, or one trained with settings other than
            ``preset`` and ``system_name`` (any seed).
    """
    state = read_checkpoint(checkpoint)
    stored = state.get("identity")
    if isinstance(stored, dict) and not same_run(
        stored, run_identity(preset, system_name, stored.get("seed", 0))
    ):
        raise CheckpointError(
            f"{checkpoint} was not trained as system {system_name!r} of preset "
            f"{preset.name!r} as it stands now (see the run's config.json); score it with "
            "the settings it was trained with"
        )
    model = build_model(preset, get_system(system_name))
    model.load_state_dict(state["model"])
    model.eval()
    return model


def _condition(item_snr: float, test_set: str, noise: str) -> Condition:
    return (test_set, noise, None if math.isinf(item_snr) else float(item_snr))


@torch.no_grad()
def evaluate(
    model: JointModel,
    manifest: Path,
    *,
    batch_size: int = 32,
    test_sets: Iterable[str] | None = None,
    progress: bool = True,
    stoi_per_condition: int | None = 20,
    per_condition: int | None = None,
) -> dict[str, Any]:
    """Decode the test split and score it.

    ``per_condition`` limits the test to that many utterances per condition (test set,
    noise, SNR): those whose ids hash lowest, the same for every system and seed
    (``None``: all). STOI is slow (pure Python), so it is computed on a smaller fixed subset
    of each noisy condition, chosen the same way: ``stoi_per_condition`` utterances
    (``None``: all, ``0``: none). SI-SNR and WER use every evaluated utterance.

    Returns:
        ``{"wer": [...], "se": [...], "examples": [...], "hypotheses": [...]}``: one WER
        record per condition (``test_set``, ``noise``, ``snr``, ``wer``, ``words``, ``cer``,
        ``characters``, ``utterances``), one SE record
        per condition with noise (mean SI-SNR of noisy and enhanced, their difference, the
        ``utterances`` they are averaged over and, when available, mean STOI of both and
        its ``stoi_utterances``), and a few decoded clean examples of three
        words or more per test set, and every decoded utterance (``id``, ``hypothesis``,
        sorted by id), from which any other metric can be recomputed.
    """
    dataset = NoisySpeechDataset(
        manifest, "test", test_set=None if test_sets is None else list(test_sets)
    )
    order = sorted(range(len(dataset)), key=dataset.durations.__getitem__)
    if per_condition is not None:
        kept = hashed_subset(dataset.records, per_condition)
        order = [index for index in order if dataset.records[index]["id"] in kept]
    stoi_ids = hashed_subset(dataset.records, stoi_per_condition, noisy_only=True)
    references: dict[Condition, list[str]] = defaultdict(list)
    hypotheses: dict[Condition, list[str]] = defaultdict(list)
    decoded: list[dict[str, str]] = []
    quality: dict[Condition, list[tuple[float, float, float | None, float | None]]] = defaultdict(
        list
    )
    examples: list[dict[str, str]] = []
    shown: dict[str, int] = defaultdict(int)
    sample_rate = model.config.sample_rate
    bar = progress_bar(len(order), 0, "evaluate", progress)
    for start in range(0, len(order), batch_size):
        items = [dataset[index] for index in order[start : start + batch_size]]
        batch = collate_batch(items)
        outputs = model(batch["noisy"], batch["lengths"])
        texts = vocabulary.greedy_decode(outputs.log_probs, outputs.out_frames)
        enhanced_wave = None
        if outputs.enhanced is not None:
            # each row from its own valid frames, as a batch of one would resynthesise it
            enhanced_wave = model.stft.inverse_each(
                outputs.enhanced, outputs.phase, batch["lengths"]
            )
        for row, item in enumerate(items):
            condition = _condition(item["snr"], item["test_set"], item["noise"])
            references[condition].append(item["text"])
            hypotheses[condition].append(texts[row])
            decoded.append({"id": item["id"], "hypothesis": texts[row]})
            if (
                shown[item["test_set"]] < 3
                and condition[2] is None
                and len(item["text"].split()) >= _EXAMPLE_MIN_WORDS
            ):
                shown[item["test_set"]] += 1
                examples.append(
                    {
                        "test_set": item["test_set"],
                        "reference": item["text"],
                        "hypothesis": texts[row],
                    }
                )
            if enhanced_wave is not None and condition[2] is not None:
                length = int(batch["lengths"][row])
                clean = batch["clean"][row, :length]
                noisy = batch["noisy"][row, :length]
                enhanced = enhanced_wave[row, :length]
                pair = si_snr(torch.stack([noisy, enhanced]), clean.expand(2, -1))
                scored = item["id"] in stoi_ids
                quality[condition].append(
                    (
                        float(pair[0]),
                        float(pair[1]),
                        _stoi(clean, noisy, sample_rate) if scored else None,
                        _stoi(clean, enhanced, sample_rate) if scored else None,
                    )
                )
        bar.update(len(items))
    bar.close()
    wer_records = []
    for condition in sorted(references, key=_sort_key):
        wer, words = word_error_rate(references[condition], hypotheses[condition])
        cer, characters = character_error_rate(references[condition], hypotheses[condition])
        test_set, noise, snr = condition
        wer_records.append(
            {
                "test_set": test_set,
                "noise": noise,
                "snr": snr,
                "wer": wer,
                "words": words,
                "cer": cer,
                "characters": characters,
                "utterances": len(references[condition]),
            }
        )
    se_records = []
    for condition in sorted(quality, key=_sort_key):
        values = quality[condition]
        test_set, noise, snr = condition
        record: dict[str, Any] = {
            "test_set": test_set,
            "noise": noise,
            "snr": snr,
            "si_snr_noisy": _mean(v[0] for v in values),
            "si_snr_enhanced": _mean(v[1] for v in values),
        }
        record["si_snr_gain"] = record["si_snr_enhanced"] - record["si_snr_noisy"]
        record["utterances"] = len(values)
        scored_values = [v for v in values if v[2] is not None and v[3] is not None]
        if scored_values:
            record["stoi_noisy"] = _mean(v[2] for v in scored_values)  # type: ignore[misc]
            record["stoi_enhanced"] = _mean(v[3] for v in scored_values)  # type: ignore[misc]
            record["stoi_utterances"] = len(scored_values)
        se_records.append(record)
    decoded.sort(key=lambda entry: entry["id"])
    return {"wer": wer_records, "se": se_records, "examples": examples, "hypotheses": decoded}


def hashed_subset(
    records: list[dict[str, Any]], per_condition: int | None, *, noisy_only: bool = False
) -> set[str]:
    """Per condition (test set, noise, SNR), the ids of the ``per_condition`` records whose
    CRC-32 is lowest: the same utterances for every system and seed, and each smaller
    subset inside every larger one. ``None``: every id (of the noisy conditions only, with
    ``noisy_only``)."""
    groups: dict[Condition, list[str]] = defaultdict(list)
    for r in records:
        if not (noisy_only and r["snr"] is None):
            snr = None if r["snr"] is None else float(r["snr"])
            groups[(r["test_set"], r["noise"], snr)].append(r["id"])
    if per_condition is None:
        return {i for ids in groups.values() for i in ids}
    chosen: set[str] = set()
    for ids in groups.values():
        chosen.update(sorted(ids, key=lambda i: zlib.crc32(i.encode()))[:per_condition])
    return chosen


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else float("nan")


def _sort_key(condition: Condition) -> tuple[str, str, float]:
    test_set, noise, snr = condition
    return (test_set, noise, math.inf if snr is None else -snr)


def evaluate_run(
    preset: Preset, system_name: str, run_dir: Path, manifest: Path, *, progress: bool = True
) -> Path:
    """Evaluate a finished run: ``hypotheses.jsonl`` (every decoded test utterance), then
    ``evaluation.json`` (the scores), each written atomically, in its folder."""
    final = run_dir / "final.pt"
    model = load_trained(preset, system_name, final)
    torch.set_num_threads(preset.train.threads)
    results = evaluate(
        model,
        manifest,
        batch_size=preset.train.eval_batch_size,
        progress=progress,
        per_condition=preset.train.test_per_condition,
    )
    decoded = results.pop("hypotheses")
    atomic_write_text(
        run_dir / "hypotheses.jsonl", "".join(json.dumps(entry) + "\n" for entry in decoded)
    )
    path = run_dir / "evaluation.json"
    atomic_write_text(path, json.dumps(results, indent=1))  # last: it marks the run scored
    return path
