"""Error rates by voice engine, on hand-made utterances."""

from __future__ import annotations

import gzip
import json

import pytest

from examples.asr_se.voices import read_hypotheses, score_by_engine, voice_engine


def utterance(voice: str, text: str, snr: float | None) -> dict[str, object]:
    return {"voice": voice, "text": text, "snr": snr}


UTTERANCES = {
    "a": utterance("espeak:en-gb+f4", "one two three four", None),
    "b": utterance("espeak:en-us+m6", "five six", None),
    "c": utterance("human:allison", "goodbye", None),
    "d": utterance("human:allison", "please hold", 5.0),
    "e": utterance("flite:rms", "seven", -5.0),
}


def test_errors_are_pooled_per_engine_and_condition():
    hypotheses = [
        {"id": "a", "hypothesis": "one two tree four"},  # 1 substitution of 4 words
        {"id": "b", "hypothesis": "five six six"},  # 1 insertion of 2 words
        {"id": "c", "hypothesis": "good bye"},  # 1 substitution + 1 insertion of 1 word
        {"id": "d", "hypothesis": "please hold"},
        {"id": "e", "hypothesis": ""},  # 1 deletion of 1 word
    ]
    records = score_by_engine(hypotheses, UTTERANCES)
    keys = [(r["engine"], r["condition"]) for r in records]
    # the human voice first, then flite, then espeak; clean before noisy
    assert keys == [("human", "clean"), ("human", "noisy"), ("flite", "noisy"), ("espeak", "clean")]
    by_key = {(r["engine"], r["condition"]): r for r in records}
    espeak = by_key[("espeak", "clean")]
    assert espeak["wer"] == pytest.approx(2 / 6) and espeak["words"] == 6
    assert espeak["voices"] == ["espeak:en-gb+f4", "espeak:en-us+m6"]
    assert espeak["utterances"] == 2
    assert by_key[("human", "clean")]["wer"] == pytest.approx(2.0)
    assert by_key[("human", "noisy")]["wer"] == 0.0
    flite = by_key[("flite", "noisy")]
    assert flite["wer"] == 1.0 and flite["cer"] == 1.0 and flite["characters"] == 5
    # "good bye" against "goodbye": one inserted space among 7 characters
    assert by_key[("human", "clean")]["cer"] == pytest.approx(1 / 7)


def test_a_hypothesis_from_another_corpus_is_named():
    with pytest.raises(KeyError, match="'zz'"):
        score_by_engine([{"id": "zz", "hypothesis": "x"}], UTTERANCES)


def test_engine_is_the_part_before_the_colon():
    assert voice_engine("espeak:en-gb-x-rp+f4") == "espeak"
    assert voice_engine("human:allison") == "human"


def test_a_record_s_gzipped_hypotheses_are_read(tmp_path):
    lines = [{"id": "a", "hypothesis": "one"}, {"id": "b", "hypothesis": ""}]
    with gzip.open(tmp_path / "hypotheses.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    assert read_hypotheses(tmp_path) == lines
