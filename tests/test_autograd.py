"""The glue from losses to ``.grad``, checked against hand-collected task gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradsurgery


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 2)
        self.unused = nn.Linear(2, 2)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        return {"a": self.head_a(z).pow(2).mean(), "b": (self.head_b(z) - 1).pow(2).mean()}


X = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))


def grads_of(model: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_grads_match(
    model: nn.Module, expected: list[torch.Tensor | None], *, exact: bool = False, **tolerance
) -> None:
    """Each parameter's ``.grad`` against ``expected``: absent where it is absent, else
    equal bit for bit (``exact``) or by ``assert_close`` (dtype included) with ``tolerance``."""
    for actual, wanted in zip(grads_of(model), expected, strict=True):
        assert (actual is None) == (wanted is None)
        if wanted is None:
            continue
        if exact:
            assert torch.equal(actual, wanted)
        else:
            torch.testing.assert_close(actual, wanted, **tolerance)


def reference(
    model: TwoHeads, method: str, granularity: str, weights=(1.0, 1.0)
) -> list[torch.Tensor | None]:
    """Per-task gradients collected by hand with autograd.grad, resolved with resolve()."""
    losses = model.losses(X)
    trunk = list(model.trunk.parameters())
    per_task = [
        torch.autograd.grad(w * loss, trunk, retain_graph=True)
        for w, loss in zip(weights, losses.values())
    ]
    if granularity == "global":
        G = torch.stack([torch.cat([g.flatten() for g in task]) for task in per_task])
        d = gradsurgery.resolve(G, method=method, primary=0)
        trunk_grads = list(d.split([p.numel() for p in trunk]))
    else:
        trunk_grads = [
            gradsurgery.resolve(torch.stack([a.flatten(), b.flatten()]), method=method, primary=0)
            for a, b in zip(*per_task)
        ]
    head_a = torch.autograd.grad(
        weights[0] * losses["a"], list(model.head_a.parameters()), retain_graph=True
    )
    head_b = torch.autograd.grad(weights[1] * losses["b"], list(model.head_b.parameters()))
    shaped = [g.view_as(p) for g, p in zip(trunk_grads, trunk)]
    return [*shaped, *head_a, *head_b, None, None]


@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("method", ["sum", "gr", "pcgrad"])
def test_grad_equals_resolve_on_hand_collected_gradients(method, granularity):
    model = TwoHeads()
    expected = reference(model, method, granularity, weights=(0.7, 0.3))
    gradsurgery.backward(
        model.losses(X),
        model.parameters(),
        resolver=method,
        primary="a",
        weights={"a": 0.7, "b": 0.3},
        granularity=granularity,
    )
    for actual, wanted in zip(grads_of(model), expected):
        if wanted is None:
            assert actual is None  # unreached parameters are untouched
        else:
            torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


def test_sum_equals_summed_loss_backward():
    model = TwoHeads()
    sum(model.losses(X).values()).backward()
    expected = grads_of(model)
    model.zero_grad(set_to_none=True)
    gradsurgery.backward(model.losses(X), model.parameters(), resolver="sum", diagnostics=True)
    assert_grads_match(model, expected, rtol=1e-6, atol=1e-7)


def test_weighted_sum_is_bit_for_bit_the_hand_written_one():
    model = TwoHeads()
    losses = model.losses(X)
    (0.7 * losses["a"] + 0.3 * losses["b"]).backward()
    expected = grads_of(model)
    model.zero_grad(set_to_none=True)
    gradsurgery.backward(
        model.losses(X), model.parameters(), resolver="sum", weights={"a": 0.7, "b": 0.3}
    )
    assert_grads_match(model, expected, exact=True)


def test_plain_sum_is_bit_for_bit_the_summed_loss_and_reports_unit_weights():
    model = TwoHeads()
    sum(model.losses(X).values()).backward()
    expected = grads_of(model)
    model.zero_grad(set_to_none=True)
    result = gradsurgery.backward(model.losses(X), model.parameters(), resolver="sum")
    assert_grads_match(model, expected, exact=True)
    assert result.weights.dtype == torch.float64
    assert result.weights.tolist() == [[1.0, 1.0]]


def test_finite_losses_whose_sum_overflows_are_accepted():
    big = torch.tensor([1e308, 1e308], dtype=torch.float64, requires_grad=True)
    result = gradsurgery.backward([big[0], big[1]], [big], resolver="sum")
    assert result.finite and big.grad.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="task 1 is inf"):
        gradsurgery.backward([big[0], big[1] * 10], [big], resolver="sum")


class _WritesTheGram(gradsurgery.resolvers.Sum):
    def weights(self, gram, *, primary, losses):
        gram.add_(1.0)
        return super().weights(gram, primary=primary, losses=losses)


def test_a_loss_weighting_cannot_write_into_the_gram_it_is_handed():
    model = TwoHeads()
    with pytest.raises(RuntimeError, match="single memory location"):
        gradsurgery.backward(model.losses(X), model.parameters(), resolver=_WritesTheGram())
    result = gradsurgery.backward(model.losses(X), model.parameters(), resolver="mean")
    assert result.weights.tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize(
    ("method", "weights", "shape", "dtype"),
    [
        # Mixed shapes and dtypes: each loss is reshaped to a scalar, then stacked.
        ("mean", [1.0, 4.0], {"a": (1, 1), "b": (1,)}, torch.float64),
        # One shape: stacked as they are, then flattened; (T, 1) must not broadcast
        # against the weights.
        ("sum", [0.5, 2.0], {"a": (1,), "b": (1,)}, torch.float32),
    ],
)
def test_loss_weighting_takes_one_element_losses_of_any_shape(method, weights, shape, dtype):
    model = TwoHeads()
    losses = model.losses(X)
    (0.5 * losses["a"] + 2.0 * losses["b"]).backward()
    expected = grads_of(model)
    model.zero_grad(set_to_none=True)
    losses = model.losses(X)
    odd = [losses["a"].reshape(shape["a"]), losses["b"].to(dtype).reshape(shape["b"])]
    result = gradsurgery.backward(odd, model.parameters(), resolver=method, weights=weights)
    assert_grads_match(model, expected)
    assert result.weights.shape == (1, 2)


@pytest.mark.parametrize("method", ["uw", "dwa", "famo"])
def test_loss_weighting_backward_equals_the_micro_batch_accumulator(method):
    # backward() takes a lean path for loss weightings; Accumulator keeps the general one.
    direct, windowed = TwoHeads(), TwoHeads()
    resolvers = gradsurgery.get_resolver(method), gradsurgery.get_resolver(method)
    accumulator = gradsurgery.Accumulator(
        windowed.parameters(), resolver=resolvers[1], weights=[0.7, 0.3], resolution="micro_batch"
    )
    for step in range(3):
        x = X[step::3]
        ours = gradsurgery.backward(
            direct.losses(x), direct.parameters(), resolver=resolvers[0], weights=[0.7, 0.3]
        )
        theirs = accumulator.backward(windowed.losses(x))
        assert theirs is not None and ours.weights is not None and theirs.weights is not None
        assert torch.equal(ours.weights, theirs.weights)
        assert ours.task_names == theirs.task_names == ("a", "b")
        assert_grads_match(direct, grads_of(windowed), exact=True)


def weighting_backward(path: str, losses, params, **options) -> None:
    """A loss weighting's single backward pass through ``backward()`` or the accumulator."""
    if path == "backward":
        gradsurgery.backward(losses, params, **options)
    else:
        gradsurgery.Accumulator(params, resolution="micro_batch", **options).backward(losses)


