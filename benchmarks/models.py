"""Models the cost benchmarks train, as a registry of builders.

Adding a model is one function::

    @register_model("my_model", tasks=(2, 4))
    def my_model(tasks: int, seed: int, smoke: bool) -> Workload:
        ...

A :class:`Workload` is a model, a fixed batch, and one scalar loss per task. Two forms:

- a trunk + heads :class:`MultiTaskModel` with ``inputs``, one target per task and a
  ``loss_fn`` shared by all heads (``mlp``, ``conv``); the trunk's parameters are shared;
- any model with its own ``forward_fn() -> (features, losses)`` and its own ``shared``
  module (``se_asr``: the flagship's SE front end feeding its recogniser).

``features`` (the last representation every loss depends on) is what TorchJD's
``mtl_backward`` needs; the shared parameters are what the peers resolve over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from examples.asr_se.model import JointModel

__all__ = ["MODELS", "MultiTaskModel", "Workload", "register_model"]


class MultiTaskModel(nn.Module):
    """A shared ``trunk`` feeding ``heads``, one per task."""

    def __init__(self, trunk: nn.Module, heads: list[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = self.trunk(x)
        return features, [head(features) for head in self.heads]


LossFn = Callable[[Tensor, Tensor], Tensor]
ForwardFn = Callable[[], tuple[Tensor, list[Tensor]]]


@dataclass
class Workload:
    """One model, one fixed batch, and the task losses on it.

    Either the trunk + heads form (``model`` a :class:`MultiTaskModel`, ``inputs``,
    ``targets`` and ``loss_fn``), or a model that computes its own losses: ``forward_fn``
    returns ``(features, losses)``, ``shared`` is the module whose parameters every task
    reaches, and ``task_names`` says how many losses there are (and in which order).
    """

    name: str
    model: nn.Module
    inputs: Tensor | None = None
    targets: list[Tensor] = field(default_factory=list)
    loss_fn: LossFn = field(default=nn.functional.cross_entropy)
    forward_fn: ForwardFn | None = None
    shared: nn.Module | None = None
    task_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.forward_fn is not None:
            if self.shared is None:
                raise ValueError(f"Workload {self.name!r}: forward_fn needs shared (a module)")
            if not self.task_names:
                raise ValueError(f"Workload {self.name!r}: forward_fn needs task_names")
            return
        if not isinstance(self.model, MultiTaskModel):
            raise TypeError(
                f"Workload {self.name!r}: model must be a MultiTaskModel when no forward_fn "
                f"is given, got {type(self.model).__name__}"
            )
        if self.inputs is None or not self.targets:
            raise ValueError(f"Workload {self.name!r}: inputs and targets are required")
        if self.task_names and len(self.task_names) != len(self.targets):
            raise ValueError(
                f"Workload {self.name!r}: task_names has {len(self.task_names)} names for "
                f"{len(self.targets)} targets"
            )

    @property
    def tasks(self) -> int:
        return len(self.task_names) if self.task_names else len(self.targets)

    def forward(self) -> tuple[Tensor, list[Tensor]]:
        """The shared features and the ``T`` scalar task losses."""
        if self.forward_fn is not None:
            return self.forward_fn()
        assert isinstance(self.model, MultiTaskModel)  # checked in __post_init__
        features, outputs = self.model(self.inputs)
        return features, [self.loss_fn(out, y) for out, y in zip(outputs, self.targets)]

    def shared_module(self) -> nn.Module:
        """The module whose parameters every task reaches (the trunk by default)."""
        if self.shared is not None:
            return self.shared
        assert isinstance(self.model, MultiTaskModel)  # checked in __post_init__
        return self.model.trunk

    def shared_parameters(self) -> list[Tensor]:
        return list(self.shared_module().parameters())

    def parameter_count(self) -> tuple[int, int]:
        """(shared, total) number of scalar parameters."""
        shared = sum(p.numel() for p in self.shared_parameters())
        return shared, sum(p.numel() for p in self.model.parameters())


Builder = Callable[[int, int, bool], Workload]
MODELS: dict[str, tuple[Builder, tuple[int, ...]]] = {}
"""name -> (builder(tasks, seed, smoke), the task counts the overhead benchmark runs)."""


def register_model(name: str, tasks: tuple[int, ...]) -> Callable[[Builder], Builder]:
    """Register a model builder under ``name``, benchmarked with each of ``tasks``."""

    def decorate(builder: Builder) -> Builder:
        MODELS[name] = (builder, tasks)
        return builder

    return decorate


def _classification_targets(tasks: int, batch: int, classes: int, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    return [torch.randint(classes, (batch,), generator=generator) for _ in range(tasks)]


@register_model("mlp", tasks=(2, 3, 4, 8, 16))
def mlp(tasks: int, seed: int, smoke: bool) -> Workload:
    """A 3-layer ReLU MLP trunk (128 -> 256 -> 256 -> 256, 165k shared parameters) and
    one linear 10-class head per task; batch 128 (smoke: 32 -> 64, batch 16). T = 3 is
    there for LibMTL 1.1.5's CAGrad, which takes exactly three tasks."""
    width, inputs, batch = (64, 32, 16) if smoke else (256, 128, 128)
    torch.manual_seed(seed)
    trunk = nn.Sequential(
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
    )
    heads: list[nn.Module] = [nn.Linear(width, 10) for _ in range(tasks)]
    x = torch.randn(batch, inputs, generator=torch.Generator().manual_seed(seed))
    return Workload(
        f"mlp-T{tasks}",
        MultiTaskModel(trunk, heads),
        x,
        _classification_targets(tasks, batch, 10, seed),
    )


