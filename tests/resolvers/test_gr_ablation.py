"""GR's halves: hand-computed cases, and each half against DESIGN.md's steps written literally."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, example, given, settings

import gradsurgery
from gradsurgery.resolvers import GradientRemedyProjection, GradientRemedyRescale
from tests.resolvers.precision import gr_rescale_decided_by_rounding
from tests.strategies import gradient_matrices

EPS = torch.finfo(torch.float64).eps


def literal_projection(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """DESIGN.md step 2 as written (no closed form), then d = a + p."""
    if torch.dot(a, p) < 0:
        tan_theta = a.norm() / p.norm()
        a = a - torch.dot(a, p) / p.norm() ** 2 * p
        a = a + (a.norm() / tan_theta) * p / p.norm()
    return a + p


def literal_rescale(p: torch.Tensor, a: torch.Tensor, k: float = 5.0) -> torch.Tensor:
    """DESIGN.md step 3 as written, applied to the original gradients, then d = a + p."""
    cos_theta = torch.dot(a, p) / (a.norm() * p.norm())
    if a.norm() / p.norm() > k and cos_theta > 0:
        a, p = a * cos_theta, p / cos_theta
    return a + p


def resolve(rows, method, **options):
    return gradsurgery.resolve(torch.tensor(rows, dtype=torch.float64), method=method, **options)


def test_projection_only_never_rescales_a_dominant_auxiliary():
    # a = (-6, 8) conflicts; projected a = (0, 8) + (8/10) p; |a| = 10 |p|, yet no rescale.
    torch.testing.assert_close(
        resolve([[1.0, 0.0], [-6.0, 8.0]], "gr_project"),
        torch.tensor([1.8, 8.0], dtype=torch.float64),
    )


def test_projection_only_leaves_a_nonconflicting_pair_alone():
    torch.testing.assert_close(
        resolve([[1.0, 0.0], [6.0, 8.0]], "gr_project"),
        torch.tensor([7.0, 8.0], dtype=torch.float64),
    )


def test_rescale_only_shrinks_a_dominant_aligned_auxiliary():
    # |a| = 10 > 5 |p|, cos = 0.6: a -> 0.6 a = (3.6, 4.8), p -> p / 0.6.
    torch.testing.assert_close(
        resolve([[1.0, 0.0], [6.0, 8.0]], "gr_rescale"),
        torch.tensor([3.6 + 1 / 0.6, 4.8], dtype=torch.float64),
    )


def test_rescale_only_adds_a_conflicting_auxiliary_unchanged():
    # cos < 0: the stretch 1/cos would flip p, so nothing is rescaled and nothing projected.
    torch.testing.assert_close(
        resolve([[1.0, 0.0], [-6.0, 8.0]], "gr_rescale"),
        torch.tensor([-5.0, 8.0], dtype=torch.float64),
    )


def test_rescale_threshold_is_k():
    rows = [[1.0, 0.0], [6.0, 8.0]]  # ratio 10
    unscaled = torch.tensor([7.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(resolve(rows, "gr_rescale", k=11.0), unscaled)
    assert not torch.allclose(resolve(rows, "gr_rescale", k=9.0), unscaled)


def test_max_stretch_caps_the_primary_stretch():
    # cos = 0.6 asks for a stretch of 1/0.6; the cap 1.5 wins, the shrink stays 0.6.
    torch.testing.assert_close(
        resolve([[1.0, 0.0], [6.0, 8.0]], "gr_rescale", max_stretch=1.5),
        torch.tensor([3.6 + 1.5, 4.8], dtype=torch.float64),
    )


def test_rescale_takes_the_largest_stretch_over_auxiliaries():
    # Auxiliary 1: cos 0.6, ratio 10 -> stretch 1/0.6; auxiliary 2: cos 0.8, ratio 10 -> 1/0.8.
    G = [[1.0, 0.0], [6.0, 8.0], [8.0, 6.0]]
    expected = torch.tensor([1 / 0.6 + 3.6 + 6.4, 4.8 + 4.8], dtype=torch.float64)
    torch.testing.assert_close(resolve(G, "gr_rescale"), expected)


def test_projection_handles_each_auxiliary_against_the_original_primary():
    p, a1, a2 = (
        torch.tensor(v, dtype=torch.float64) for v in ([2.0, 0.0], [-1.0, 1.0], [-3.0, -1.0])
    )
    expected = literal_projection(p, a1) + literal_projection(p, a2) - p
    torch.testing.assert_close(
        resolve([p.tolist(), a1.tolist(), a2.tolist()], "gr_project"), expected
    )


def test_primary_may_be_any_task():
    G = torch.tensor([[-6.0, 8.0], [1.0, 0.0]], dtype=torch.float64)
    for method in ("gr_project", "gr_rescale"):
        moved = gradsurgery.resolve(G, method=method, primary=1)
        torch.testing.assert_close(moved, gradsurgery.resolve(G.flip(0), method=method))


@settings(max_examples=40)
@given(G=gradient_matrices(min_tasks=2, max_tasks=2))
@example(G=torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64))
def test_two_tasks_match_the_literal_steps(G):
    p, a = G[0], G[1]
    assume(p.norm() > 1e-3 and a.norm() > 1e-3)
    cos = torch.dot(p, a) / (p.norm() * a.norm())
    # Nearly opposite, s = sqrt(1 - cos^2) is good to about sqrt(eps) (remedy_projection's
    # doc); hypothesis found p = (1, 1), a = -p, which keeps 2.1e-8 p.
    precision = 4 * EPS**0.5 * float(p.norm()) if cos < -1 + 1e-9 else 0.0
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="gr_project"),
        literal_projection(p, a),
        rtol=1e-9,
        atol=1e-9 + precision,
    )
    if gr_rescale_decided_by_rounding(p, a, 5.0):
        return  # documented: a cosine below 1e-12, or a tie at K
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="gr_rescale"), literal_rescale(p, a), rtol=1e-9, atol=1e-9
    )


@settings(max_examples=40)
@given(G=gradient_matrices(min_tasks=2, max_tasks=2))
def test_halves_agree_with_full_gr_where_the_other_half_is_idle(G):
    p, a = G[0], G[1]
    assume(p.norm() > 1e-3 and a.norm() > 1e-3)
    gr = gradsurgery.resolve(G, method="gr")
    # |a''|^2 = s^2 (|a|^2 + |p|^2) <= (4.8^2 + 1) |p|^2 < 25 |p|^2: GR does not rescale.
    if a.norm() <= 4.8 * p.norm():
        torch.testing.assert_close(gradsurgery.resolve(G, method="gr_project"), gr)
    if torch.dot(a, p) >= 0:  # no projection in GR
        torch.testing.assert_close(gradsurgery.resolve(G, method="gr_rescale"), gr)


def test_zero_primary_gives_the_plain_sum():
    rows = [[0.0, 0.0], [-3.0, 4.0]]
    for method in ("gr_project", "gr_rescale"):
        torch.testing.assert_close(
            resolve(rows, method), torch.tensor([-3.0, 4.0], dtype=torch.float64)
        )


def test_projection_result_makes_the_angle_theta():
    p, a = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([-1.0, 3.0, 1.0])
    projected = gradsurgery.resolve(torch.stack([p, a]), method="gr_project") - p
    cosine = torch.dot(projected, p) / (projected.norm() * p.norm())
    assert cosine.item() == pytest.approx(math.cos(math.atan(a.norm() / p.norm())), rel=1e-6)


@pytest.mark.parametrize(
    "options", [{"k": 0.0}, {"k": -1.0}, {"k": float("inf")}, {"max_stretch": 0.5}]
)
def test_invalid_options(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        GradientRemedyRescale(**options)


def test_projection_has_no_options():
    with pytest.raises(TypeError, match="unknown option"):
        gradsurgery.get_resolver("gr_project", k=5.0)
    assert repr(GradientRemedyProjection()) == "GradientRemedyProjection()"
