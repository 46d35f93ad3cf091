"""Nash-MTL: the bargaining conditions, warm starts, update_weights_every, state."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import NashMTL
from gradsurgery.resolvers.nash_mtl import _good_start


def normalised_gram(G):
    gram = G @ G.T
    return gram / torch.linalg.matrix_norm(gram)


def test_bargaining_conditions_hold():
    generator = torch.Generator().manual_seed(0)
    for T in (1, 2, 3, 5, 8):
        G = torch.randn(T, 10, generator=generator, dtype=torch.float64)
        resolver = NashMTL()
        gradsurgery.resolve(G, method=resolver)
        alpha = resolver.alpha[0]
        assert (alpha > 0).all()
        utilities = alpha * (normalised_gram(G) @ alpha)
        # Exact for the regularised Gram; the regularisation shifts it by reg_eps alpha^2.
        torch.testing.assert_close(utilities, torch.ones(T, dtype=torch.float64), atol=1e-6, rtol=0)


def test_orthogonal_tasks_by_hand():
    # Gram diag(1, 4) / sqrt(17): alpha_i^2 Q_ii = 1 gives equal utilities g_i . d.
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method="nash_mtl")
    expected = 17**0.25 * torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=0)


def test_warm_start_reaches_the_same_solution():
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    second = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    warm = NashMTL()
    gradsurgery.resolve(first, method=warm)
    torch.testing.assert_close(
        gradsurgery.resolve(second, method=warm), gradsurgery.resolve(second, method=NashMTL())
    )


def test_warm_start_far_above_the_new_solution_is_rescaled():
    # A task nearly converged (gradient 1e-3) has weight about 1181; when its gradient
    # grows back, damped Newton steps from that alpha took hundreds of iterations (the
    # default cap of 50 returned alpha of about 1115, residual 7e5; a bug hunt's repro).
    small = torch.diag(torch.tensor([1.0, 1e-3, 1.0], dtype=torch.float64))
    normal = torch.eye(3, dtype=torch.float64)
    warm = NashMTL()
    gradsurgery.resolve(small, method=warm)
    assert float(warm.alpha.max()) > 1000
    expected = gradsurgery.resolve(normal, method=NashMTL())
    for _ in range(3):
        torch.testing.assert_close(gradsurgery.resolve(normal, method=warm), expected)
    normalised = normal / 3**0.5 + 1e-8 * torch.eye(3, dtype=torch.float64)
    alpha = warm.alpha[0]
    residual = alpha * (normalised @ alpha) - 1
    assert float(residual.abs().max()) < 1e-9


def test_warm_start_near_the_solution_is_kept_as_it_is():
    # Near the last solution (the usual case) the start is the last alpha itself, bit for
    # bit: only a start far above the better rescaled one is replaced.
    generator = torch.Generator().manual_seed(3)
    G = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    Q = G @ G.T
    normalised = Q / torch.linalg.matrix_norm(Q) + 1e-8 * torch.eye(4, dtype=torch.float64)
    solved = NashMTL()
    gradsurgery.resolve(G, method=solved)
    nearby = solved.alpha * (1 + 1e-3 * torch.randn(1, 4, generator=generator, dtype=G.dtype))
    assert torch.equal(_good_start(normalised.unsqueeze(0), nearby), nearby)
    far = solved.alpha * torch.tensor([[1.0, 1e3, 1.0, 1.0]], dtype=G.dtype)
    assert not torch.equal(_good_start(normalised.unsqueeze(0), far), far)


def test_update_weights_every_reuses_alpha():
    generator = torch.Generator().manual_seed(2)
    G = [torch.randn(3, 5, generator=generator, dtype=torch.float64) for _ in range(4)]
    resolver = NashMTL(update_weights_every=3)
    gradsurgery.resolve(G[0], method=resolver)
    alpha = resolver.alpha[0].clone()
    for step in (1, 2):
        torch.testing.assert_close(gradsurgery.resolve(G[step], method=resolver), alpha @ G[step])
    torch.testing.assert_close(
        gradsurgery.resolve(G[3], method=resolver), gradsurgery.resolve(G[3], method=NashMTL())
    )


def test_state_restores_exactly():
    generator = torch.Generator().manual_seed(3)
    G = [torch.randn(3, 5, generator=generator, dtype=torch.float64) for _ in range(3)]
    resolver = NashMTL(update_weights_every=2)
    gradsurgery.resolve(G[0], method=resolver)
    restored = NashMTL(update_weights_every=2)
    restored.load_state_dict(resolver.state_dict())
    for g in G[1:]:
        assert torch.equal(
            gradsurgery.resolve(g, method=resolver), gradsurgery.resolve(g, method=restored)
        )


def test_zero_and_opposed_tasks():
    G = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.0, 0.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method="nash_mtl")
    torch.testing.assert_close(d, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "options",
    [{"update_weights_every": 0}, {"reg_eps": 0.0}, {"reg_eps": -1}],
)
def test_invalid_options(options):
    with pytest.raises(ValueError):
        NashMTL(**options)


def test_a_non_integer_max_iterations_is_a_type_error():
    with pytest.raises(TypeError, match="max_iterations"):
        NashMTL(max_iterations=1.5)


def test_a_changed_number_of_tasks_starts_the_weights_afresh():
    # the warm start (the previous step's weights) is dropped when T changes
    resolver = NashMTL()
    gradsurgery.resolve(torch.eye(2, dtype=torch.float64), method=resolver)
    three = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    warm_then_three = gradsurgery.resolve(three, method=resolver)
    torch.testing.assert_close(warm_then_three, gradsurgery.resolve(three, method=NashMTL()))
