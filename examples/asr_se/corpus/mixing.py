"""Speech level, SNR mixing and SNR measurement.

SNR is the ratio of the powers of the clean speech and the added noise over the
whole (silence-trimmed) utterance, in dB. The clean speech is quantised to 16 bits
first and the mixture is built on the quantised clean signal, so that
``noisy = gain * clean + noise`` holds up to the final rounding and the SNR label
can be measured back from the two files (see :func:`measure_snr`). ``gain`` (<= 1)
is recorded in the manifest; it is below 1 only when the mixture would clip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .audio import to_int16

PEAK_LIMIT = 0.99
"""Largest absolute sample value of a mixture, as a fraction of full scale."""


def rms(x: np.ndarray) -> float:
    """Root mean square of a signal (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def set_level(x: np.ndarray, dbfs: float, *, peak_limit: float = PEAK_LIMIT) -> np.ndarray:
    """Scale a signal to an RMS of ``dbfs`` dBFS, less if its peak would exceed ``peak_limit``."""
    x = np.asarray(x, dtype=np.float64)
    r = rms(x)
    if r == 0.0:
        raise ValueError("cannot set the level of a silent signal")
    y = x * (10 ** (dbfs / 20) / r)
    peak = float(np.max(np.abs(y)))
    return y * (peak_limit / peak) if peak > peak_limit else y


def scale_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that ``10 log10(P_clean / P_noise) == snr_db``."""
    if len(clean) != len(noise):
        raise ValueError(f"clean has {len(clean)} samples but noise has {len(noise)}")
    p_noise = rms(noise) ** 2
    if p_noise == 0.0:
        raise ValueError("cannot scale an all-zero noise")
    scale = float(np.sqrt(rms(clean) ** 2 / (p_noise * 10 ** (snr_db / 10))))
    return np.asarray(noise, dtype=np.float64) * scale


def mix(
    clean_q: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    *,
    channel: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Mix int16 clean speech with unit-RMS noise at ``snr_db``; return ``(noisy int16, gain)``.

    Args:
        clean_q: the clean speech as stored (int16).
        noise: additive noise, same length (any scale; it is rescaled).
        snr_db: target SNR in dB of clean speech to added noise.
        channel: optional distortion applied to the sum (the radio link); the SNR
            then describes the additive noise *before* the channel.

    Returns:
        The mixture as int16 and the gain (rounded to 6 decimals) applied to the
        sum to keep its peak at most :data:`PEAK_LIMIT`.
    """
    s = np.asarray(clean_q, dtype=np.float64) / 32768.0
    y = s + scale_noise(s, noise, snr_db)
    if channel is not None:
        y = channel(y)
    peak = float(np.max(np.abs(y)))
    gain = 1.0 if peak <= PEAK_LIMIT else round(PEAK_LIMIT / peak, 6)
    return to_int16(gain * y), gain


def measure_snr(clean_q: np.ndarray, noisy_q: np.ndarray, gain: float = 1.0) -> float:
    """SNR in dB measured back from stored files: ``gain * clean`` vs ``noisy - gain * clean``."""
    s = gain * np.asarray(clean_q, dtype=np.float64)
    n = np.asarray(noisy_q, dtype=np.float64) - s
    p_n = float(np.mean(n**2))
    return float("inf") if p_n == 0.0 else 10.0 * np.log10(float(np.mean(s**2)) / p_n)
