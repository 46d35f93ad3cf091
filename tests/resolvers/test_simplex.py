"""The exact small solvers: brute force over active sets, scipy's NNLS, and hand cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from gradsurgery.resolvers._simplex import min_norm_in_simplex, nonnegative_quadratic


def brute_force_min_norm(Q: np.ndarray) -> float:
    """min over the simplex of w^T Q w, by solving the KKT system on every support."""
    T = Q.shape[0]
    best = np.inf
    for size in range(1, T + 1):
        for support in itertools.combinations(range(T), size):
            S = list(support)
            K = np.zeros((size + 1, size + 1))
            K[:size, :size] = Q[np.ix_(S, S)]
            K[:size, size] = K[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(K, rhs, rcond=None)[0][:size]
            if (solution < -1e-12).any() or abs(solution.sum() - 1) > 1e-9:
                continue
            best = min(best, solution @ Q[np.ix_(S, S)] @ solution)
    return best


def hard_matrices(seed: int, count: int):
    """Random task gradients with nearly opposed, duplicate and zero rows, T > P included."""
    rng = np.random.default_rng(seed)
    for trial in range(count):
        T, P = rng.integers(2, 7), rng.integers(1, 8)
        J = rng.standard_normal((T, P)) * rng.uniform(0.01, 10, (T, 1))
        if trial % 3 == 0:
            J[1] = -0.999 * J[0] + 1e-3 * rng.standard_normal(P)
        if trial % 5 == 0:
            J[-1] = J[0]
        if trial % 7 == 0:
            J[rng.integers(T)] = 0.0
        yield J


def test_min_norm_matches_brute_force():
    for J in hard_matrices(0, 60):
        Q = J @ J.T
        w = min_norm_in_simplex(torch.from_numpy(Q)[None])[0].numpy()
        assert (w >= 0).all()
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        excess = w @ Q @ w - brute_force_min_norm(Q)
        assert excess <= 1e-12 * Q.diagonal().max()


def test_min_norm_is_batched():
    Qs = [J @ J.T for J in hard_matrices(1, 12) if J.shape[0] == 4]
    batch = torch.from_numpy(np.stack(Qs))
    together = min_norm_in_simplex(batch)
    for index, Q in enumerate(batch):
        alone = min_norm_in_simplex(Q[None])[0]
        torch.testing.assert_close(together[index] @ Q @ together[index], alone @ Q @ alone)


def test_two_tasks_closed_form_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): w1 = (g2 - g1).g2 / |g1 - g2|^2 = 3/5.
    Q = torch.tensor([[[1.0, -1.0], [-1.0, 2.0]]], dtype=torch.float64)
    torch.testing.assert_close(
        min_norm_in_simplex(Q), torch.tensor([[0.6, 0.4]], dtype=torch.float64)
    )


def test_three_tasks_by_hand():
    # e1, e2, (1, 1): the min-norm point (1/2, 1/2) is the midpoint of e1 and e2.
    J = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    w = min_norm_in_simplex((J @ J.T)[None])[0]
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))


def test_zero_gram_gives_uniform_weights():
    w = min_norm_in_simplex(torch.zeros(2, 3, 3, dtype=torch.float64))
    torch.testing.assert_close(w, torch.full((2, 3), 1 / 3, dtype=torch.float64))


def assert_solves_nnls(M: np.ndarray, y: np.ndarray, u: np.ndarray) -> None:
    """``u`` minimises ``|M u - y|`` over ``u >= 0``: as well as scipy's NNLS, and KKT."""
    assert (u >= 0).all()
    reference, _ = nnls(M, y)
    assert np.linalg.norm(M @ u - y) <= np.linalg.norm(M @ reference - y) + 1e-9
    # KKT: the gradient b - A u is <= 0 everywhere and 0 where u > 0.
    gradient = M.T @ (y - M @ u)
    assert (gradient <= 1e-9).all()
    assert np.abs(gradient[u > 0]).max(initial=0.0) <= 1e-9


def test_nonnegative_quadratic_matches_scipy_nnls():
    rng = np.random.default_rng(2)
    for _ in range(60):
        T, rows = rng.integers(1, 7), rng.integers(1, 9)
        M, y = rng.standard_normal((rows, T)), rng.standard_normal(rows)
        u = nonnegative_quadratic((M.T @ M)[None], (M.T @ y)[None])
        assert_solves_nnls(M, y, u[0])


