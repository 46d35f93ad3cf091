"""The corpus plan: every utterance and every mixture, decided up front from the seed.

Planning is cheap (no audio) and fully deterministic, so the build can render the
items in any order, in parallel, and resume after an interruption while still
producing the same bytes. Each item later draws its own random numbers from
:func:`item_rng` keyed by its id, never from a shared stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .noise import SEEN_NOISES, noise_set
from .presets import CorpusConfig
from .prompts import Prompt, clean_transcript
from .text import normalize_text, split_hash
from .textgen import TextGenerator, split_sentences
from .tts import Voice, VoicePartition


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A random generator that depends only on ``seed`` and the item key (not on build order)."""
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "big")])


@dataclass(frozen=True)
class Mixture:
    """One noisy version of a source utterance.

    Attributes:
        id: unique id, ``<source id>__<noise>_<snr>`` (``__clean`` for the clean condition).
        noise: noise type, or ``"none"``.
        snr: SNR in dB, or ``None`` for the clean condition.
        role: ``"train"`` (training/dev noise segments) or ``"test"``.
    """

    id: str
    noise: str
    snr: float | None
    role: str

    @property
    def noise_set(self) -> str:
        """``"A"``, ``"B"`` or ``"clean"``."""
        return noise_set(self.noise)


@dataclass(frozen=True)
class Source:
    """One clean utterance and the mixtures made from it.

    Attributes:
        id: unique id (``train-000001``, ``dev-0001``, ``syn-0001``, ``real-<prompt>``).
        split: ``"train"``, ``"dev"`` or ``"test"``.
        test_set: ``"train"``, ``"dev"``, ``"synthetic"``, ``"real_seen_text"`` or
            ``"real_unseen_text"``.
        text: normalised transcript.
        voice: voice id (``espeak:...``, ``flite:...`` or ``human:allison``).
        level_dbfs: RMS level the clean speech is asked to have (it is scaled lower
            where its peak would pass :data:`~.mixing.PEAK_LIMIT`).
        rate: TTS speaking-rate factor (``None`` for real speech).
        pitch: espeak-ng pitch (``None`` for flite and real speech).
        prompt: the real prompt's name, or ``""``.
        path: the real prompt's WAV file, or ``""``.
        mixtures: the noisy versions to make.
    """

    id: str
    split: str
    test_set: str
    text: str
    voice: str
    level_dbfs: float
    rate: float | None = None
    pitch: int | None = None
    prompt: str = ""
    path: str = ""
    mixtures: tuple[Mixture, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BabbleTalker:
    """One talker of the babble noise: the utterances it says, back to back."""

    index: int
    utterances: tuple[tuple[str, str, float, int], ...]  # (voice id, text, rate, pitch)


@dataclass(frozen=True)
class Plan:
    """The whole corpus plan."""

    sources: tuple[Source, ...]
    babble: tuple[BabbleTalker, ...]


REAL_VOICE = "human:allison"


def text_generator(prompts: list[Prompt], config: CorpusConfig) -> TextGenerator:
    """The training text generator, with seen-prompt sentences in and unseen ones forbidden."""
    seen, forbidden = [], []
    for p in prompts:
        if not p.text:
            continue
        sentences = [normalize_text(s) for s in split_sentences(clean_transcript(p.raw))]
        if p.test_set == "real_unseen_text":
            forbidden += [p.text, *sentences]
        else:
            seen += sentences
    return TextGenerator(
        seen, forbidden, seen_fraction=config.seen_text_fraction, max_words=config.max_words
    )


def _pick_voice(
    voices: tuple[Voice, ...], flite_fraction: float, rng: np.random.Generator
) -> Voice:
    by_engine = {e: [v for v in voices if v.engine == e] for e in ("espeak", "flite")}
    if by_engine["flite"] and (not by_engine["espeak"] or rng.random() < flite_fraction):
        group = by_engine["flite"]
    else:
        group = by_engine["espeak"]
    return group[int(rng.integers(len(group)))]


def _snr_label(snr: float) -> str:
    return f"m{-snr:g}" if snr < 0 else f"{snr:g}"


def _tts_source(
    sid: str,
    split: str,
    test_set: str,
    voice: Voice,
    text: str,
    level: float,
    config: CorpusConfig,
    rng: np.random.Generator,
    mixtures: tuple[Mixture, ...],
) -> Source:
    rate = round(float(rng.uniform(*config.rate_range)), 3)
    pitch = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
    return Source(
        id=sid,
        split=split,
        test_set=test_set,
        text=text,
        voice=voice.id,
        level_dbfs=level,
        rate=rate,
        pitch=pitch if voice.engine == "espeak" else None,
        mixtures=mixtures,
    )


def _random_mixture(sid: str, config: CorpusConfig, rng: np.random.Generator) -> Mixture:
    if rng.random() < config.train_clean_fraction:
        return Mixture(f"{sid}__clean", "none", None, "train")
    noise = SEEN_NOISES[int(rng.integers(len(SEEN_NOISES)))]
    snr = round(float(rng.uniform(*config.train_snr_range)), 2)
    return Mixture(f"{sid}__{noise}", noise, snr, "train")


def _test_mixtures(sid: str, config: CorpusConfig) -> tuple[Mixture, ...]:
    mixtures = [Mixture(f"{sid}__clean", "none", None, "test")]
    for noise in (*config.test_noises_a, *config.test_noises_b):
        for snr in config.test_snrs:
            mixtures.append(Mixture(f"{sid}__{noise}_{_snr_label(snr)}", noise, float(snr), "test"))
    return tuple(mixtures)


def select_real(
    prompts: list[Prompt], config: CorpusConfig, durations: dict[str, float]
) -> list[Prompt]:
    """The real prompts of the test sets: all usable ones, or a seed-independent balanced subset.

    A subset takes ``n_real / 2`` prompts from each of the seen-text and unseen-text
    parts, among prompts of at most ``max_real_seconds``, ordered by a hash of the
    prompt name, so every seed and every build tests on the same prompts.
    """
    usable = [p for p in prompts if not p.excluded]
    if config.n_real is None:
        return usable
    chosen: list[Prompt] = []
    for part, n in (
        ("real_seen_text", config.n_real // 2),
        ("real_unseen_text", config.n_real - config.n_real // 2),
    ):
        group = [
            p
            for p in usable
            if p.test_set == part
            and (config.max_real_seconds is None or durations[p.name] <= config.max_real_seconds)
        ]
        group.sort(key=lambda p: split_hash("subset:" + p.name))
        chosen += group[:n]
    order = {p.name: i for i, p in enumerate(usable)}
    return sorted(chosen, key=lambda p: order[p.name])


def make_plan(
    config: CorpusConfig,
    seed: int,
    prompts: list[Prompt],
    durations: dict[str, float],
    voices: VoicePartition,
) -> Plan:
    """Plan every source utterance, mixture and babble talker of a corpus.

    Args:
        config: the corpus configuration.
        seed: the corpus seed.
        prompts: all real prompts (:func:`~.prompts.load_prompts`).
        durations: real prompt name -> seconds (for subset selection).
        voices: the train/test/babble voice partition.
    """
    gen = text_generator(prompts, config)
    sources: list[Source] = []

    rng = np.random.default_rng([seed, 1])
    for i in range(config.n_train):
        sid = f"train-{i:06d}"
        voice = _pick_voice(voices.train, config.flite_fraction, rng)
        level = round(float(rng.uniform(*config.train_level_dbfs)), 2)
        text = gen.generate(rng)
        sources.append(
            _tts_source(
                sid,
                "train",
                "train",
                voice,
                text,
                level,
                config,
                rng,
                (_random_mixture(sid, config, rng),),
            )
        )

    rng = np.random.default_rng([seed, 2])
    for i in range(config.n_dev):
        sid = f"dev-{i:04d}"
        voice = _pick_voice(voices.train, config.flite_fraction, rng)
        level = round(float(rng.uniform(*config.train_level_dbfs)), 2)
        text = gen.generate(rng)
        mixture = _random_mixture(sid, config, rng)
        sources.append(_tts_source(sid, "dev", "dev", voice, text, level, config, rng, (mixture,)))

    for p in select_real(prompts, config, durations):
        sid = "real-" + p.name.replace("/", "_")
        sources.append(
            Source(
                id=sid,
                split="test",
                test_set=p.test_set,
                text=p.text,
                voice=REAL_VOICE,
                level_dbfs=config.test_level_dbfs,
                prompt=p.name,
                path=str(p.path),
                mixtures=_test_mixtures(sid, config),
            )
        )

    rng = np.random.default_rng([seed, 3])
    for i in range(config.n_synthetic):
        sid = f"syn-{i:04d}"
        voice = _pick_voice(voices.test, config.flite_fraction, rng)
        text = gen.generate(rng)
        sources.append(
            _tts_source(
                sid,
                "test",
                "synthetic",
                voice,
                text,
                config.test_level_dbfs,
                config,
                rng,
                _test_mixtures(sid, config),
            )
        )

    rng = np.random.default_rng([seed, 4])
    babble = []
    for k in range(config.babble_talkers):
        utterances, words = [], 0
        # ~0.35 s per word at the default rate; plan 30 % more than needed, tiled if short.
        while words * 0.35 < 1.3 * config.babble_seconds:
            voice = _pick_voice(voices.babble, config.flite_fraction, rng)
            text = " ".join(gen.generate(rng) for _ in range(3))
            words += len(text.split())
            rate = round(float(rng.uniform(*config.rate_range)), 3)
            pitch = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
            utterances.append((voice.id, text, rate, pitch))
        babble.append(BabbleTalker(k, tuple(utterances)))
    return Plan(tuple(sources), tuple(babble))
