"""Text-to-speech voices (espeak-ng and flite) and their train/test/babble partition.

A *voice* is an engine plus a speaker identity: for espeak-ng an English accent
crossed with a voice variant (``espeak:en-gb-scotland+m3``), for flite one of its
built-in voices (``flite:slt``). Pitch and speaking rate are drawn per utterance
and recorded in the manifest, not part of the identity.

The partition is by identity and therefore leak-proof by construction: a voice
is *test* if its flite name, espeak accent or espeak variant is held out for
testing; else *babble* if held out for babble noise; else *train*. The train
voices are the only ones that ever speak training or dev utterances.

All output is resampled to 8 kHz (espeak-ng speaks at 22.05 kHz, flite at 8 or
16 kHz) and trimmed of leading and trailing silence.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sources
from .audio import SAMPLE_RATE, read_wav, resample
from .errors import CorpusError

ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
"""espeak-ng's English accents (its ``gmw/`` voices; the MBROLA ones need extra packages)."""

ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "Lee", "Mike", "adam", "aunty", "belinda", "boris", "david", "ed",
    "edward", "john", "linda", "max", "paul", "quincy", "rob", "robert", "steph", "zac",
)  # fmt: skip
"""espeak-ng voice variants that sound like a human talker (robots, whispers, croaks left out)."""

FLITE_VOICES = ("awb", "kal", "kal16", "rms", "slt")
"""flite's built-in voices."""


@dataclass(frozen=True, order=True)
class Voice:
    """A TTS speaker identity.

    Attributes:
        engine: ``"espeak"`` or ``"flite"``.
        name: flite voice name, or espeak ``accent+variant``.
    """

    engine: str
    name: str

    @property
    def id(self) -> str:
        """Manifest identifier, e.g. ``"espeak:en-us+m3"``."""
        return f"{self.engine}:{self.name}"

    @property
    def accent(self) -> str:
        """espeak accent (``""`` for flite)."""
        return self.name.split("+")[0] if self.engine == "espeak" else ""

    @property
    def variant(self) -> str:
        """espeak variant, or the flite voice name."""
        return self.name.split("+")[1] if self.engine == "espeak" else self.name

    @classmethod
    def parse(cls, voice_id: str) -> Voice:
        """Inverse of :attr:`id`."""
        engine, _, name = voice_id.partition(":")
        if engine not in ("espeak", "flite") or not name:
            raise ValueError(
                f"bad voice id {voice_id!r}; expected 'espeak:ACCENT+VARIANT' or 'flite:NAME'"
            )
        return cls(engine, name)


@dataclass(frozen=True)
class VoicePartition:
    """Which voices speak training, test and babble utterances (disjoint sets)."""

    train: tuple[Voice, ...]
    test: tuple[Voice, ...]
    babble: tuple[Voice, ...]


def all_voices(
    accents: Sequence[str] = ESPEAK_ACCENTS,
    variants: Sequence[str] = ESPEAK_VARIANTS,
    flite_voices: Sequence[str] = FLITE_VOICES,
) -> list[Voice]:
    """Every voice identity: accents x variants for espeak-ng, plus the flite voices."""
    voices = [Voice("espeak", f"{a}+{v}") for a in accents for v in variants]
    voices += [Voice("flite", n) for n in flite_voices]
    return voices


def partition_voices(
    voices: Sequence[Voice],
    *,
    test_accents: Sequence[str],
    test_variants: Sequence[str],
    babble_variants: Sequence[str],
) -> VoicePartition:
    """Split voices into train / test / babble by accent and variant (flite name counts as variant).

    Args:
        voices: the inventory, e.g. :func:`all_voices`.
        test_accents: espeak accents held out for testing (all their variants are test voices).
        test_variants: espeak variants or flite names held out for testing.
        babble_variants: espeak variants or flite names held out for babble noise.
    """
    overlap = set(test_variants) & set(babble_variants)
    if overlap:
        raise ValueError(f"variants {sorted(overlap)} are both test and babble variants")
    train, test, babble = [], [], []
    for v in voices:
        if v.accent in test_accents or v.variant in test_variants:
            test.append(v)
        elif v.variant in babble_variants:
            babble.append(v)
        else:
            train.append(v)
    for role, group in (("train", train), ("test", test), ("babble", babble)):
        if not group:
            raise ValueError(f"the voice partition leaves no {role} voice")
    return VoicePartition(tuple(train), tuple(test), tuple(babble))


@functools.lru_cache(maxsize=1)
def espeak_variants_available() -> frozenset[str]:
    """Names of the voice variants the installed espeak-ng offers."""
    out = subprocess.run(
        [sources.espeak(), "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            names.add(fields[4][3:])
    return frozenset(names)


def check_voices(voices: Sequence[Voice]) -> None:
    """Raise :class:`CorpusError` if a voice needs a program or variant that is not installed.

    espeak-ng silently falls back to its default for an unknown variant, which would
    mislabel the corpus; hence the explicit check.
    """
    engines = {v.engine for v in voices}
    if "flite" in engines:
        sources.flite()
    if "espeak" in engines:
        available = espeak_variants_available()
        missing = sorted({v.variant for v in voices if v.engine == "espeak"} - available)
        if missing:
            raise CorpusError(
                f"espeak-ng has no voice variant(s) {missing}; installed: {sorted(available)}"
            )


def trim_silence(x: np.ndarray, *, top_db: float = 40.0, pad_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing 10 ms frames more than ``top_db`` below the loudest; keep ``pad_s``."""
    frame = SAMPLE_RATE // 100
    n = len(x) // frame
    if n == 0:
        return x
    energy = np.mean(x[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1) + 1e-12
    active = np.flatnonzero(10 * np.log10(energy / energy.max()) > -top_db)
    pad = int(pad_s * SAMPLE_RATE)
    start = max(0, active[0] * frame - pad)
    stop = min(len(x), (active[-1] + 1) * frame + pad)
    return x[start:stop]


def synthesize(voice: Voice, text: str, *, rate: float = 1.0, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with ``voice``; return float32 samples at 8 kHz, silence trimmed.

    Args:
        voice: the speaker.
        text: normalised text (what is said is exactly the transcript).
        rate: speaking-rate factor (1.0 = the engine's default; >1 is faster).
        pitch: espeak-ng pitch, 0-99 (ignored by flite).

    Raises:
        MissingPackageError: when the engine is not installed.
        CorpusError: when the engine fails or produces no audio.
    """
    if not text.strip():
        raise ValueError("synthesize needs non-empty text")
    with tempfile.TemporaryDirectory(prefix="asr_se_tts_") as tmp:
        out = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            cmd = [
                sources.espeak(),
                "-v",
                voice.name,
                "-s",
                str(round(175 * rate)),
                "-p",
                str(int(pitch)),
                "-w",
                str(out),
                text,
            ]
        elif voice.engine == "flite":
            cmd = [
                sources.flite(),
                "-voice",
                voice.name,
                "--setf",
                f"duration_stretch={1.0 / rate:.4f}",
                "-t",
                text,
                "-o",
                str(out),
            ]
        else:
            raise ValueError(f"unknown TTS engine {voice.engine!r}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise CorpusError(
                f"{voice.engine} failed for voice {voice.id} on {text!r}: {proc.stderr.strip()}"
            )
        samples, file_rate = read_wav(out, rate=None)
    x = resample(samples.astype(np.float32) / 32768.0, file_rate, SAMPLE_RATE)
    if not np.any(x):
        raise CorpusError(f"{voice.engine} produced silence for voice {voice.id} on {text!r}")
    return trim_silence(x)
