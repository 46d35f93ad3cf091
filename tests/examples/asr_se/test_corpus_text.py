"""Text normaliser, split rule, real prompt loading and training text generator."""

from __future__ import annotations

import numpy as np
import pytest

from examples.asr_se.corpus.errors import MissingPackageError
from examples.asr_se.corpus.plan import text_generator
from examples.asr_se.corpus.presets import PRESETS
from examples.asr_se.corpus.prompts import clean_transcript, load_prompts
from examples.asr_se.corpus.text import (
    ALPHABET,
    is_unseen_text,
    normalize_text,
    number_to_words,
    ordinal_words,
)


@pytest.fixture(scope="module")
def prompts():
    try:
        return load_prompts(check_audio=False)
    except MissingPackageError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Press 1, then #.", "press one then pound"),
        ("press * to cancel", "press star to cancel"),
        ("At 9:05 A.M. on May 1st", "at nine oh five a m on may first"),
        ("It is 10:00", "it is ten o'clock"),
        ("$1,250.05", "one thousand two hundred fifty dollars and five cents"),
        ("Dial 0800 or 911", "dial zero eight zero zero or nine hundred eleven"),
        ("I'm sorry, that's \"not\" valid!", "i'm sorry that's not valid"),
        ("Call-Forward on No Answer.", "call forward on no answer"),
        ("'quoted' users' 12th 21st", "quoted users twelfth twenty first"),
        ("Café  100%", "cafe one hundred percent"),
        ("2024", "two thousand twenty four"),
        ("", ""),
    ],
)
def test_normalize_text_examples(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_text_only_uses_the_ctc_alphabet(prompts) -> None:
    rng = np.random.default_rng(0)
    pool = [chr(c) for c in range(32, 127)] + list("éü’“”\t\n")
    texts = [p.raw for p in prompts]
    texts += ["".join(rng.choice(pool, size=40)) for _ in range(300)]
    for raw in texts:
        out = normalize_text(raw)
        assert set(out) <= set(ALPHABET), (raw, out)
        assert out == out.strip() and "  " not in out
        assert normalize_text(out) == out  # idempotent


def test_numbers() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(1_000_001) == "one million one"
    assert ordinal_words(40) == "fortieth"
    assert ordinal_words(103) == "one hundred third"
    with pytest.raises(ValueError, match="n < 10"):
        number_to_words(-1)


def test_real_prompts_nonspeech_dropped_and_split_about_half(prompts) -> None:
    by_name = {p.name: p for p in prompts}
    for name in ("beep", "beeperr", "ascending-2tone", "tt-monkeys", "silence/1", "silence/10"):
        assert by_name[name].excluded.startswith("not speech"), name
    assert by_name["letters/at"].text == "at"  # "[@]" annotation removed
    assert by_name["spy-iax2"].text == "iax"  # "(note: ...)" removed
    assert clean_transcript("Hello (simple tone sound plays)") == "Hello"
    usable = [p for p in prompts if not p.excluded]
    assert len(usable) > 540
    unseen = sum(p.test_set == "real_unseen_text" for p in usable)
    assert 0.35 < unseen / len(usable) < 0.65
    for p in usable:  # the rule depends on the text alone
        assert (p.test_set == "real_unseen_text") == is_unseen_text(p.text)


def test_generated_text_never_holds_unseen_prompts(prompts) -> None:
    gen = text_generator(prompts, PRESETS["quick"])
    unseen = {p.text for p in prompts if p.text and p.test_set == "real_unseen_text"}
    long_unseen = [u for u in unseen if len(u.split()) >= 3]
    rng = np.random.default_rng(1)
    texts = {gen.generate(rng) for _ in range(1500)}
    assert len(texts) > 500
    assert not texts & unseen
    for t in texts:
        assert set(t) <= set(ALPHABET)
        assert 2 <= len(t.split()) <= PRESETS["quick"].max_words
        assert not any(f" {u} " in f" {t} " for u in long_unseen), t
