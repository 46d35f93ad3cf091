"""What a resolver holds beyond the task gradients, measured by ``benchmarks/_memory.py``
(the measure ``overhead`` reports; this file stays out of the sdist, which has no
``benchmarks``)."""

from __future__ import annotations

import torch

import gradsurgery
from benchmarks._memory import peak_tensor_bytes
from gradsurgery.resolvers import DBMTL


def test_db_mtl_holds_one_task_by_parameter_buffer_beside_the_gradients():
    # The running average is the one (T, P) tensor a step needs; the finiteness checks
    # are sums, not (T, P) masks (torch.isfinite's, with its temporaries, held 1.75
    # times the average's bytes beside it: a peak of 2.75 averages).
    T, P = 4, 1 << 16
    G = torch.randn(T, P, generator=torch.Generator().manual_seed(0))
    losses = torch.tensor([1.0, 2.0, 0.5, 4.0])
    resolver = DBMTL()
    direction = torch.empty(P)
    for _ in range(2):  # the first call starts the average, the second updates it
        peak = peak_tensor_bytes(
            lambda: gradsurgery.resolve(G, method=resolver, losses=losses, out=direction)
        )
        matrix, vector = 4 * T * P, 4 * P
        assert matrix <= peak <= matrix + vector + 4096, peak - matrix


def test_graddrop_forms_its_terms_in_one_buffer():
    # |G| for the purity, the sign masks and the terms (l + (1 - l) M) G: under three
    # (T, P) float buffers at once (the terms formed apart from their factors held 3.6).
    T, P = 4, 1 << 16
    G = torch.randn(T, P, generator=torch.Generator().manual_seed(0))
    resolver = gradsurgery.get_resolver("graddrop", seed=0, leak=0.3)
    direction = torch.empty(P)
    resolver(G, primary=1)  # unmeasured: its warnings, if any, show here
    peak = peak_tensor_bytes(
        lambda: gradsurgery.resolve(G, method=resolver, primary=1, out=direction)
    )
    assert 4 * T * P <= peak < 3 * 4 * T * P
