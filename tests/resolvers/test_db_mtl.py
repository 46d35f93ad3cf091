"""DB-MTL: log-loss gradients, the moving average and the max-norm rescale, by hand."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import DBMTL


def reference_db_mtl(steps, beta=0.9, beta_sigma=0.0):
    """The paper's loop, written plainly: one whole-vector block, positive losses."""
    average = None
    for k, (G, losses) in enumerate(steps, start=1):
        log_gradients = G / torch.tensor(losses, dtype=G.dtype)[:, None]
        beta_k = beta / k**beta_sigma
        if average is None:
            average = torch.zeros_like(G)
        average = beta_k * average + (1 - beta_k) * log_gradients
        norms = average.norm(dim=1)
        direction = sum(norms.max() / norms[i] * average[i] for i in range(G.shape[0]))
    return direction


def test_current_gradients_only_by_hand():
    # beta = 0: g / L = (3, 0) and (0, 0.5); both rescaled to norm 3.
    G = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=DBMTL(beta=0.0), losses=[1.0, 2.0])
    torch.testing.assert_close(d, torch.tensor([3.0, 3.0], dtype=torch.float64))


def test_moving_average_over_two_steps_by_hand():
    resolver = DBMTL(beta=0.5)
    first = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    second = torch.tensor([[0.0, 2.0], [0.0, 6.0]], dtype=torch.float64)
    gradsurgery.resolve(first, method=resolver, losses=[1.0, 1.0])  # average (1, 0), (0, 1)
    d = gradsurgery.resolve(second, method=resolver, losses=[1.0, 2.0])
    # average = 0.5 (1, 0) + 0.5 (0, 2) = (0.5, 1); 0.5 (0, 1) + 0.5 (0, 3) = (0, 2).
    # Norms sqrt(1.25) and 2: the first is stretched to norm 2.
    expected = 2 / 1.25**0.5 * torch.tensor([0.5, 1.0]) + torch.tensor([0.0, 2.0])
    torch.testing.assert_close(d, expected.double())


def test_matches_the_plain_loop_over_several_steps():
    generator = torch.Generator().manual_seed(0)
    steps = [
        (torch.randn(3, 7, generator=generator, dtype=torch.float64), [1.0 + s, 0.5, 2.0 / (s + 1)])
        for s in range(5)
    ]
    for options in ({}, {"beta": 0.7, "beta_sigma": 0.5}):
        resolver = DBMTL(**options)
        for G, losses in steps:
            d = gradsurgery.resolve(G, method=resolver, losses=losses)
        torch.testing.assert_close(d, reference_db_mtl(steps, **options))


def test_norms_are_taken_per_block():
    G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    d = DBMTL(beta=0.0).resolve_blocks(G, (2, 1), losses=torch.ones(2)).direction
    # Block 0: norms 1 and 3 -> (3, 3); block 1: norms 2 and 1 -> 2 + 2 * 1.
    torch.testing.assert_close(d, torch.tensor([3.0, 3.0, 4.0], dtype=torch.float64))


def test_constant_loss_weights_only_change_the_scale():
    G = torch.tensor([[1.0, 2.0], [-3.0, 1.0]], dtype=torch.float64)
    plain = gradsurgery.resolve(G, method=DBMTL(), losses=[1.0, 2.0])
    weighted = gradsurgery.resolve(G, method=DBMTL(), losses=[1.0, 2.0], weights=[0.1, 0.1])
    torch.testing.assert_close(weighted, 0.1 * plain)


def test_zero_task_contributes_nothing():
    G = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    d = gradsurgery.resolve(G, method=DBMTL(beta=0.0), losses=[1.0, 1.0])
    torch.testing.assert_close(d, torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_nonpositive_loss_is_an_error_and_changes_nothing():
    resolver = DBMTL()
    with pytest.raises(ValueError, match=r"task 1 is 0\.0"):
        gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 0.0])
    assert resolver.state_dict() == {}
    with pytest.raises(ValueError, match="needs losses"):
        gradsurgery.resolve(torch.eye(2), method="db_mtl")


@pytest.mark.parametrize(
    ("G", "losses", "message"),
    [
        # g / L = 1e30 / 1e-20 overflows float32
        ([[1e30, 0.0], [0.0, 1.0]], [1e-20, 1.0], "too close to zero"),
        # the average is finite, its squared norm (1e40) is not
        ([[1e20, 0.0], [0.0, 1.0]], [1.0, 1.0], "norms overflow"),
    ],
)
def test_overflow_is_an_error_and_keeps_the_state(G, losses, message):
    resolver = DBMTL(beta=0.5)
    gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 1.0])
    before = resolver.state_dict()
    with pytest.raises(ValueError, match=message):
        gradsurgery.resolve(torch.tensor(G), method=resolver, losses=losses)
    after = resolver.state_dict()
    assert after["step"] == before["step"] == 1
    assert torch.equal(after["average"], before["average"])


def test_changing_shape_is_an_error():
    resolver = DBMTL()
    gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 1.0])
    with pytest.raises(ValueError, match="running average of shape"):
        gradsurgery.resolve(torch.eye(3), method=resolver, losses=[1.0, 1.0, 1.0])


def test_float32_average_stays_float32():
    resolver = DBMTL()
    gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 1.0])
    assert resolver.average is not None and resolver.average.dtype == torch.float32


def test_state_restores_exactly():
    generator = torch.Generator().manual_seed(1)
    steps = [torch.randn(2, 4, generator=generator) for _ in range(5)]
    resolver = DBMTL(beta_sigma=0.5)
    for G in steps[:2]:
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0])
    restored = DBMTL(beta_sigma=0.5)
    restored.load_state_dict(resolver.state_dict())
    for G in steps[2:]:
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver, losses=[0.5, 2.0]),
            gradsurgery.resolve(G, method=restored, losses=[0.5, 2.0]),
        )


@pytest.mark.parametrize(
    ("options", "name"),
    [({"beta": 1.0}, "beta"), ({"beta": -0.1}, "beta"), ({"beta_sigma": -1.0}, "beta_sigma")],
)
def test_invalid_options(options, name):
    with pytest.raises(ValueError, match=name):
        DBMTL(**options)


def test_numerically_zero_task_is_not_amplified():
    # ||g_2|| is far below eps * ||g_1||: amplifying it to ||g_1|| would make the result
    # jump when the gradients are rescaled (hypothesis found G = [[1], [3e-160]]).
    G = torch.tensor([[1.0], [3.1259e-160]], dtype=torch.float64)
    losses = torch.ones(2)
    expected = gradsurgery.resolve(G, method="db_mtl", losses=losses)
    torch.testing.assert_close(
        gradsurgery.resolve(2.0 * G, method="db_mtl", losses=losses), 2.0 * expected
    )
    torch.testing.assert_close(
        expected, gradsurgery.resolve(G[:1], method="db_mtl", losses=losses[:1])
    )