@pytest.mark.parametrize("path", ["backward", "accumulator"])
@pytest.mark.parametrize("method", ["sum", "uw"])
def test_a_loss_weighting_leaves_other_leaves_untouched(method, path):
    model = TwoHeads()
    x = X.clone().requires_grad_(True)  # a leaf the losses reach that is no parameter
    trunk = list(model.trunk.parameters())
    weighting_backward(path, model.losses(x), trunk, resolver=method)
    assert x.grad is None
    assert all(p.grad is None for p in [*model.head_a.parameters(), *model.head_b.parameters()])
    assert all(p.grad is not None for p in trunk)


@pytest.mark.parametrize("path", ["backward", "accumulator"])
@pytest.mark.parametrize("reached", ["parameters only", "another leaf"])
def test_a_loss_weighting_restricts_its_pass_only_where_another_leaf_is_reached(
    reached, path, monkeypatch
):
    # Without inputs= the engine runs the whole graph, which is the same pass when every
    # leaf the losses reach is a parameter, and a few percent cheaper on small models.
    calls = []
    engine = torch.autograd.backward

    def recording(tensors, *args, inputs=None, **kwargs):
        calls.append(inputs)
        return engine(tensors, *args, inputs=inputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", recording)
    model = TwoHeads()
    x = X.clone().requires_grad_(reached == "another leaf")
    weighting_backward(path, model.losses(x), model.parameters(), resolver="sum")
    [inputs] = calls
    if reached == "parameters only":
        assert inputs is None
    else:
        assert [id(p) for p in inputs] == [id(p) for p in model.parameters()]
        assert x.grad is None


def test_gradients_accumulate_like_backward():
    model = TwoHeads()
    gradsurgery.backward(model.losses(X), model.parameters(), resolver="gr", primary="a")
    once = grads_of(model)
    gradsurgery.backward(model.losses(X), model.parameters(), resolver="gr", primary="a")
    for twice, single in zip(grads_of(model), once):
        if single is not None:
            torch.testing.assert_close(twice, 2 * single)


def test_existing_grad_tensor_is_kept():
    model = TwoHeads()
    weight = model.trunk[0].weight
    weight.grad = torch.ones_like(weight)
    kept = weight.grad
    gradsurgery.backward(model.losses(X), model.parameters(), resolver="gr", primary="a")
    assert weight.grad is kept


def test_loss_weighting_needs_one_backward_and_returns_no_gram():
    model = TwoHeads()
    result = gradsurgery.backward(model.losses(X), model.parameters(), resolver="sum")
    assert result.gram is None and result.cosine is None
    with_diagnostics = gradsurgery.backward(
        model.losses(X), model.parameters(), resolver="sum", diagnostics=True
    )
    assert with_diagnostics.gram is not None


def test_result_carries_cosine_and_norm_ratio():
    model = TwoHeads()
    losses = model.losses(X)
    trunk = list(model.trunk.parameters())
    g = [
        torch.cat([t.flatten() for t in torch.autograd.grad(loss, trunk, retain_graph=True)])
        for loss in losses.values()
    ]
    result = gradsurgery.backward(
        losses, model.parameters(), resolver="gr", primary="a", granularity="tensor"
    )
    cosine = torch.dot(g[0], g[1]) / (g[0].norm() * g[1].norm())
    assert result.task_names == ("a", "b")
    assert result.gram.shape == (4, 2, 2)
    assert result.shared_parameters == sum(p.numel() for p in trunk)
    assert result.cosine[0, 1].item() == pytest.approx(cosine.item(), rel=1e-5)
    assert result.norm_ratio[1, 0].item() == pytest.approx(
        (g[1].norm() / g[0].norm()).item(), rel=1e-5
    )


def test_three_tasks_with_partial_sharing():
    torch.manual_seed(0)
    shared, only_ab, only_c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1)
    x = torch.randn(4, 3)

    def losses():
        z = shared(x)
        h = only_ab(z)
        return [h[:, 0].pow(2).mean(), (h[:, 1] - 1).pow(2).mean(), only_c(z).pow(2).mean()]

    params = [*shared.parameters(), *only_ab.parameters(), *only_c.parameters()]
    gradsurgery.backward(losses(), params, resolver="pcgrad", primary=0)
    actual = [p.grad.clone() for p in params]
    L = losses()
    blocks = [*shared.parameters(), *only_ab.parameters()]
    rows = []
    for loss in L:
        grads = torch.autograd.grad(loss, blocks, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, blocks)]
            )
        )
    d = gradsurgery.resolve(torch.stack(rows), method="pcgrad", primary=0)
    expected = [g.view_as(p) for g, p in zip(d.split([p.numel() for p in blocks]), blocks)]
    expected += list(torch.autograd.grad(L[2], list(only_c.parameters())))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_single_task_is_plain_backward():
    model = TwoHeads()
    loss = model.losses(X)["a"]
    loss.backward()
    expected = grads_of(model)
    model.zero_grad(set_to_none=True)
    gradsurgery.backward([model.losses(X)["a"]], model.parameters(), resolver="gr")
    assert_grads_match(model, expected)


