"""The recogniser's training-time augmentation: VTLP's frequency map and SpecAugment masks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from examples.asr_se.augment import AugmentConfig, mask_features, warp_frequencies
from examples.asr_se.config import get_preset
from examples.asr_se.features import LogMel, mel_filterbank
from examples.asr_se.model import Recognizer


def test_warp_by_hand():
    frequencies = torch.tensor([0.0, 1000.0, 3000.0, 3500.0, 4000.0])
    warped = warp_frequencies(frequencies, torch.tensor([0.9, 1.0, 1.1]), 4000.0)
    # alpha 0.9: knee 0.85 * 4000 = 3400; 3500 Hz lies above it: 3060 + 940 * 100 / 600
    # alpha 1.1: knee 3400 / 1.1 = 3090.9; 3500 Hz: 3400 + 600 * (3500 - 3090.9) / (4000 - 3090.9)
    expected = torch.tensor(
        [
            [0.0, 900.0, 2700.0, 3060.0 + 940.0 / 6.0, 4000.0],
            [0.0, 1000.0, 3000.0, 3500.0, 4000.0],
            [
                0.0,
                1100.0,
                3300.0,
                3400.0 + 600.0 * (3500.0 - 3400.0 / 1.1) / (4000.0 - 3400.0 / 1.1),
                4000.0,
            ],
        ]
    )
    torch.testing.assert_close(warped, expected)


@pytest.mark.parametrize("alpha", [0.8, 0.95, 1.0, 1.05, 1.2])
def test_warp_is_continuous_increasing_and_fixes_the_band_edges(alpha):
    frequencies = torch.linspace(0.0, 4000.0, 4001, dtype=torch.float64)
    warped = warp_frequencies(frequencies, torch.tensor([alpha], dtype=torch.float64), 4000.0)[0]
    assert warped[0] == 0.0 and warped[-1] == pytest.approx(4000.0)
    steps = warped.diff()
    assert (steps > 0).all()
    assert steps.max() < 3.0  # no jump at the knee: every 1 Hz step moves less than 3 Hz


def test_unit_warp_gives_the_plain_filterbank():
    plain = mel_filterbank(40, 256, 8000)
    warped = mel_filterbank(40, 256, 8000, warp=torch.ones(2))
    assert warped.shape == (2, 129, 40)
    torch.testing.assert_close(warped, plain.expand(2, -1, -1))


def test_stretching_moves_a_tone_to_a_higher_band():
    filters = mel_filterbank(40, 256, 8000, warp=torch.tensor([1.0, 1.15]))
    plain_band, stretched_band = filters[:, 30].argmax(dim=-1).tolist()  # bin 30: 937.5 Hz
    assert stretched_band > plain_band


def test_log_mel_takes_the_warp():
    magnitude, frames = torch.rand(2, 6, 129), torch.tensor([6, 4])
    log_mel = LogMel(40, 256, 8000)
    torch.testing.assert_close(
        log_mel(magnitude, frames, torch.ones(2)), log_mel(magnitude, frames)
    )
    assert not torch.allclose(
        log_mel(magnitude, frames, torch.tensor([1.1, 0.9])), log_mel(magnitude, frames)
    )


def test_masks_lie_within_the_limits_and_are_zero():
    torch.manual_seed(0)
    config = AugmentConfig(freq_masks=2, freq_mask_width=3, time_masks=2, time_mask_width=4)
    features = torch.randn(64, 50, 20).abs() + 1.0  # no zeros before masking
    frames = torch.randint(10, 51, (64,))
    masked = mask_features(features, frames, config)
    zero = masked == 0
    bands = zero.all(dim=1)  # (B, channels) wholly masked channels
    times = zero.all(dim=2)  # (B, T) wholly masked frames
    assert (zero == (bands[:, None, :] | times[:, :, None])).all()  # nothing else is zeroed
    assert (bands.sum(dim=1) <= 2 * 3).all()
    assert (times.sum(dim=1) <= 2 * torch.clamp(frames // 5, max=4)).all()
    positions = torch.arange(50)[None, :]
    assert not (times & (positions >= frames[:, None])).any()  # never beyond the utterance
    assert bands.any() and times.any()  # masks are drawn at all
    kept = ~zero
    torch.testing.assert_close(masked[kept], features[kept])


def test_masks_are_reproducible_from_the_global_generator():
    config = AugmentConfig(freq_masks=2, freq_mask_width=3, time_masks=2, time_mask_width=4)
    features, frames = torch.ones(4, 30, 10), torch.tensor([30, 25, 20, 15])
    torch.manual_seed(5)
    first = mask_features(features, frames, config)
    torch.manual_seed(5)
    assert torch.equal(first, mask_features(features, frames, config))


def test_recogniser_augments_in_training_mode_only():
    config = replace(
        get_preset("tiny").model,
        dropout=0.0,
        augment=AugmentConfig(warp=0.1, freq_masks=2, freq_mask_width=4),
    )
    torch.manual_seed(0)
    recognizer = Recognizer(config)
    magnitude, frames = torch.rand(2, 40, 129), torch.tensor([40, 30])
    augment, plain = config.augment, AugmentConfig()

    def outputs(training: bool, augment_config: AugmentConfig) -> torch.Tensor:
        recognizer.train(training)
        recognizer.augment = augment_config
        return recognizer(magnitude, frames)[0]

    torch.testing.assert_close(outputs(False, augment), outputs(False, plain))
    assert not torch.allclose(outputs(True, augment), outputs(True, plain))


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="warp"):
        AugmentConfig(warp=1.0)
    with pytest.raises(ValueError, match="time_mask_width"):
        AugmentConfig(time_mask_width=-1)
