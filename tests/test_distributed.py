"""``torch.distributed``: two CPU processes on gloo against one process seeing both batches.

All scenarios run in ONE pair of spawned processes (starting them dominates the cost).
Each rank gets half of every batch; a single process that sees the union must take the
same steps (the losses are batch means, so the union's gradient is the ranks' average),
and the two ranks must end with bitwise identical parameters. Rendezvous is through a
file (no port to find), collectives time out, and the parent kills the workers if they
do not finish in time, so a failing rank cannot hang the suite.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import gradsurgery
from gradsurgery.distributed import DistributedMismatchError
from tests.fresh import fresh_resolver

pytestmark = [
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="needs the gloo backend"
    ),
    pytest.mark.slow,  # two processes that each import torch: several seconds
]

WORLD = 2
STEPS = 4
SCENARIOS = [
    "ddp_pcgrad",
    "plain_gradnorm",
    "ddp_window_gr",
    "ddp_sum",
    "plain_micro_pcgrad",
    "plain_window_expanded",
    "plain_layouts_gr",
    "plain_window_uw_diagnostics",
    "ddp_unused_pcgrad",
    "ddp_static_losses_inside_gr",
    "plain_aliased_gr_sum",
    "plain_db_mtl",
]
EVERY = "plain_every_"
"""Each registered resolver, seeded where it draws random numbers, with a primary task
(DB-MTL, whose ranks back-propagate their own log-losses, has its own scenario above)."""
SCENARIOS += [EVERY + method for method in gradsurgery.available() if method != "db_mtl"]


class ThreeHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6))
        self.heads = nn.ModuleList([nn.Linear(6, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = torch.tanh(self.trunk(x))
        return tuple(head(z) for head in self.heads)


def make_model() -> ThreeHeads:
    torch.manual_seed(0)
    return ThreeHeads().double()


class LayoutParameters(nn.Module):
    """Two embedding tables with sparse gradients, and a transposed (column-major) weight."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.shared = nn.Embedding(6, 3, sparse=True).double()
        self.own = nn.Embedding(4, 2, sparse=True).double()
        self.mixer = nn.Parameter(torch.randn(2, 3, dtype=torch.float64).t())


class LossesInside(nn.Module):
    """The model with its losses computed inside ``forward`` (DDP then returns losses)."""

    def __init__(self, model: ThreeHeads) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(losses_of(self.model(x)).values())


