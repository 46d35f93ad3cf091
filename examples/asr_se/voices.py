"""Error rates by voice engine: on which kind of voice the recogniser fails.

The test split speaks in three kinds of voice, each never heard in training: the human
speaker of the Asterisk prompts (engine ``human``), held-out flite voices (``flite``) and
held-out espeak-ng voices (``espeak``). The report's overview pools them by test set; this
module splits a run's decoded utterances by the engine of their voice (the part of the
manifest's ``voice`` before the colon) and by condition (``clean`` or ``noisy``, every
noise and SNR pooled), and scores each group by ``jiwer``, as ``evaluate`` does. It reads
only a record's ``hypotheses.jsonl.gz`` and the corpus manifest, so the split can be
recomputed for every recorded run without decoding again.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from examples.asr_se.corpus.manifest import read_manifest
from examples.asr_se.evaluate import character_error_rate, word_error_rate
from examples.asr_se.records import recorded_name

ENGINE_ORDER = ("human", "flite", "espeak")
"""The order of the engines in tables: the voice furthest from the training voices first."""

CONDITIONS = ("clean", "noisy")


def voice_engine(voice: str) -> str:
    """The engine of a manifest voice, ``"espeak"`` for ``"espeak:en-gb+f4"``."""
    return voice.split(":", 1)[0]


def read_test_split(manifest: Path) -> dict[str, dict[str, Any]]:
    """The test split's manifest records by id."""
    return {r["id"]: r for r in read_manifest(manifest) if r["split"] == "test"}


def read_hypotheses(record_dir: Path) -> list[dict[str, str]]:
    """Every decoded test utterance of a record (``id``, ``hypothesis``)."""
    with gzip.open(record_dir / recorded_name("hypotheses.jsonl"), "rt") as handle:
        return [json.loads(line) for line in handle]


def score_by_engine(
    hypotheses: Iterable[Mapping[str, str]], utterances: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """WER and CER of the decoded ``hypotheses`` per voice engine and condition.

    Args:
        hypotheses: decoded utterances, ``{"id", "hypothesis"}`` each.
        utterances: the test manifest records by id (:func:`read_test_split`).

    Returns:
        One record per (engine, condition) present: ``engine``, ``condition``, ``voices``
        (the sorted voice names), ``wer``, ``words``, ``cer``, ``characters``,
        ``utterances``; ordered as :data:`ENGINE_ORDER` (other engines last) and clean first.

    Raises:
        KeyError: a hypothesis id the manifest does not have (the record was decoded on
            another corpus).
    """
    groups: dict[tuple[str, str], tuple[list[str], list[str], set[str]]] = defaultdict(
        lambda: ([], [], set())
    )
    for decoded in hypotheses:
        identifier = decoded["id"]
        if identifier not in utterances:
            raise KeyError(f"utterance {identifier!r} is not in the corpus' test split")
        utterance = utterances[identifier]
        condition = "clean" if utterance["snr"] is None else "noisy"
        references, outputs, voices = groups[(voice_engine(utterance["voice"]), condition)]
        references.append(utterance["text"])
        outputs.append(decoded["hypothesis"])
        voices.add(utterance["voice"])

    def order(key: tuple[str, str]) -> tuple[int, str, int]:
        engine, condition = key
        rank = ENGINE_ORDER.index(engine) if engine in ENGINE_ORDER else len(ENGINE_ORDER)
        return (rank, engine, CONDITIONS.index(condition))

    records = []
    for engine, condition in sorted(groups, key=order):
        references, outputs, voices = groups[(engine, condition)]
        wer, words = word_error_rate(references, outputs)
        cer, characters = character_error_rate(references, outputs)
        records.append(
            {
                "engine": engine,
                "condition": condition,
                "voices": sorted(voices),
                "wer": wer,
                "words": words,
                "cer": cer,
                "characters": characters,
                "utterances": len(references),
            }
        )
    return records
