"""The systems compared: two references without gradient resolution, and joint training
with any registered resolver.

- ``noisy_asr``: the recogniser alone, on noisy input (no SE front end).
- ``frozen_se``: the front end trained alone on the SE loss, then frozen; the recogniser
  trained on its output.
- any name in ``gradsurgery.available()`` (``sum`` is the MTL baseline, ``gr`` Gradient
  Remedy, ...): joint training, the gradients of the two losses combined by that resolver.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradsurgery

REFERENCE_SYSTEMS = ("noisy_asr", "frozen_se")


@dataclass(frozen=True)
class System:
    """How a named system trains."""

    name: str
    resolver: str | None
    """The gradsurgery resolver of a joint system, else ``None``."""
    use_enhancer: bool
    se_pretrain: bool


def get_system(name: str) -> System:
    """The system called ``name``; raises ``ValueError`` listing the known ones."""
    if name == "noisy_asr":
        return System(name, None, use_enhancer=False, se_pretrain=False)
    if name == "frozen_se":
        return System(name, None, use_enhancer=True, se_pretrain=True)
    if name in gradsurgery.available():
        return System(name, name, use_enhancer=True, se_pretrain=False)
    known = ", ".join([*REFERENCE_SYSTEMS, *gradsurgery.available()])
    raise ValueError(f"unknown system {name!r}; systems: {known}")