@register_model("conv", tasks=(2, 8))
def conv(tasks: int, seed: int, smoke: bool) -> Workload:
    """A small convolutional trunk (3 conv layers, 32/64/64 channels, on 32x32 RGB images,
    global average pooling; 56k shared parameters) and one linear 10-class head per task;
    batch 64 (smoke: 8 channels, 8x8 images, batch 4)."""
    channels, size, batch = (8, 8, 4) if smoke else (32, 32, 64)
    torch.manual_seed(seed)
    trunk = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    heads: list[nn.Module] = [nn.Linear(2 * channels, 10) for _ in range(tasks)]
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return Workload(
        f"conv-T{tasks}",
        MultiTaskModel(trunk, heads),
        x,
        _classification_targets(tasks, batch, 10, seed),
    )


# --- the flagship's SE+ASR model ---------------------------------------------------------

SE_ASR_TASKS = ("asr", "se")
"""Task order of ``se_asr``: ASR first, the primary task of primary-aware resolvers."""


@dataclass(frozen=True)
class SpeechBatch:
    """A zero-padded batch as ``examples.asr_se``'s ``collate_batch`` gives it."""

    noisy: Tensor
    clean: Tensor
    lengths: Tensor
    texts: list[str]


def _random_text(seconds: float, generator: torch.Generator) -> str:
    """Random lowercase words at about 12 characters a second (read English is 12-15),
    so that CTC has a target of plausible length for the utterance's frames."""
    from examples.asr_se import vocabulary

    letters = vocabulary.SYMBOLS[2:]  # a-z (index 0 is the space, 1 the apostrophe)
    target = max(1, round(12 * seconds))
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < target:
        size = int(torch.randint(2, 8, (1,), generator=generator))
        picks = torch.randint(len(letters), (size,), generator=generator).tolist()
        words.append("".join(letters[i] for i in picks))
    return " ".join(words)


