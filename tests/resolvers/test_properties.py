"""Properties every registered resolver must have, and those each one promises.

A resolver is checked here the moment it is registered: the test is parametrised over
``gradsurgery.available()``, and each class declares what it promises in ``promises``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import gradsurgery
from tests.fresh import fresh_resolver
from tests.resolvers.precision import documented_precision
from tests.strategies import gradient_matrices, nonconflicting_matrices

METHODS = gradsurgery.available()


def promised(prop: str) -> list[str]:
    return [m for m in METHODS if prop in gradsurgery.get_resolver(m).promises]


def run(method: str, G: torch.Tensor, primary: int | None = None) -> torch.Tensor:
    torch.manual_seed(0)  # methods with random choices draw the same ones on every call
    losses = torch.ones(G.shape[0])
    return gradsurgery.resolve(G, method=method, primary=primary, losses=losses)


@pytest.mark.parametrize("method", METHODS)
@given(G=gradient_matrices(), data=st.data())
def test_shape_dtype_and_finite(method, G, data):
    primary = data.draw(st.none() | st.integers(0, G.shape[0] - 1))
    for dtype in (torch.float64, torch.float32):
        d = run(method, G.to(dtype), primary)
        assert d.shape == (G.shape[1],)
        assert d.dtype == dtype
        assert torch.isfinite(d).all()


@pytest.mark.parametrize("method", promised("scale_equivariant"))
@given(G=gradient_matrices(), scale=st.floats(1e-3, 1e3), data=st.data())
def test_scale_equivariant(method, G, scale, data):
    primary = data.draw(st.none() | st.integers(0, G.shape[0] - 1))
    if method == "cagrad":
        # CAGrad's documented relative cut (||g_w|| <= 1e-7 max ||g_i|| counts as zero): a
        # row whose norm sits on it may fall either side after rounding, at any scale.
        norms = G.norm(dim=1)
        ratios = norms / norms.max().clamp(min=1e-300)
        assume(not bool(((ratios > 1e-8) & (ratios < 1e-6)).any()))
    expected = scale * run(method, G, primary)
    actual = run(method, scale * G, primary)
    tolerance = max(1e-6, documented_precision(method, G))
    torch.testing.assert_close(
        actual, expected, rtol=tolerance, atol=tolerance * scale * (1 + G.abs().max())
    )


@pytest.mark.parametrize("method", promised("scale_equivariant"))
@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        (torch.float64, 2.0**-513),  # squared norms below 1e-308, exact for this G
        (torch.float64, 2.0**-500),  # about 1e-301
        (torch.float64, 2.0**-250),
        (torch.float64, 2.0**250),
        (torch.float64, 2.0**500),  # squared norms about 1e301
        (torch.float32, 2.0**-60),  # float32's Gram: about 1e-36
        (torch.float32, 2.0**60),
    ],
)
def test_scale_equivariant_across_the_dtype_range(method, dtype, scale):
    # Powers of two scale G exactly, and G's few-bit entries keep its Gram exact even
    # where the Gram's entries fall below float64's normal range (2^-513), so every method
    # that promises it must hold, whatever its own algebra squares or inverts (Nash-MTL's
    # Frobenius norm, IMTL-G's eigenvalues).
    G = torch.tensor(
        [[1.0, -2.0, 0.5, 3.0], [-1.5, 1.0, 2.0, -0.5], [0.25, 0.5, -1.0, 1.0]], dtype=dtype
    )
    expected = scale * run(method, G, 0)
    actual = run(method, scale * G, 0)
    assert torch.isfinite(actual).all()
    tolerance = max(1e-6 if dtype == torch.float64 else 1e-4, documented_precision(method, G))
    torch.testing.assert_close(actual / scale, expected / scale, rtol=tolerance, atol=tolerance)


NEAR_OPPOSITE = torch.tensor(
    [
        [0.0, 0.0, 0.0, 0.0, 2.0],
        [12.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [-1e-5, 0.0, 0.0, 0.0, -4.0],
    ],
    dtype=torch.float64,
)
NEAR_PARALLEL = torch.tensor([[14.0, 6.1035e-5], [1.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("method", "G", "scale"), [("cagrad", NEAR_OPPOSITE, 1e-3), ("imtl", NEAR_PARALLEL, 3.0)]
)
def test_scale_equivariant_within_the_documented_precision(method, G, scale):
    # The cases the thorough hypothesis profile found beyond the shared 1e-6 (1.5e-5 and
    # 1.6e-5): still well within what the docstrings state.
    expected = scale * run(method, G)
    error = float((run(method, scale * G) - expected).norm() / expected.norm())
    assert error < documented_precision(method, G)


@pytest.mark.parametrize("method", promised("permutation_invariant"))
@given(G=gradient_matrices(min_tasks=2), data=st.data())
def test_permutation_invariant(method, G, data):
    order = data.draw(st.permutations(range(G.shape[0])))
    # Nash-MTL's Newton solve on Q / ||Q|| + 1e-8 I is conditioned at up to 1e8 when a task's
    # gradient is zero or two are opposed (its docstring): rounding then reaches ~1e-9.
    tolerance = 1e-7 if method == "nash_mtl" else 1e-9
    atol = tolerance
    if method == "mgda":
        # Its min-norm point is exact to rounding in ||d||^2 (the Gram matrix), so to about
        # sqrt(eps) max ||g_i|| in d (its docstring): two gradients 1e-6 apart with norms
        # near 7 differ in ||g||^2 by 20 ulp of it, and either may be returned.
        atol = 16 * torch.finfo(G.dtype).eps ** 0.5 * float(G.norm(dim=1).max())
    precision = documented_precision(method, G)  # imtl and aligned_mtl: a condition number
    if precision > tolerance:
        tolerance = atol = precision
    torch.testing.assert_close(
        run(method, G[list(order)]), run(method, G), rtol=tolerance, atol=max(atol, tolerance)
    )


SOLVED_IN_ONE_BATCH = {"aligned_mtl", "cagrad", "imtl", "mgda", "nash_mtl", "upgrad"}
"""Methods whose weights come from iterations or decompositions run over all blocks at
once: a block's weights round as the batch's solve does, not as its own would."""


@pytest.mark.parametrize("method", [m for m in METHODS if m != "graddrop"])
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_blocks_are_resolved_as_if_each_were_alone(method, sizes, data):
    # Per-tensor granularity resolves every block in one batched call; a fresh resolver
    # must give each block the weights it gives the block alone. The blocks' sizes differ,
    # so that each block's Gram is formed as it is alone (runs of equal sizes are batched
    # matrix products, which may round otherwise). GradDrop, which draws a number per
    # column, has its own test.
    G = data.draw(gradient_matrices(params=sum(sizes)))
    T = G.shape[0]
    primary = data.draw(st.none() | st.integers(0, T - 1))
    losses = torch.linspace(0.5, 2.0, T, dtype=torch.float64)

    batched = fresh_resolver(method).resolve_blocks(G, sizes, primary=primary, losses=losses)
    alone = [
        fresh_resolver(method).resolve_blocks(
            block, [block.shape[1]], primary=primary, losses=losses
        )
        for block in G.split(sizes, dim=1)
    ]
    direction = torch.cat([resolution.direction for resolution in alone])
    scale = float(G.abs().max())
    if method in SOLVED_IN_ONE_BATCH:
        tolerance = max(1e-7, documented_precision(method, G))
        if method == "mgda":  # its min-norm point is exact to about sqrt(eps) max ||g_i||
            tolerance = max(tolerance, 16 * torch.finfo(G.dtype).eps ** 0.5)
        torch.testing.assert_close(batched.direction, direction, rtol=0, atol=tolerance * scale)
        return
    if batched.weights is not None:
        assert torch.equal(batched.weights, torch.cat([r.weights for r in alone]))
    # The sum w^T G of a block alone and of a block in a batch may round differently.
    bound = float(batched.weights.abs().sum(dim=1).max()) if batched.weights is not None else T
    eps = torch.finfo(G.dtype).eps
    torch.testing.assert_close(
        batched.direction, direction, rtol=0, atol=4 * T * eps * bound * scale
    )


@pytest.mark.parametrize("method", promised("sum_without_conflict"))
@given(G=nonconflicting_matrices(), data=st.data())
def test_sum_without_conflict(method, G, data):
    primary = data.draw(st.none() | st.integers(0, G.shape[0] - 1))
    torch.testing.assert_close(run(method, G, primary), G.sum(dim=0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", promised("primary_nonconflicting"))
@given(G=gradient_matrices(min_tasks=2), data=st.data())
def test_primary_never_opposed(method, G, data):
    primary = data.draw(st.integers(0, G.shape[0] - 1))
    p = G[primary]
    assume(p.norm() > 1e-3)
    d = run(method, G, primary)
    assert torch.dot(d, p) >= -1e-9 * d.norm() * p.norm()


@pytest.mark.parametrize("method", METHODS)
def test_single_task_is_passed_through_up_to_scale(method):
    g = torch.tensor([[3.0, -4.0, 0.5]])
    d = run(method, g)
    cosine = torch.dot(d, g[0]) / (d.norm() * g[0].norm())
    assert cosine == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS)
def test_zero_gradients_give_zero(method):
    d = run(method, torch.zeros(3, 4), primary=0)
    assert torch.equal(d, torch.zeros(4))


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trips(method):
    resolver = gradsurgery.get_resolver(method)
    G = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0], [0.5, -2.0, 1.0]])
    losses = torch.tensor([1.0, 2.0, 3.0])
    gradsurgery.resolve(G, method=resolver, primary=0, losses=losses)
    state = resolver.state_dict()
    torch.manual_seed(1)
    first = gradsurgery.resolve(G, method=resolver, primary=0, losses=0.5 * losses)
    restored = gradsurgery.get_resolver(method)
    restored.load_state_dict(state)
    torch.manual_seed(1)
    second = gradsurgery.resolve(G, method=restored, primary=0, losses=0.5 * losses)
    assert torch.equal(first, second)


@pytest.mark.parametrize("method", promised("non_conflicting"))
@given(G=gradient_matrices(min_tasks=2))
def test_non_conflicting(method, G):
    # g_k . d >= 0 for every task k, up to a regularisation-sized slack: with a diagonal
    # regularisation eps tr(G G^T) I of the Gram (UPGrad's reg_eps), the guarantee is
    # g_k . d >= -eps tr(G G^T) w_k; the slack allows eps up to 1e-3.
    resolution = gradsurgery.get_resolver(method).resolve_blocks(G, (G.shape[1],))
    trace = float((G * G).sum())
    weights = resolution.weights[0] if resolution.weights is not None else torch.zeros(len(G))
    slack = 1e-3 * trace * weights.abs() + 1e-12 * trace
    assert (G @ resolution.direction >= -slack).all()
