"""The real test speech: Allison's Asterisk prompts and their transcripts.

568 prompts by one professional speaker, 8 kHz, CC-BY-SA-3.0 (Debian packages
``asterisk-core-sounds-en-wav`` for the audio and ``asterisk-core-sounds-en`` for
``core-sounds-en.txt.gz``). They are only ever used for testing.

Transcript clean-up before :func:`~.text.normalize_text`:

* ``[...]`` annotations are descriptions (``[ascending tones]``) or echoes of a
  symbol (``at [@]``) and are removed; so are ``(...)`` notes
  (``IAX (note: does not say "2")``, ``(10 seconds of silence)``).
* A prompt whose transcript is empty after that is *not speech* (tones, beeps,
  silence, monkeys) and is excluded, with the reason recorded.
* A prompt whose audio is missing or (near) silent is excluded likewise.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import sources
from .audio import read_wav
from .errors import CorpusError
from .text import is_unseen_text, normalize_text

_RE_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)")
_SILENT_RMS = 10 ** (-55 / 20)  # below -55 dBFS the prompt holds no speech


@dataclass(frozen=True)
class Prompt:
    """One real prompt.

    Attributes:
        name: the prompt's name in the Asterisk sound set, e.g. ``"vm-goodbye"`` or ``"digits/7"``.
        raw: the transcript as written in ``core-sounds-en.txt.gz``.
        text: the normalised transcript (empty for non-speech prompts).
        path: the prompt's WAV file.
        test_set: ``"real_seen_text"`` or ``"real_unseen_text"`` by :func:`~.text.is_unseen_text`.
        excluded: why the prompt is not in the corpus, or ``""`` when it is.
    """

    name: str
    raw: str
    text: str
    path: Path
    test_set: str
    excluded: str = ""


def clean_transcript(raw: str) -> str:
    """Remove ``[...]`` and ``(...)`` annotations from a prompt transcript."""
    return _RE_ANNOTATION.sub(" ", raw).strip()


def read_transcripts(path: Path | None = None) -> list[tuple[str, str]]:
    """Parse ``core-sounds-en.txt.gz`` into ``(name, raw transcript)`` pairs, in file order.

    Raises:
        MissingPackageError: when the file is absent.
        CorpusError: when the file cannot be decoded.
    """
    path = path or sources.asterisk_transcripts()
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError) as exc:
        raise CorpusError(f"cannot read prompt transcripts {path}: {exc}") from exc
    pairs = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, raw = line.split(":", 1)
        pairs.append((name.strip(), raw.strip()))
    if not pairs:
        raise CorpusError(f"prompt transcript file {path} holds no 'name: text' lines")
    return pairs


def load_prompts(check_audio: bool = True) -> list[Prompt]:
    """All prompts listed in the transcript file, usable or not, in file order.

    Args:
        check_audio: read every WAV file, validating its format (8 kHz 16-bit mono;
            a bad file raises :class:`CorpusError` naming it) and excluding silent ones.
    """
    sounds = sources.asterisk_sounds_dir()
    prompts = []
    for name, raw in read_transcripts():
        text = normalize_text(clean_transcript(raw))
        path = sounds / f"{name}.wav"
        test_set = "real_unseen_text" if is_unseen_text(text) else "real_seen_text"
        excluded = ""
        if not text:
            excluded = f"not speech: transcript {raw!r}"
        elif not path.exists():
            excluded = f"no audio file {path}"
        elif check_audio:
            samples, _ = read_wav(path)
            rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
            if samples.size < 800 or rms < _SILENT_RMS:
                excluded = f"silent or too short audio ({samples.size} samples, rms {rms:.2g})"
        prompts.append(Prompt(name, raw, text, path, test_set, excluded))
    return prompts


def usable_prompts() -> list[Prompt]:
    """The prompts that make the real test sets (speech, with valid audio)."""
    return [p for p in load_prompts() if not p.excluded]
