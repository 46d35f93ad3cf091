"""Training-time augmentation of the recogniser's features: frequency warping and masking.

The recogniser learns from synthetic voices and is tested on a human one, so it is shown
more speakers than the synthesisers have, and taught not to rely on any one band or
moment:

* **Vocal tract length perturbation** (VTLP; Jaitly and Hinton, "Vocal Tract Length
  Perturbation (VTLP) improves speech recognition", ICML WDLASL 2013): each utterance's
  frequency axis is stretched by a factor ``alpha`` drawn uniformly from
  ``[1 - warp, 1 + warp]`` before the mel filters, with a piecewise-linear map that keeps
  the Nyquist frequency ``N`` fixed::

      f' = alpha * f                                          for f <= f0
      f' = alpha * f0 + (N - alpha * f0) (f - f0) / (N - f0)   for f > f0,
      f0 = 0.85 * N * min(1, 1 / alpha)

  (a longer or shorter vocal tract moves every formant by about the same factor).
* **SpecAugment masking** (Park et al., "SpecAugment: A Simple Data Augmentation Method
  for Automatic Speech Recognition", Interspeech 2019): ``freq_masks`` bands of up to
  ``freq_mask_width`` mel channels and ``time_masks`` spans of up to ``time_mask_width``
  frames (and at most 20% of the utterance's frames each) are set to zero, the mean of the
  normalised features. Time warping is left out, as most implementations do.

Both act on the recogniser's input only, in training mode only, and draw from torch's
global generator (so a resumed run draws what an uninterrupted one would). The
enhancement front end and its loss see the signal unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_WARP_KNEE = 0.85
"""``f0 / N`` at ``alpha = 1``: VTLP's map is linear below the knee, then meets Nyquist."""

_MAX_TIME_MASK_FRACTION = 0.2
"""A time mask covers at most this share of the utterance's valid frames."""


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time feature augmentation of the recogniser (all off by default).

    Attributes:
        warp: VTLP's largest relative frequency stretch; ``alpha ~ U[1 - warp, 1 + warp]``.
        freq_masks: SpecAugment frequency masks per utterance.
        freq_mask_width: the widest frequency mask, in mel channels.
        time_masks: SpecAugment time masks per utterance.
        time_mask_width: the widest time mask, in STFT frames.
    """

    warp: float = 0.0
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warp < 1.0:
            raise ValueError(f"warp must be in [0, 1), got {self.warp}")
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return (
            self.warp > 0
            or (self.freq_masks > 0 and self.freq_mask_width > 0)
            or (self.time_masks > 0 and self.time_mask_width > 0)
        )


def warp_frequencies(frequencies: Tensor, alpha: Tensor, nyquist: float) -> Tensor:
    """VTLP's piecewise-linear map of ``frequencies`` (``(F,)``, Hz) for each ``alpha`` (``(B,)``).

    Returns ``(B, F)`` warped frequencies: ``alpha * f`` below the knee
    ``f0 = 0.85 * nyquist * min(1, 1 / alpha)``, then a straight line to ``nyquist``, so the
    map is continuous, increasing and fixes 0 and ``nyquist``.
    """
    alpha = alpha[:, None]
    knee = _WARP_KNEE * nyquist * torch.clamp(1.0 / alpha, max=1.0)
    below = alpha * frequencies
    above = alpha * knee + (nyquist - alpha * knee) * (frequencies - knee) / (nyquist - knee)
    return torch.where(frequencies <= knee, below, above)


def random_warp(batch: int, warp: float, *, device: torch.device | None = None) -> Tensor:
    """``batch`` VTLP factors drawn uniformly from ``[1 - warp, 1 + warp]``."""
    return 1.0 + warp * (2.0 * torch.rand(batch, device=device) - 1.0)


def _random_spans(
    count: int, max_width: Tensor, extent: Tensor, size: int, device: torch.device
) -> Tensor:
    """``(B, size)`` mask of ``count`` random spans per row, each of width ``U{0..max_width}``
    (per row) and starting uniformly where it fits within the row's ``extent``."""
    rows = extent.shape[0]
    positions = torch.arange(size, device=device)
    covered = torch.zeros(rows, size, dtype=torch.bool, device=device)
    for _ in range(count):
        width = torch.floor(torch.rand(rows, device=device) * (max_width + 1)).long()
        room = (extent - width).clamp(min=0)
        start = torch.floor(torch.rand(rows, device=device) * (room + 1)).long()
        covered |= (positions[None, :] >= start[:, None]) & (
            positions[None, :] < (start + width)[:, None]
        )
    return covered


def mask_features(features: Tensor, frames: Tensor, config: AugmentConfig) -> Tensor:
    """SpecAugment's frequency and time masks on ``(B, T, n_mels)`` normalised features.

    Masked entries become zero (the per-utterance mean after normalisation). Time masks lie
    within each utterance's ``frames`` and cover at most 20% of them each.
    """
    batch, length, channels = features.shape
    device = features.device
    keep = torch.ones_like(features, dtype=torch.bool)
    if config.freq_masks > 0 and config.freq_mask_width > 0:
        width = torch.full((batch,), min(config.freq_mask_width, channels), device=device)
        extent = torch.full((batch,), channels, device=device)
        keep &= ~_random_spans(config.freq_masks, width, extent, channels, device)[:, None, :]
    if config.time_masks > 0 and config.time_mask_width > 0:
        cap = torch.floor(frames.to(torch.float32) * _MAX_TIME_MASK_FRACTION).long()
        width = cap.clamp(max=config.time_mask_width)
        keep &= ~_random_spans(config.time_masks, width, frames.long(), length, device)[:, :, None]
    return features * keep