def test_stateful_resolver_instance_is_used():
    model = TwoHeads()
    resolver = gradsurgery.get_resolver("gradnorm")
    gradsurgery.backward(model.losses(X), model.parameters(), resolver=resolver)
    assert resolver.state_dict()["step"] == 1


def test_error_restores_the_shared_grads():
    model = TwoHeads()
    losses = model.losses(X)
    losses["b"] = (
        losses["b"] * torch.tensor(float("inf")) * 0 + model.trunk[0].weight.sum() * 0 + losses["b"]
    )
    before = grads_of(model)
    with pytest.raises(ValueError, match="task 'b'"):
        gradsurgery.backward(losses, model.parameters(), resolver="gr", primary="a")
    for param, old in zip(model.trunk.parameters(), before[:4]):
        assert param.grad is old


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda m: (
                {"a": m.losses(X)["a"], "b": torch.tensor(1.0, requires_grad=True)},
                m.parameters(),
            ),
            ValueError,
            "task 'b' reaches none",
        ),
        (
            lambda m: ({"a": m.losses(X)["a"].detach()}, m.parameters()),
            ValueError,
            "does not require grad",
        ),
        (lambda m: ({"a": m.head_a(m.trunk(X))}, m.parameters()), ValueError, "expected a scalar"),
        (
            lambda m: ({"a": m.losses(X)["a"] * float("nan")}, m.parameters()),
            ValueError,
            "task 'a' is nan",
        ),
        (lambda m: ({}, m.parameters()), ValueError, "T = 0"),
        (lambda m: ("loss", m.parameters()), TypeError, "Invalid losses"),
        (lambda m: ([3.0], m.parameters()), TypeError, "task 0 is a float"),
        (lambda m: (m.losses(X), []), ValueError, "no tensor that requires grad"),
        (lambda m: (m.losses(X), None), TypeError, "Invalid params: .* got NoneType"),
        (
            lambda m: ({"a": m.losses(X)["a"] * 1j}, m.parameters()),
            TypeError,
            "task 'a' is complex",
        ),
        (lambda m: (m.losses(X), [1.0]), TypeError, "item 0"),
        (lambda m: ({0: m.losses(X)["a"]}, m.parameters()), TypeError, "task names"),
        (
            lambda m: (m.losses(X), [m.trunk[0].weight * 2]),
            ValueError,
            "item 0 is not a leaf",
        ),
    ],
)
@pytest.mark.parametrize("method", ["gr", "sum"])  # sum: the loss-weighting fast path
def test_bad_input(make, error, message, method):
    model = TwoHeads()
    losses, params = make(model)
    with pytest.raises(error, match=message):
        gradsurgery.backward(losses, params, resolver=method)


