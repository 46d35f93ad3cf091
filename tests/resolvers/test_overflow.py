"""Finite task gradients of any magnitude give a finite direction or a ValueError.

Every registered resolver, on matrices whose rows span the whole range of float16,
bfloat16, float32 or float64 (with loss weights and a primary task, sometimes): a
non-finite direction must never come back silently. Gram resolvers prove their direction
finite from a bound on it (:class:`gradsurgery.resolvers.GramResolver`); these cases
reach both sides of the bound.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import gradsurgery

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
