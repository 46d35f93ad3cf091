"""WAV input/output with validation, atomic writes and content hashes.

The corpus is stored as 8 kHz, 16-bit, mono PCM WAV. Reading always checks those
three properties and the integrity of the file, so that a corrupt or
wrong-rate file is reported by name instead of silently producing garbage
features. Writing goes through a temporary file and :func:`os.replace`, so an
interrupted build never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import io
import os
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from .errors import CorpusError

SAMPLE_RATE = 8000
"""The corpus sample rate in Hz (telephone band, like the real test prompts)."""

_INT16_SCALE = 32768.0


def read_wav(path: str | Path, *, rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Read a 16-bit mono PCM WAV file.

    Args:
        path: file to read.
        rate: required sample rate in Hz, or ``None`` to accept any rate.

    Returns:
        ``(samples, rate)`` with ``samples`` a 1-D ``int16`` array.

    Raises:
        CorpusError: naming ``path`` when it is missing, not a valid WAV file, truncated,
            not 16-bit mono, or not at ``rate`` Hz.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, file_rate, frames = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            data = w.readframes(frames)
    except FileNotFoundError:
        raise CorpusError(f"audio file not found: {path}") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise CorpusError(f"corrupt or unsupported WAV file {path}: {exc}") from exc
    if channels != 1 or width != 2:
        raise CorpusError(
            f"WAV file {path} has {channels} channel(s) of {8 * width}-bit samples; "
            "expected mono 16-bit PCM"
        )
    if rate is not None and file_rate != rate:
        raise CorpusError(f"WAV file {path} has sample rate {file_rate} Hz; expected {rate} Hz")
    if len(data) != 2 * frames:
        raise CorpusError(
            f"corrupt WAV file {path}: header announces {frames} samples "
            f"but the file holds {len(data) // 2}"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.int16), file_rate


def read_wav_float(path: str | Path, *, rate: int | None = SAMPLE_RATE) -> np.ndarray:
    """Read a WAV file (see :func:`read_wav`) as float32 samples in [-1, 1)."""
    samples, _ = read_wav(path, rate=rate)
    return samples.astype(np.float32) / _INT16_SCALE


def to_int16(x: np.ndarray) -> np.ndarray:
    """Quantise float samples in [-1, 1] to int16 (rounding, with saturation)."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * _INT16_SCALE), -32768, 32767).astype(
        np.int16
    )


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Encode int16 samples as the bytes of a mono 16-bit WAV file."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"samples must be a 1-D int16 array, got {samples.dtype} {samples.shape}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> str:
    """Write int16 samples atomically (temp file + rename) and return the file's SHA-256.

    Args:
        path: destination; parent directories are created.
        samples: 1-D ``int16`` array.
        rate: sample rate in Hz.
    """
    data = wav_bytes(samples, rate)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resample(x: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float samples with a polyphase filter (:func:`scipy.signal.resample_poly`)."""
    if from_rate == to_rate:
        return np.asarray(x, dtype=np.float32)
    g = np.gcd(from_rate, to_rate)
    y = resample_poly(np.asarray(x, dtype=np.float64), to_rate // g, from_rate // g)
    return np.asarray(y, dtype=np.float32)
