"""The front door: input forms, dtype and device, and errors that name the argument."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import gradsurgery
from gradsurgery.resolvers.base import gram_of_blocks

G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])


@pytest.mark.parametrize("form", ["tensor", "list", "tuple", "mapping"])
def test_input_forms_agree(form):
    grads = {
        "tensor": G,
        "list": [G[0], G[1]],
        "tuple": (G[0], G[1]),
        "mapping": {"asr": G[0], "se": G[1]},
    }[form]
    torch.testing.assert_close(
        gradsurgery.resolve(grads, method="gr", primary=0),
        gradsurgery.resolve(G, method="gr", primary=0),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_output_keeps_input_dtype(dtype):
    d = gradsurgery.resolve(G.to(dtype), method="gr", primary=0)
    assert d.dtype == dtype
    torch.testing.assert_close(
        d.float(), gradsurgery.resolve(G, method="gr", primary=0), atol=1e-2, rtol=1e-2
    )


def test_negative_primary_counts_from_the_end():
    torch.testing.assert_close(
        gradsurgery.resolve(G, primary=-2), gradsurgery.resolve(G, primary=0)
    )


@pytest.mark.parametrize(
    "primary", [np.int64(0), np.int32(-2), torch.tensor(0), torch.tensor([-2], dtype=torch.int32)]
)
def test_any_integer_is_a_primary_index(primary):
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="gr", primary=primary),
        gradsurgery.resolve(G, method="gr", primary=0),
    )


@pytest.mark.parametrize("primary", [np.True_, torch.tensor(True), torch.tensor(0.0), 0.0])
def test_booleans_and_floats_are_no_primary_index(primary):
    with pytest.raises(TypeError, match="Invalid primary"):
        gradsurgery.resolve(G, method="gr", primary=primary)


def test_numpy_arrays_are_weights_and_losses():
    weights, losses = np.array([0.5, 2.0]), np.array([1.0, 3.0], dtype=np.float32)
    torch.testing.assert_close(
        gradsurgery.resolve(G, method="uw", weights=weights, losses=losses),
        gradsurgery.resolve(G, method="uw", weights=[0.5, 2.0], losses=[1.0, 3.0]),
    )
    with pytest.raises(TypeError, match="Invalid weights: expected 2 numbers"):
        gradsurgery.resolve(G, method="sum", weights=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="Invalid weights: got 3 values for 2 task"):
        gradsurgery.resolve(G, method="sum", weights=np.ones(3))


def test_input_is_not_modified():
    copy = G.clone()
    gradsurgery.resolve(G, method="pcgrad")
    assert torch.equal(G, copy)


def test_options_reach_the_resolver():
    rows = torch.tensor([[1.0, 0.0], [6.0, 8.0]])
    assert not torch.equal(gradsurgery.resolve(rows, k=5.0), gradsurgery.resolve(rows, k=20.0))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"grads": torch.ones(3)}, ValueError, "2-D"),
        ({"grads": torch.ones(2, 3, 4)}, ValueError, "2-D"),
        ({"grads": torch.ones(0, 3)}, ValueError, "T = 0"),
        ({"grads": []}, ValueError, "T = 0"),
        ({"grads": [torch.ones(3), torch.ones(4)]}, ValueError, "length 4"),
        ({"grads": [torch.ones(3), torch.ones(3, 1)]}, ValueError, "task 1 has shape"),
        ({"grads": [torch.ones(3), torch.ones(3, dtype=torch.float64)]}, TypeError, "float64"),
        ({"grads": [torch.ones(3), [1.0, 2.0, 3.0]]}, TypeError, "task 1 is a list"),
        ({"grads": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "int64 is not supported"),
        ({"grads": torch.ones(2, 3).to(torch.float8_e4m3fn)}, TypeError, "float8_e4m3fn is not"),
        ({"grads": "abc"}, TypeError, "Invalid grads"),
        ({"grads": {1: torch.ones(2)}}, TypeError, "task names"),
        ({"grads": G, "primary": 2}, ValueError, "out of range"),
        ({"grads": G, "primary": True}, TypeError, "Invalid primary"),
        ({"grads": G, "primary": 1.0}, TypeError, "Invalid primary: 1.0"),
        ({"grads": G, "primary": "asr"}, ValueError, "no names"),
        ({"grads": {"asr": G[0], "se": G[1]}, "primary": "mt"}, ValueError, "not a task"),
        ({"grads": G, "method": "nope"}, ValueError, "available methods: .*gr"),
        ({"grads": G, "method": "PCGard"}, ValueError, "did you mean 'pcgrad'"),
        ({"grads": G, "method": 3}, TypeError, "Invalid method"),
        ({"grads": G, "method": "gr", "kk": 1}, TypeError, "options are: k"),
        ({"grads": G, "resolver": "pcgrad"}, TypeError, "resolver=: resolve.. takes .* method="),
        ({"grads": G, "method": gradsurgery.get_resolver("gr"), "k": 1}, TypeError, "constructor"),
        ({"grads": G, "losses": [1.0]}, ValueError, "1 values for 2"),
        ({"grads": G, "losses": [1.0, float("nan")]}, ValueError, "losses: task 1 has nan"),
        ({"grads": G, "losses": [torch.ones(2), 1.0]}, TypeError, "item 0 is a tensor of shape"),
        ({"grads": G, "losses": torch.tensor([1 + 5j, 2])}, TypeError, "losses: complex"),
        ({"grads": G, "losses": np.array([1 + 5j, 2])}, TypeError, "losses: complex"),
        ({"grads": G, "losses": [torch.tensor(1 + 5j), 2.0]}, TypeError, "item 0 is complex"),
        ({"grads": G, "weights": [np.complex128(1), 1.0]}, TypeError, "item 0 is complex"),
        ({"grads": G, "weights": [1.0, -1.0]}, ValueError, "expected >= 0"),
        ({"grads": G, "weights": [1.0, "a"]}, TypeError, "Invalid weights: expected 2 numbers"),
        ({"grads": G, "weights": 2.0}, TypeError, "Invalid weights: expected a sequence"),
        ({"grads": G, "weights": {"a": 1.0, "b": 1.0}}, TypeError, "named tasks"),
        ({"grads": G, "weights": torch.ones(1, 2)}, ValueError, r"weights: shape \(1, 2\)"),
        ({"grads": G, "weights": np.ones((2, 1))}, ValueError, r"weights: shape \(2, 1\)"),
        ({"grads": G, "weights": [[1.0], [1.0]]}, TypeError, "item 0 is a list, not one"),
        ({"grads": G, "losses": [np.ones(2), 1.0]}, TypeError, "item 0 is an array of shape"),
        ({"grads": G, "weights": [10**400, 1.0]}, ValueError, "item 0 is beyond float64's"),
        ({"grads": G, "losses": [1.0, -(10**400)]}, ValueError, "item 1 is beyond float64's"),
        ({"grads": G.to_sparse()}, TypeError, "grads: layout torch.sparse_coo is not supp"),
        ({"grads": [G[0], G[1].to_sparse()]}, TypeError, r"grads \(task 1\): layout"),
        ({"grads": {"asr": G[0], "se": G[1]}, "weights": {"asr": 1.0}}, ValueError, "do not match"),
        (
            {"grads": torch.tensor([[1.0, float("inf")], [0.0, 1.0]])},
            ValueError,
            "task 0 has non-finite",
        ),
        (
            {"grads": {"asr": G[0], "se": torch.tensor([float("nan"), 0.0])}, "method": "sum"},
            ValueError,
            "task 'se'",
        ),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, message):
    grads = kwargs.pop("grads")
    with pytest.raises(error, match=message):
        gradsurgery.resolve(grads, **kwargs)


@pytest.mark.parametrize("method", ["sum", "gr", "pcgrad"])
def test_nonfinite_is_reported_for_every_kind_of_resolver(method):
    bad = torch.tensor([[1.0, 0.0], [float("nan"), 1.0]])
    with pytest.raises(ValueError, match="task 1 has non-finite"):
        gradsurgery.resolve(bad, method=method)


@pytest.mark.parametrize("method", ["gradnorm", "olaux", "metabalance", "mgda", "imtl"])
def test_weights_whose_gram_overflows_are_refused_before_the_resolver_runs(method):
    """Finite gradients whose Gram is finite, but not once the loss weights multiply it
    (c_i c_j g_i . g_j past float64's range): refused, the resolver's state left as it was."""
    grads = torch.tensor([[1.0, 2.0], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    options = {"losses": [1.0, 2.0, 3.0]} if method == "gradnorm" else {}
    resolver = gradsurgery.get_resolver(method)
    gradsurgery.resolve(grads, method=resolver, primary=0, **options)
    state = str(resolver.state_dict())
    with pytest.raises(ValueError, match=r"weighted gradients .* scale the losses or the weights"):
        gradsurgery.resolve(grads, method=resolver, primary=0, weights=[1e160] * 3, **options)
    assert str(resolver.state_dict()) == state
    direction = gradsurgery.resolve(grads, method=resolver, primary=0, **options)
    assert torch.isfinite(direction).all()


def test_out_made_in_inference_mode_is_refused_outside_it():
    with torch.inference_mode():
        out = torch.empty(2)
    with pytest.raises(ValueError, match="Invalid out: an inference tensor"):
        gradsurgery.resolve(G, method="sum", out=out)
    with pytest.raises(TypeError, match=r"Invalid out: layout torch\.sparse_coo"):
        gradsurgery.resolve(G, method="sum", out=torch.zeros(2).to_sparse())


def test_gram_overflow_is_explained():
    huge = torch.full((2, 4), 3e30, dtype=torch.float32)
    with pytest.raises(ValueError, match="overflows"):
        gradsurgery.resolve(huge, method="gr")


@pytest.mark.parametrize(
    ("dtype", "longest_resolved"), [(torch.float32, 1.7e19), (torch.float64, 1.3e154)]
)
def test_gram_overflows_where_the_concepts_page_says(dtype, longest_resolved):
    # docs/concepts.md, "Numerical range": about the square root of the dtype's largest
    # value (1.8e19 in float32, 1.3e154 in float64)
    assert math.sqrt(torch.finfo(dtype).max) == pytest.approx(longest_resolved, rel=0.1)
    G = torch.tensor([[longest_resolved, 0.0], [0.0, 1.0]], dtype=dtype)
    assert torch.isfinite(gradsurgery.resolve(G, method="gr")).all()
    with pytest.raises(ValueError, match=r"overflows.*scale the losses down"):
        gradsurgery.resolve(G * 1.15, method="gr")


def test_overflowing_direction_is_explained():
    huge = torch.full((2, 3), 3e38, dtype=torch.float32)
    with pytest.raises(ValueError, match="non-finite direction from finite"):
        gradsurgery.resolve(huge, method="sum")


# Finite task gradients with a finite Gram whose Gram-resolver direction overflows, which
# had come back as inf/NaN: float16, agreeing gradients whose sum (8e4) overflows float16
# (in float32 a finite Gram bounds a GR or PCGrad direction far below the dtype's range).
OVERFLOWING = {
    "float16_sum": torch.tensor([[4e4, 0.0], [4e4, 1.0]], dtype=torch.float16),
}

# The auxiliary gradient 1e39 times the primary's and conflicting with it: the primary's
# weight (about 1e39) overflows float32, which had turned the direction into inf/NaN, but
# the direction itself, about (0, 1e19), is representable.
HUGE_WEIGHT = torch.tensor([[1e-20, 0.0], [-1e19, 1e19]], dtype=torch.float32)
CLASS_NAMES = {"gr": "GradientRemedy", "pcgrad": "PCGrad"}


def overflow_message(method: str, dtype: torch.dtype) -> str:
    return re.escape(
        f"{CLASS_NAMES[method]} gave a non-finite direction from finite task gradients "
        f"(overflow in {dtype}?); scale the losses down"
    )


@pytest.mark.parametrize("method", ["gr", "pcgrad"])
@pytest.mark.parametrize("case", sorted(OVERFLOWING))
def test_overflowing_gram_resolver_direction_is_explained(method, case):
    G = OVERFLOWING[case]
    assert torch.isfinite(gram_of_blocks(G, [G.shape[1]])).all()
    with pytest.raises(ValueError, match="^" + overflow_message(method, G.dtype)):
        gradsurgery.resolve(G, method=method, primary=0)


@pytest.mark.parametrize("method", ["gr", "pcgrad"])
def test_a_weight_beyond_float32_still_gives_the_representable_direction(method):
    d = gradsurgery.resolve(HUGE_WEIGHT, method=method, primary=0)
    expected = gradsurgery.resolve(HUGE_WEIGHT.double(), method=method, primary=0).float()
    assert torch.isfinite(d).all()
    # Equal up to float32 rounding of the Gram, which the huge weight multiplies: the first
    # entry is (1e39 p + a)_0, a cancellation of two 1e19's.
    scale = float(expected.norm())
    torch.testing.assert_close(d, expected, rtol=1e-5, atol=1e-5 * scale)
    out = torch.empty(2)
    assert torch.equal(gradsurgery.resolve(HUGE_WEIGHT, method=method, primary=0, out=out), d)
    assert torch.equal(out, d)


@pytest.mark.parametrize("method", ["gr", "pcgrad"])
def test_loss_weights_count_in_the_overflow_check(method):
    G = torch.tensor([[3e4, 0.0], [3e4, 1.0]], dtype=torch.float16)
    # The cheap bound, |w_1| ||g_1|| + |w_2| ||g_2|| = 6e4, fails; the direction is checked.
    assert torch.equal(gradsurgery.resolve(G, method=method, primary=0), G.sum(dim=0))
    with pytest.raises(ValueError, match=overflow_message(method, G.dtype)):
        gradsurgery.resolve(G, method=method, primary=0, weights=[1.0, 1.5])  # 7.5e4


def _linear_losses(task_gradients: list[list[torch.Tensor]], params: list[torch.Tensor]):
    """Losses whose gradients with respect to ``params`` are exactly ``task_gradients``."""
    return {
        f"task{i}": sum((p * g).sum() for p, g in zip(params, grads, strict=True))
        for i, grads in enumerate(task_gradients)
    }


@pytest.mark.parametrize("method", ["gr", "pcgrad"])
@pytest.mark.parametrize("case", sorted(OVERFLOWING))
@pytest.mark.parametrize("granularity", ["global", "tensor"])
def test_overflowing_direction_through_backward(method, case, granularity):
    G = OVERFLOWING[case]
    # Two parameter tensors: the first gets the overflowing pair, the second a harmless
    # one (the auxiliary task's alone), so that per tensor only one block overflows.
    params = [torch.zeros(2, dtype=G.dtype, requires_grad=True) for _ in range(2)]
    zero, harmless = torch.zeros(2, dtype=G.dtype), torch.tensor([1.0, 2.0], dtype=G.dtype)
    losses = _linear_losses([[G[0], zero], [G[1], harmless]], params)
    with pytest.raises(ValueError, match="^" + overflow_message(method, G.dtype)):
        gradsurgery.backward(
            losses, params, resolver=method, primary="task0", granularity=granularity
        )
    assert all(p.grad is None for p in params)  # shared parameters: untouched
