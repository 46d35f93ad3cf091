"""What the documentation knows about each registered resolver, read from the code.

Everything here comes from the resolver classes themselves (``promises``, ``uses_gram``,
``needs_losses``, whether :meth:`state_dict` is overridden, the constructor's defaults,
the docstring), so a newly registered resolver gets its page and its row in the
"which resolver" table with no change to the documentation.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import gradsurgery
import gradsurgery.resolvers
from gradsurgery.registry import get_resolver
from gradsurgery.resolvers.base import GramResolver, Resolver

# The promises the shared property tests know, in the order the table shows them, with
# a short column label and the sentence the legend gives. A promise not listed here is
# shown under its own name.
KNOWN_PROMISES: dict[str, tuple[str, str]] = {
    "primary_nonconflicting": (
        "primary-safe",
        "with a primary task :math:`p`, the direction never conflicts with it: "
        ":math:`d \\cdot g_p \\ge 0` (up to rounding).",
    ),
    "sum_without_conflict": (
        "sum if no conflict",
        "when no two task gradients conflict (and, for GR, none dominates), "
        ":math:`d = \\sum_i g_i`: the method only acts when there is something to fix.",
    ),
    "scale_equivariant": (
        "scale-equivariant",
        "scaling every gradient by :math:`c > 0` scales :math:`d` by :math:`c`, so the "
        "learning rate keeps its meaning.",
    ),
    "permutation_invariant": (
        "order-free",
        "reordering the tasks leaves :math:`d` unchanged.",
    ),
}

_IGNORES_PRIMARY = re.compile(r"``primary``\s+is\s+ignored|primary\s+is\s+ignored", re.I)


@dataclass(frozen=True)
class ResolverEntry:
    """One registered name and the facts its page and table row show."""

    name: str
    cls: type[Resolver]
    target: str
    """The dotted path the class is documented under (its public path when exported)."""
    alias_of: str | None
    """The first registered name of the same class, when this name is an alias."""

    @property
    def promises(self) -> list[str]:
        return order_promises(self.cls.promises)

    @property
    def uses_gram(self) -> str:
        if isinstance(self.cls, type) and issubclass(self.cls, GramResolver):
            return "yes" if self.cls.uses_gram else "no"
        return "n/a"

    @property
    def needs_losses(self) -> bool:
        return bool(self.cls.needs_losses)

    @property
    def keeps_state(self) -> bool:
        return self.cls.state_dict is not Resolver.state_dict

    @property
    def primary(self) -> str:
        if "primary_nonconflicting" in self.cls.promises:
            return "protected"
        if _IGNORES_PRIMARY.search(inspect.getdoc(self.cls) or ""):
            return "ignored"
        return "used, not protected"

    @property
    def defaults(self) -> dict[str, str]:
        """Constructor options and the repr of their defaults (the papers' values)."""
        options: dict[str, str] = {}
        for parameter in inspect.signature(self.cls).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.default is parameter.empty:
                options[parameter.name] = "(required)"
            else:
                options[parameter.name] = repr(parameter.default)
        return options

    @property
    def summary(self) -> str:
        """The first sentence of the class docstring."""
        doc = inspect.getdoc(self.cls) or ""
        first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
        return first

    @property
    def source_path(self) -> str:
        """The class's file, relative to the repository root."""
        path = Path(inspect.getfile(self.cls)).resolve()
        root = Path(gradsurgery.__file__).resolve().parent.parent
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.name


def order_promises(promises: frozenset[str] | set[str]) -> list[str]:
    """Known promises first, in the table's order, then the others alphabetically."""
    known = [promise for promise in KNOWN_PROMISES if promise in promises]
    return known + sorted(set(promises) - set(KNOWN_PROMISES))


def documented_path(cls: type) -> str:
    """``gradsurgery.resolvers.Name`` when the class is exported there, else its own path."""
    if getattr(gradsurgery.resolvers, cls.__name__, None) is cls:
        return f"gradsurgery.resolvers.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_resolvers() -> list[ResolverEntry]:
    """One entry per name in :func:`gradsurgery.available`, in its (sorted) order.

    Each class is found by building the resolver with its defaults (every resolver has
    the papers' defaults), through the public :func:`gradsurgery.get_resolver`.
    """
    entries: list[ResolverEntry] = []
    first_name: dict[type, str] = {}
    for name in gradsurgery.available():
        cls = type(get_resolver(name))
        alias_of = first_name.get(cls)
        first_name.setdefault(cls, name)
        entries.append(ResolverEntry(name, cls, documented_path(cls), alias_of))
    return entries
