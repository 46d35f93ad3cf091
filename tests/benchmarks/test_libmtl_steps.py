"""Forty training steps beside LibMTL's weightings: the parameters, heads included, must stay
together where the methods are the same.

Both sides start from the same small model (float64, SGD) and see the same batches; LibMTL's
weighting is driven as its trainer drives it (``backward`` on the stacked losses, its epoch
and loss history kept, its own learned parameters stepped by their own optimizer). The
benchmark's single-step direction checks (``overhead.md``) cannot see state that drifts
over steps (UW's log-variances, DWA's epoch weights); this can. Skipped without LibMTL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradsurgery
from benchmarks import peers

STEPS = 40
BATCHES_PER_EPOCH = 5
LR = 0.05


def make_model(tasks: int) -> tuple[nn.Module, nn.ModuleList]:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh()).double()
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(tasks)).double()
    return trunk, heads


def task_losses(trunk: nn.Module, heads: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    features = trunk(x)
    targets = [x.sum(1), -x.sum(1) + x[:, 0] ** 2, 2 * torch.sin(3 * x[:, 1]) + 1.0]
    return [
        nn.functional.mse_loss(head(features).squeeze(-1), targets[task]) + 0.01
        for task, head in enumerate(heads)
    ]


def flat(trunk: nn.Module, heads: nn.ModuleList) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in [*trunk.parameters(), *heads.parameters()]])


def libmtl_host(class_name: str, trunk: nn.Module, tasks: int) -> Any:
    weighting, missing = peers._import_libmtl_weighting()
    if weighting is None:
        pytest.skip(missing)
    host = peers._libmtl_host(getattr(weighting, class_name), list(trunk.parameters()), tasks)
    host.epoch = 0
    host.train_loss_buffer = np.zeros((tasks, STEPS // BATCHES_PER_EPOCH + 1))
    return host


def relative_gap(
    method: str,
    options: dict[str, Any],
    tasks: int,
    host_optimizer: Any = None,
    freeze_host_parameters: bool = False,
    train_heads: bool = True,
) -> float:
    """The largest parameter difference after :data:`STEPS` steps, over the largest
    parameter: gradsurgery's ``method`` against LibMTL's on the same model and batches."""
    class_name, weight_args = peers.LIBMTL_ARGS[peers.alias_key(method)]
    generator = torch.Generator().manual_seed(123)
    batches = [
        torch.randn(16, 4, generator=generator, dtype=torch.float64)
        for _ in range(BATCHES_PER_EPOCH)
    ]
    ours, theirs = make_model(tasks), make_model(tasks)
    for _, heads in (ours, theirs):
        heads.requires_grad_(train_heads)
    optimizers = [
        torch.optim.SGD([*t.parameters(), *h.parameters()], lr=LR) for t, h in (ours, theirs)
    ]
    resolver = gradsurgery.get_resolver(method, **options)
    host = libmtl_host(class_name, theirs[0], tasks)
    if freeze_host_parameters:
        for param in host.parameters():
            param.requires_grad_(False)
    stepper = host_optimizer(host) if host_optimizer is not None else None
    epoch_losses: list[np.ndarray] = []
    for step in range(STEPS):
        epoch, position = divmod(step, BATCHES_PER_EPOCH)
        x = batches[position]
        optimizers[0].zero_grad()
        gradsurgery.backward(
            task_losses(*ours, x), [*ours[0].parameters(), *ours[1].parameters()], resolver=resolver
        )
        optimizers[0].step()
        host.epoch = epoch
        losses = torch.stack(task_losses(*theirs, x))
        epoch_losses.append(losses.detach().numpy().copy())
        optimizers[1].zero_grad()
        if stepper is not None:
            stepper.zero_grad()
        host.backward(losses, **weight_args)
        optimizers[1].step()
        if stepper is not None:
            stepper.step()
        if position == BATCHES_PER_EPOCH - 1:  # as LibMTL's trainer, at the end of an epoch
            host.train_loss_buffer[:, epoch] = np.mean(epoch_losses, axis=0)
            epoch_losses = []
    ours_flat, theirs_flat = flat(*ours), flat(*theirs)
    return float((ours_flat - theirs_flat).abs().max() / theirs_flat.abs().max())


@pytest.fixture(autouse=True)
def as_libmtl_in_float64(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """LibMTL makes its buffers in the default dtype (its task-gradient matrix, its
    weights): float64 here, as the model. And its PCGrad shuffles the other tasks with
    ``random.shuffle``: their order is kept."""
    monkeypatch.setattr(random, "shuffle", lambda sequence, *args, **kwargs: None)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(default)


@pytest.mark.parametrize("tasks", [2, 3])
def test_sum_stays_with_equal_weighting(tasks):
    assert relative_gap("sum", {}, tasks) < 1e-12


def test_pcgrad_stays_with_libmtl_for_two_tasks():
    assert relative_gap("pcgrad", {"order": "fixed"}, 2) < 1e-12


def test_mgda_stays_with_libmtl_for_two_tasks_off_the_vertices():
    # Heads frozen: on this path the min-norm point is never a vertex of the segment. With
    # the heads trained it is at the 25th step (one gradient's dot product with the other
    # reaches the other's squared norm): there the exact weights are 1 and 0, and Sener and
    # Koltun's two-task rule, which LibMTL keeps, gives 0.999 and 0.001 (a relative gap of
    # 5e-5 after 40 steps)
    assert relative_gap("mgda", {}, 2, train_heads=False) < 1e-12


@pytest.mark.parametrize("tasks", [2, 3])
def test_imtl_stays_with_libmtls_imtl_g(tasks):
    # LibMTL's IMTL also learns IMTL-L's loss scales; frozen at their start, 0, it is IMTL-G
    assert relative_gap("imtl", {}, tasks, freeze_host_parameters=True) < 1e-12


@pytest.mark.parametrize("tasks", [2, 3])
def test_uw_stays_with_libmtl_over_steps(tasks):
    # LibMTL's log-variances start at -0.5 and its trainer steps them with an optimizer of
    # the user's choice: Adam at 0.05 here, as gradsurgery's uw with lr=0.05 steps its own
    def adam(host: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam([host.loss_scale], lr=0.05)

    options = {"lr": 0.05, "initial_log_variance": -0.5}
    assert relative_gap("uw", options, tasks, host_optimizer=adam) < 1e-12


@pytest.mark.parametrize("tasks", [2, 3])
def test_dwa_stays_with_libmtl_over_epochs(tasks):
    assert relative_gap("dwa", {"epoch_length": BATCHES_PER_EPOCH}, tasks) < 1e-12
