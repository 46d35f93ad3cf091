"""What the glue's options and failures must not change: ``diagnostics=True`` leaves a
loss weighting's update and state as they are; a failed micro-batch leaves nothing behind
in an accumulation window; ``torch.no_grad()`` around the call changes nothing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gradsurgery
from gradsurgery._weighting import is_loss_weighting

LOSS_WEIGHTINGS = [
    name for name in gradsurgery.available() if is_loss_weighting(gradsurgery.get_resolver(name))
]
# options that make each weighting move from its start within a few steps
MOVING = {"dwa": {"epoch_length": 1}, "famo": {"lr": 0.5}}


class TwoHeads(nn.Module):
    """A shared trunk and two heads, each head reached by one task only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.trunk = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def losses(self, step: int, spike: bool = False) -> dict[str, torch.Tensor]:
        x = torch.randn(6, 3, generator=torch.Generator().manual_seed(step))
        z = torch.tanh(self.trunk(x))
        b = (self.head_b(z) - 1).pow(2).mean() * (1.0 + step)  # a loss that moves
        if spike:  # a finite loss whose gradient is infinite: d sqrt(u) / du at u = 0
            b = b + (z - z.detach()).sqrt().mean()
        return {"a": self.head_a(z).pow(2).mean(), "b": b}


