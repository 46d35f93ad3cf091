"""Seedable randomness shared by the resolvers that draw random numbers."""

from __future__ import annotations

from typing import Any

import torch

from gradsurgery.resolvers._options import integer_option

_SEEDS = (-(2**63), 2**64 - 1)
"""The seeds :meth:`torch.Generator.manual_seed` takes (a negative seed ``s`` is taken as
``2**64 + s``)."""


class SeededRandomness:
    """Mixin: a private, checkpointed :class:`torch.Generator` built from ``seed`` or given.

    With neither ``seed`` nor ``generator``, draws come from torch's global generator
    (seeded by :func:`torch.manual_seed`) and :meth:`state_dict` is empty: the caller's own
    checkpoint of torch's RNG state covers them. Otherwise :meth:`state_dict` holds the
    generator's state, so a resumed run draws what an uninterrupted one would.
    """

    seed: int | None
    generator: torch.Generator | None

    def _init_randomness(
        self, seed: int | None, generator: torch.Generator | None, *, cpu_only: bool = False
    ) -> None:
        owner = type(self).__name__
        if seed is not None and generator is not None:
            raise ValueError(f"Give either seed or generator to {owner}, not both")
        seed = integer_option("seed", seed, minimum=_SEEDS[0], maximum=_SEEDS[1], optional=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"Invalid generator: {generator!r} (expected a torch.Generator)")
        if cpu_only and generator is not None and generator.device.type != "cpu":
            raise ValueError(f"Invalid generator: on {generator.device}, expected a CPU generator")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else generator

    def _shuffled(self, items: list[int]) -> list[int]:
        """``items`` in a random order drawn from the generator."""
        permutation = torch.randperm(len(items), generator=self.generator).tolist()
        return [items[index] for index in permutation]

    def state_dict(self) -> dict[str, Any]:
        """The private generator's state (empty when drawing from torch's global generator)."""
        if self.generator is None:
            return {}
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        if not state_dict:
            return
        if self.generator is None or set(state_dict) != {"generator"}:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected {{'generator': ...}} for one "
                f"built with seed or generator; got keys {sorted(state_dict)}"
            )
        self.generator.set_state(state_dict["generator"])
