"""The glue with a resolver that trains on log-losses (DB-MTL): every parameter, a task's
head included, gets the gradient of log L_i, and the resolver gets those rows as they are.

The model: a shared scalar ``s`` and two heads ``h1``, ``h2``, with ``L1 = h1^2 s`` and
``L2 = h2 s^2``. At ``s = 2``, ``h1 = 1.5`` and ``h2 = 3``: ``L1 = 4.5``, ``L2 = 12``;
``dL1/ds = h1^2 = 2.25``, ``dL2/ds = 2 h2 s = 12``, ``dL1/dh1 = 2 h1 s = 6``,
``dL2/dh2 = s^2 = 4``.
"""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import DBMTL


def make_parameters() -> tuple[torch.nn.Parameter, torch.nn.Parameter, torch.nn.Parameter]:
    s = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    h1 = torch.nn.Parameter(torch.tensor([1.5], dtype=torch.float64))
    h2 = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    return s, h1, h2


def losses_at(s, h1, h2) -> dict[str, torch.Tensor]:
    return {"a": (h1**2 * s).sum(), "b": (h2 * s**2).sum()}


def test_heads_and_shared_parameters_get_log_loss_gradients():
    # log-gradients: shared (2.25 / 4.5, 12 / 12) = (0.5, 1); heads 6 / 4.5 = 4/3, 4 / 12.
    # beta = 0: the norms 0.5 and 1 are rescaled to 1, so d = 2 * 0.5 + 1 * 1 = 2.
    s, h1, h2 = make_parameters()
    gradsurgery.backward(losses_at(s, h1, h2), [s, h1, h2], resolver=DBMTL(beta=0.0))
    torch.testing.assert_close(s.grad, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(h1.grad, torch.tensor([4.0 / 3.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([1.0 / 3.0], dtype=torch.float64))


def test_loss_weights_multiply_the_log_loss_gradients():
    # c = (2, 1): shared rows (1, 1), so d = 2; heads 2 * 4/3 and 1/3
    s, h1, h2 = make_parameters()
    gradsurgery.backward(
        losses_at(s, h1, h2), [s, h1, h2], resolver=DBMTL(beta=0.0), weights={"a": 2.0, "b": 1.0}
    )
    torch.testing.assert_close(s.grad, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(h1.grad, torch.tensor([8.0 / 3.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([1.0 / 3.0], dtype=torch.float64))


def test_shared_direction_is_that_of_resolve_on_the_raw_gradients():
    torch.manual_seed(0)
    trunk = torch.nn.Linear(3, 4).double()
    heads = torch.nn.ModuleList([torch.nn.Linear(4, 1).double() for _ in range(3)])
    x = torch.randn(6, 3, dtype=torch.float64)
    features = torch.tanh(trunk(x))
    losses = [(k + 1.0) * heads[k](features).pow(2).mean() + 0.1 for k in range(3)]
    rows = [
        torch.cat(
            [
                g.flatten()
                for g in torch.autograd.grad(loss, list(trunk.parameters()), retain_graph=True)
            ]
        )
        for loss in losses
    ]
    expected = gradsurgery.resolve(
        torch.stack(rows), method=DBMTL(), losses=[loss.item() for loss in losses]
    )
    gradsurgery.backward(losses, [*trunk.parameters(), *heads.parameters()], resolver=DBMTL())
    got = torch.cat([p.grad.flatten() for p in trunk.parameters()])
    torch.testing.assert_close(got, expected)


def test_a_window_divides_each_micro_batch_by_its_own_loss():
    # two micro-batches, the second with the losses offset by their own values: losses
    # (4.5, 12), then (9, 24), with the same gradients.
    # shared: 2.25 (1/4.5 + 1/9) = 0.75 and 12 (1/12 + 1/24) = 1.5, so d = 2 * 0.75 + 1.5 = 3;
    # heads: 6 (1/4.5 + 1/9) = 2 and 4 (1/12 + 1/24) = 0.5
    s, h1, h2 = make_parameters()
    accumulator = gradsurgery.Accumulator([s, h1, h2], resolver=DBMTL(beta=0.0))
    accumulator.backward(losses_at(s, h1, h2))
    losses = losses_at(s, h1, h2)
    losses["a"] = losses["a"] + 4.5
    losses["b"] = losses["b"] + 12.0
    accumulator.backward(losses)
    accumulator.resolve()
    torch.testing.assert_close(s.grad, torch.tensor([3.0], dtype=torch.float64))
    torch.testing.assert_close(h1.grad, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([0.5], dtype=torch.float64))


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_a_loss_that_is_not_positive_is_refused_before_any_gradient(value):
    s, h1, h2 = make_parameters()
    losses = losses_at(s, h1, h2)
    losses["b"] = losses["b"] * 0.0 + value
    with pytest.raises(ValueError, match=rf"task 'b' is {value}; DBMTL trains every task on log"):
        gradsurgery.backward(losses, [s, h1, h2], resolver="db_mtl")
    assert s.grad is None and h1.grad is None and h2.grad is None


def test_a_loss_that_is_not_positive_is_refused_with_a_scaler():
    s, h1, h2 = make_parameters()
    losses = losses_at(s, h1, h2)
    losses["a"] = losses["a"] * 0.0 - 2.0
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    with pytest.raises(ValueError, match=r"task 'a' is -2.0"):
        gradsurgery.backward(losses, [s, h1, h2], resolver="db_mtl", scaler=scaler)


def test_with_a_scaler_the_unscaled_gradients_are_those_without():
    s, h1, h2 = make_parameters()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer = torch.optim.SGD([s, h1, h2], lr=0.0)
    gradsurgery.backward(losses_at(s, h1, h2), [s, h1, h2], resolver=DBMTL(beta=0.0), scaler=scaler)
    scaler.unscale_(optimizer)
    torch.testing.assert_close(s.grad, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(h1.grad, torch.tensor([4.0 / 3.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([1.0 / 3.0], dtype=torch.float64))


def test_a_non_finite_loss_with_a_scaler_is_left_to_it():
    s, h1, h2 = make_parameters()
    losses = losses_at(s, h1, h2)
    losses["a"] = losses["a"] - float("inf")
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    result = gradsurgery.backward(losses, [s, h1, h2], resolver="db_mtl", scaler=scaler)
    assert not result.finite


def test_other_resolvers_back_propagate_the_losses_themselves():
    # the plain sum: the heads get dL/dh (6 and 4), the shared parameter 2.25 + 12
    s, h1, h2 = make_parameters()
    gradsurgery.backward(losses_at(s, h1, h2), [s, h1, h2], resolver="pcgrad")
    torch.testing.assert_close(s.grad, torch.tensor([14.25], dtype=torch.float64))
    torch.testing.assert_close(h1.grad, torch.tensor([6.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([4.0], dtype=torch.float64))


def test_without_shared_parameters_every_task_is_back_propagated_as_its_log_loss():
    # no parameter is shared: one backward pass of sum_i c_i log L_i, so h1 gets
    # 2 * 2 h1 s / L1 and h2 gets s^2 / L2 (s fixed at 2)
    _, h1, h2 = make_parameters()
    s = torch.tensor([2.0], dtype=torch.float64)
    gradsurgery.backward(
        losses_at(s, h1, h2), [h1, h2], resolver="db_mtl", weights={"a": 2.0, "b": 1.0}
    )
    torch.testing.assert_close(h1.grad, torch.tensor([8.0 / 3.0], dtype=torch.float64))
    torch.testing.assert_close(h2.grad, torch.tensor([1.0 / 3.0], dtype=torch.float64))