def grads(model: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_same(left: list[torch.Tensor | None], right: list[torch.Tensor | None]) -> None:
    assert len(left) == len(right)
    for mine, theirs in zip(left, right):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def shared_task_gram(model: TwoHeads, steps: list[int], weights: list[float]) -> torch.Tensor:
    """The Gram of the trunk's task gradients of ``c_i L_i``, summed over ``steps``."""
    trunk = list(model.trunk.parameters())
    rows = []
    for task, c in zip("ab", weights):
        total = sum(
            torch.cat([g.flatten() for g in torch.autograd.grad(c * model.losses(s)[task], trunk)])
            for s in steps
        )
        rows.append(total)
    G = torch.stack(rows).double()
    return G @ G.T


@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("method", LOSS_WEIGHTINGS)
def test_diagnostics_change_no_loss_weightings_update(method, granularity):
    plain, watched = TwoHeads(), TwoHeads()
    plain_resolver = gradsurgery.get_resolver(method, **MOVING.get(method, {}))
    watched_resolver = copy.deepcopy(plain_resolver)
    weights = [0.7, 0.3]
    for step in range(4):  # the stateful weightings move away from their start
        for model in (plain, watched):
            model.zero_grad(set_to_none=True)
        torch.manual_seed(100 + step)  # rlw's draw
        expected = gradsurgery.backward(
            plain.losses(step), plain, resolver=plain_resolver, weights=weights
        )
        torch.manual_seed(100 + step)
        result = gradsurgery.backward(
            watched.losses(step),
            watched,
            resolver=watched_resolver,
            weights=weights,
            granularity=granularity,
            diagnostics=True,
        )
        assert_same(grads(watched), grads(plain))
        blocks = 1 if granularity == "global" else len(list(watched.trunk.parameters()))
        assert result.gram.shape == (blocks, 2, 2)
        assert result.weights.shape == (blocks, 2)
        assert result.shared_parameters == sum(p.numel() for p in watched.trunk.parameters())
        torch.testing.assert_close(result.weights, expected.weights.expand(blocks, -1))
        torch.testing.assert_close(result.gram.sum(0), shared_task_gram(watched, [step], weights))
    assert str(watched_resolver.state_dict()) == str(plain_resolver.state_dict())


@pytest.mark.parametrize("method", ["dwa", "famo", "uw", "rlw"])
def test_diagnostics_change_no_loss_weightings_window(method):
    plain, watched = TwoHeads(), TwoHeads()
    resolvers = [gradsurgery.get_resolver(method, **MOVING.get(method, {})) for _ in range(2)]
    for model, resolver, diagnostics in (
        (plain, resolvers[0], False),
        (watched, *resolvers[1:], True),
    ):
        accumulator = gradsurgery.Accumulator(model, resolver=resolver, diagnostics=diagnostics)
        torch.manual_seed(7)
        for window in range(3):
            for step in (2 * window, 2 * window + 1):  # weights move within the window
                accumulator.backward(model.losses(step))
            result = accumulator.resolve()
        assert (result.gram is not None) == diagnostics
    assert_same(grads(watched), grads(plain))
    assert str(resolvers[1].state_dict()) == str(resolvers[0].state_dict())
    torch.testing.assert_close(result.gram.sum(0), shared_task_gram(watched, [4, 5], [1.0, 1.0]))


@pytest.mark.parametrize("resolution", ["window", "micro_batch"])
def test_diagnostics_refuse_non_finite_task_gradients_before_any_grad(resolution):
    model = TwoHeads()
    resolver = gradsurgery.get_resolver("uw")
    state = str(resolver.state_dict())
    accumulator = gradsurgery.Accumulator(
        model, resolver=resolver, resolution=resolution, diagnostics=True
    )
    with pytest.raises(ValueError, match="Non-finite task gradients: task 'b'"):
        accumulator.backward(model.losses(0, spike=True))
    assert all(p.grad is None for p in model.parameters())
    assert str(resolver.state_dict()) == state
    assert accumulator.pending == 0
    with pytest.raises(ValueError, match="Non-finite task gradients: task 'b'"):
        gradsurgery.backward(model.losses(0, spike=True), model, resolver="mean", diagnostics=True)
    assert all(p.grad is None for p in model.parameters())


def test_without_diagnostics_a_loss_weighting_does_not_look_at_task_gradients():
    model = TwoHeads()
    gradsurgery.backward(model.losses(0, spike=True), model, resolver="mean")
    assert not torch.isfinite(model.trunk[0].weight.grad).all()  # as loss.backward() gives


class FailOnce:
    """A gradient hook that raises the first time it runs (an out-of-memory stand-in)."""

    def __init__(self) -> None:
        self.armed = True

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.armed = False
            raise RuntimeError("out of memory (simulated)")
        return grad


@pytest.mark.parametrize("method", ["gr", "mean"])  # (a stateful weighting has moved: see docs)
@pytest.mark.parametrize("resolution", ["window", "micro_batch"])
def test_a_failed_micro_batch_leaves_nothing_in_the_window(method, resolution):
    model, fresh = TwoHeads(), TwoHeads()
    model.head_b.weight.register_hook(FailOnce())  # task b's pass fails, after task a's
    accumulator = gradsurgery.Accumulator(
        model, resolver=method, primary="a", resolution=resolution
    )
    with pytest.raises(RuntimeError, match="simulated"):
        accumulator.backward(model.losses(0))
    assert accumulator.pending == 0
    model.zero_grad(set_to_none=True)  # as the docs ask after an error
    reference = gradsurgery.Accumulator(fresh, resolver=method, primary="a", resolution=resolution)
    for each in (accumulator, reference):
        owner = model if each is accumulator else fresh
        each.backward(owner.losses(1))
        each.resolve()
    assert_same(grads(model), grads(fresh))


@pytest.mark.parametrize("method", ["sum", "uw", "gr"])
@pytest.mark.parametrize("path", ["backward", "accumulator"])
def test_no_grad_or_inference_mode_around_the_call_changes_nothing(method, path):
    """(inference_mode had left the glue's weighted sum without a grad_fn: a raw torch
    error for the loss weightings and for weights=)"""
    models = TwoHeads(), TwoHeads(), TwoHeads()
    contexts = (torch.enable_grad(), torch.no_grad(), torch.inference_mode())
    for model, context in zip(models, contexts):
        losses = model.losses(0)  # built with autograd on, as in a training loop
        with context:
            if path == "backward":
                gradsurgery.backward(losses, model, resolver=method, primary="a", weights=[2, 1])
            else:
                accumulator = gradsurgery.Accumulator(
                    model, resolver=method, primary="a", weights=[2, 1]
                )
                accumulator.backward(losses)
                accumulator.resolve()
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert_same(grads(models[1]), grads(models[0]))
    assert_same(grads(models[2]), grads(models[0]))


def test_diagnostics_leave_a_non_finite_step_to_the_scaler():
    model = TwoHeads()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    result = gradsurgery.backward(
        model.losses(0, spike=True), model, resolver="uw", diagnostics=True, scaler=scaler
    )
    assert not result.finite and result.gram is None
    assert not torch.isfinite(model.trunk[0].weight.grad).all()  # the scaler skips it