def losses_of(outputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    a, b, c = outputs
    return {"a": a.pow(2).mean(), "b": (b - 1).pow(2).mean(), "c": (c + a.detach()).abs().mean()}


def batch(step: int, micro: int, rank: int | None) -> torch.Tensor:
    """The union batch (8 rows) of a step, or rank ``rank``'s half of it."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 * step + micro))
    x = x.double()
    return x if rank is None else x[rank::WORLD]


def run_scenario(name: str, rank: int | None) -> dict[str, torch.Tensor]:
    """Train a few steps; ``rank=None`` is the single process that sees the union."""
    model = make_model()
    module: nn.Module = model
    if rank is not None and name.startswith("ddp"):
        # DDP with find_unused_parameters or static_graph passes every output through
        # one autograd node: each head must stay its own task's
        options = {"unused": {"find_unused_parameters": True}, "static": {"static_graph": True}}
        inside = name == "ddp_static_losses_inside_gr"
        module = DistributedDataParallel(
            LossesInside(model) if inside else model, **options.get(name.split("_")[1], {})
        )
    extra = nn.Parameter(torch.ones(3, dtype=torch.float64))  # (plain_window_expanded)
    layouts = LayoutParameters()  # (plain_layouts_gr)
    aliased = [  # (plain_aliased_gr_sum)
        nn.Parameter(torch.full((6,), 0.5, dtype=torch.float64)),
        nn.Parameter(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)),
    ]
    optimizer = torch.optim.SGD(
        [*model.parameters(), extra, *layouts.parameters(), *aliased], lr=0.2
    )
    gradnorm = gradsurgery.get_resolver("gradnorm")
    uw = gradsurgery.get_resolver("uw")
    db_mtl = gradsurgery.get_resolver("db_mtl")
    gram = torch.zeros(())
    every: gradsurgery.resolvers.Resolver | None = None
    if name.startswith(EVERY):
        every = fresh_resolver(name.removeprefix(EVERY))
    # Different global random states on the two ranks: PCGrad's random order must still
    # agree (every rank draws what rank 0 draws), and rank 0 draws like the single process.
    torch.manual_seed(1234 if rank in (None, 0) else 77)
    for step in range(STEPS):
        optimizer.zero_grad()
        if every is not None:
            losses = losses_of(module(batch(step, 0, rank)))
            gradsurgery.backward(losses, model.parameters(), resolver=every, primary="a")
        elif name == "ddp_window_gr":
            accumulator = gradsurgery.Accumulator(
                module, resolver="gr", primary="a", granularity="tensor"
            )
            for micro in range(2):
                accumulator.backward(losses_of(module(batch(step, micro, rank))))
            accumulator.resolve()
        elif name == "plain_window_expanded":
            # a parameter of task a's alone, reached only through a sum: autograd hands its
            # gradient back expanded (stride 0), to be held across the window, written to
            # .grad and accumulated into by the next call
            params = [*model.parameters(), extra]
            accumulator = gradsurgery.Accumulator(params, resolver="gr", primary="a")
            for micro in range(2):
                losses = losses_of(module(batch(step, micro, rank)))
                losses["a"] = losses["a"] + 0.1 * (extra * micro).sum()
                accumulator.backward(losses)
            accumulator.resolve()
            losses = losses_of(module(batch(step, 2, rank)))
            losses["a"] = losses["a"] + 0.1 * extra.sum()
            gradsurgery.backward(losses, params, resolver="gr", primary="a")
        elif name == "plain_window_uw_diagnostics":
            # a loss weighting with diagnostics: its weighted sums' gradients held and
            # averaged, its task gradients formed for the Gram alone, averaged too
            accumulator = gradsurgery.Accumulator(
                model.parameters(), resolver=uw, granularity="tensor", diagnostics=True
            )
            for micro in range(2):
                accumulator.backward(losses_of(module(batch(step, micro, rank))))
            gram = accumulator.resolve().gram
        elif name == "plain_layouts_gr":
            # sparse gradients: of a table tasks a and b share (rows of the task-gradient
            # matrix) and of one of task c alone (held, and averaged, dense); a shared
            # transposed weight, whose columns of the matrix follow its memory order
            x = batch(step, 0, rank)
            tokens = (x[:, 0].abs() * 4).long() % 6
            shared = layouts.shared(tokens) @ layouts.mixer
            losses = losses_of(module(x))
            losses["a"] = losses["a"] + shared.pow(2).mean()
            losses["b"] = losses["b"] + shared[:, 0].mean()
            losses["c"] = losses["c"] + layouts.own(tokens % 4).pow(2).mean()
            params = [*model.parameters(), *layouts.parameters()]
            gradsurgery.backward(losses, params, resolver="gr", primary="a")
        elif name == "plain_aliased_gr_sum":
            # two parameters of task a's alone, added: autograd.grad hands both the same
            # tensor, which each must hold on its own (shared, it was added into twice
            # across the window and divided by the ranks twice)
            params = [*model.parameters(), *aliased]

            def with_aliased(micro: int, step: int = step) -> dict[str, torch.Tensor]:
                x = batch(step, micro, rank)
                losses = losses_of(module(x))
                features = torch.tanh(model.trunk(x))
                losses["a"] = losses["a"] + ((aliased[0] + aliased[1]) * features).mean()
                return losses

            accumulator = gradsurgery.Accumulator(params, resolver="gr", primary="a")
            for micro in range(2):
                accumulator.backward(with_aliased(micro))
            accumulator.resolve()
            gradsurgery.backward(with_aliased(2), params, resolver="sum")
        elif name == "plain_db_mtl":
            # each rank back-propagates its own log-losses (heads included), averaged: as
            # one process's window over the ranks' halves with loss weights 1 / WORLD
            if rank is None:
                accumulator = gradsurgery.Accumulator(
                    model.parameters(), resolver=db_mtl, weights=[1.0 / WORLD] * 3
                )
                for half in range(WORLD):
                    accumulator.backward(losses_of(model(batch(step, 0, half))))
                accumulator.resolve()
            else:
                losses = losses_of(module(batch(step, 0, rank)))
                gradsurgery.backward(losses, model.parameters(), resolver=db_mtl)
        elif name == "ddp_static_losses_inside_gr":
            inside = LossesInside(model) if rank is None else module
            losses = dict(zip("abc", inside(batch(step, 0, rank))))
            gradsurgery.backward(losses, module, resolver="gr", primary="a")
        else:
            losses = losses_of(module(batch(step, 0, rank)))
            if name in ("ddp_pcgrad", "ddp_unused_pcgrad"):
                gradsurgery.backward(losses, module, resolver="pcgrad")
            elif name == "plain_gradnorm":
                gradsurgery.backward(
                    losses, model.parameters(), resolver=gradnorm, granularity="tensor"
                )
            elif name == "ddp_sum":
                gradsurgery.backward(
                    losses, model.parameters(), resolver="sum", weights=[0.7, 0.2, 0.1]
                )
            elif name == "plain_micro_pcgrad":
                gradsurgery.backward(losses, model.parameters(), resolver="pcgrad", primary=1)
        optimizer.step()
    result = {f"param{i}": p.detach().clone() for i, p in enumerate(model.parameters())}
    result["extra"] = extra.detach().clone()
    result["aliased0"], result["aliased1"] = (p.detach().clone() for p in aliased)
    for key, param in layouts.named_parameters():
        result[key] = param.detach().clone()
    if name == "plain_gradnorm":
        result["task_weights"] = gradnorm.state_dict()["task_weights"].clone()
    if name == "plain_window_uw_diagnostics":
        result["log_variances"] = uw.state_dict()["log_variances"].clone()
        result["gram"] = gram
    return result


def mismatch_raises(rank: int) -> bool:
    """On rank 1 only task 'a' reaches the trunk (shared on rank 0, not on rank 1): both
    ranks must raise, neither may hang."""
    model = make_model()
    a, b, c = model(batch(0, 0, rank))
    if rank == 1:
        z = torch.tanh(model.trunk(batch(0, 0, rank))).detach()
        b, c = model.heads[1](z), model.heads[2](z)
    losses = {"a": a.pow(2).mean(), "b": b.pow(2).mean(), "c": c.pow(2).mean()}
    return raises_mismatch(losses, model, "gr")


def task_count_mismatch_raises(rank: int) -> bool:
    """Rank 1 has a task more: both ranks must raise (buffers of different lengths would
    abort a rank), neither may hang."""
    model = make_model()
    losses = losses_of(model(batch(0, 0, rank)))
    if rank == 1:
        losses["d"] = losses["a"] * 2
    return raises_mismatch(losses, model, "gr")


def task_order_mismatch_raises(rank: int) -> bool:
    """The same tasks in another order on rank 1 (a mapping built in another order): rows
    would be averaged across tasks; both ranks must raise."""
    model = make_model()
    losses = losses_of(model(batch(0, 0, rank)))
    if rank == 1:
        losses = dict(reversed(losses.items()))
    return raises_mismatch(losses, model, "pcgrad")


def not_positive_loss_raises(rank: int) -> str | None:
    """Under DB-MTL, rank 1's loss of task 'b' is negative (its logarithm is NaN, its
    gradient finite): every rank must raise, naming the task. Returns the message."""
    model = make_model()
    losses = losses_of(model(batch(0, 0, rank)))
    if rank == 1:
        losses["b"] = -losses["b"]
    try:
        gradsurgery.backward(losses, model.parameters(), resolver="db_mtl")
    except ValueError as error:
        return str(error)
    return None


def raises_mismatch(losses: dict[str, torch.Tensor], model: nn.Module, resolver: str) -> bool:
    """Whether a step raises ``DistributedMismatchError`` (on this rank)."""
    try:
        gradsurgery.backward(losses, model.parameters(), resolver=resolver, primary="a")
    except DistributedMismatchError:
        return True
    return False


def worker(rank: int, directory: str) -> None:
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    results: dict[str, object] = {}
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{directory}/rendezvous",
            rank=rank,
            world_size=WORLD,
            timeout=timedelta(seconds=30),
        )
        for name in SCENARIOS:
            results[name] = run_scenario(name, rank)
        results["mismatch"] = mismatch_raises(rank)
        results["task_count_mismatch"] = task_count_mismatch_raises(rank)
        results["task_order_mismatch"] = task_order_mismatch_raises(rank)
        results["not_positive"] = not_positive_loss_raises(rank)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        results["error"] = traceback.format_exc()
    torch.save(results, Path(directory) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    directory = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        worker, args=(str(directory),), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120.0  # a guard against hangs, not a timing assertion
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:  # pragma: no cover - only on a hang
                pytest.fail("the ranks did not finish within 120 s")
    except mp.ProcessExitedException as error:  # pragma: no cover - reports a crash
        pytest.fail(f"a rank died: {error}")
    finally:
        for process in context.processes:
            if process.is_alive():  # pragma: no cover - only on a hang
                process.kill()
    results = [torch.load(directory / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank, result in enumerate(results):
        if "error" in result:
            pytest.fail(f"rank {rank} failed:\n{result['error']}")
    return results


@pytest.mark.parametrize("name", SCENARIOS)
def test_ranks_identical_and_equal_to_union(ranks, name):
    expected = run_scenario(name, None)
    first, second = ranks[0][name], ranks[1][name]
    for key, value in expected.items():
        assert torch.equal(first[key], second[key]), f"{key} differs across ranks"
        torch.testing.assert_close(first[key], value, rtol=1e-10, atol=1e-12)
    # the run moved the parameters (a test of a no-op would pass trivially)
    assert not torch.equal(first["param0"], make_model().trunk[0].weight)


def test_mismatched_graphs_raise_on_every_rank(ranks):
    assert ranks[0]["mismatch"] is True
    assert ranks[1]["mismatch"] is True


@pytest.mark.parametrize("case", ["task_count_mismatch", "task_order_mismatch"])
def test_ranks_with_other_tasks_raise_on_every_rank(ranks, case):
    assert ranks[0][case] is True
    assert ranks[1][case] is True


def test_a_loss_not_positive_on_one_rank_raises_on_every_rank(ranks):
    for rank in ranks:
        assert rank["not_positive"] is not None
        assert "task 'b' is not positive on at least one rank" in rank["not_positive"]
