"""Gradient accumulation: resolution over the window, or per micro-batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurgery


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        return {"a": self.head_a(z).pow(2).mean(), "b": (self.head_b(z) + 4).pow(2).mean()}


MICRO = [torch.randn(6, 5, generator=torch.Generator().manual_seed(20 + i)) for i in range(3)]


def task_matrix(model: TwoHeads, x: torch.Tensor) -> torch.Tensor:
    trunk = list(model.trunk.parameters())
    losses = model.losses(x)
    return torch.stack(
        [
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, trunk, retain_graph=True)])
            for loss in losses.values()
        ]
    )


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def flat_trunk(model: TwoHeads) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.trunk.parameters()])


@pytest.mark.parametrize("granularity", ["global", "tensor"])
def test_window_resolves_the_summed_task_gradients(granularity):
    model = TwoHeads()
    G = sum(task_matrix(model, x) for x in MICRO)
    sizes = [p.numel() for p in model.trunk.parameters()]
    if granularity == "global":
        expected = gradsurgery.resolve(G, method="gr", primary=0)
    else:
        expected = torch.cat(
            [gradsurgery.resolve(block, method="gr", primary=0) for block in G.split(sizes, 1)]
        )
    heads = [
        sum(torch.autograd.grad(model.losses(x)[name], list(head.parameters()))[0] for x in MICRO)
        for name, head in (("a", model.head_a), ("b", model.head_b))
    ]
    accumulator = gradsurgery.Accumulator(
        model.parameters(), resolver="gr", primary="a", granularity=granularity
    )
    for x in MICRO:
        assert accumulator.backward(model.losses(x)) is None
    assert accumulator.pending == 3
    assert all(p.grad is None for p in model.trunk.parameters())  # nothing resolved yet
    result = accumulator.resolve()
    assert accumulator.pending == 0
    torch.testing.assert_close(flat_trunk(model), expected)
    torch.testing.assert_close(model.head_a.weight.grad, heads[0])
    torch.testing.assert_close(model.head_b.weight.grad, heads[1])
    assert result.gram.shape[0] == (1 if granularity == "global" else len(sizes))


def test_micro_batch_mode_sums_resolved_micro_batches_and_differs_from_window():
    model = TwoHeads()
    expected = sum(
        gradsurgery.resolve(task_matrix(model, x), method="gr", primary=0) for x in MICRO
    )
    window_d = gradsurgery.resolve(
        sum(task_matrix(model, x) for x in MICRO), method="gr", primary=0
    )
    accumulator = gradsurgery.Accumulator(
        model.parameters(), resolver="gr", primary="a", resolution="micro_batch"
    )
    results = [accumulator.backward(model.losses(x)) for x in MICRO]
    assert all(result is not None for result in results)
    assert accumulator.resolve() is results[-1]
    torch.testing.assert_close(flat_trunk(model), expected)
    # the two modes really differ on this problem (otherwise the tests could not tell)
    assert not torch.allclose(expected, window_d, rtol=1e-3)

    # and the function form, called per micro-batch, is the micro-batch mode
    other = TwoHeads()
    for x in MICRO:
        gradsurgery.backward(other.losses(x), other.parameters(), resolver="gr", primary="a")
    for mine, theirs in zip(grads(model), grads(other)):
        torch.testing.assert_close(mine, theirs)


def test_loss_aware_resolver_sees_the_mean_loss_of_the_window():
    model = TwoHeads()
    resolver = gradsurgery.get_resolver("gradnorm")
    accumulator = gradsurgery.Accumulator(model.parameters(), resolver=resolver)
    values = []
    for x in MICRO:
        losses = model.losses(x)
        values.append(torch.stack([loss.detach() for loss in losses.values()]).double())
        accumulator.backward(losses)
    accumulator.resolve()
    torch.testing.assert_close(resolver.state_dict()["initial_losses"], torch.stack(values).mean(0))


def test_loss_weighting_window_equals_summed_backward():
    model = TwoHeads()
    for x in MICRO:
        losses = model.losses(x)
        (0.7 * losses["a"] + 0.3 * losses["b"]).backward()
    expected = grads(model)
    model.zero_grad(set_to_none=True)
    accumulator = gradsurgery.Accumulator(
        model.parameters(), resolver="sum", weights={"a": 0.7, "b": 0.3}
    )
    for x in MICRO:
        accumulator.backward(model.losses(x))
    result = accumulator.resolve()
    assert result.weights.tolist() == [[0.7, 0.3]]
    for actual, wanted in zip(grads(model), expected):
        torch.testing.assert_close(actual, wanted)


def test_scaled_window_with_an_overflowing_micro_batch_is_skipped():
    model = TwoHeads()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    accumulator = gradsurgery.Accumulator(
        model.parameters(), resolver="gr", primary="a", scaler=scaler
    )
    accumulator.backward(model.losses(MICRO[0]))
    losses = model.losses(MICRO[1])
    losses["b"] = losses["b"] * float("inf")
    accumulator.backward(losses)
    result = accumulator.resolve()
    assert not result.finite
    assert not all(torch.isfinite(p.grad).all() for p in model.trunk.parameters())


def test_window_errors():
    model = TwoHeads()
    accumulator = gradsurgery.Accumulator(model.parameters(), resolver="gr", primary="a")
    with pytest.raises(RuntimeError, match="window is empty"):
        accumulator.resolve()
    accumulator.backward(model.losses(MICRO[0]))
    losses = model.losses(MICRO[1])
    with pytest.raises(ValueError, match="tasks changed"):
        accumulator.backward({"a": losses["a"], "c": losses["b"]})
    with pytest.raises(ValueError, match="different shared parameters"):
        z = torch.tanh(model.trunk(MICRO[1])).detach()
        accumulator.backward({"a": losses["a"], "b": model.head_b(z).pow(2).mean()})
    with pytest.raises(ValueError, match="Invalid resolution"):
        gradsurgery.Accumulator(model.parameters(), resolver="gr", resolution="epoch")
    micro = gradsurgery.Accumulator(model.parameters(), resolver="gr", resolution="micro_batch")
    with pytest.raises(RuntimeError, match="no micro-batch"):
        micro.resolve()


@pytest.mark.parametrize("method", ["sum", "uw", "gr"])
def test_a_parameter_frozen_after_the_accumulator_was_built_is_skipped(method):
    """``params`` not requiring grad are skipped, also when frozen later: a loss
    weighting's pass with ``inputs=`` (the losses reach a leaf outside ``params``) handed
    torch the frozen one, which it refuses."""
    trunk = torch.nn.Parameter(torch.ones(3))
    head = torch.nn.Parameter(torch.ones(3))
    other = torch.ones(3, requires_grad=True)  # a leaf outside params
    accumulator = gradsurgery.Accumulator([trunk, head], resolver=method)
    head.requires_grad_(False)
    accumulator.backward([(trunk * other).sum(), (trunk * 2).sum()])
    accumulator.resolve()
    assert head.grad is None and other.grad is None
    if method == "sum":
        torch.testing.assert_close(trunk.grad, torch.full((3,), 3.0))


@pytest.mark.parametrize("method", ["sum", "uw", "gr"])
@pytest.mark.parametrize("resolution", ["window", "micro_batch"])
def test_a_parameter_unfrozen_after_the_accumulator_was_built_gets_its_gradient(method, resolution):
    """Which parameters require grad is read at each call, as torch.optim does: a trunk
    frozen for a warm-up when the accumulator was built had silently got no gradient once
    unfrozen."""
    models = TwoHeads(), TwoHeads()
    models[0].trunk.requires_grad_(False)
    accumulators = [
        gradsurgery.Accumulator(model, resolver=method, resolution=resolution) for model in models
    ]
    models[0].trunk.requires_grad_(True)
    for model, accumulator in zip(models, accumulators):
        for x in MICRO[:2]:
            accumulator.backward(model.losses(x))
        accumulator.resolve()
    assert torch.count_nonzero(flat_trunk(models[0])) > 0
    for unfrozen, trainable in zip(grads(models[0]), grads(models[1])):
        torch.testing.assert_close(unfrozen, trainable, rtol=0, atol=0)


def test_an_accumulator_needs_a_parameter_that_requires_grad():
    model = TwoHeads()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="Invalid params: no tensor that requires grad"):
        gradsurgery.Accumulator(model, resolver="gr")
