"""Noise sources: generated stationary noise, babble, music on hold, and a radio channel.

Noise types and their sets (Aurora-2 style):

========  ===  ===========================================================
name      set  what
========  ===  ===========================================================
white     A    generated white Gaussian noise
pink      A    generated 1/f noise
babble    A    several held-out TTS voices talking at once (built per corpus)
music_a   A    the training music tracks (test set A uses unseen *segments*)
brown     B    generated 1/f^2 noise (high-passed at 20 Hz)
radio     B    RATS-like channel: static + band-limiting, carrier shift, fading, clipping
music_b   B    music tracks never used in training
========  ===  ===========================================================

Set A types are the only ones seen in training. Babble and training music are
split in time: the first part of each recording feeds training and dev, the
tail feeds test set A, so no test noise sample was ever heard in training.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, hilbert, sosfilt

from .audio import SAMPLE_RATE, read_wav_float
from .errors import CorpusError

SEEN_NOISES = ("white", "pink", "babble", "music_a")
"""Noise set A: seen in training."""
UNSEEN_NOISES = ("brown", "radio", "music_b")
"""Noise set B: never in training or dev."""
GENERATED = ("white", "pink", "brown")


def noise_set(noise: str) -> str:
    """``"A"``, ``"B"`` or ``"clean"`` for a noise name (``"none"`` is clean)."""
    if noise == "none":
        return "clean"
    if noise in SEEN_NOISES:
        return "A"
    if noise in UNSEEN_NOISES:
        return "B"
    raise ValueError(f"unknown noise type {noise!r}; expected one of {SEEN_NOISES + UNSEEN_NOISES}")


def unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (float64)."""
    x = np.asarray(x, dtype=np.float64)
    r = float(np.sqrt(np.mean(x**2)))
    if r == 0.0:
        raise ValueError("cannot normalise an all-zero noise segment")
    return x / r


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2 power) Gaussian noise of unit RMS.

    Coloured noise is shaped in the frequency domain; components below 20 Hz are
    removed so that brown noise does not drift.
    """
    white = rng.standard_normal(n)
    if kind == "white":
        return unit_rms(white)
    exponent = {"pink": 0.5, "brown": 1.0}.get(kind)
    if exponent is None:
        raise ValueError(f"unknown generated noise {kind!r}; expected white, pink or brown")
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    shape = np.zeros_like(f)
    keep = f >= 20.0
    shape[keep] = f[keep] ** -exponent
    return unit_rms(np.fft.irfft(spec * shape, n))


def crop(
    track: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    tries: int = 8,
    overall: float | None = None,
) -> tuple[np.ndarray, int]:
    """A random ``n``-sample segment of ``track`` (looping within it if shorter), unit RMS.

    Near-silent segments (a pause in the music) are redrawn up to ``tries`` times.

    Args:
        overall: the RMS of ``track`` if already known (it is cached by :class:`NoiseBank`).

    Returns:
        ``(segment, start)``, ``start`` the segment's first sample in ``track``.
    """
    if track.size == 0:
        raise ValueError("cannot crop an empty noise recording")
    if overall is None:
        overall = float(np.sqrt(np.mean(np.asarray(track, dtype=np.float64) ** 2)))
    seg, start = track, 0
    for _ in range(tries):
        start = int(rng.integers(track.size))
        idx = (start + np.arange(n)) % track.size
        seg = track[idx]
        if np.sqrt(np.mean(np.asarray(seg, dtype=np.float64) ** 2)) > 0.1 * overall:
            break
    return unit_rms(seg), start


def radio_static(n: int, rng: np.random.Generator) -> np.ndarray:
    """The additive part of the radio condition: band-limited hiss plus crackle, unit RMS."""
    hiss = colored_noise("pink", n, rng)
    crackle = np.zeros(n)
    n_clicks = rng.poisson(n / SAMPLE_RATE * 20)
    pos = rng.integers(0, n, size=n_clicks)
    crackle[pos] = rng.standard_normal(n_clicks) * 8.0
    return unit_rms(hiss + crackle)


def radio_channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distort a signal like a narrow-band radio link (in the spirit of DARPA RATS).

    Band-limiting to a random 250-400 .. 2500-3200 Hz pass band, a single-sideband
    carrier mistuning of up to +-150 Hz (every frequency shifted), slow fading, and
    hard clipping of the loudest 1-5 % of samples. The output has the input's RMS.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    target = float(np.sqrt(np.mean(x**2))) or 1.0
    lo, hi = rng.uniform(250, 400), rng.uniform(2500, 3200)
    y = sosfilt(butter(4, [lo, hi], btype="band", fs=SAMPLE_RATE, output="sos"), x)
    shift = rng.uniform(-150, 150)
    t = np.arange(n) / SAMPLE_RATE
    y = np.real(hilbert(y) * np.exp(2j * np.pi * shift * t))
    fade = 1.0 - rng.uniform(0.1, 0.4) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t))
    y = y * fade
    level = np.quantile(np.abs(y), 1.0 - rng.uniform(0.01, 0.05))
    if level > 0:
        y = np.clip(y, -level, level)
    r = float(np.sqrt(np.mean(y**2)))
    return np.asarray(y * (target / r) if r > 0 else y)


class NoiseBank:
    """Recorded noises (music tracks, babble) and their train/test segments.

    Args:
        recordings: name -> float samples at 8 kHz, e.g. ``{"music_a:cold_day": x, "babble": y}``.
        test_fraction: the tail fraction of each *seen* recording reserved for test set A.
        seen_names: names of recordings of seen noise types (split in time); the others
            (unseen-set recordings) are used whole, for testing only.
    """

    def __init__(
        self, recordings: dict[str, np.ndarray], *, test_fraction: float, seen_names: set[str]
    ) -> None:
        self.recordings = recordings
        self.test_fraction = test_fraction
        self.seen_names = seen_names
        self._rms: dict[tuple[str, str], float] = {}

    @classmethod
    def load(
        cls, paths: dict[str, str], *, test_fraction: float, seen_names: set[str]
    ) -> NoiseBank:
        """Load recordings from WAV files (validated: 8 kHz 16-bit mono)."""
        return cls(
            {k: read_wav_float(p) for k, p in paths.items()},
            test_fraction=test_fraction,
            seen_names=seen_names,
        )

    def region(self, name: str, role: str) -> np.ndarray:
        """Samples of recording ``name`` usable for ``role`` (``"train"`` or ``"test"``)."""
        offset, stop = self.bounds(name, role)
        return self.recordings[name][offset:stop]

    def bounds(self, name: str, role: str) -> tuple[int, int]:
        """``(start, stop)`` sample range of recording ``name`` usable for ``role``."""
        if name not in self.recordings:
            raise CorpusError(
                f"noise recording {name!r} is not loaded; have {sorted(self.recordings)}"
            )
        size = self.recordings[name].size
        if name not in self.seen_names:
            if role != "test":
                raise CorpusError(f"noise recording {name!r} is unseen-set noise, test only")
            return 0, size
        cut = round(size * (1.0 - self.test_fraction))
        return (0, cut) if role == "train" else (cut, size)

    def region_rms(self, name: str, role: str) -> float:
        """RMS of :meth:`region` (cached: recordings are long and used for every mixture)."""
        key = (name, role)
        if key not in self._rms:
            x = np.asarray(self.region(name, role), dtype=np.float64)
            self._rms[key] = float(np.sqrt(np.mean(x**2)))
        return self._rms[key]

    def names(self, prefix: str) -> list[str]:
        """Recording names starting with ``prefix`` (e.g. all ``music_a:`` tracks), sorted."""
        return sorted(k for k in self.recordings if k.startswith(prefix))


def make_noise(
    noise: str, n: int, rng: np.random.Generator, bank: NoiseBank | None, role: str
) -> tuple[np.ndarray, str]:
    """An ``n``-sample, unit-RMS additive noise of type ``noise`` for ``role`` (train/test).

    For ``radio`` this is the static that is added before :func:`radio_channel`.

    Returns:
        ``(noise, source)``: ``source`` says where the samples come from, ``"generated"``
        or ``"<recording>@<first sample>"`` (e.g. ``"music_a:macroform-cold_day@81234"``),
        so leaks of test noise into training can be checked from the manifest.
    """
    if noise in GENERATED:
        return colored_noise(noise, n, rng), "generated"
    if noise == "radio":
        return radio_static(n, rng), "generated"
    if bank is None:
        raise ValueError(f"noise {noise!r} needs a NoiseBank")
    if noise == "babble":
        name = "babble"
    elif noise in ("music_a", "music_b"):
        tracks = bank.names(noise + ":")
        if not tracks:
            raise CorpusError(f"no {noise} tracks configured")
        name = tracks[int(rng.integers(len(tracks)))]
    else:
        raise ValueError(f"unknown noise type {noise!r}")
    offset, _ = bank.bounds(name, role)
    segment, start = crop(bank.region(name, role), n, rng, overall=bank.region_rms(name, role))
    return segment, f"{name}@{offset + start}"