@pytest.mark.parametrize("method", ["gr", "sum"])  # sum: the loss-weighting path checks too
def test_bad_granularity(method):
    model = TwoHeads()
    with pytest.raises(ValueError, match="granularity"):
        gradsurgery.backward(
            model.losses(X), model.parameters(), resolver=method, granularity="layer"
        )


@pytest.mark.parametrize("method", ["gr", "sum"])
def test_a_single_parameter_tensor_is_accepted_as_params(method):
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    losses = [(w**2).sum(), (w - 1.0).pow(2).sum()]
    gradsurgery.backward(losses, w, resolver=method, primary=0)
    by_hand = gradsurgery.resolve(
        torch.stack([2 * w.detach(), 2 * (w.detach() - 1.0)]), method=method, primary=0
    )
    torch.testing.assert_close(w.grad, by_hand)


@pytest.mark.parametrize("method", ["gr", "sum"])
def test_sync_must_be_a_bool(method):
    model = TwoHeads()
    with pytest.raises(TypeError, match="Invalid sync: 'yes'"):
        gradsurgery.backward(model.losses(X), model.parameters(), resolver=method, sync="yes")


def test_shared_parameters_of_two_dtypes_are_refused_with_both_named():
    w32 = torch.ones(3, requires_grad=True)
    w64 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    shared = (w32 * 2).sum() + (w64 * 3).sum().float()
    losses = [shared * 2, shared + (w32**2).sum()]
    with pytest.raises(ValueError, match=r"one dtype and device.*float32.*float64"):
        gradsurgery.backward(losses, [w32, w64], resolver="gr", primary=0)


