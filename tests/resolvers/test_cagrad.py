"""CAGrad: a hand case, scipy's SLSQP as an oracle for the dual, the primal's guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize

import gradsurgery
from gradsurgery.resolvers import CAGrad
from tests.resolvers.precision import documented_precision
from tests.strategies import gradient_matrices

NEARLY_CANCELLING = torch.tensor(
    [
        [0.0, 40.0, 0.0] + [-1e-5] * 5,
        [-1e-5] * 8,
        [-1e-5, -38.0] + [-1e-5] * 6,
        [-1e-5] * 3 + [14.0] + [-1e-5] * 4,
    ],
    dtype=torch.float64,
)
"""Rows whose g_w cancels to 6e-7 of the largest (||g_w|| = 2.5e-5): the documented
precision is 9e-3 relative, and the order [0, 1, 3, 2] moved d by 1.6e-5 of ||d||."""


def dual_objective(w, Q, c):
    b = Q.mean(1)
    return w @ b + c * np.sqrt(max(b.mean(), 0.0)) * np.sqrt(max(w @ Q @ w, 0.0))


def slsqp_minimum(Q, c):
    """The best dual value scipy's SLSQP finds from the uniform and every vertex start."""
    T = Q.shape[0]
    best = np.inf
    for start in [np.full(T, 1.0 / T), *np.eye(T)]:
        result = minimize(
            dual_objective,
            start,
            args=(Q, c),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * T,
            constraints=({"type": "eq", "fun": lambda x: 1.0 - x.sum()},),
            options={"ftol": 1e-15, "maxiter": 500},
        )
        x = np.clip(result.x, 0.0, None)
        best = min(best, dual_objective(x / x.sum(), Q, c))
    return best


def test_by_hand_when_zero_is_in_the_hull():
    # g1 = (2, 0), g2 = (-1, 0): g0 = (0.5, 0), c |g0| = 0.2. The dual is minimised at
    # w = e2, g_w = (-1, 0), so d = (g0 + 0.2 g_w) / (1 + c^2) = (0.3, 0) / 1.16.
    G = torch.tensor([[2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method="cagrad")
    torch.testing.assert_close(d, torch.tensor([0.3 / 1.16, 0.0], dtype=torch.float64))


def test_dual_is_solved_at_least_as_well_as_slsqp():
    rng = np.random.default_rng(0)
    for trial in range(25):
        T, P = 2 + trial % 4, 1 + trial % 6
        J = rng.standard_normal((T, P)) * rng.uniform(0.05, 1.0, (T, 1))
        if trial % 3 == 0:
            J[1] = -0.9 * J[0]
        Q = J @ J.T
        gram = Q[None]
        radius = 0.4 * np.sqrt(gram.mean((-1, -2)))
        w = CAGrad()._dual_weights(gram, gram.mean(-1), radius)[0]
        excess = dual_objective(w, Q, 0.4) - slsqp_minimum(Q, 0.4)
        assert excess <= 1e-8 * np.sqrt(Q.diagonal().max())


def test_primal_guarantees():
    # (1 + c^2) d lies in the ball |x - g0| <= c |g0| and maximises min_i g_i . x there;
    # in particular it beats g0 itself and the ball's best point for each single task.
    generator = torch.Generator().manual_seed(1)
    c = 0.4
    for _ in range(15):
        J = torch.randn(3, 4, generator=generator, dtype=torch.float64)
        x = (1 + c**2) * gradsurgery.resolve(J, method="cagrad")
        g0 = J.mean(0)
        assert (x - g0).norm() <= c * g0.norm() * (1 + 1e-9)
        value = (J @ x).min()
        for candidate in [g0, *(g0 + c * g0.norm() * g / g.norm() for g in J)]:
            assert value >= (J @ candidate).min() - 1e-9


def test_zero_radius_and_rescale_options():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(G, method=CAGrad(c=0.0)), G.mean(0))
    plain = gradsurgery.resolve(G, method=CAGrad(c=0.5, rescale="none"))
    torch.testing.assert_close(gradsurgery.resolve(G, method=CAGrad(c=0.5)), plain / 1.25)
    torch.testing.assert_close(
        gradsurgery.resolve(G, method=CAGrad(c=0.5, rescale="1+c")), plain / 1.5
    )


def test_zero_mean_gradient_gives_zero():
    G = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    assert torch.equal(gradsurgery.resolve(G, method="cagrad"), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("options", "name"), [({"c": -0.1}, "c"), ({"rescale": "1+c^3"}, "rescale")]
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        CAGrad(**options)


@given(G=gradient_matrices(min_tasks=2, max_tasks=4), data=st.data())
def test_permutation_invariant_to_solver_accuracy(G, data):
    assert_permutation_invariant(G, list(data.draw(st.permutations(range(G.shape[0])))))


def test_permutation_invariant_within_the_documented_precision_where_g_w_cancels():
    # Found by the thorough profile (seed 4242) beyond the solver's 1e-6 of max ||g_i||.
    assert_permutation_invariant(NEARLY_CANCELLING, [0, 1, 3, 2])


def assert_permutation_invariant(G: torch.Tensor, order: list[int]) -> None:
    d = gradsurgery.resolve(G, method="cagrad")
    # The solver's accuracy, or the documented precision where g_w nearly cancels.
    tolerance = max(1e-6, documented_precision("cagrad", G))
    torch.testing.assert_close(
        gradsurgery.resolve(G[order], method="cagrad"),
        d,
        rtol=tolerance,
        atol=tolerance * float(G.norm(dim=1).max()),
    )


def test_a_zero_gradient_puts_zero_in_the_hull_at_every_scale():
    # (Found by the random hypothesis profile.) Task 2's gradient is zero, so the dual's
    # minimum is 0 at g_w = 0 and d = g_0 / (1 + c^2). The root search ended on a mix of
    # tasks 0 and 3 with ||g_w|| ~ 1e-10 relative, a norm of rounding when read from the
    # Gram, and stepped along it: the direction then changed with the scale.
    G = torch.tensor(
        [[-35.6915, 0.0, 0.0, 0.0], [0.0, 65.9041, 45.0, 0.0], [0.0] * 4, [1.0, 0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    expected = G.mean(0) / 1.16
    for scale in (1e-3, 1e-2, 1.0, 10.0):
        d = gradsurgery.resolve(scale * G, method="cagrad")
        torch.testing.assert_close(d, scale * expected, rtol=1e-12, atol=0)
