"""The joint system: a BLSTM mask-estimating enhancer feeding a Conformer CTC recogniser.

The shape of Gradient Remedy's system (Hu et al., ICASSP 2023), sized for two CPU cores:
the enhancement (SE) front end estimates a time-frequency mask on the noisy STFT
magnitude; the recogniser (ASR) reads log-mel features of the ENHANCED magnitude, so the
ASR loss back-propagates into the front end, where it meets the SE loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional

from examples.asr_se import vocabulary
from examples.asr_se.augment import AugmentConfig, mask_features, random_warp
from examples.asr_se.features import STFT, LogMel, frame_mask


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the joint model, and the recogniser's training-time augmentation."""

    sample_rate: int = 8000
    n_fft: int = 256
    hop: int = 128
    se_hidden: int = 128
    se_layers: int = 2
    n_mels: int = 40
    d_model: int = 144
    heads: int = 4
    blocks: int = 4
    ff_multiplier: int = 4
    conv_kernel: int = 15
    dropout: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class MaskEnhancer(nn.Module):
    """SE front end: a bidirectional LSTM on log magnitude estimating a [0, 1] mask."""

    def __init__(self, bins: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(bins, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.mask = nn.Linear(2 * hidden, bins)

    def forward(self, magnitude: Tensor, frames: Tensor) -> Tensor:
        """Enhanced magnitude ``mask * magnitude``, ``(B, T, bins)``.

        The LSTM runs on the zero-padded batch, not a packed sequence: on CPU the backward
        pass of a packed LSTM costs time quadratic in the batch's frames, and batches are
        bucketed by length, so little padding is seen. Padded frames are masked out of the
        loss and the recogniser.
        """
        features = torch.log1p(magnitude * 100.0)
        hidden, _ = self.lstm(features)
        return torch.sigmoid(self.mask(hidden)) * magnitude


class ConvolutionModule(nn.Module):
    """Conformer convolution module: pointwise-GLU, depthwise conv, norm, Swish, pointwise."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.norm(x).masked_fill(~mask.unsqueeze(-1), 0.0).transpose(1, 2)
        y = functional.glu(self.pointwise_in(y), dim=1)
        y = functional.silu(self.batch_norm(self.depthwise(y)))
        out: Tensor = self.dropout(self.pointwise_out(y).transpose(1, 2))
        return out


class ConformerBlock(nn.Module):
    """Half-step feed-forward, self-attention, convolution, half-step feed-forward, norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, hidden = config.d_model, config.ff_multiplier * config.d_model

        def feed_forward() -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(d),
                nn.Linear(d, hidden),
                nn.SiLU(),
                nn.Dropout(config.dropout),
                nn.Linear(hidden, d),
                nn.Dropout(config.dropout),
            )

        self.ff_in, self.ff_out = feed_forward(), feed_forward()
        self.attention_norm = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(
            d, config.heads, dropout=config.dropout, batch_first=True
        )
        self.convolution = ConvolutionModule(d, config.conv_kernel, config.dropout)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + 0.5 * self.ff_in(x)
        y = self.attention_norm(x)
        y, _ = self.attention(y, y, y, key_padding_mask=~mask, need_weights=False)
        x = x + self.dropout(y)
        x = x + self.convolution(x, mask)
        x = x + 0.5 * self.ff_out(x)
        out: Tensor = self.norm(x)
        return out


class Recognizer(nn.Module):
    """ASR back end: log-mel, 2x convolutional subsampling, Conformer blocks, CTC head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.features = LogMel(config.n_mels, config.n_fft, config.sample_rate)
        self.augment = config.augment
        self.subsample = nn.Sequential(
            nn.Conv1d(config.n_mels, config.d_model, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv1d(config.d_model, config.d_model, 3, padding=1),
            nn.SiLU(),
        )
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.blocks))
        self.output = nn.Linear(config.d_model, vocabulary.SIZE)

    @staticmethod
    def output_frames(frames: Tensor) -> Tensor:
        """Frames after the stride-2 subsampling."""
        return (frames - 1) // 2 + 1

    def forward(self, magnitude: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, bins)`` magnitude to ``(B, T', SIZE)`` log-probabilities and ``T'`` counts.

        In training mode the features are augmented as ``config.augment`` says (VTLP, then
        SpecAugment masks); in evaluation mode never.
        """
        augment = self.training and self.augment.active
        warp = None
        if augment and self.augment.warp > 0:
            warp = random_warp(magnitude.shape[0], self.augment.warp, device=magnitude.device)
        features = self.features(magnitude, frames, warp)
        if augment:
            features = mask_features(features, frames, self.augment)
        x = self.subsample(features.transpose(1, 2)).transpose(1, 2)
        out_frames = self.output_frames(frames)
        mask = frame_mask(out_frames, x.shape[1])
        for block in self.blocks:
            x = block(x, mask)
        return functional.log_softmax(self.output(x), dim=-1), out_frames


@dataclass
class Outputs:
    """What one forward pass of :class:`JointModel` gives."""

    enhanced: Tensor | None
    """Enhanced magnitude ``(B, T, bins)``, or ``None`` without the front end."""
    noisy: Tensor
    """Noisy magnitude ``(B, T, bins)``."""
    phase: Tensor
    """Noisy phase ``(B, T, bins)``, for resynthesis."""
    frames: Tensor
    """Valid STFT frames ``(B,)``."""
    log_probs: Tensor
    """Recogniser log-probabilities ``(B, T', SIZE)``."""
    out_frames: Tensor
    """Valid recogniser frames ``(B,)``."""


class JointModel(nn.Module):
    """SE front end (``self.se``) feeding the recogniser (``self.asr``).

    Args:
        config: model sizes.
        use_enhancer: ``False`` builds the ASR-alone system that reads the noisy input.
    """

    def __init__(self, config: ModelConfig, use_enhancer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.stft = STFT(config.n_fft, config.hop)
        bins = config.n_fft // 2 + 1
        self.se = MaskEnhancer(bins, config.se_hidden, config.se_layers) if use_enhancer else None
        self.asr = Recognizer(config)

    def forward(self, noisy: Tensor, lengths: Tensor) -> Outputs:
        magnitude, phase = self.stft(noisy)
        frames = self.stft.frames(lengths)
        enhanced = None if self.se is None else self.se(magnitude, frames)
        log_probs, out_frames = self.asr(magnitude if enhanced is None else enhanced, frames)
        return Outputs(enhanced, magnitude, phase, frames, log_probs, out_frames)


def se_loss(enhanced: Tensor, clean_magnitude: Tensor, frames: Tensor) -> Tensor:
    """The authors' SE loss: squared magnitude error summed over frequency and valid frames,
    divided by the frame count, averaged over the batch."""
    mask = frame_mask(frames, enhanced.shape[1]).unsqueeze(-1)
    squared = (enhanced - clean_magnitude).pow(2).masked_fill(~mask, 0.0)
    return (squared.sum(dim=(1, 2)) / frames.clamp(min=1)).mean()


def asr_loss(log_probs: Tensor, out_frames: Tensor, texts: list[str]) -> Tensor:
    """CTC loss, normalised by target length and averaged over the batch."""
    targets, target_lengths = vocabulary.encode_batch(texts)
    return functional.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        out_frames,
        target_lengths,
        blank=vocabulary.BLANK,
        reduction="mean",
        zero_infinity=True,
    )
