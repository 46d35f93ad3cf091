"""Models the cost benchmarks train, as a registry of builders.

Adding a model is one function::

    @register_model("my_model", tasks=(2, 4))
    def my_model(tasks: int, seed: int, smoke: bool) -> Workload:
        ...

A :class:`Workload` is a shared trunk with one head per task, a fixed batch, and a loss per
task. ``features`` (the trunk's output) is what TorchJD's ``mtl_backward`` needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

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


@dataclass
class Workload:
    """One model, one fixed batch, and the task losses on it."""

    name: str
    model: MultiTaskModel
    inputs: Tensor
    targets: list[Tensor]
    loss_fn: Callable[[Tensor, Tensor], Tensor] = field(default=nn.functional.cross_entropy)

    @property
    def tasks(self) -> int:
        return len(self.targets)

    def forward(self) -> tuple[Tensor, list[Tensor]]:
        """The trunk's features and the ``T`` scalar task losses."""
        features, outputs = self.model(self.inputs)
        return features, [self.loss_fn(out, y) for out, y in zip(outputs, self.targets)]

    def shared_parameters(self) -> list[Tensor]:
        return list(self.model.trunk.parameters())

    def parameter_count(self) -> tuple[int, int]:
        """(shared, total) number of scalar parameters."""
        shared = sum(p.numel() for p in self.model.trunk.parameters())
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


@register_model("mlp", tasks=(2, 4, 8, 16))
def mlp(tasks: int, seed: int, smoke: bool) -> Workload:
    """A 3-layer ReLU MLP trunk (128 -> 256 -> 256 -> 256, 165k shared parameters) and
    one linear 10-class head per task; batch 128 (smoke: 32 -> 64, batch 16)."""
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
