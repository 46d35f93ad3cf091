"""``resolve(..., out=)``: the direction written into a caller's buffer, as a new one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradsurgery
from gradsurgery.resolvers.base import weighted_sum_of_blocks
from tests.strategies import gradient_matrices

G = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5], [0.5, -2.0, 1.0]])
LOSSES = [1.0, 2.0, 0.5]


def both_ways(method: str, grads: torch.Tensor, out: torch.Tensor, **kwargs):
    """The direction of a fresh call and of an ``out=`` call, each with a fresh resolver
    built and called under the same seed (so that random methods draw alike)."""
    results = []
    for target in (None, out):
        torch.manual_seed(0)
        resolver = gradsurgery.get_resolver(method)
        torch.manual_seed(1)
        results.append(gradsurgery.resolve(grads, method=resolver, out=target, **kwargs))
    return results


@pytest.mark.parametrize("method", gradsurgery.available())
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_out_holds_exactly_the_new_direction(method, dtype):
    grads = G.to(dtype)
    out = torch.full((3,), float("nan"), dtype=dtype)
    fresh, written = both_ways(method, grads, out, losses=LOSSES, weights=[1.0, 0.5, 2.0])
    assert written is out
    assert torch.equal(written, fresh)


@pytest.mark.parametrize("method", ["sum", "gr", "pcgrad", "mgda", "graddrop"])
def test_out_may_be_a_strided_view(method):
    storage = torch.full((6,), float("nan"))
    out = storage[::2]
    fresh, written = both_ways(method, G, out, losses=LOSSES)
    assert written is out
    assert torch.equal(written, fresh)
    assert torch.isnan(storage[1::2]).all()  # nothing written between the elements


@settings(max_examples=60, deadline=None)
@given(gradient_matrices(min_tasks=1, max_tasks=5), st.sampled_from(["sum", "gr", "pcgrad"]))
def test_out_agrees_with_a_new_direction_on_any_matrix(grads, method):
    out = torch.empty(grads.shape[1], dtype=grads.dtype)
    fresh, written = both_ways(method, grads, out)
    assert torch.equal(written, fresh)


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        ([0.0, 0.0, 0.0], TypeError, "Invalid out: expected a tensor"),
        (torch.zeros(4), ValueError, r"Invalid out: shape \(4,\); expected \(3,\)"),
        (torch.zeros(1, 3), ValueError, r"Invalid out: shape \(1, 3\); expected \(3,\)"),
        (torch.zeros(3, dtype=torch.float64), TypeError, "Invalid out: torch.float64"),
        (torch.zeros(3, requires_grad=True), ValueError, "Invalid out: it requires grad"),
    ],
)
def test_bad_out_is_named(out, error, message):
    with pytest.raises(error, match=message):
        gradsurgery.resolve(G, method="gr", out=out)


@pytest.mark.parametrize("tasks", [2, 9, 12])
@pytest.mark.parametrize("offset", [1, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_out_at_an_unaligned_offset_holds_the_same_values(tasks, offset, dtype):
    # The CPU's matrix products choose kernels by alignment: a slice of a flat buffer must
    # not round differently from a new tensor.
    grads = torch.randn(tasks, 1000, generator=torch.Generator().manual_seed(tasks)).to(dtype)
    out = torch.empty(1000 + offset, dtype=dtype)[offset:]
    for method in ("sum", "gr", "mgda"):
        fresh, written = both_ways(method, grads, out)
        assert written is out
        assert torch.equal(written, fresh), method


def test_out_may_not_share_memory_with_the_gradients():
    grads = G.clone()
    with pytest.raises(ValueError, match="Invalid out: its memory span overlaps that of grads"):
        gradsurgery.resolve(grads, method="gr", out=grads[0])
    assert torch.equal(grads, G)


def test_memory_shared_through_another_storage_is_refused():
    # Two tensors over one NumPy array have two storage objects but the same memory.
    flat = np.arange(1, 14, dtype=np.float32)
    grads = torch.from_numpy(flat[:12].reshape(3, 4))
    with pytest.raises(ValueError, match="Invalid out: its memory span overlaps that of grads"):
        gradsurgery.resolve(grads, method="sum", out=torch.from_numpy(flat[5:9]))
    assert np.array_equal(flat, np.arange(1, 14, dtype=np.float32))


def test_a_disjoint_part_of_the_same_storage_is_a_valid_out():
    big = torch.zeros(4, 3)
    big[:3] = G
    written = gradsurgery.resolve(big[:3], method="sum", out=big[3])
    assert torch.equal(written, G.sum(dim=0))
    assert torch.equal(big[:3], G)


def test_an_expanded_out_is_refused():
    with pytest.raises(ValueError, match="Invalid out: its elements share memory"):
        gradsurgery.resolve(G, method="sum", out=torch.zeros(1).expand(3))


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("method", ["sum", "gr", "mgda"])
def test_out_above_the_row_by_row_sum(method, layout):
    # More than 8 tasks: the direction is one matrix-vector product, formed in out.
    grads = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))
    out = torch.empty(7) if layout == "contiguous" else torch.empty(14)[::2]
    fresh, written = both_ways(method, grads, out)
    assert written is out
    assert torch.equal(written, fresh)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_blocks_are_summed_into_out(layout, dtype):
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 12, generator=generator).to(dtype)
    weights = torch.rand(4, 3, generator=generator, dtype=torch.float64)
    sizes = (2, 2, 5, 3)
    storage = torch.full((24,), float("nan"), dtype=dtype)
    out = storage[:12] if layout == "contiguous" else storage[::2]
    written = weighted_sum_of_blocks(grads, weights, sizes, out=out)
    assert written is out
    assert torch.equal(written, weighted_sum_of_blocks(grads, weights, sizes))