def test_nonnegative_quadratic_from_any_guess_matches_scipy_nnls():
    # The guess only chooses the start (shrunk to where its solution is positive).
    rng = np.random.default_rng(5)
    for _ in range(60):
        T, rows = rng.integers(1, 9), rng.integers(1, 9)
        M, y = rng.standard_normal((rows, T)), rng.standard_normal(rows)
        guess = (rng.random(T) < 0.6)[None]
        A, b = (M.T @ M)[None], (M.T @ y)[None]
        assert_solves_nnls(M, y, nonnegative_quadratic(A, b, guess=guess)[0])


def test_min_norm_answers_in_the_inputs_dtype():
    Q = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    weights = min_norm_in_simplex(Q[None])
    assert weights.dtype == torch.float32
    # min over the simplex of w^T Q w: (1/5)(1, 1, 3) gives Q w = (3, 3, 3) / 5
    torch.testing.assert_close(weights[0], torch.tensor([0.2, 0.2, 0.6]))


def test_nonnegative_quadratic_by_hand():
    # Free set {0, 2}: u = (1/2, 0, 2/1). Variable 1 stays at zero: its gradient
    # b_1 - (A u)_1 = -1 - 1/2 is negative.
    A = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    u = nonnegative_quadratic(A[None], np.array([[1.0, -1.0, 2.0]]))
    assert u.dtype == np.float64
    np.testing.assert_allclose(u[0], [0.5, 0.0, 2.0])


def test_nonnegative_quadratic_keeps_leading_dimensions():
    A = np.broadcast_to(np.eye(3), (2, 4, 3, 3))
    b = np.broadcast_to(np.array([1.0, -2.0, 3.0]), (2, 4, 3))
    u = nonnegative_quadratic(A, b)
    assert u.shape == (2, 4, 3)
    np.testing.assert_allclose(u[1, 2], [1.0, 0.0, 3.0])


def test_warm_start_does_not_change_the_solution():
    rng = np.random.default_rng(3)
    for J in hard_matrices(4, 30):
        Q = torch.from_numpy(J @ J.T)[None]
        cold = min_norm_in_simplex(Q)[0]
        for guess in (cold, torch.from_numpy(rng.uniform(-1, 1, J.shape[0]))):
            warm = min_norm_in_simplex(Q, guess[None])[0]
            torch.testing.assert_close(
                warm @ Q[0] @ warm, cold @ Q[0] @ cold, rtol=0, atol=1e-12 * float(Q.max())
            )


def test_min_norm_with_nearly_collinear_gradients_reaches_the_optimum():
    # g1 = (1, 1e-5) and g2 = (1, 0) differ by 1e-5; g3 = (0, 4). The min-norm point lies on
    # the segment g2-g3: (1 - t, 4t) with t = 1/17, i.e. (16/17, 4/17), whatever the order.
    # (Found by the random hypothesis profile: the active set kept g1 and g2 and ended 2e-6
    # above the optimum when g1 came first.)
    J = torch.tensor([[1.0, 1e-5], [1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    expected = torch.tensor([16.0 / 17.0, 4.0 / 17.0], dtype=torch.float64)
    for order in itertools.permutations(range(3)):
        rows = J[list(order)]
        weights = min_norm_in_simplex(rows @ rows.T)
        torch.testing.assert_close(weights @ rows, expected, rtol=1e-9, atol=1e-9)


def test_min_norm_with_a_zero_gradient_beside_a_tiny_one_is_zero():
    # (Found by the random hypothesis profile: g = 1e-6 sits within rounding of the zero
    # gradient in the Gram matrix, 1e-12 against 1024, and was returned in one task order.)
    J = torch.tensor([[1e-6], [32.0], [0.0]], dtype=torch.float64)
    for order in itertools.permutations(range(3)):
        rows = J[list(order)]
        weights = min_norm_in_simplex(rows @ rows.T)
        assert float((weights @ rows).abs()) == 0.0


def test_min_norm_between_two_gradients_1e6_apart_picks_the_shorter():
    # g1 = (-1, 1e-6, -1) and g2 = (-1, 0, -1): g2 is the min-norm point (||g2||^2 = 2, and
    # g3 = (-2, -1, -1) has g3 . g2 = 3 > 2). Splitting g1 and g2 evenly is 1.25e-13 above it.
    J = torch.tensor([[-1.0, 1e-6, -1.0], [-1.0, 0.0, -1.0], [-2.0, -1.0, -1.0]])
    J = J.double()
    for order in itertools.permutations(range(3)):
        rows = J[list(order)]
        weights = min_norm_in_simplex(rows @ rows.T)
        torch.testing.assert_close(weights @ rows, J[1], rtol=0, atol=1e-12)
