"""Mixed precision: bf16 autocast, half-precision gradients, and GradScaler on CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gradsurgery
from gradsurgery._weighting import is_loss_weighting
from tests.fresh import fresh_resolver


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        a, b = self.head_a(z).float(), self.head_b(z).float()
        return {"a": a.pow(2).mean(), "b": (b + 3).pow(2).mean()}


X = torch.randn(16, 5, generator=torch.Generator().manual_seed(6))


def trunk_grads(model: TwoHeads) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.trunk.parameters()]


def autocast_losses_and_trunk_gradients(
    model: TwoHeads,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The losses of a bf16 autocast forward, the trunk's parameters, and the ``(2, P)``
    matrix of the trunk's task gradients (taken by hand, the graph kept)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.losses(X)
    trunk = list(model.trunk.parameters())
    G = torch.stack(
        [
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, trunk, retain_graph=True)])
            for loss in losses.values()
        ]
    )
    return losses, trunk, G


@pytest.mark.parametrize("method", ["gr", "pcgrad"])
def test_bf16_autocast_resolves_the_autocast_gradients(method):
    model = TwoHeads()
    losses, _, G = autocast_losses_and_trunk_gradients(model)
    assert G.dtype == torch.float32  # autocast keeps float32 parameters and gradients
    resolver = gradsurgery.get_resolver(method)
    expected = gradsurgery.resolve(G, method=resolver, primary=0)
    gradsurgery.backward(losses, model.parameters(), resolver=resolver, primary="a")
    torch.testing.assert_close(torch.cat([g.flatten() for g in trunk_grads(model)]), expected)


@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("window", [False, True])
def test_backward_called_inside_autocast_resolves_in_float32(granularity, window):
    """As ``loss.backward()``, the glue ignores an enclosing autocast region: the
    Gram's products and the weighted sum stay in float32 (in bfloat16 they were off by
    about 4e-3 relative, the Gram by 2e-3)."""
    model = TwoHeads()
    losses, trunk, G = autocast_losses_and_trunk_gradients(model)
    blocks = [p.numel() for p in trunk] if granularity == "tensor" else [G.shape[1]]
    resolver = gradsurgery.get_resolver("gr")
    resolution = resolver.resolve_blocks(G, blocks, primary=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if window:
            accumulator = gradsurgery.Accumulator(
                model.parameters(), resolver="gr", primary="a", granularity=granularity
            )
            accumulator.backward(losses)
            result = accumulator.resolve()
        else:
            result = gradsurgery.backward(
                losses, model.parameters(), resolver="gr", primary="a", granularity=granularity
            )
    assert torch.is_autocast_enabled("cpu") is False  # the region was left as it was
    actual = torch.cat([g.flatten() for g in trunk_grads(model)])
    torch.testing.assert_close(actual, resolution.direction, rtol=1e-6, atol=1e-7)
    assert result.gram is not None and resolution.gram is not None
    # (the glue orders its blocks as it meets the shared parameters: compare the sums)
    torch.testing.assert_close(result.gram.sum(0), resolution.gram.sum(0), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", gradsurgery.available())
def test_half_precision_gradients_are_resolved_in_float32(dtype, method):
    J = torch.randn(3, 300, generator=torch.Generator().manual_seed(7))
    J[1] = -0.5 * J[0] + 0.3 * J[1]  # conflicting
    half = J.to(dtype)
    losses = [1.0, 2.0, 0.5]
    actual = gradsurgery.resolve(half, method=fresh_resolver(method), primary=0, losses=losses)
    expected = gradsurgery.resolve(
        half.float(), method=fresh_resolver(method), primary=0, losses=losses
    )
    expected = expected.to(dtype)
    assert actual.dtype == dtype
    assert torch.equal(actual, expected)


def test_half_precision_parameters_through_backward():
    model = TwoHeads().to(torch.bfloat16)
    losses = model.losses(X.to(torch.bfloat16))
    result = gradsurgery.backward(losses, model.parameters(), resolver="gr", primary="a")
    assert result.gram.dtype == torch.float64
    assert all(p.grad.dtype == torch.bfloat16 for p in model.trunk.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.trunk.parameters())


def train(method, scaler: torch.amp.GradScaler | None, steps: int = 3) -> list[torch.Tensor]:
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    resolver = gradsurgery.get_resolver(method)
    for step in range(steps):
        optimizer.zero_grad()
        losses = model.losses(X[step::steps])
        gradsurgery.backward(
            losses, model.parameters(), resolver=resolver, primary="a", scaler=scaler
        )
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("method", ["gr", "gradnorm", "sum"])
def test_grad_scaler_loop_equals_the_unscaled_loop(method):
    # A power-of-two scale commutes exactly with floating point (no overflow here), and the
    # task gradients are unscaled before resolution: the steps are bitwise the same.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for scaled, plain in zip(train(method, scaler), train(method, None)):
        assert torch.equal(scaled, plain)
    assert scaler.get_scale() == 2.0**12  # no step was skipped


def infinite_gradient_losses(model: TwoHeads) -> dict[str, torch.Tensor]:
    """Finite losses whose task 'b' has an infinite gradient: d sqrt(u)/du at u = 0."""
    losses = model.losses(X)
    out = model.trunk(X)
    losses["b"] = losses["b"] + torch.sqrt(out - out.detach()).sum()
    return losses


@pytest.mark.parametrize(
    ("make", "method"),
    [("inf_gradient", "gradnorm"), ("nan_loss", "gradnorm"), ("nan_loss", "uw")],
)  # uw: a loss weighting, which takes one backward pass of the weighted sum
def test_nonfinite_step_is_left_to_the_scaler(make, method):
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    resolver = gradsurgery.get_resolver(method)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    if make == "inf_gradient":
        losses = infinite_gradient_losses(model)
    else:
        losses = model.losses(X)
        losses["b"] = losses["b"] * float("nan")
    result = gradsurgery.backward(
        losses,
        model.parameters(),
        resolver=resolver,
        primary="a",
        scaler=scaler,
        weights={"a": 0.7, "b": 0.3},  # (the result keeps them: it dropped them here)
    )
    assert not result.finite and result.gram is None
    assert torch.equal(result.loss_weights, torch.tensor([0.7, 0.3], dtype=torch.float64))
    assert resolver.state_dict().get("step", 0) == 0  # the resolver's state is untouched
    assert "optimizer" not in resolver.state_dict()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**7  # the scaler saw the overflow and backed off
    for param, old in zip(model.parameters(), before):
        assert torch.equal(param.detach(), old)  # and skipped the step


@pytest.mark.parametrize("method", gradsurgery.available())
def test_an_overflowing_step_leaves_a_resolvers_state_and_is_skipped(method):
    # Finite losses, an infinite task gradient: the scaler must see non-finite gradients
    # (and skip the step); a resolver that forms task gradients is not run, so its state
    # stays as the finite step before left it. A loss weighting took its weights, and its
    # step, from the finite losses before its one backward pass (backward's docstring).
    model = TwoHeads()
    resolver = fresh_resolver(method)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    options = {"resolver": resolver, "primary": "a", "scaler": scaler}
    gradsurgery.backward(model.losses(X), model.parameters(), **options)
    state = copy.deepcopy(resolver.state_dict())
    model.zero_grad()
    result = gradsurgery.backward(infinite_gradient_losses(model), model.parameters(), **options)
    assert not all(bool(torch.isfinite(p.grad).all()) for p in model.trunk.parameters())
    if is_loss_weighting(resolver):
        assert result.finite
    else:
        assert not result.finite
        torch.testing.assert_close(resolver.state_dict(), state, rtol=0, atol=0)


def test_a_non_finite_loss_with_finite_gradients_is_stepped_on_unresolved():
    # as BackwardResult.finite documents: an infinite constant leaves the gradients finite,
    # so their plain sum is finite and the scaler steps on it (no overflow to skip)
    model = TwoHeads()
    losses = model.losses(X)
    losses["b"] = losses["b"] + float("inf")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    result = gradsurgery.backward(
        losses, model.parameters(), resolver="gr", primary="a", scaler=scaler
    )
    assert not result.finite
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    plain = TwoHeads()
    (sum(plain.losses(X).values()) * 2.0**8).backward()  # the plain sum, scaled
    for param, reference in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(param.grad, reference.grad)


def test_without_scaler_nonfinite_gradients_raise():
    model = TwoHeads()
    with pytest.raises(ValueError, match="task 'b' has non-finite"):
        gradsurgery.backward(
            infinite_gradient_losses(model), model.parameters(), resolver="gr", primary="a"
        )
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(ValueError, match="task 'b' has non-finite"):
        gradsurgery.backward(
            infinite_gradient_losses(model),
            model.parameters(),
            resolver="gr",
            primary="a",
            scaler=disabled,
        )


def test_bad_scaler():
    model = TwoHeads()
    with pytest.raises(TypeError, match="Invalid scaler"):
        gradsurgery.backward(model.losses(X), model.parameters(), resolver="gr", scaler=2.0)


@pytest.mark.parametrize("method", ["sum", "uw"])
def test_grad_scaler_with_a_loss_weighting_accumulator(method):
    # a loss weighting back-propagates each micro-batch's weighted sum, scaled by the scaler
    grads = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        model = TwoHeads()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        accumulator = gradsurgery.Accumulator(
            model.parameters(), resolver=method, primary="a", scaler=scaler
        )
        for half in (X[:8], X[8:]):
            accumulator.backward(model.losses(half))
        accumulator.resolve()
        if scaler is not None:
            assert model.trunk[0].weight.grad.abs().max() > 10  # still scaled by 2^10
            scaler.unscale_(optimizer)
        grads.append([p.grad.clone() for p in model.trunk.parameters()])
    for unscaled, plain in zip(*grads, strict=True):
        torch.testing.assert_close(unscaled, plain)
