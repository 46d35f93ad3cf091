"""The shared block kernels: Gram matrices and weighted sums, on every code path.

Wide single blocks (at least 2**20 columns, at most 8 rows, on the CPU) take dedicated
paths: cache-sized chunks summed in float64 for the Gram, row axpys for the sum. They must
agree with a float64 reference like the general matrix-product path does.
"""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers.base import gram_of_blocks, weighted_sum_of_blocks

WIDE = (1 << 20) + 3  # just past the wide-block threshold, and not a multiple of the chunk


def _matrix(tasks: int, columns: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(tasks)
    return torch.randn(tasks, columns, generator=generator).to(dtype)


@pytest.mark.parametrize("tasks", [1, 2, 3, 4, 8, 9])
def test_gram_of_a_wide_block_matches_float64(tasks):
    G = _matrix(tasks, WIDE)
    reference = G.double() @ G.double().T
    gram = gram_of_blocks(G, [WIDE])
    assert gram.shape == (1, tasks, tasks) and gram.dtype == torch.float64
    assert torch.equal(gram[0], gram[0].T)
    # float32 sums of ~1e6 products: relative round-off well under 1e-4 of the largest entry
    torch.testing.assert_close(gram[0], reference, rtol=0, atol=1e-4 * reference.abs().max())


@pytest.mark.parametrize("tasks", [2, 3])
def test_gram_of_a_long_wide_block_is_summed_in_float64(tasks):
    # 2**22 products near 1 each: torch.dot over all of them is off by 2e-6 relative here,
    # the float64 sum of chunks by 1.5e-7.
    G = torch.ones(tasks, 1 << 22) + 0.25 * torch.randn(tasks, 1 << 22, generator=torch.Generator())
    gram = gram_of_blocks(G, [1 << 22])[0]
    torch.testing.assert_close(gram, G.double() @ G.double().T, rtol=5e-7, atol=0.0)


def test_gram_of_wide_and_narrow_blocks_together():
    G = _matrix(2, WIDE + 10)
    gram = gram_of_blocks(G, [WIDE, 5, 5])
    parts = [G[:, :WIDE], G[:, WIDE : WIDE + 5], G[:, WIDE + 5 :]]
    for block, part in zip(gram, parts):
        reference = part.double() @ part.double().T
        torch.testing.assert_close(block, reference, rtol=1e-5, atol=1e-4 * reference.abs().max())


@pytest.mark.parametrize(
    "weights", [[1.0, 1.0], [1.0, -0.5], [0.7, 0.3], [0.0, 2.0], [2.0, 0.5, -1.0, 0.25]]
)
def test_weighted_sum_of_a_wide_block_matches_float64(weights):
    w = torch.tensor([weights], dtype=torch.float64)
    G = _matrix(w.shape[1], WIDE)
    direction = weighted_sum_of_blocks(G, w, [WIDE])
    assert direction.dtype == torch.float32 and direction.shape == (WIDE,)
    reference = (w[0] @ G.double()).float()
    torch.testing.assert_close(direction, reference, rtol=1e-6, atol=1e-6)


def test_weighted_sum_of_a_wide_half_precision_block():
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    G = _matrix(2, WIDE, torch.bfloat16)
    direction = weighted_sum_of_blocks(G, w, [WIDE])
    assert direction.dtype == torch.bfloat16
    reference = (w[0] @ G.double()).to(torch.bfloat16)
    torch.testing.assert_close(direction, reference)


@pytest.mark.parametrize("method", ["sum", "gr", "pcgrad"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_entry_of_a_wide_matrix_is_named(method, bad):
    G = _matrix(2, WIDE)
    G[1, WIDE - 1] = bad
    with pytest.raises(ValueError, match="task 1 has non-finite values"):
        gradsurgery.resolve(G, method=method, primary=0 if method == "gr" else None)


def test_finite_entries_whose_sum_overflows_are_not_called_nonfinite():
    # The direction's one-reduction check sums to inf here; the exact scan must clear it.
    G = torch.full((2, 4), 3e38)
    G[1] = 0.0
    direction = gradsurgery.resolve(G, method="sum")
    assert torch.isfinite(direction).all()


@pytest.mark.parametrize(
    ("block_sizes", "message"),
    [
        ((2, 2), "2 block.s. of 4 columns in all; G has 6"),
        ((10,), "1 block.s. of 10 columns in all; G has 6"),
        ((-1, 7), "a negative size .-1."),
        ((), "0 block.s. of 0 columns in all; G has 6"),
        ((4, 4), "2 block.s. of 8 columns in all; G has 6"),
    ],
)
def test_block_sizes_must_cover_the_columns_exactly(block_sizes, message):
    """Blocks that leave columns out had left them uninitialised in the weighted sum."""
    G = _matrix(2, 6)
    weights = torch.ones(max(len(block_sizes), 1), 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"Invalid block_sizes: {message}"):
        gram_of_blocks(G, block_sizes)
    with pytest.raises(ValueError, match=f"Invalid block_sizes: {message}"):
        weighted_sum_of_blocks(G, weights[: len(block_sizes)], block_sizes)
    with pytest.raises(ValueError, match="Invalid block_sizes"):
        gradsurgery.get_resolver("gr").resolve_blocks(G, block_sizes, primary=0)


def test_weights_need_one_row_per_block():
    G = _matrix(2, 6)
    with pytest.raises(ValueError, match=r"Invalid weights: 1 row\(s\) for 2 block\(s\)"):
        weighted_sum_of_blocks(G, torch.ones(1, 2, dtype=torch.float64), (3, 3))
