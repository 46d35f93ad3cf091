"""The committed report agrees with the committed run records it was computed from.

``compare --report-only`` rewrites ``RESULTS.md`` and ``results/*.json`` from the records
in ``results/runs``; a record committed without the report rewritten (or the other way
round) fails here. The by-voice split needs the corpus manifest, which is not committed,
so its records are checked against the records' totals instead of recomputed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from examples.asr_se.compare import collect, report_scope
from examples.asr_se.config import get_preset
from examples.asr_se.records import record_dir_for, recorded_runs
from examples.asr_se.voices import read_hypotheses

RESULTS = Path(__file__).resolve().parents[3] / "examples" / "asr_se" / "results"
FULL = get_preset("full")

pytestmark = pytest.mark.skipif(not (RESULTS / "runs").is_dir(), reason="no committed run records")


def committed(name: str) -> list[dict]:
    return json.loads((RESULTS / name).read_text())


def test_summary_and_cer_are_the_records_scores():
    scope = report_scope(FULL, (), (), recorded_runs(RESULTS / "runs"))
    results = collect(*scope, RESULTS / "runs")
    assert results["runs"], "the records folder holds no complete record"
    assert committed("summary.json") == results["wer"]
    assert committed("cer.json") == results["cer"]
    assert committed("se_quality.json") == results["se"]


def test_the_voice_split_covers_every_decoded_utterance_of_every_record():
    voices = committed("voices.json")
    runs = {(run["system"], run["seed"]) for run in committed("runs.json")}
    assert {(r["system"], r["seed"]) for r in voices} == runs
    summary = committed("summary.json")
    for system, seed in runs:
        decoded = read_hypotheses(record_dir_for(RESULTS / "runs", system, seed))
        split = [r for r in voices if (r["system"], r["seed"]) == (system, seed)]
        assert sum(r["utterances"] for r in split) == len(decoded)
        words = Counter({"clean": 0, "noisy": 0})
        for r in summary:
            if (r["system"], r["seed"]) == (system, seed):
                words["clean" if r["snr"] is None else "noisy"] += r["words"]
        for condition in ("clean", "noisy"):
            assert sum(r["words"] for r in split if r["condition"] == condition) == words[condition]