def test_complex_shared_parameters_are_refused_before_any_gradient():
    z = torch.tensor([1.0 + 2.0j, -1.0j], requires_grad=True)
    losses = [(z * z.conj()).real.sum(), (z.real - z.imag).sum()]
    with pytest.raises(TypeError, match=r"shape \(2,\) is torch.complex64.*view_as_complex"):
        gradsurgery.backward(losses, [z], resolver="gr", primary=0)
    assert z.grad is None


@pytest.mark.parametrize("method", ["sum", "gr"])
def test_repeated_and_frozen_params_are_skipped(method):
    model = TwoHeads()
    expected_model = TwoHeads()
    gradsurgery.backward(
        expected_model.losses(X), expected_model.parameters(), resolver=method, primary="a"
    )
    model.head_b.bias.requires_grad_(False)
    expected_model.head_b.bias.grad = None  # frozen: no gradient
    params = [*model.parameters(), *model.trunk.parameters()]  # the trunk twice
    gradsurgery.backward(model.losses(X), params, resolver=method, primary="a")
    assert_grads_match(model, grads_of(expected_model), exact=True)


def checkpointed_losses(model: TwoHeads, where: str, reentrant: bool) -> dict[str, torch.Tensor]:
    """``model.losses(X)`` with part of the trunk run through ``torch.utils.checkpoint``:
    its last layer (``"middle"``: a parameter below the segment), or all of it on an input
    that requires grad (``"bottom"``: none below, torch's silent case)."""
    first, act, last = model.trunk
    if where == "middle":
        z = checkpoint(last, act(first(X)), use_reentrant=reentrant)
    else:
        z = checkpoint(model.trunk, X.clone().requires_grad_(), use_reentrant=reentrant)
    z = torch.tanh(z)
    return {"a": model.head_a(z).pow(2).mean(), "b": (model.head_b(z) - 1).pow(2).mean()}


@pytest.mark.parametrize("where", ["middle", "bottom"])
@pytest.mark.parametrize("method", ["gr", "sum", "sum_diagnostics", "accumulator"])
def test_a_reentrant_checkpoint_is_refused_before_any_gradient(method, where):
    model = TwoHeads()
    losses = checkpointed_losses(model, where, reentrant=True)
    with pytest.raises(ValueError, match=r"task 'a' passes through.*use_reentrant=False"):
        if method == "accumulator":
            gradsurgery.Accumulator(model, resolver="gr", primary="a").backward(losses)
        else:
            diagnostics = method == "sum_diagnostics"
            resolver = "sum" if diagnostics else method
            gradsurgery.backward(losses, model, resolver=resolver, diagnostics=diagnostics)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("where", ["middle", "bottom"])
@pytest.mark.parametrize("method", ["gr", "sum"])
def test_a_non_reentrant_checkpoint_trains_as_without(method, where):
    model, twin = TwoHeads(), TwoHeads()
    gradsurgery.backward(checkpointed_losses(model, where, reentrant=False), model, resolver=method)
    gradsurgery.backward(twin.losses(X), twin, resolver=method)
    assert_grads_match(model, grads_of(twin))


def test_errors_name_backwards_own_arguments():
    model = TwoHeads()
    with pytest.raises(ValueError, match=r"Invalid resolver: Unknown method: 'pcgard' \(did you"):
        gradsurgery.backward(model.losses(X), model.parameters(), resolver="pcgard")
    with pytest.raises(TypeError, match="Invalid resolver: 3"):
        gradsurgery.Accumulator(model.parameters(), resolver=3)  # type: ignore[arg-type]
    losses = model.losses(X)
    out = model.trunk(X)
    losses["b"] = losses["b"] + torch.sqrt(out - out.detach()).sum()  # finite, infinite gradient
    with pytest.raises(ValueError, match=r"^Non-finite task gradients: task 'b' has non-finite"):
        gradsurgery.backward(losses, model.parameters(), resolver="gr", primary="a")


@pytest.mark.parametrize("diagnostics", ["False", 0, None])
def test_diagnostics_must_be_a_bool(diagnostics):
    w = torch.nn.Parameter(torch.ones(2))
    for resolver in ("sum", "gr"):
        losses = [w.sum(), (2 * w).sum()]
        with pytest.raises(TypeError, match="Invalid diagnostics"):
            gradsurgery.backward(losses, [w], resolver=resolver, diagnostics=diagnostics)
    with pytest.raises(TypeError, match="Invalid diagnostics"):
        gradsurgery.Accumulator([w], resolver="gr", diagnostics=diagnostics)
