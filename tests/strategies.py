"""Hypothesis strategies for task-gradient matrices."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


@st.composite
def gradient_matrices(draw, min_tasks=1, max_tasks=5, max_params=12, bound=100.0, params=None):
    """A (T, P) float64 tensor of finite values, zero rows and exact zeros included; ``P``
    is ``params`` where given, else drawn from 1 to ``max_params``.

    Magnitudes below 1e-100 are flushed to zero: their squares and products fall below
    float64's normal range (1e-308), where a Gram entry keeps a few bits or none and no
    Gram-based method can be exact (hypothesis found 3e-162, whose square is subnormal).
    """
    T = draw(st.integers(min_tasks, max_tasks))
    P = draw(st.integers(1, max_params)) if params is None else params
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
    values = draw(arrays("float64", (T, P), elements=elements))
    values[abs(values) < 1e-100] = 0.0
    return torch.from_numpy(values)


@st.composite
def nonconflicting_matrices(draw, min_tasks=1, max_tasks=5, max_params=12):
    """Pairwise non-conflicting rows (non-negative entries) with norms within a factor 4."""
    T = draw(st.integers(min_tasks, max_tasks))
    P = draw(st.integers(1, max_params))
    values = draw(arrays("float64", (T, P), elements=st.floats(0.0, 10.0, width=64)))
    G = torch.from_numpy(values)
    norms = G.norm(dim=1, keepdim=True)
    targets = torch.tensor(draw(st.lists(st.floats(0.5, 2.0), min_size=T, max_size=T)))
    scale = torch.where(norms > 0, targets[:, None] / norms.clamp(min=1e-300), 0.0)
    return G * scale
