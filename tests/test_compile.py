"""``torch.compile``d models: the glue walks through compiled graphs and resolves the same."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurgery


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        return self.head_a(z), self.head_b(z)


X = torch.randn(8, 5, generator=torch.Generator().manual_seed(10))


def losses_of(outputs: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    a, b = outputs
    return {"a": a.pow(2).mean(), "b": (b - 2).pow(2).mean()}


def eager_grads(granularity: str, method: str = "gr") -> list[torch.Tensor]:
    model = TwoHeads()
    gradsurgery.backward(
        losses_of(model(X)),
        model.parameters(),
        resolver=method,
        primary="a",
        granularity=granularity,
    )
    return [p.grad for p in model.parameters()]


def compiled_grads(
    backend: str, whole: bool, granularity: str, method: str = "gr"
) -> list[torch.Tensor]:
    torch._dynamo.reset()
    model = TwoHeads()
    if whole:
        forward = torch.compile(model, backend=backend)
    else:
        model.trunk = torch.compile(model.trunk, backend=backend)
        forward = model
    gradsurgery.backward(
        losses_of(forward(X)),
        model.parameters(),
        resolver=method,
        primary="a",
        granularity=granularity,
    )
    return [p.grad for p in model.parameters()]


# A compiled module is one autograd node: every parameter inside it counts as reached by
# every task whose loss comes out of it. Compiling the trunk alone keeps the heads
# task-specific (any granularity); compiling the whole model still gives the same result
# with per-tensor granularity, where a head's tensor resolves a task gradient against zero.
CASES = [(False, "global"), (False, "tensor"), (True, "tensor")]


@pytest.mark.parametrize(("whole", "granularity"), CASES)
def test_compiled_model_aot_eager(whole, granularity):
    for actual, expected in zip(
        compiled_grads("aot_eager", whole, granularity), eager_grads(granularity)
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["sum", "uw"])
@pytest.mark.parametrize("whole", [False, True])
def test_a_loss_weighting_trains_a_compiled_model_as_eager(whole, method):
    # One backward pass of the weighted losses: nothing is resolved, so whether the
    # compiled module hides which task reaches which parameter does not matter.
    for actual, expected in zip(
        compiled_grads("aot_eager", whole, "global", method), eager_grads("global", method)
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_trunk_inductor():
    torch._dynamo.reset()
    try:  # a probe with no gradsurgery in it: a failure here means "cannot test here"
        torch.compile(torch.sin, backend="inductor")(torch.ones(3))
    except Exception as error:
        pytest.skip(f"the inductor backend cannot compile here: {type(error).__name__}: {error}")
    actual = compiled_grads("inductor", False, "global")
    for a, e in zip(actual, eager_grads("global")):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
