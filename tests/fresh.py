"""New resolvers for tests that compare two runs of one method."""

from __future__ import annotations

import inspect
from typing import Any

import gradsurgery
from gradsurgery.resolvers import Resolver


def fresh_resolver(method: str, **options: Any) -> Resolver:
    """A new resolver of ``method`` with ``options`` (its defaults otherwise), seeded
    (``seed=0``) where it draws random numbers, so that two of them draw the same ones."""
    resolver_class = type(gradsurgery.get_resolver(method, **options))
    if "seed" in inspect.signature(resolver_class).parameters:
        options = {**options, "seed": 0}
    return gradsurgery.get_resolver(method, **options)
