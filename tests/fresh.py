"""New resolvers for tests that compare two runs of one method."""

from __future__ import annotations

import inspect

import gradsurgery
from gradsurgery.resolvers import Resolver


def fresh_resolver(method: str) -> Resolver:
    """A new resolver of ``method`` with its defaults, seeded (``seed=0``) where it draws
    random numbers, so that two of them draw the same ones."""
    resolver_class = type(gradsurgery.get_resolver(method))
    seeded = "seed" in inspect.signature(resolver_class).parameters
    return gradsurgery.get_resolver(method, **({"seed": 0} if seeded else {}))
