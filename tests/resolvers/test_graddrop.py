"""GradDrop: the sign rule per coordinate, its probabilities, leaks, primary and seeding."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import GradDrop


def reference_graddrop(G, uniform, leak=0.0, primary=None):
    """Per coordinate, in plain Python loops."""
    T, P = G.shape
    d = torch.zeros(P, dtype=G.dtype)
    for j in range(P):
        column = G[:, j]
        magnitude = column.abs().sum()
        purity = 0.5 * (1 + (column.sum() / magnitude if magnitude > 0 else 0.0))
        for i in range(T):
            kept = (column[i] > 0 and uniform[j] < purity) or (
                column[i] < 0 and uniform[j] >= purity
            )
            task_leak = 1.0 if i == primary else leak
            d[j] += (task_leak + (1 - task_leak) * float(kept)) * column[i]
    return d


G = torch.tensor([[1.0, 2.0, -1.0, 0.0], [3.0, -2.0, -4.0, 0.0], [0.5, -1.0, 2.0, 0.0]])


@pytest.mark.parametrize("options", [{}, {"leak": 0.3}, {"primary": 1}])
def test_matches_the_coordinate_loop_for_the_same_draw(options):
    primary = options.pop("primary", None)
    uniform = torch.rand(4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    d = gradsurgery.resolve(G.double(), method=GradDrop(seed=7, **options), primary=primary)
    torch.testing.assert_close(
        d, reference_graddrop(G.double(), uniform, primary=primary, **options)
    )


def test_agreeing_coordinates_keep_every_entry():
    agreeing = torch.tensor([[1.0, -2.0], [3.0, -1.0]])
    for seed in range(10):
        torch.testing.assert_close(
            gradsurgery.resolve(agreeing, method=GradDrop(seed=seed)), agreeing.sum(0)
        )


def test_one_sign_survives_with_the_purity_as_probability():
    # Column purity (1 + (3 - 1) / 4) / 2 = 0.75: keep +3 (d = 3) or -1 (d = -1).
    column = torch.tensor([[3.0], [-1.0]], dtype=torch.float64).repeat(1, 4000)
    d = gradsurgery.resolve(column, method=GradDrop(seed=0))
    assert set(d.unique().tolist()) == {3.0, -1.0}
    share = (d == 3.0).double().mean().item()
    assert share == pytest.approx(0.75, abs=4 * (0.75 * 0.25 / 4000) ** 0.5)


def test_leak_one_is_the_plain_sum():
    torch.testing.assert_close(gradsurgery.resolve(G, method=GradDrop(leak=1.0, seed=0)), G.sum(0))


def test_primary_passes_whole():
    # Task 0 is primary: its entries always pass; only the others are dropped.
    for seed in range(10):
        d = gradsurgery.resolve(G, method=GradDrop(seed=seed), primary=0)
        dropped = d - G[0]
        # What is left of the auxiliaries in each coordinate is one of their sign groups.
        for j in range(G.shape[1]):
            auxiliaries = G[1:, j]
            options = {
                0.0,
                auxiliaries.clamp(min=0).sum().item(),
                auxiliaries.clamp(max=0).sum().item(),
            }
            assert any(abs(dropped[j].item() - value) < 1e-6 for value in options)


def test_zero_column_contributes_zero():
    d = gradsurgery.resolve(torch.zeros(2, 3), method=GradDrop(seed=0))
    assert torch.equal(d, torch.zeros(3))


@pytest.mark.parametrize("seed", range(8))
def test_zero_entries_in_conflicting_columns_contribute_zero(seed):
    # Zeros of either sign beside entries that conflict: whichever sign survives, a zero
    # entry's term is a zero, and the direction is the loop's (signed zeros included).
    G = torch.tensor([[1.0, -0.0, 0.0], [-2.0, 3.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    uniform = torch.rand(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for leak in (0.0, 0.3):
        d = gradsurgery.resolve(G, method=GradDrop(leak=leak, seed=seed))
        expected = reference_graddrop(G, uniform, leak=leak)
        torch.testing.assert_close(d, expected, rtol=0, atol=0)
        assert torch.equal(torch.signbit(d), torch.signbit(expected))


def test_blocks_make_no_difference():
    one = GradDrop(seed=3).resolve_blocks(G, (4,)).direction
    two = GradDrop(seed=3).resolve_blocks(G, (1, 3)).direction
    assert torch.equal(one, two)


def test_seeded_run_resumes_from_its_state():
    resolver = GradDrop(seed=5)
    gradsurgery.resolve(G, method=resolver)
    restored = GradDrop(seed=0)
    restored.load_state_dict(resolver.state_dict())
    for _ in range(3):
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver), gradsurgery.resolve(G, method=restored)
        )


def test_user_generator_and_global_generator():
    a = gradsurgery.resolve(G, method=GradDrop(generator=torch.Generator().manual_seed(2)))
    b = gradsurgery.resolve(G, method=GradDrop(seed=2))
    assert torch.equal(a, b)
    torch.manual_seed(4)
    c = gradsurgery.resolve(G, method="graddrop")
    torch.manual_seed(4)
    assert torch.equal(c, gradsurgery.resolve(G, method="graddrop"))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"leak": -0.1}, ValueError),
        ({"leak": 1.5}, ValueError),
        ({"seed": 1, "generator": torch.Generator()}, ValueError),
        ({"seed": "1"}, TypeError),
        ({"generator": 3}, TypeError),
    ],
)
def test_invalid_options(options, error):
    with pytest.raises(error):
        GradDrop(**options)


def test_loss_weights_scale_each_task_before_the_sign_rule():
    # GradDrop on c_i g_i: the same draw gives the same direction as the scaled matrix
    weights = torch.tensor([2.0, 0.5, 1.0])
    weighted = gradsurgery.resolve(G, method=GradDrop(seed=11), weights=weights)
    scaled = gradsurgery.resolve(G * weights[:, None], method=GradDrop(seed=11))
    torch.testing.assert_close(weighted, scaled)
    # and the weights matter: a task weighted 0 contributes nothing, so G's last column
    # of zeros stays zero and task 0's entries alone decide where only it is non-zero
    only_first = gradsurgery.resolve(G, method=GradDrop(seed=11), weights=[1.0, 0.0, 0.0])
    torch.testing.assert_close(only_first, G[0])
