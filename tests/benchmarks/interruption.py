"""An interruption of a benchmark part-way through, for the tests of ``--resume``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def interrupt_at_call(
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    number: int,
    *,
    label: Callable[..., str],
    instead: Callable[..., Any] | None = None,
) -> list[str]:
    """Replace ``owner.name`` (a benchmark's function that runs one part: a method, a
    model) by one that raises ``KeyboardInterrupt`` at its ``number``-th call, as Ctrl-C
    would, and otherwise calls ``instead`` (default: the function itself). Returns the
    list of the calls' ``label(*args)``, which the test may clear between runs."""
    run = getattr(owner, name) if instead is None else instead
    calls: list[str] = []

    def interrupted(*args: Any) -> Any:
        calls.append(label(*args))
        if len(calls) == number:
            raise KeyboardInterrupt
        return run(*args)

    monkeypatch.setattr(owner, name, interrupted)
    return calls


def method_of_toy_run(method: str, *rest: Any) -> str:
    """The label of a call of ``toy.optimise``: its method."""
    return method


def model_of_overhead_part(args: Any, model_name: str, *rest: Any) -> str:
    """The label of a call of ``overhead._measure_model``: its model."""
    return model_name
