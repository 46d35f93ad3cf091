"""The primary row of the Gram matrix: what GR-like resolvers read, formed alone.

:func:`gram_of_primary` forms the diagonal and the primary task's row, ``2T - 1`` dot
products instead of ``T(T + 1) / 2``. Resolvers flagged ``reads_primary_only`` are handed it
by :func:`gradsurgery.resolve` (which returns only the direction) for three or more tasks;
the autograd glue, whose result carries the Gram matrix, still forms all of it.
"""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers.base import GramResolver, gram_of_primary

CHUNK = 1 << 17  # gram_of_primary's column chunk on the CPU

PRIMARY_ONLY = {
    "cosine_gate",
    "gr",
    "gr_project",
    "gr_rescale",
    "metabalance",
    "olaux",
    "pcgrad_onesided",
}


def _matrix(tasks: int, columns: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, tasks).unsqueeze(1)
    return torch.randn(tasks, columns, generator=generator) * scales + 0.1


def _expected(G: torch.Tensor, primary: int) -> torch.Tensor:
    full = G.double() @ G.double().T
    expected = torch.zeros_like(full)
    expected.diagonal().copy_(full.diagonal())
    expected[primary] = full[primary]
    expected[:, primary] = full[:, primary]
    return expected


@pytest.mark.parametrize(
    ("tasks", "columns", "primary"),
    [(1, 7, 0), (3, 5, 1), (5, 33, 4), (8, CHUNK + 9, 0), (16, 2 * CHUNK + 1, 7)],
)
def test_gram_of_primary_is_the_diagonal_and_the_primary_row(tasks, columns, primary):
    G = _matrix(tasks, columns)
    gram = gram_of_primary(G, primary)
    assert gram.shape == (1, tasks, tasks) and gram.dtype == torch.float64
    assert torch.equal(gram[0], gram[0].T)
    expected = _expected(G, primary)
    assert torch.equal(gram[0] == 0, expected == 0)  # the entries it does not form are zero
    torch.testing.assert_close(gram[0], expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


def test_gram_of_primary_sums_long_columns_in_float64():
    # 2**22 products near 1 each: torch.dot over all of them is off by 2e-6 relative here
    # (the matrix product by 3e-6), chunks summed in float64 by 1.4e-7.
    G = torch.ones(3, 1 << 22) + 0.25 * torch.randn(3, 1 << 22, generator=torch.Generator())
    gram = gram_of_primary(G, 1)[0]
    expected = _expected(G, 1)
    torch.testing.assert_close(gram, expected, rtol=5e-7, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_gram_of_primary_in_other_dtypes(dtype):
    G = _matrix(4, 100).to(dtype)
    gram = gram_of_primary(G, 2)
    assert gram.dtype == torch.float64
    expected = _expected(G.float(), 2)  # half precision is multiplied in float32
    torch.testing.assert_close(gram[0], expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


def test_the_flag_is_on_exactly_the_resolvers_that_read_the_primary_row():
    flagged = {
        name
        for name in gradsurgery.available()
        if getattr(gradsurgery.get_resolver(name), "reads_primary_only", False)
    }
    assert flagged == PRIMARY_ONLY


@pytest.mark.parametrize("name", sorted(PRIMARY_ONLY))
@pytest.mark.parametrize("primary", [0, 2])
def test_flagged_weights_ignore_the_other_entries(name, primary):
    """Replacing every entry outside the diagonal and the primary row leaves the weights
    bit for bit: the flag is true of the resolver."""
    grams = []
    for seed in range(2):
        G = _matrix(5, 40, seed)
        G[3] -= 3 * G[primary]  # one conflicting auxiliary, dominant too
        grams.append((G.double() @ G.double().T).unsqueeze(0))
    gram, other = grams
    mixed = other.clone()
    mixed[0].diagonal().copy_(gram[0].diagonal())
    mixed[0, primary] = gram[0, primary]
    mixed[0, :, primary] = gram[0, :, primary]
    first = gradsurgery.get_resolver(name).weights(gram, primary=primary, losses=None)
    second = gradsurgery.get_resolver(name).weights(mixed, primary=primary, losses=None)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", sorted(PRIMARY_ONLY))
def test_resolve_with_the_primary_row_matches_the_full_gram(name):
    G = _matrix(6, 300)
    G[4] -= 2 * G[1]
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.0, 3.0])
    direction = gradsurgery.resolve(G, method=name, primary=1, weights=weights)
    full = gradsurgery.get_resolver(name).resolve_blocks(
        G, (G.shape[1],), primary=1, task_weights=weights.double()
    )
    torch.testing.assert_close(direction, full.direction, rtol=1e-5, atol=1e-5)


def test_the_resolution_carries_the_gram_only_when_it_is_whole():
    resolver = gradsurgery.get_resolver("gr")
    assert isinstance(resolver, GramResolver)
    three = _matrix(3, 50)
    partial = resolver.resolve_blocks(three, (50,), primary=0, full_gram=False)
    assert partial.gram is None
    whole = resolver.resolve_blocks(three, (50,), primary=0)
    assert whole.gram is not None and whole.gram.shape == (1, 3, 3)
    torch.testing.assert_close(partial.direction, whole.direction)
    # two tasks: the primary row is the whole Gram matrix, formed as always
    two = resolver.resolve_blocks(three[:2], (50,), primary=0, full_gram=False)
    assert two.gram is not None and two.gram.shape == (1, 2, 2)
    # several blocks: the full Gram matrices, as always
    blocks = resolver.resolve_blocks(three, (20, 30), primary=0, full_gram=False)
    assert blocks.gram is not None and blocks.gram.shape == (2, 3, 3)


def test_the_autograd_glue_still_reports_the_whole_gram():
    generator = torch.Generator().manual_seed(0)
    trunk = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4, generator=generator)
    heads = torch.randn(3, 4, generator=generator)
    losses = [(trunk(x) @ head).pow(2).mean() for head in heads]
    result = gradsurgery.backward(losses, trunk, resolver="gr")
    assert result.gram is not None and result.gram.shape == (1, 3, 3)
    assert result.gram[0, 1, 2] != 0  # an entry outside the primary row


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_nonfinite_task_is_named_on_the_primary_row_path(bad):
    G = _matrix(4, 30)
    G[2, 5] = bad
    with pytest.raises(ValueError, match="task 2"):
        gradsurgery.resolve(G, method="gr")
