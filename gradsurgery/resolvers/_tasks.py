"""The one check of the stateful resolvers that their state is for the tasks they see."""

from __future__ import annotations

__all__ = ["raise_if_other_tasks"]


def raise_if_other_tasks(resolver: object, held: int, tasks: int) -> None:
    """Refuse a call with ``tasks`` tasks to a ``resolver`` whose learned state is for
    ``held`` tasks, rather than drop that state silently.

    Raises:
        ValueError: ``held != tasks``; the message says how to start over.
    """
    if held != tasks:
        raise ValueError(
            f"{type(resolver).__name__} has state for {held} tasks, got {tasks}; use the "
            "same tasks every step, or load_state_dict({}) to start over"
        )
