"""Gradient layouts through the autograd glue: sparse gradients, and parameters laid out
other than row-major (``channels_last``, a transposed weight).

A model with sparse embeddings must train as its dense twin does (the same weights with
``sparse=False``): the shared embedding's task gradients become rows of the dense
task-gradient matrix, so its resolved ``.grad`` is dense; an existing sparse ``.grad`` is
made dense when the direction is added to it, as autograd does; a loss weighting's single
backward pass keeps autograd's own layout.

A ``channels_last`` model must train as its row-major twin does, and its ``.grad`` must
keep autograd's layout contract (the parameter's strides), without autograd's warning.
"""

from __future__ import annotations

import warnings

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
    # one backward pass of the weighted sum keeps autograd's sparse layout, diagnostics or
    # not (they form the task gradients for the Gram only, without writing .grad)
    assert sparse.shared.weight.grad.layout == torch.sparse_coo
    assert sparse.own_b.weight.grad.layout == torch.sparse_coo  # one task's: autograd's
    assert_same_grads(sparse, dense)


class StridedTasks(nn.Module):
    """A shared convolution and a shared transposed weight, each laid out as asked."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        weight = torch.randn(5, 4 * 4 * 4) * 0.1
        self.mix = nn.Parameter(weight.t() if channels_last else weight.t().contiguous())
        self.head_a = nn.Linear(5, 1)
        self.head_b = nn.Linear(5, 2)
        if channels_last:
            self.conv.to(memory_format=torch.channels_last)

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        if self.conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.to(memory_format=torch.channels_last)
        z = torch.tanh(self.conv(x).flatten(1) @ self.mix)
        return {"a": self.head_a(z).pow(2).mean(), "b": 4.0 * (self.head_b(z) - 1).pow(2).mean()}


def strided_twins() -> tuple[StridedTasks, StridedTasks]:
    strided, row_major = StridedTasks(channels_last=True), StridedTasks(channels_last=False)
    assert not strided.conv.weight.is_contiguous() and not strided.mix.is_contiguous()
    return strided, row_major


def assert_grads_laid_out_as_params(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        assert param.grad.stride() == param.stride(), name


@pytest.mark.parametrize("granularity", ["global", "tensor"])
@pytest.mark.parametrize("method", ["gr", "pcgrad"])
def test_channels_last_trains_as_the_row_major_twin(method, granularity):
    strided, row_major = strided_twins()
    for model in (strided, row_major):
        for step in range(2):  # the second call adds to the first call's .grad
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # autograd warns of a .grad of other strides
                gradsurgery.backward(
                    model.losses(step), model, resolver=method, primary="a", granularity=granularity
                )
    assert_grads_laid_out_as_params(strided)
    assert_same_grads(strided, row_major)


def test_channels_last_accumulator_window_trains_as_the_row_major_twin():
    strided, row_major = strided_twins()
    for model in (strided, row_major):
        accumulator = gradsurgery.Accumulator(model, resolver="gr", primary="a")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in range(3):
                accumulator.backward(model.losses(step))
            accumulator.resolve()
    assert_grads_laid_out_as_params(strided)
    assert_same_grads(strided, row_major)
