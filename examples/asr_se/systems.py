"""The systems compared: two references without gradient resolution, and joint training
with any registered resolver.

- ``noisy_asr``: the recogniser alone, on noisy input (no SE front end).
- ``frozen_se``: the front end trained alone on the SE loss, then frozen; the recogniser
  trained on its output.
- any name in ``gradsurgery.available()`` (``sum`` is the MTL baseline, ``gr`` Gradient
  Remedy, ...): joint training, the gradients of the two losses combined by that resolver.
- a variant of one, ``NAME:OPTION=VALUE,...``: the resolver with those options (added to
  the preset's ``resolver_options``), and ``granularity=global`` or ``tensor`` in place of
  the preset's. ``gr:k=20`` is Gradient Remedy rescaling only when SE dominates by more
  than 20x; ``gr:granularity=global`` resolves the front end as one vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

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
    options: dict[str, Any] = field(default_factory=dict)
    """Resolver options of a variant (``gr:k=20``), over the preset's ``resolver_options``."""
    granularity: str | None = None
    """A variant's granularity in place of the preset's, else ``None``."""


def _parse_value(text: str) -> Any:
    """``20`` -> 20, ``0.5`` -> 0.5, ``true`` -> True; anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def folder_name(system: str) -> str:
    """The folder name of a system's runs and records: its name with ``:`` (not allowed in
    Windows paths) written ``+``, so ``gr:k=20`` lives in ``gr+k=20``."""
    return system.replace(":", "+")


def get_system(name: str) -> System:
    """The system called ``name``; raises ``ValueError`` listing the known ones, or naming
    a variant's bad option."""
    if name == "noisy_asr":
        return System(name, None, use_enhancer=False, se_pretrain=False)
    if name == "frozen_se":
        return System(name, None, use_enhancer=True, se_pretrain=True)
    resolver, _, variant = name.partition(":")
    if resolver not in gradsurgery.available():
        known = ", ".join([*REFERENCE_SYSTEMS, *gradsurgery.available()])
        raise ValueError(
            f"unknown system {name!r}; systems: {known}, or NAME:OPTION=VALUE,... for a "
            "resolver with options"
        )
    options: dict[str, Any] = {}
    granularity = None
    for assignment in filter(None, variant.split(",")):
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            raise ValueError(f"system {name!r}: expected OPTION=VALUE, got {assignment!r}")
        if key == "granularity":
            if value not in ("global", "tensor"):
                raise ValueError(f"system {name!r}: granularity must be global or tensor")
            granularity = value
        else:
            options[key] = _parse_value(value)
    try:
        gradsurgery.get_resolver(resolver, **options)  # unknown or bad options fail here
    except (TypeError, ValueError) as error:
        raise ValueError(f"system {name!r}: {error}") from None
    return System(name, resolver, True, False, options, granularity)