def synthetic_speech_batch(
    utterances: int, seconds: float, sample_rate: int, seed: int
) -> SpeechBatch:
    """A seeded noise-like stand-in for a batch of the flagship's corpus (no data files).

    ``clean`` is Gaussian noise under a 4 Hz (syllable-rate) envelope, ``noisy`` adds
    stationary noise at about 5 dB SNR; lengths vary within +-20% of ``seconds`` and the
    tail past each length is zero, as in a collated batch. Only the step's cost is
    measured, so the audio need not be speech.
    """
    if utterances < 1:
        raise ValueError(f"utterances must be >= 1, got {utterances}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    generator = torch.Generator().manual_seed(seed)
    scale = 0.8 + 0.4 * torch.rand(utterances, generator=generator)
    lengths = (seconds * sample_rate * scale).long().clamp(min=1)
    n = int(lengths.max())
    time = torch.arange(n) / sample_rate
    phase = 2 * torch.pi * torch.rand(utterances, 1, generator=generator)
    envelope = 0.55 + 0.45 * torch.sin(2 * torch.pi * 4.0 * time + phase)
    clean = 0.1 * envelope * torch.randn(utterances, n, generator=generator)
    noisy = clean + 0.036 * torch.randn(utterances, n, generator=generator)
    valid = (torch.arange(n)[None, :] < lengths[:, None]).float()
    texts = [_random_text(float(length) / sample_rate, generator) for length in lengths]
    return SpeechBatch(noisy * valid, clean * valid, lengths, texts)


def se_asr_losses(
    model: JointModel, batch: SpeechBatch, weights: tuple[float, float]
) -> tuple[Tensor, list[Tensor]]:
    """The flagship's joint training step up to the losses (``examples/asr_se/train.py``).

    Returns the enhanced magnitude (the front end's output, which both losses depend on:
    the SE loss directly, the ASR loss through the recogniser's log-mel features) and
    ``[w_asr * L_asr, w_se * L_se]``. The loss weights are applied here, so that the
    summed-loss baseline, gradsurgery and the peers all see the same weighted losses.
    """
    from examples.asr_se.model import asr_loss, se_loss

    outputs = model(batch.noisy, batch.lengths)
    clean_magnitude, _ = model.stft(batch.clean)
    asr = asr_loss(outputs.log_probs, outputs.out_frames, batch.texts)
    se = se_loss(outputs.enhanced, clean_magnitude, outputs.frames)
    return outputs.enhanced, [weights[0] * asr, weights[1] * se]


@register_model("se_asr", tasks=(2,))
def se_asr(tasks: int, seed: int, smoke: bool) -> Workload:
    """The flagship's joint model (``examples/asr_se/model.py``): a BLSTM mask-estimating
    SE front end feeding a Conformer CTC recogniser, with the ``quick`` preset's sizes
    (smoke: the ``tiny`` preset's). Tasks (ASR, SE), weighted 0.7 / 0.3 as the flagship's
    ``TrainConfig``. Shared: the front end's parameters; ASR-specific: the recogniser's;
    SE has none. Batch: 8 synthetic utterances of about 2 s at the model's 8 kHz (smoke:
    2 of about 0.5 s). Train mode (dropout on), as in training."""
    if tasks != len(SE_ASR_TASKS):
        raise ValueError(f"tasks: se_asr has exactly 2 tasks {SE_ASR_TASKS}, got {tasks}")
    from examples.asr_se.config import get_preset
    from examples.asr_se.model import JointModel

    preset = get_preset("tiny" if smoke else "quick")
    utterances, seconds = (2, 0.5) if smoke else (8, 2.0)
    weights = (preset.train.asr_weight, preset.train.se_weight)
    torch.manual_seed(seed)
    model = JointModel(preset.model)
    assert model.se is not None  # use_enhancer=True
    batch = synthetic_speech_batch(utterances, seconds, preset.model.sample_rate, seed)
    return Workload(
        f"se_asr-T{tasks}",
        model,
        forward_fn=lambda: se_asr_losses(model, batch, weights),
        shared=model.se,
        task_names=SE_ASR_TASKS,
    )
