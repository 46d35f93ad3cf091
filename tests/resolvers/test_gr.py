"""Gradient Remedy: hand-computed cases for each branch, and the authors' steps literally."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import gradsurgery
from gradsurgery.resolvers import GradientRemedy
from gradsurgery.resolvers.gr import (
    PairGram,
    auxiliary_pairs,
    pair_gram,
    remedy_projection,
    remedy_rescale,
    sum_in_order,
)
from tests.resolvers.precision import gr_rescale_decided_by_rounding
from tests.strategies import gradient_matrices

X = float.fromhex("0x1.55bb95b3741c4p+1")
"""2.6698...: the rows (X, 6) and (6, X) are equally long, but torch's norms of the two
differ by an ulp, so the authors' steps see a ratio just above K = 1 and rescale (a tie
that the thorough profile found)."""


def reference_gradient_remedy(p: torch.Tensor, a: torch.Tensor, k: float = 5.0) -> torch.Tensor:
    """DESIGN.md's four steps, written as the authors' trainer writes them (no closed form)."""
    tan_theta = a.norm() / p.norm()
    if torch.dot(a, p) < 0:
        a = a - torch.dot(a, p) / p.norm() ** 2 * p
        a = a + (a.norm() / tan_theta) * p / p.norm()
    cos_theta = torch.dot(a, p) / (a.norm() * p.norm())
    if a.norm() / p.norm() > k and cos_theta != 0:
        a = a * cos_theta
        p = p / cos_theta
    return a + p


def gr(rows, **options):
    return gradsurgery.resolve(
        torch.tensor(rows, dtype=torch.float64), method="gr", primary=0, **options
    )


def test_no_conflict_no_dominance_is_the_sum():
    torch.testing.assert_close(
        gr([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([2.0, 1.0], dtype=torch.float64)
    )


def test_conflict_projects_to_the_acute_angle():
    # a - (a.p/|p|^2) p = (0, 1); tan(theta) = sqrt(2); push by (1/sqrt(2)) p.
    expected = torch.tensor([1 + 1 / math.sqrt(2), 1.0], dtype=torch.float64)
    torch.testing.assert_close(gr([[1.0, 0.0], [-1.0, 1.0]]), expected)


def test_conflict_result_makes_angle_theta_with_primary():
    p, a = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([-1.0, 3.0, 1.0])
    d = gradsurgery.resolve(torch.stack([p, a]), method="gr", primary=0)
    projected = d - p  # no dominance here: d = a'' + p
    theta = math.atan(a.norm() / p.norm())
    cosine = torch.dot(projected, p) / (projected.norm() * p.norm())
    assert cosine.item() == pytest.approx(math.cos(theta), rel=1e-6)


def test_dominance_without_conflict_rescales():
    # |a| = 10 > 5 |p|, cos(theta') = 0.6: a -> 0.6 a, p -> p / 0.6.
    expected = torch.tensor([3.6 + 1 / 0.6, 4.8], dtype=torch.float64)
    torch.testing.assert_close(gr([[1.0, 0.0], [6.0, 8.0]]), expected)


def test_conflict_and_dominance():
    # a'' = (0, 8) + (8 / 10) p = (0.8, 8); cos(theta') = 1/sqrt(101).
    c = 1 / math.sqrt(101)
    expected = torch.tensor([0.8 * c + 1 / c, 8 * c], dtype=torch.float64)
    torch.testing.assert_close(gr([[1.0, 0.0], [-6.0, 8.0]]), expected)


def test_a_ratio_of_exactly_k_does_not_rescale():
    # ||a|| / ||p|| > K is strict: equally long gradients with K = 1 are summed as they are.
    torch.testing.assert_close(
        gr([[3.0, 4.0], [4.0, 3.0]], k=1.0), torch.tensor([7.0, 7.0]).double()
    )


def test_k_is_the_threshold():
    rows = [[1.0, 0.0], [6.0, 8.0]]  # ratio 10
    torch.testing.assert_close(gr(rows, k=11.0), torch.tensor([7.0, 8.0], dtype=torch.float64))
    assert not torch.equal(gr(rows, k=9.0), torch.tensor([7.0, 8.0], dtype=torch.float64))


def test_primary_is_chosen_by_index_or_name():
    p, a = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    by_index = gradsurgery.resolve(torch.stack([a, p]), method="gr", primary=1)
    by_name = gradsurgery.resolve({"se": a, "asr": p}, method="gr", primary="asr")
    expected = gradsurgery.resolve(torch.stack([p, a]), method="gr", primary=0)
    torch.testing.assert_close(by_index, expected)
    torch.testing.assert_close(by_name, expected)


def test_primary_defaults_to_task_zero():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="gr"), gradsurgery.resolve(G, method="gr", primary=0)
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[0.0, 0.0], [1.0, 2.0]], [1.0, 2.0]),  # zero primary: plain sum, no NaN
        ([[1.0, 2.0], [0.0, 0.0]], [1.0, 2.0]),  # zero auxiliary
        ([[1.0, 0.0], [-2.0, 0.0]], [1.0, 0.0]),  # exactly opposite: the auxiliary vanishes
        ([[1.0, 0.0], [0.0, 9.0]], [1.0, 9.0]),  # dominant but orthogonal: cos = 0, no rescale
    ],
)
def test_degenerate_cases_are_defined(rows, expected):
    torch.testing.assert_close(gr(rows), torch.tensor(expected, dtype=torch.float64))


def test_max_stretch_caps_the_primary_stretch():
    # cos(theta') = 0.01 with |a| = 100 |p|: the paper stretches p by 100.
    a = [1.0, math.sqrt(100.0**2 - 1.0)]
    free = gr([[1.0, 0.0], a])
    capped = gr([[1.0, 0.0], a], max_stretch=10.0)
    assert free[0].item() == pytest.approx(0.01 * a[0] + 100.0)
    assert capped[0].item() == pytest.approx(0.01 * a[0] + 10.0)


def test_several_auxiliaries_are_remedied_one_by_one():
    G = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    expected = torch.tensor([1 + 1 / math.sqrt(2), 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(gradsurgery.resolve(G, method="gr", primary=0), expected)


def test_several_auxiliaries_stretch_by_the_largest():
    G = torch.tensor([[1.0, 0.0, 0.0], [6.0, 8.0, 0.0], [8.0, 0.0, 6.0]], dtype=torch.float64)
    # a1: cos 0.6, a2: cos 0.8; the primary is stretched by max(1/0.6, 1/0.8).
    expected = 0.6 * G[1] + 0.8 * G[2] + G[0] / 0.6
    torch.testing.assert_close(gradsurgery.resolve(G, method="gr", primary=0), expected)


@given(
    G=gradient_matrices(min_tasks=2, max_tasks=2, max_params=8, bound=10.0), k=st.floats(1.0, 10.0)
)
@example(G=torch.tensor([[X, 6.0], [6.0, X]], dtype=torch.float64), k=1.0)
def test_two_tasks_equal_the_authors_steps(G, k):
    p, a = G[0], G[1]
    if p.norm() < 1e-3 or a.norm() < 1e-3:
        return  # the authors' steps divide by these norms
    cos = torch.dot(p, a) / (p.norm() * a.norm())
    if abs(cos) > 1 - 1e-9:
        return  # the reference's own rounding decides the parallel case
    if gr_rescale_decided_by_rounding(p, a, k):
        return  # documented: a cosine below 1e-12, or a tie at K
    expected = reference_gradient_remedy(p, a, k)
    actual = gradsurgery.resolve(G, method="gr", primary=0, k=k)
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-7 * float(expected.norm()))


@given(G=gradient_matrices(min_tasks=2, max_tasks=4, max_params=8), data=st.data())
def test_result_never_conflicts_with_primary(G, data):
    primary = data.draw(st.integers(0, G.shape[0] - 1))
    d = gradsurgery.resolve(G, method="gr", primary=primary)
    p = G[primary]
    if (G.norm(dim=1) > 1e12 * p.norm()).any():
        return  # documented: d's component along p can be lost to rounding (the class doc)
    if torch.dot(p, p) > 0:  # a primary whose squared norm underflows counts as zero
        assert torch.dot(d, p) > 0 or torch.allclose(d, torch.zeros_like(d))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ratio", [1e3, 1e6, 1e9, 1e11])
def test_a_dominant_conflicting_auxiliary_leaves_the_primary_component(dtype, ratio):
    # Below 1e12 the rescale stretches p by 1/cos' (about the norm ratio), so d keeps a
    # component along p of about ||a||, far above rounding even where ||p|| is not
    # (float32 beyond 1/eps = 8.4e6).
    p = torch.tensor([1.0, 2.0, 0.5], dtype=dtype) / ratio
    a = torch.tensor([-3.0, -1.0, 2.0], dtype=dtype)
    d = gradsurgery.resolve(torch.stack([p, a]), method="gr", primary=0)
    cosine = torch.dot(d, p) / (d.norm() * p.norm())
    assert cosine > 0.99


@pytest.mark.parametrize("k", [0, -1.0, float("nan"), float("inf")])
def test_invalid_k_is_rejected(k):
    with pytest.raises(ValueError, match="Invalid k"):
        GradientRemedy(k=k)


@pytest.mark.parametrize("k", ["5", True, None])
def test_k_of_the_wrong_type_is_rejected(k):
    with pytest.raises(TypeError, match="Invalid k"):
        GradientRemedy(k=k)


def test_invalid_max_stretch_is_rejected():
    with pytest.raises(ValueError, match="Invalid max_stretch"):
        GradientRemedy(max_stretch=0.5)


def test_per_block_resolution_matches_block_by_block():
    torch.manual_seed(0)
    G = torch.randn(2, 10, dtype=torch.float64)
    sizes = (3, 3, 4)
    resolution = GradientRemedy().resolve_blocks(G, sizes, primary=0)
    pieces = [gradsurgery.resolve(block, method="gr", primary=0) for block in G.split(sizes, dim=1)]
    torch.testing.assert_close(resolution.direction, torch.cat(pieces))


def test_the_pair_functions_work_on_batched_host_arrays():
    # p = (1, 0), a = (-1, 1): cos = -1/sqrt(2), s = 1/sqrt(2), a' = a + (s + 1) p.
    # Second block: p = (1, 0), a = (10, 0): no conflict, |a| / |p| = 10 > 5, cos = 1.
    gram = np.array([[[1.0, -1.0], [-1.0, 2.0]], [[1.0, 10.0], [10.0, 100.0]]])
    projected = remedy_projection(pair_gram(gram, 0, 1))
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(projected.shift, [s + 1, 0.0])
    np.testing.assert_allclose(projected.gram.aa, [s * s * 3, 100.0])  # s^2 (|a|^2 + |p|^2)
    np.testing.assert_allclose(projected.gram.pa, [s, 10.0])
    rescaled = remedy_rescale(projected.gram, k=5.0)
    np.testing.assert_allclose(rescaled.auxiliary_scale, [1.0, 1.0])  # cos' = 1 in block 2
    np.testing.assert_allclose(rescaled.primary_scale, [1.0, 1.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_come_back_in_the_grams_dtype(dtype):
    gram = torch.tensor([[[1.0, -1.0], [-1.0, 2.0]]], dtype=dtype)
    weights = GradientRemedy().weights(gram, primary=0, losses=None)
    assert weights.dtype == dtype
    # d = p + a' = (2 + s) p + a, with s = 1/sqrt(2) (see the test above)
    expected = torch.tensor([[2 + 1 / math.sqrt(2), 1.0]], dtype=dtype)
    torch.testing.assert_close(weights, expected)


def test_auxiliary_pairs_takes_every_auxiliary_in_task_order():
    gram = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4)
    pairs, auxiliaries = auxiliary_pairs(gram, 2)
    assert auxiliaries.tolist() == [0, 1, 3]
    for k, a in enumerate(auxiliaries):
        one = pair_gram(gram, 2, int(a))
        assert np.array_equal(np.broadcast_to(pairs.pp, (2, 3))[:, k], one.pp)
        assert np.array_equal(pairs.aa[:, k], one.aa)
        assert np.array_equal(pairs.pa[:, k], one.pa)


def test_sum_in_order_adds_left_to_right():
    terms = np.array([[1e16, 1.0, -1e16, 1.0]])
    # left to right: (1e16 + 1) rounds to 1e16, so the first 1 is lost
    assert sum_in_order(0.0, terms)[0] == 1.0
    assert sum_in_order(2.0, terms[:, :0])[()] == 2.0


@given(gradient_matrices(min_tasks=3, max_tasks=6))
def test_several_auxiliaries_at_once_equal_one_at_a_time(G):
    """The weights, taken for every auxiliary in one call, are those of a loop over the
    auxiliaries (the paper's pair steps, composed as GradientRemedy's docstring says)."""
    gram = (G.double() @ G.double().T).numpy()[None]
    T = G.shape[0]
    expected = np.zeros(T)
    stretch, share = 1.0, 0.0
    for a in range(1, T):
        projected = remedy_projection(pair_gram(gram, 0, a))
        rescaled = remedy_rescale(projected.gram, 5.0)
        expected[a] = rescaled.auxiliary_scale[0]
        share += float(rescaled.auxiliary_scale[0] * projected.shift[0])
        stretch = max(stretch, float(rescaled.primary_scale[0]))
    expected[0] = stretch + share
    assert np.array_equal(GradientRemedy().host_weights(gram, primary=0)[0], expected)


def test_dominance_of_norms_far_apart_is_found_without_overflow():
    # ||a|| / ||p|| = 1e160: the squared ratio, 1e320, is beyond float64
    gram = PairGram(pp=np.array([1e-320]), aa=np.array([1.0]), pa=np.array([1e-162]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rescaled = remedy_rescale(gram, 5.0)
    assert rescaled.auxiliary_scale[0] < 1.0  # dominant, so the auxiliary was shrunk
