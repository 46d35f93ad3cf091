"""Resolvers by name."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import GramResolver, Resolver


def test_core_methods_are_available():
    assert {"sum", "mean", "gr", "pcgrad", "gradnorm"} <= set(gradsurgery.available())


@pytest.mark.parametrize("name", gradsurgery.available())
def test_every_registered_resolver_builds_with_defaults(name):
    resolver = gradsurgery.get_resolver(name)
    assert isinstance(resolver, Resolver)
    assert type(resolver).__name__ in repr(resolver)
    assert type(resolver).__doc__


def test_register_a_custom_resolver():
    class FirstTaskOnly(GramResolver):
        """Keeps task 0 only."""

        def weights(self, gram, *, primary, losses):
            weights = torch.zeros(gram.shape[:2], dtype=gram.dtype)
            weights[:, 0] = 1.0
            return weights

    gradsurgery.register("first_task_only_test", FirstTaskOnly)
    try:
        d = gradsurgery.resolve(
            torch.tensor([[1.0, 2.0], [3.0, 4.0]]), method="first_task_only_test"
        )
        torch.testing.assert_close(d, torch.tensor([1.0, 2.0]))
        with pytest.raises(ValueError, match="already registered"):
            gradsurgery.register("first_task_only_test", FirstTaskOnly)
    finally:
        from gradsurgery import registry

        registry._REGISTRY.pop("first_task_only_test")


def test_register_rejects_non_resolvers():
    with pytest.raises(TypeError, match="resolver_class"):
        gradsurgery.register("bad", int)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 3])
def test_register_rejects_a_name_that_is_not_a_non_empty_string(name):
    with pytest.raises(TypeError, match="Invalid name"):
        gradsurgery.register(name, gradsurgery.resolvers.Resolver)  # type: ignore[arg-type]


class Scaled(GramResolver):
    """Every task weighted by ``scale``; named options and, after them, any keyword."""

    def __init__(self, scale: float = 1.0, *, bias: float = 0.0, **notes: object) -> None:
        self.scale, self.bias, self.notes = scale, bias, notes

    def weights(self, gram, *, primary, losses):
        return torch.full(gram.shape[:2], self.scale + self.bias, dtype=gram.dtype)


class ScaledOnly(GramResolver):
    """``Scaled`` without the ``**notes``."""

    def __init__(self, scale: float = 1.0, *extra: object) -> None:
        self.scale = scale

    def weights(self, gram, *, primary, losses):
        return torch.full(gram.shape[:2], self.scale, dtype=gram.dtype)


@pytest.fixture
def registered():
    from gradsurgery import registry

    gradsurgery.register("scaled_test", Scaled)
    gradsurgery.register("scaled_only_test", ScaledOnly)
    yield
    registry._REGISTRY.pop("scaled_test")
    registry._REGISTRY.pop("scaled_only_test")


def test_a_constructor_with_any_keyword_takes_every_option(registered):
    resolver = gradsurgery.get_resolver("scaled_test", scale=2.0, bias=1.0, note="x")
    assert isinstance(resolver, Scaled)
    assert (resolver.scale, resolver.bias, resolver.notes) == (2.0, 1.0, {"note": "x"})


def test_unknown_options_name_only_the_named_options(registered):
    # a *extra is no option (whatever its name)
    with pytest.raises(TypeError, match=r"unknown option\(s\) bias; its options are: scale$"):
        gradsurgery.get_resolver("scaled_only_test", bias=1.0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) note; its options are: scale$"):
        gradsurgery.get_resolver("scaled_only_test", note="x")


@pytest.mark.parametrize("name", [3, None, gradsurgery.get_resolver("gr")])
def test_get_resolver_names_its_own_argument(name):
    """get_resolver takes a name (resolve() and backward() also take an instance)."""
    with pytest.raises(TypeError, match=r"^Invalid name: .* \(expected a registered resolver's"):
        gradsurgery.get_resolver(name)
