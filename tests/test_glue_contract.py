"""Every registered resolver, through the autograd glue, updates the shared parameters as
:func:`gradsurgery.resolve` (``global``) or :meth:`Resolver.resolve_blocks` (``tensor``)
does on the gradients of the weighted losses collected by hand, with the same primary task
and loss values, step after step (so that stateful resolvers carry the same state); so does
:func:`gradsurgery.backward` with a :class:`torch.amp.GradScaler`, up to the scale it
leaves in ``.grad``. An :class:`gradsurgery.Accumulator` given two micro-batches a step
resolves, in ``"window"`` mode, the sum of their task gradients with the mean of their loss
values (one step of the resolver's state); in ``"micro_batch"`` mode, and for a loss
weighting in either (which weights each micro-batch's losses as they come), each
micro-batch on its own, the directions summed.

The glue's per-tensor blocks are the shared tensors in order of size (stable), so that
tensors of equal size form one batched run; the columns by hand are laid out the same way,
which matters to a resolver that draws a random number per column (GradDrop)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurgery
from gradsurgery._weighting import is_loss_weighting
from tests.fresh import fresh_resolver

STEPS = 3
WEIGHTS = (0.7, 0.4, 1.3)
SCALE = 2.0**12  # a power of two: scaling and unscaling are exact


class SharedTrunk(nn.Module):
    """A trunk every task reaches and one linear head per task; losses that move with the
    step, so that loss-aware resolvers see their ratios change. With ``pair``, a layer
    between the trunk and the heads of tasks 0 and 1 only: shared, but not by every task,
    so that the other tasks' rows of its task gradients are zero."""

    def __init__(self, tasks: int, pair: bool = False) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        self.pair = nn.Linear(3, 3) if pair else None
        self.heads = nn.ModuleList(nn.Linear(3, 1) for _ in range(tasks))

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters two or more tasks reach, in the model's order."""
        layers = [self.trunk] if self.pair is None else [self.trunk, self.pair]
        return [p for layer in layers for p in layer.parameters()]

    def losses(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(10 * step + micro)
        x = torch.randn(8, 4, generator=generator)
        z = torch.tanh(self.trunk(x))
        y = z if self.pair is None else torch.tanh(self.pair(z))
        return [
            (head(y if task < 2 else z) - (task - 1.0)).pow(2).mean() * (1.0 + 0.5 * step * task)
            for task, head in enumerate(self.heads)
        ]


MODELS = {"2 tasks": (2, False), "3 tasks": (3, False), "3 tasks, a layer of two": (3, True)}


def task_matrix(losses: list[torch.Tensor], shared: list[nn.Parameter], log: bool) -> torch.Tensor:
    """The gradients of the weighted losses (of their logarithms with ``log``) with respect
    to ``shared``, by ``autograd.grad``: zero where a task does not reach a parameter."""
    rows = []
    for weight, loss in zip(WEIGHTS, losses):
        trained = weight * (torch.log(loss) if log else loss)
        grads = torch.autograd.grad(trained, shared, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, shared)]
            )
        )
    return torch.stack(rows)


def by_hand(
    model: SharedTrunk,
    step: int,
    resolver: gradsurgery.resolvers.Resolver,
    granularity: str,
    micro_batches: int = 1,
    window: bool = False,
) -> list[torch.Tensor]:
    """The shared parameters' update, resolved directly: of the summed task gradients of
    the micro-batches with their mean loss values (``window``, except for a loss
    weighting), or of each micro-batch on its own, summed."""
    shared = model.shared_parameters()
    if granularity == "tensor":
        shared.sort(key=lambda p: p.numel())
    # DB-MTL trains on log-losses: the glue hands it their gradients, with unit losses.
    log = resolver.trains_on_log_losses
    matrices, values = [], []
    for micro in range(micro_batches):
        losses = model.losses(step, micro)
        matrices.append(task_matrix(losses, shared, log))
        values.append([1.0 if log else loss.item() for loss in losses])
    if window and not is_loss_weighting(resolver):
        matrices = [sum(matrices)]
        values = [torch.tensor(values, dtype=torch.float64).mean(dim=0).tolist()]

    def resolved(G: torch.Tensor, losses: list[float]) -> torch.Tensor:
        if granularity == "global":
            return gradsurgery.resolve(G, method=resolver, primary=0, losses=losses)
        return resolver.resolve_blocks(
            G,
            [p.numel() for p in shared],
            primary=0,
            losses=torch.tensor(losses, dtype=torch.float64),
        ).direction

    direction = sum(resolved(G, losses) for G, losses in zip(matrices, values))
    update = {p: d.view_as(p) for d, p in zip(direction.split([p.numel() for p in shared]), shared)}
    return [update[p] for p in model.shared_parameters()]


MICRO_BATCHES = {"backward": 1, "scaler": 1, "window": 2, "micro_batch": 2}


def glue(path: str, model: SharedTrunk, resolver, granularity: str):
    """One step's ``.grad`` writer through ``path``, given the step: ``backward`` (with a
    scaler for ``"scaler"``) or an accumulator in resolution mode ``path``, fed
    :data:`MICRO_BATCHES` micro-batches."""
    options = {"resolver": resolver, "primary": 0, "weights": WEIGHTS[: len(model.heads)]}
    if path in ("backward", "scaler"):
        scaler = torch.amp.GradScaler("cpu", init_scale=SCALE) if path == "scaler" else None
        return lambda step: gradsurgery.backward(
            model.losses(step),
            model.parameters(),
            granularity=granularity,
            scaler=scaler,
            **options,
        )
    accumulator = gradsurgery.Accumulator(
        model.parameters(), granularity=granularity, resolution=path, **options
    )

    def train_step(step: int) -> None:
        for micro in range(MICRO_BATCHES[path]):
            accumulator.backward(model.losses(step, micro))
        accumulator.resolve()

    return train_step


@pytest.mark.parametrize("path", list(MICRO_BATCHES))
@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", gradsurgery.available())
def test_the_glue_updates_the_shared_parameters_as_resolve_does(
    method, model_name, granularity, path
):
    model = SharedTrunk(*MODELS[model_name])
    direct = fresh_resolver(method)
    train_step = glue(path, model, fresh_resolver(method), granularity)
    for step in range(STEPS):
        expected = by_hand(
            model, step, direct, granularity, MICRO_BATCHES[path], window=path == "window"
        )
        model.zero_grad(set_to_none=True)
        train_step(step)
        for parameter, wanted in zip(model.shared_parameters(), expected, strict=True):
            assert parameter.grad is not None
            if path == "scaler":
                wanted = SCALE * wanted
            # float32 rounding apart: a loss weighting's glue takes one backward pass of
            # the weighted sum of the losses; with three tasks, resolve() gives GR and the
            # other primary/auxiliary methods only the Gram entries they read.
            scale = wanted.abs().max().item()
            torch.testing.assert_close(parameter.grad, wanted, rtol=0, atol=2e-6 * scale)
