"""The host round trip of the resolvers' T x T algebra keeps dtype, device and values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsurgery.resolvers.host import from_host, to_host


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_round_trip_keeps_the_dtype_and_the_values(dtype):
    tensor = torch.tensor([[0.5, -2.0], [3.0, 0.25]], dtype=dtype)
    array = to_host(tensor)
    assert array.dtype == np.float64
    back = from_host(array * 2, tensor)
    assert back.dtype == dtype and back.device == tensor.device
    torch.testing.assert_close(back, tensor * 2)


def test_from_host_accepts_non_contiguous_arrays():
    array = np.arange(6.0).reshape(2, 3).T  # a transposed view
    back = from_host(array, torch.zeros(()))
    torch.testing.assert_close(back, torch.tensor(array, dtype=torch.float32))


def test_to_host_does_not_track_gradients():
    tensor = torch.ones(2, requires_grad=True)
    array = to_host(tensor * 3)
    np.testing.assert_array_equal(array, [3.0, 3.0])
