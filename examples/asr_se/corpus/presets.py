"""Corpus sizes and conditions: one frozen :class:`CorpusConfig` per preset.

* ``tiny``: a few hundred short files in seconds, for the tests;
* ``quick``: ~1.5k training utterances and a test subset, built in a few minutes (the demo);
* ``full``: ~10+ hours of training audio and every real prompt in every condition.

Everything that changes the corpus bytes lives in the config (plus the seed), and
the config is stored in ``corpus.json`` so that a directory is never silently
reused for a different corpus.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .noise import SEEN_NOISES, UNSEEN_NOISES

MUSIC_TRAIN_TRACKS = ("macroform-cold_day", "macroform-robot_dity", "manolo_camp-morning_coffee")
"""Music-on-hold tracks whose first part is training noise (their tail is test set A)."""
MUSIC_TEST_TRACKS = ("macroform-the_simplicity", "reno_project-system")
"""Music-on-hold tracks used only in test set B."""


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that defines a corpus, apart from the seed.

    Attributes:
        name: preset name (also the default output folder ``data/asr_se/<name>``).
        n_train: training utterances (one noisy version each).
        n_dev: dev utterances (synthetic, training voices, seen noises, training SNR range).
        n_real: real prompts in the test sets (``None``: every usable prompt), half seen-text
            and half unseen-text when a subset is taken.
        max_real_seconds: only prompts up to this duration enter a subset (``None``: no limit).
        n_synthetic: synthetic test utterances (held-out voices).
        train_snr_range: training/dev SNRs are uniform in this range (dB).
        train_clean_fraction: fraction of training/dev utterances left clean.
        test_snrs: the fixed test SNRs (dB); every test utterance is also kept clean.
        test_noises_a: seen noise types tested (set A); training always uses all of
            :data:`~.noise.SEEN_NOISES`.
        test_noises_b: unseen noise types tested (set B).
        train_level_dbfs: range of clean speech RMS level for training/dev (dBFS).
        test_level_dbfs: clean speech RMS level of test utterances (dBFS).
        test_accents: espeak-ng accents held out for the synthetic test set.
        test_variants: espeak-ng variants / flite voices held out for the synthetic test set.
        babble_variants: espeak-ng variants / flite voices held out to make babble.
        flite_fraction: probability that a synthetic utterance uses flite rather than espeak-ng.
        rate_range: speaking-rate factor range (1.0 = engine default).
        pitch_range: espeak-ng pitch range (0-99).
        seen_text_fraction: share of training text drawn from seen real-prompt sentences.
        max_words: longest training sentence in words (keeps utterances ~1-4 s).
        babble_talkers: simultaneous talkers in the babble noise.
        babble_seconds: length of the babble recording.
        music_train_tracks: see :data:`MUSIC_TRAIN_TRACKS`.
        music_test_tracks: see :data:`MUSIC_TEST_TRACKS`.
        test_noise_fraction: tail fraction of each seen-noise recording kept for test set A.
        workers: parallel worker processes (capped at the number of CPUs).
    """

    name: str
    n_train: int
    n_dev: int
    n_real: int | None
    n_synthetic: int
    max_real_seconds: float | None = None
    train_snr_range: tuple[float, float] = (-5.0, 20.0)
    train_clean_fraction: float = 0.1
    test_snrs: tuple[float, ...] = (20.0, 15.0, 10.0, 5.0, 0.0, -5.0)
    test_noises_a: tuple[str, ...] = SEEN_NOISES
    test_noises_b: tuple[str, ...] = UNSEEN_NOISES
    train_level_dbfs: tuple[float, float] = (-35.0, -15.0)
    test_level_dbfs: float = -26.0
    test_accents: tuple[str, ...] = ("en-gb-x-gbcwmd",)
    test_variants: tuple[str, ...] = ("rms", "f4", "m6", "ed", "Annie")
    babble_variants: tuple[str, ...] = ("awb", "m7", "f5", "paul", "steph")
    flite_fraction: float = 0.3
    rate_range: tuple[float, float] = (0.85, 1.2)
    pitch_range: tuple[int, int] = (25, 75)
    seen_text_fraction: float = 0.2
    max_words: int = 10
    babble_talkers: int = 6
    babble_seconds: float = 120.0
    music_train_tracks: tuple[str, ...] = MUSIC_TRAIN_TRACKS
    music_test_tracks: tuple[str, ...] = MUSIC_TEST_TRACKS
    test_noise_fraction: float = 0.25
    workers: int = 2

    def __post_init__(self) -> None:
        for noise in self.test_noises_a:
            if noise not in SEEN_NOISES:
                raise ValueError(f"test_noises_a: {noise!r} is not a seen noise {SEEN_NOISES}")
        for noise in self.test_noises_b:
            if noise not in UNSEEN_NOISES:
                raise ValueError(f"test_noises_b: {noise!r} is not an unseen noise {UNSEEN_NOISES}")
        lo, hi = self.train_snr_range
        if lo > hi:
            raise ValueError(f"train_snr_range {self.train_snr_range} must be (low, high)")
        if set(self.music_train_tracks) & set(self.music_test_tracks):
            raise ValueError("a music track cannot be both a training and a test track")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> CorpusConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # type: ignore[arg-type]


PRESETS: dict[str, CorpusConfig] = {
    "tiny": CorpusConfig(
        name="tiny",
        n_train=24,
        n_dev=4,
        n_real=6,
        max_real_seconds=2.0,
        n_synthetic=4,
        test_snrs=(20.0, 0.0, -5.0),
        babble_talkers=3,
        babble_seconds=12.0,
        workers=1,
    ),
    "quick": CorpusConfig(
        name="quick",
        n_train=1500,
        n_dev=100,
        n_real=80,
        max_real_seconds=6.0,
        n_synthetic=60,
        test_noises_a=("babble", "music_a"),
        test_noises_b=("radio", "music_b"),
    ),
    "full": CorpusConfig(
        name="full",
        n_train=20000,
        n_dev=600,
        n_real=None,
        n_synthetic=300,
        babble_talkers=8,
        babble_seconds=600.0,
    ),
}
"""The presets by name."""


def get_config(config: CorpusConfig | str) -> CorpusConfig:
    """A config, or the preset of that name (error names the valid presets)."""
    if isinstance(config, CorpusConfig):
        return config
    if config not in PRESETS:
        raise ValueError(f"unknown corpus preset {config!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[config]
