"""The joint system: a BLSTM mask-estimating enhancer feeding a Conformer CTC recogniser.

The shape of Gradient Remedy's system (Hu et al., ICASSP 2023), sized for two CPU cores:
the enhancement (SE) front end estimates a time-frequency mask on the noisy STFT
magnitude; the recogniser (ASR) reads log-mel features of the ENHANCED magnitude, so the
ASR loss back-propagates into the front end, where it meets the SE loss.

Batches are zero-padded, and an utterance's outputs at its valid frames do not depend on
the padding, so not on which utterances share its batch (up to float round-off; in
evaluation mode, where no statistic is taken over the batch): each row's STFT is its
own, the LSTM's reverse direction starts at each row's last valid frame, activations at
padded frames are zeroed after every convolution that reads across frames, and attention
ignores padded keys. (In training, BatchNorm's batch statistics still cover the padded
frames.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call
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


def reversal_index(frames: Tensor, length: int) -> Tensor:
    """``(B, length)`` time indices that reverse each row's first ``frames`` frames and
    keep its padded frames in place (an involution: applied twice, it is the identity)."""
    time = torch.arange(length, device=frames.device)[None, :]
    last = frames[:, None] - 1
    return torch.where(time <= last, last - time, time)


def _take_frames(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, t]]`` for a ``(B, T, C)`` ``x`` and a ``(B, T)`` ``index``."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def one_way_shells(lstm: nn.LSTM) -> tuple[nn.LSTM, ...]:
    """Per layer of ``lstm``, a parameterless one-way one-layer LSTM of its shape (on the
    meta device) for :func:`length_aware_blstm` to fill with one direction's weights."""
    return tuple(
        nn.LSTM(
            lstm.input_size if layer == 0 else 2 * lstm.hidden_size,
            lstm.hidden_size,
            batch_first=True,
            device="meta",
        )
        for layer in range(lstm.num_layers)
    )


def _one_direction(lstm: nn.LSTM, shell: nn.LSTM, x: Tensor, layer: int, suffix: str) -> Tensor:
    """Layer ``layer`` of ``lstm`` in the direction ``suffix`` (``""`` or ``"_reverse"``),
    run forward in time over ``(B, T, C)`` ``x``."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights = {f"{name}_l0": getattr(lstm, f"{name}_l{layer}{suffix}") for name in names}
    out, _ = functional_call(shell, weights, (x,))
    result: Tensor = out
    return result


def length_aware_blstm(
    lstm: nn.LSTM, shells: tuple[nn.LSTM, ...], x: Tensor, frames: Tensor
) -> Tensor:
    """The bidirectional, batch-first ``lstm`` over ``(B, T, C)`` ``x`` whose rows have
    ``frames`` valid frames: ``(B, T, 2 * hidden)``, zero at padded frames.

    Each layer runs each direction as a one-way LSTM (``shells``, from
    :func:`one_way_shells`, with the layer's weights of that direction): the forward one
    over the padded batch, the reverse one over every row reversed within its valid
    frames, so that it starts at the row's last valid frame. The outputs at valid frames
    are those of a packed sequence, and of a batch of one, at about the cost of the
    padded LSTM (a packed one is much slower on CPU, forward and backward).
    """
    index = reversal_index(frames, x.shape[1])
    for layer, shell in enumerate(shells):
        forward = _one_direction(lstm, shell, x, layer, "")
        reverse = _one_direction(lstm, shell, _take_frames(x, index), layer, "_reverse")
        x = torch.cat([forward, _take_frames(reverse, index)], dim=-1)
    return x.masked_fill(~frame_mask(frames, x.shape[1]).unsqueeze(-1), 0.0)


class MaskEnhancer(nn.Module):
    """SE front end: a bidirectional LSTM on log magnitude estimating a [0, 1] mask."""

    def __init__(self, bins: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(bins, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.mask = nn.Linear(2 * hidden, bins)
        self._shells = one_way_shells(self.lstm)  # a tuple: not submodules, no parameters

    def forward(self, magnitude: Tensor, frames: Tensor) -> Tensor:
        """Enhanced magnitude ``mask * magnitude``, ``(B, T, bins)``, zero at padded frames.

        The LSTM is length-aware (:func:`length_aware_blstm`), in training and evaluation
        alike: a row's output at its valid frames does not depend on the padding.
        """
        features = torch.log1p(magnitude * 100.0)
        hidden = length_aware_blstm(self.lstm, self._shells, features, frames)
        enhanced = torch.sigmoid(self.mask(hidden)) * magnitude
        return enhanced.masked_fill(~frame_mask(frames, enhanced.shape[1]).unsqueeze(-1), 0.0)


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
        """``(B, T, d_model)`` to the same; ``mask`` (``(B, T)``) marks the valid frames.

        The depthwise convolution reads only valid frames and zeros (its input is zeroed
        at padded frames after the biased pointwise layer), as a batch of one does; the
        output is zero at padded frames.
        """
        padded = ~mask.unsqueeze(1)
        y = self.norm(x).transpose(1, 2).masked_fill(padded, 0.0)
        y = functional.glu(self.pointwise_in(y), dim=1).masked_fill(padded, 0.0)
        y = functional.silu(self.batch_norm(self.depthwise(y)))
        y = self.pointwise_out(y).masked_fill(padded, 0.0)
        out: Tensor = self.dropout(y.transpose(1, 2))
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

    def _subsampled(self, features: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, n_mels)`` features (zero at padded frames) to ``(B, T', d_model)``
        and the valid ``T'`` counts, zeroed at padded frames after each convolution, so
        that the next one reads zeros there as a batch of one reads its zero padding."""
        stride, first_activation, smooth, second_activation = self.subsample
        out_frames = self.output_frames(frames)
        x = first_activation(stride(features.transpose(1, 2)))
        padded = ~frame_mask(out_frames, x.shape[2]).unsqueeze(1)
        x = x.masked_fill(padded, 0.0)
        x = second_activation(smooth(x)).masked_fill(padded, 0.0)
        return x.transpose(1, 2), out_frames

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
        x, out_frames = self._subsampled(features, frames)
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
        """The outputs of a zero-padded ``(B, N)`` batch of ``lengths`` samples each; at
        each row's valid frames they are those of the row alone (see the module's
        docstring)."""
        magnitude, phase = self.stft(noisy, lengths)
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
