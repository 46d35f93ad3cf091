"""Experiment presets: corpus, model and training settings in one frozen dataclass each."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from examples.asr_se.augment import AugmentConfig
from examples.asr_se.model import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    """How one system is trained.

    Attributes:
        steps: optimizer steps (the joint systems' budget; see ``systems.py``).
        batch_size: utterances per step.
        lr: peak Adam learning rate, reached after ``warmup`` steps, then cosine decay to
            ``lr_floor * lr``.
        asr_weight, se_weight: the authors' loss weights (0.7 ASR, 0.3 SE).
        granularity: ``"tensor"`` (the authors: each SE tensor on its own) or ``"global"``.
        resolver_options: hyper-parameters passed to the resolver (e.g. ``{"k": 5.0}``).
        grad_clip: global gradient-norm clip (the authors clip at 5); steps whose norm is
            not finite are skipped, as in their trainer.
        se_pretrain_fraction: for the ``frozen_se`` system, SE-only steps before the ASR
            stage, as a fraction of ``steps``.
        monitor_every: loss weightings (``sum``) form task gradients for the conflict
            monitor every this many steps (other resolvers have them every step for free).
        checkpoint_every: steps between mid-epoch checkpoints (one is also written at the
            end of every epoch).
        test_per_condition: evaluate at most this many test utterances per condition
            (test set, noise type, SNR): those whose ids hash lowest, the same ones for
            every system and seed; ``None``: the whole test split.
        threads: torch CPU threads.
    """

    steps: int
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 200
    lr_floor: float = 0.1
    asr_weight: float = 0.7
    se_weight: float = 0.3
    granularity: str = "tensor"
    resolver_options: dict[str, Any] = field(default_factory=dict)
    grad_clip: float = 5.0
    se_pretrain_fraction: float = 0.3
    monitor_every: int = 10
    checkpoint_every: int = 200
    eval_batch_size: int = 32
    test_per_condition: int | None = None
    threads: int = 2


@dataclass(frozen=True)
class Preset:
    """A complete experiment setting."""

    name: str
    corpus: str
    model: ModelConfig
    train: TrainConfig
    systems: tuple[str, ...]
    seeds: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_RECOGNISER_AUGMENT = AugmentConfig(
    warp=0.1, freq_masks=2, freq_mask_width=6, time_masks=2, time_mask_width=10
)
"""VTLP within +-10% and two SpecAugment masks of each kind (up to 6 of 40 mel channels,
up to 10 frames = 160 ms). On in the tiny preset, so that the tests cover it; off in the
full preset, where it slowed learning within the 2000-step budget (see the README)."""

_TINY_MODEL = ModelConfig(
    se_hidden=16,
    se_layers=1,
    n_mels=16,
    d_model=32,
    heads=2,
    blocks=1,
    conv_kernel=3,
    augment=_RECOGNISER_AUGMENT,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        corpus="tiny",
        model=_TINY_MODEL,
        train=TrainConfig(
            steps=2, batch_size=2, warmup=1, checkpoint_every=1, eval_batch_size=4, threads=1
        ),
        systems=("noisy_asr", "frozen_se", "sum", "gr"),
        seeds=(0,),
    ),
    "quick": Preset(
        name="quick",
        corpus="quick",
        model=ModelConfig(se_hidden=96, d_model=128, blocks=3),
        train=TrainConfig(steps=800, batch_size=16, warmup=100),
        systems=("sum", "gr"),
        seeds=(0,),
    ),
    "full": Preset(
        name="full",
        corpus="full",
        model=ModelConfig(),
        train=TrainConfig(steps=2000, batch_size=16, warmup=200, test_per_condition=100),
        systems=("sum", "gr", "noisy_asr", "frozen_se", "pcgrad", "gradnorm"),
        seeds=(0, 1, 2),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a clear error lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
