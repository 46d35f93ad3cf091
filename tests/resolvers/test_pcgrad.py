"""PCGrad: hand-computed projections, the primary-task form, and its random order."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import PCGrad


def pcgrad(rows, **options):
    return gradsurgery.resolve(torch.tensor(rows, dtype=torch.float64), method="pcgrad", **options)


def test_two_conflicting_tasks():
    # g1 -> g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2 -> g2 - (g2.g1/|g1|^2) g1 = (0, 1).
    torch.testing.assert_close(
        pcgrad([[1.0, 0.0], [-1.0, 1.0]]), torch.tensor([0.5, 1.5], dtype=torch.float64)
    )


def test_fixed_order_three_tasks_by_hand():
    rows = [[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]]
    g1, g2, g3 = (torch.tensor(r, dtype=torch.float64) for r in rows)

    def project(g, onto):
        dot = torch.dot(g, onto)
        return g - dot / onto.dot(onto) * onto if dot < 0 else g

    expected = (
        project(project(g1, g2), g3) + project(project(g2, g1), g3) + project(project(g3, g1), g2)
    )
    torch.testing.assert_close(pcgrad(rows, order="fixed"), expected)


def test_primary_is_never_projected():
    # Only the auxiliary is projected: (-1, 1) -> (0, 1); the primary (1, 0) stays.
    torch.testing.assert_close(
        pcgrad([[1.0, 0.0], [-1.0, 1.0]], primary=0), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )


def test_primary_is_visited_last():
    # Auxiliary 2 is first projected off auxiliary 1, which brings back a conflict with the
    # primary; visiting the primary last removes it.
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=PCGrad(order="fixed"), primary=0)
    assert torch.dot(d, G[0]) >= torch.dot(G[0], G[0]) - 1e-12


def test_zero_gradient_is_not_projected_onto():
    torch.testing.assert_close(
        pcgrad([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([1.0, 2.0], dtype=torch.float64)
    )


def test_seeded_random_order_is_reproducible_and_resumable():
    G = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    first, second = PCGrad(seed=7), PCGrad(seed=7)
    assert torch.equal(gradsurgery.resolve(G, method=first), gradsurgery.resolve(G, method=second))
    state = first.state_dict()
    expected = gradsurgery.resolve(G, method=first)
    resumed = PCGrad(seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(gradsurgery.resolve(G, method=resumed), expected)


def test_random_order_matters_for_three_tasks():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.2, -1.0]], dtype=torch.float64)
    results = {tuple(gradsurgery.resolve(G, method=PCGrad(seed=s)).tolist()) for s in range(20)}
    assert len(results) > 1


@pytest.mark.parametrize("primary", [None, 2])
def test_random_order_matches_the_papers_loop_on_the_vectors(primary):
    # The resolver makes every task's k-th visit at once, on the Gram; the paper's loop
    # visits task by task on the vectors. With the same draws they must agree.
    G = torch.randn(6, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    G[3] = -G[1] + 0.1 * G[3]  # make sure some pairs conflict
    draws = torch.Generator().manual_seed(11)
    expected = torch.zeros(9, dtype=torch.float64)
    for i in range(6):
        g = G[i].clone()
        if i != primary:
            others = [j for j in range(6) if j not in (i, primary)]
            visits = [others[k] for k in torch.randperm(len(others), generator=draws).tolist()]
            for j in visits + ([] if primary is None else [primary]):
                dot = torch.dot(g, G[j])
                if dot < 0:
                    g = g - dot / G[j].dot(G[j]) * G[j]
        expected += g
    resolver = PCGrad(generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(gradsurgery.resolve(G, method=resolver, primary=primary), expected)


def test_user_generator_is_used():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.2, -1.0]], dtype=torch.float64)
    a = gradsurgery.resolve(G, method=PCGrad(generator=torch.Generator().manual_seed(5)))
    b = gradsurgery.resolve(G, method=PCGrad(seed=5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"order": "sorted"}, ValueError),
        ({"seed": 1, "generator": torch.Generator()}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"generator": 3}, TypeError),
    ],
)
def test_invalid_options(options, error):
    with pytest.raises(error):
        PCGrad(**options)
