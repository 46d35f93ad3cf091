"""The front door: input forms, dtype and device, and errors that name the argument."""

from __future__ import annotations

import pytest
import torch

import gradsurgery

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
        ({"grads": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "floating-point"),
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
        ({"grads": G, "weights": [1.0, -1.0]}, ValueError, "expected >= 0"),
        ({"grads": G, "weights": [1.0, "a"]}, TypeError, "Invalid weights: expected 2 numbers"),
        ({"grads": G, "weights": 2.0}, TypeError, "Invalid weights: expected a sequence"),
        ({"grads": G, "weights": {"a": 1.0, "b": 1.0}}, TypeError, "named tasks"),
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


def test_gram_overflow_is_explained():
    huge = torch.full((2, 4), 3e30, dtype=torch.float32)
    with pytest.raises(ValueError, match="overflows"):
        gradsurgery.resolve(huge, method="gr")


def test_overflowing_direction_is_explained():
    huge = torch.full((2, 3), 3e38, dtype=torch.float32)
    with pytest.raises(ValueError, match="non-finite direction from finite"):
        gradsurgery.resolve(huge, method="sum")
