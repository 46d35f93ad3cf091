"""Short-time Fourier transform and log-mel features, in torch (differentiable)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from examples.asr_se.augment import warp_frequencies


class STFT(nn.Module):
    """Magnitude and phase of a Hann-windowed STFT, and its inverse.

    Args:
        n_fft: FFT size (``n_fft // 2 + 1`` frequency bins).
        hop: hop length in samples.
    """

    window: Tensor

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def frames(self, samples: Tensor) -> Tensor:
        """Frame counts for sample counts (``center=True`` framing)."""
        return samples // self.hop + 1

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, N)`` waveform to ``(B, frames, bins)`` magnitude and phase.

        With ``lengths`` (``(B,)`` sample counts of a zero-padded batch), each row is
        transformed alone, as a batch of one would be (the frames at its end reflect its
        own last samples, not read the padding), and its frames past
        :meth:`frames` ``(length)`` are zero.
        """
        if lengths is None:
            return self._spectrum(waveform)
        magnitude = waveform.new_zeros(waveform.shape[0], self.frame_count(waveform), self.bins)
        phase = torch.zeros_like(magnitude)
        for row, length in enumerate(lengths.tolist()):
            row_magnitude, row_phase = self._spectrum(waveform[row : row + 1, :length])
            count = row_magnitude.shape[1]
            magnitude[row, :count], phase[row, :count] = row_magnitude[0], row_phase[0]
        return magnitude, phase

    @property
    def bins(self) -> int:
        """Frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def frame_count(self, waveform: Tensor) -> int:
        """Frames of the STFT of a ``(B, N)`` batch."""
        return waveform.shape[-1] // self.hop + 1

    def _spectrum(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        spectrum = torch.stft(
            waveform, self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        ).transpose(1, 2)
        return spectrum.abs(), spectrum.angle()

    def inverse(self, magnitude: Tensor, phase: Tensor, length: int) -> Tensor:
        """Waveform from magnitude and phase, ``(B, frames, bins)`` to ``(B, length)``."""
        spectrum = torch.polar(magnitude, phase).transpose(1, 2)
        return torch.istft(spectrum, self.n_fft, self.hop, window=self.window, length=length)

    def inverse_each(self, magnitude: Tensor, phase: Tensor, lengths: Tensor) -> Tensor:
        """Each row's waveform from its own valid frames alone, ``(B, frames, bins)`` to
        ``(B, N)``, ``N`` the longest of ``lengths``, zero past each row's length.

        The inverse of :meth:`forward` with ``lengths``: a row's samples are what a batch
        of one gives, since no frame past :meth:`frames` ``(length)`` is overlapped in.
        """
        out = magnitude.new_zeros(magnitude.shape[0], int(lengths.max()))
        counts = self.frames(lengths)
        for row, (length, count) in enumerate(zip(lengths.tolist(), counts.tolist(), strict=True)):
            valid = slice(row, row + 1), slice(0, count)
            out[row, :length] = self.inverse(magnitude[valid], phase[valid], length)[0]
        return out


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, *, warp: Tensor | None = None
) -> Tensor:
    """Triangular mel filters (HTK mel scale), shape ``(n_fft // 2 + 1, n_mels)``.

    With ``warp`` (``(B,)`` VTLP factors, see :mod:`examples.asr_se.augment`), each STFT bin
    is read as its warped frequency and the result is ``(B, n_fft // 2 + 1, n_mels)``.
    """

    def to_mel(hz: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def to_hz(mel: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    nyquist = sample_rate / 2
    bins = torch.linspace(0.0, nyquist, n_fft // 2 + 1)
    if warp is not None:
        bins = warp_frequencies(bins.to(warp.device), warp, nyquist)
    edges = to_hz(torch.linspace(0.0, float(to_mel(torch.tensor(nyquist))), n_mels + 2))
    edges = edges.to(bins.device)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[..., None] - lower) / (centre - lower)
    falling = (upper - bins[..., None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """Log-mel features of a magnitude spectrogram, normalised per utterance.

    Args:
        n_mels: mel bands.
        n_fft: the STFT's FFT size.
        sample_rate: audio sample rate in Hz.
    """

    filters: Tensor

    def __init__(self, n_mels: int, n_fft: int, sample_rate: int) -> None:
        super().__init__()
        self.n_mels, self.n_fft, self.sample_rate = n_mels, n_fft, sample_rate
        self.register_buffer(
            "filters", mel_filterbank(n_mels, n_fft, sample_rate), persistent=False
        )

    def forward(self, magnitude: Tensor, frames: Tensor, warp: Tensor | None = None) -> Tensor:
        """``(B, T, bins)`` magnitude and valid frame counts to ``(B, T, n_mels)`` features.

        Mean and variance are taken over each utterance's valid frames; padded frames are 0.
        ``warp`` (``(B,)``, optional) applies VTLP's frequency warp per utterance.
        """
        if warp is None:
            filters = self.filters
        else:
            filters = mel_filterbank(self.n_mels, self.n_fft, self.sample_rate, warp=warp).to(
                magnitude.dtype
            )
        features = torch.log(magnitude.pow(2) @ filters + 1e-6)
        mask = torch.arange(features.shape[1], device=features.device)[None, :] < frames[:, None]
        mask = mask.unsqueeze(-1).to(features.dtype)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        mean = (features * mask).sum(dim=1, keepdim=True) / count
        variance = ((features - mean).pow(2) * mask).sum(dim=1, keepdim=True) / count
        return (features - mean) / torch.sqrt(variance + 1e-5) * mask


def frame_mask(frames: Tensor, length: int) -> Tensor:
    """``(B, length)`` boolean mask of valid frames."""
    return torch.arange(length, device=frames.device)[None, :] < frames[:, None]
