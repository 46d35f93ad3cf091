"""Every registered resolver, through the autograd glue, updates the shared parameters as
:func:`gradsurgery.resolve` (``global``) or :meth:`Resolver.resolve_blocks` (``tensor``)
does on the task gradients collected by hand, with the same primary task, loss values and
loss weights, step after step (so that stateful resolvers carry the same state). An
:class:`gradsurgery.Accumulator` given one micro-batch per window does the same, in either
resolution mode; so does :func:`gradsurgery.backward` with a
:class:`torch.amp.GradScaler`, up to the scale it leaves in ``.grad``.

The glue's per-tensor blocks are the shared tensors in order of size (stable), so that
tensors of equal size form one batched run; the columns by hand are laid out the same way,
which matters to a resolver that draws a random number per column (GradDrop)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import gradsurgery

STEPS = 3
WEIGHTS = (0.7, 0.4, 1.3)
SCALE = 2.0**12  # a power of two: scaling and unscaling are exact


class SharedTrunk(nn.Module):
    """A trunk every task reaches and one linear head per task; losses that move with the
    step, so that loss-aware resolvers see their ratios change."""

    def __init__(self, tasks: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        self.heads = nn.ModuleList(nn.Linear(3, 1) for _ in range(tasks))

    def losses(self, step: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=generator)
        z = torch.tanh(self.trunk(x))
        return [
            (head(z) - (task - 1.0)).pow(2).mean() * (1.0 + 0.5 * step * task)
            for task, head in enumerate(self.heads)
        ]


def fresh(method: str) -> gradsurgery.resolvers.Resolver:
    """A new resolver with its defaults, seeded where it draws random numbers."""
    resolver_class = type(gradsurgery.get_resolver(method))
    seeded = "seed" in inspect.signature(resolver_class).parameters
    return gradsurgery.get_resolver(method, **({"seed": 0} if seeded else {}))


def by_hand(
    model: SharedTrunk, step: int, resolver: gradsurgery.resolvers.Resolver, granularity: str
) -> list[torch.Tensor]:
    """The trunk's update: task gradients by ``autograd.grad``, resolved directly."""
    losses = model.losses(step)
    trunk = list(model.trunk.parameters())
    if granularity == "tensor":
        trunk.sort(key=lambda p: p.numel())
    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(loss, trunk, retain_graph=True)])
        for loss in losses
    ]
    G = torch.stack(rows)
    values = [loss.item() for loss in losses]
    weights = WEIGHTS[: len(losses)]
    if granularity == "global":
        direction = gradsurgery.resolve(
            G, method=resolver, primary=0, losses=values, weights=weights
        )
    else:
        direction = resolver.resolve_blocks(
            G,
            [p.numel() for p in trunk],
            primary=0,
            losses=torch.tensor(values, dtype=torch.float64),
            task_weights=torch.tensor(weights, dtype=torch.float64),
        ).direction
    update = {p: d.view_as(p) for d, p in zip(direction.split([p.numel() for p in trunk]), trunk)}
    return [update[p] for p in model.trunk.parameters()]


def glue(path: str, model: SharedTrunk, resolver, tasks: int, granularity: str):
    """One step's ``.grad`` writer through ``path``: ``backward`` (with a scaler for
    ``"scaler"``) or an accumulator in resolution mode ``path``."""
    options = {"resolver": resolver, "primary": 0, "weights": WEIGHTS[:tasks]}
    if path in ("backward", "scaler"):
        scaler = torch.amp.GradScaler("cpu", init_scale=SCALE) if path == "scaler" else None
        return lambda losses: gradsurgery.backward(
            losses, model.parameters(), granularity=granularity, scaler=scaler, **options
        )
    accumulator = gradsurgery.Accumulator(
        model.parameters(), granularity=granularity, resolution=path, **options
    )

    def step(losses: list[torch.Tensor]) -> None:
        accumulator.backward(losses)
        accumulator.resolve()

    return step


@pytest.mark.parametrize("path", ["backward", "window", "micro_batch", "scaler"])
@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("tasks", [2, 3])
@pytest.mark.parametrize("method", gradsurgery.available())
def test_the_glue_updates_the_trunk_as_resolve_does(method, tasks, granularity, path):
    model = SharedTrunk(tasks)
    direct = fresh(method)
    train_step = glue(path, model, fresh(method), tasks, granularity)
    for step in range(STEPS):
        expected = by_hand(model, step, direct, granularity)
        model.zero_grad(set_to_none=True)
        train_step(model.losses(step))
        for parameter, wanted in zip(model.trunk.parameters(), expected, strict=True):
            assert parameter.grad is not None
            if path == "scaler":
                wanted = SCALE * wanted
            # float32 rounding apart: the glue weights the losses before autograd, resolve
            # the task gradients' Gram; a loss weighting's glue takes one backward pass.
            scale = wanted.abs().max().item()
            torch.testing.assert_close(parameter.grad, wanted, rtol=0, atol=2e-6 * scale)
