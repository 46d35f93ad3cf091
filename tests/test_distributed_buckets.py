"""``all_reduce_mean_``'s buckets, with the collective replaced by a recording stand-in.

The stand-in sums two identical ranks (it doubles its input), so a correct mean leaves
every tensor as it was; it also records each collective's size, which must never exceed
:data:`gradsurgery.distributed.BUCKET_NUMEL`.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from gradsurgery import distributed

BUCKET = 8


@pytest.fixture
def sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    recorded: list[int] = []

    def all_reduce_of_two_equal_ranks(tensor: torch.Tensor, group: object = None) -> None:
        recorded.append(tensor.numel())
        tensor.mul_(2)

    monkeypatch.setattr(distributed, "BUCKET_NUMEL", BUCKET)
    monkeypatch.setattr(distributed, "world_size", lambda group: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce_of_two_equal_ranks)
    return recorded


def test_a_large_non_contiguous_tensor_is_reduced_in_buckets_and_written_back(sizes):
    matrix = torch.arange(40.0).reshape(4, 10)
    transposed = matrix.t()  # 40 elements, not contiguous
    expected = transposed.clone()
    distributed.all_reduce_mean_([transposed], None)
    assert max(sizes) <= BUCKET and sum(sizes) == 40
    assert torch.equal(transposed, expected) and torch.equal(matrix.t(), expected)


def test_large_contiguous_and_small_tensors_keep_their_values_within_the_bucket_size(sizes):
    tensors = [
        torch.randn(20),
        torch.randn(3),
        torch.randn(2, 3),
        torch.randn(5, dtype=torch.float64),
    ]
    expected = [tensor.clone() for tensor in tensors]
    distributed.all_reduce_mean_(tensors, None)
    assert max(sizes) <= BUCKET and sum(sizes) == 20 + 3 + 6 + 5
    for tensor, before in zip(tensors, expected):
        torch.testing.assert_close(tensor, before, rtol=0, atol=1e-6)
