"""Finite task gradients of any magnitude give a finite direction or a ValueError.

Every registered resolver, on matrices whose rows span the whole range of float16,
bfloat16, float32 or float64 (with loss weights and a primary task, sometimes): a
non-finite direction must never come back silently. Gram resolvers prove their direction
finite from a bound on it (:class:`gradsurgery.resolvers.GramResolver`); these cases
reach both sides of the bound.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import gradsurgery
from gradsurgery.resolvers.host import exactly_rescaled

METHODS = gradsurgery.available()
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def extreme_cases(draw):
    """A finite ``(T, P)`` matrix in a drawn dtype whose rows have magnitudes anywhere in
    the dtype's range (often at its ends), optional loss weights and a primary."""
    dtype = draw(st.sampled_from(DTYPES))
    info = torch.finfo(dtype)
    top, bottom = math.frexp(info.max)[1] - 1, math.frexp(info.tiny)[1] - 1  # 2**e in range
    exponents = st.integers(bottom, top) | st.sampled_from([bottom, 0, top - 2, top - 1, top])
    mantissas = st.floats(-1.0, 1.0) | st.sampled_from([0.0, 1.0, -1.0, 0.75])
    T = draw(st.integers(1, 4))
    P = draw(st.integers(1, 6))
    rows = []
    for _ in range(T):
        exponent = draw(exponents)
        row = draw(st.lists(mantissas, min_size=P, max_size=P))
        rows.append([math.ldexp(m, exponent) for m in row])
    G = torch.tensor(rows, dtype=torch.float64).to(dtype)  # |entries| <= 2**top: finite
    weights = draw(st.none() | st.lists(st.floats(0.0, 1e3) | st.just(1.5), min_size=T, max_size=T))
    primary = draw(st.none() | st.integers(0, T - 1))
    return G, weights, primary


# Found by hand: a float32 auxiliary gradient 1e39 times the primary's, in conflict with
# it (GR and PCGrad weigh the primary by about 1e39), and float16 gradients whose sum
# overflows. Both had come back as inf/NaN from Gram resolvers.
@pytest.mark.parametrize("method", METHODS)
@given(case=extreme_cases())
@example(case=(torch.tensor([[1e-20, 0.0], [-1e19, 1e19]], dtype=torch.float32), None, 0))
@example(case=(torch.tensor([[4e4, 0.0], [4e4, 1.0]], dtype=torch.float16), None, None))
@example(case=(torch.tensor([[3e4, 0.0], [3e4, 1.0]], dtype=torch.float16), [1.0, 1.5], 0))
def test_finite_direction_or_value_error(method, case):
    G, weights, primary = case
    assert torch.isfinite(G).all()
    torch.manual_seed(0)
    try:
        d = gradsurgery.resolve(
            G, method=method, primary=primary, losses=torch.ones(G.shape[0]), weights=weights
        )
    except ValueError:  # the front door's overflow messages, or a resolver's own
        return
    assert d.dtype == G.dtype and d.shape == (G.shape[1],)
    assert torch.isfinite(d).all(), d


@pytest.mark.parametrize("method", ["cagrad", "mgda", "gr", "pcgrad"])
@pytest.mark.parametrize("tasks", [2, 3])
def test_huge_gradients_with_a_finite_gram_are_resolved_as_scaled_down_ones(method, tasks):
    # Entries near 1e154: the Gram (about 1e308) is finite, but its symmetrisation
    # (q12 + q21), CAGrad's shifted Grams and MGDA's closed form for two tasks
    # (q11 - 2 q12 + q22) overflowed, with a warning or a false "Gram overflows" error.
    generator = torch.Generator().manual_seed(tasks)
    base = 1.75 * torch.randn(tasks, 5, generator=generator, dtype=torch.float64)
    base[1] = -0.999 * base[0]  # nearly opposed: CAGrad's search reaches large mu
    G = base * 2.0**510
    assert 0.5 * torch.finfo(G.dtype).max < (G @ G.T).abs().max() < torch.finfo(G.dtype).max
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(0)  # (PCGrad's order)
        d = gradsurgery.resolve(G, method=method)
    torch.manual_seed(0)
    assert torch.equal(d, gradsurgery.resolve(base, method=method) * 2.0**510)


@pytest.mark.parametrize("top", [0.0, 1e-300, 1e-200, 0.3, 1.0, 4.0, 1e10, 1e200, 1e307])
def test_exactly_rescaled_scales_each_block_by_a_power_of_four_only_out_of_range(top):
    rows = np.array([[top, 0.25 * top], [0.25 * top, 0.5 * top]])
    gram = np.stack([rows, 3 * rows, np.zeros((2, 2))])
    scaled = exactly_rescaled(gram)
    if top == 0 or 1e-150 < top < 1e150:
        assert scaled is gram
        return
    assert (scaled[2] == 0).all()
    for block, original in zip(scaled[:2], gram[:2]):
        assert 0.25 <= block.diagonal().max() < 1.0
        factor = block[0, 0] / original[0, 0]
        mantissa, exponent = math.frexp(factor)
        assert mantissa == 0.5 and (exponent - 1) % 2 == 0  # factor = 4^k
        assert (block == original * factor).all()
