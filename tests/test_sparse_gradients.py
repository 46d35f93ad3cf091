"""Sparse gradients (``nn.Embedding(sparse=True)``) through the autograd glue.

A model with sparse embeddings must train as its dense twin does (the same weights with
``sparse=False``): the shared embedding's task gradients become rows of the dense
task-gradient matrix, so its resolved ``.grad`` is dense; an existing sparse ``.grad`` is
made dense when the direction is added to it, as autograd does; a loss weighting's single
backward pass keeps autograd's own layout.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradsurgery


class EmbeddingTasks(nn.Module):
    """A shared embedding table (both tasks) and one of task ``b`` alone."""

    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Embedding(12, 4, sparse=sparse)
        self.own_b = nn.Embedding(5, 2, sparse=sparse)
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(6, 1)

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(step)
        tokens = torch.randint(0, 12, (9,), generator=generator)  # repeats, and unused rows
        own = torch.randint(0, 5, (9,), generator=generator)
        z = torch.tanh(self.shared(tokens))
        a = self.head_a(z).pow(2).mean()
        b = (self.head_b(torch.cat([z, self.own_b(own)], dim=1)) + 1).pow(2).mean()
        return {"a": a, "b": 3.0 * b}  # b's gradient dominates: GR rescales


def twins() -> tuple[EmbeddingTasks, EmbeddingTasks]:
    return EmbeddingTasks(sparse=True), EmbeddingTasks(sparse=False)


def assert_same_grads(sparse: nn.Module, dense: nn.Module) -> None:
    for (name, param), twin in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        assert (param.grad is None) == (twin.grad is None), name
        if param.grad is not None:
            torch.testing.assert_close(param.grad.to_dense(), twin.grad, msg=name)


@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("method", ["gr", "pcgrad", "mgda"])
def test_gram_resolvers_train_as_the_dense_twin(method, granularity):
    sparse, dense = twins()
    for model in (sparse, dense):
        for step in range(2):  # the second call adds to the first call's .grad
            gradsurgery.backward(
                model.losses(step), model, resolver=method, primary="a", granularity=granularity
            )
    assert sparse.shared.weight.grad.layout == torch.strided  # a row of the dense matrix
    assert_same_grads(sparse, dense)
    assert sparse.shared.weight.grad.abs().sum() > 0


def test_an_existing_sparse_grad_is_made_dense_and_kept():
    sparse, dense = twins()
    for model in (sparse, dense):
        sum(model.losses(0).values()).backward()  # a plain step leaves sparse .grad
    assert sparse.shared.weight.grad.layout == torch.sparse_coo
    for model in (sparse, dense):
        gradsurgery.backward(model.losses(1), model, resolver="gr", primary="a")
    assert sparse.shared.weight.grad.layout == torch.strided
    assert_same_grads(sparse, dense)


def test_the_direction_is_added_to_the_existing_sparse_grad():
    model = EmbeddingTasks(sparse=True)
    sum(model.losses(0).values()).backward()
    before = model.shared.weight.grad.to_dense()
    gradsurgery.backward(model.losses(1), model, resolver="gr", primary="a")
    fresh = EmbeddingTasks(sparse=True)
    gradsurgery.backward(fresh.losses(1), fresh, resolver="gr", primary="a")
    torch.testing.assert_close(model.shared.weight.grad, before + fresh.shared.weight.grad)


def test_accumulator_window_trains_as_the_dense_twin():
    sparse, dense = twins()
    for model in (sparse, dense):
        accumulator = gradsurgery.Accumulator(model, resolver="gr", primary="a")
        for step in range(3):
            accumulator.backward(model.losses(step))
        accumulator.resolve()
    assert_same_grads(sparse, dense)


@pytest.mark.parametrize("diagnostics", [False, True])
def test_loss_weighting_trains_as_the_dense_twin(diagnostics):
    sparse, dense = twins()
    for model in (sparse, dense):
        gradsurgery.backward(
            model.losses(0), model, resolver="sum", weights=[0.5, 2.0], diagnostics=diagnostics
        )
    # one backward pass of the weighted sum keeps autograd's sparse layout; diagnostics
    # form the task gradients, rows of the dense matrix
    expected = torch.strided if diagnostics else torch.sparse_coo
    assert sparse.shared.weight.grad.layout == expected
    assert sparse.own_b.weight.grad.layout == torch.sparse_coo  # one task's: autograd's
    assert_same_grads(sparse, dense)
