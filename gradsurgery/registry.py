"""Resolvers by name: ``available()``, ``get_resolver(name, **options)`` and ``register``."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any

from gradsurgery.resolvers.aligned_mtl import AlignedMTL
from gradsurgery.resolvers.base import Resolver
from gradsurgery.resolvers.cagrad import CAGrad
from gradsurgery.resolvers.cosine_gate import CosineGate
from gradsurgery.resolvers.db_mtl import DBMTL
from gradsurgery.resolvers.dwa import DynamicWeightAverage
from gradsurgery.resolvers.famo import FAMO
from gradsurgery.resolvers.gr import GradientRemedy
from gradsurgery.resolvers.gr_ablation import GradientRemedyProjection, GradientRemedyRescale
from gradsurgery.resolvers.graddrop import GradDrop
from gradsurgery.resolvers.gradnorm import GradNorm
from gradsurgery.resolvers.gradvac import GradVac
from gradsurgery.resolvers.imtl import IMTLG
from gradsurgery.resolvers.mean import Mean
from gradsurgery.resolvers.metabalance import MetaBalance
from gradsurgery.resolvers.mgda import MGDA
from gradsurgery.resolvers.nash_mtl import NashMTL
from gradsurgery.resolvers.olaux import OLAux
from gradsurgery.resolvers.pcgrad import PCGrad
from gradsurgery.resolvers.pcgrad_onesided import OneSidedPCGrad
from gradsurgery.resolvers.rlw import RandomLossWeighting
from gradsurgery.resolvers.sum import Sum
from gradsurgery.resolvers.upgrad import UPGrad
from gradsurgery.resolvers.uw import UncertaintyWeighting

__all__ = ["available", "get_resolver", "register"]

_REGISTRY: dict[str, type[Resolver]] = {
    "sum": Sum,
    "mean": Mean,
    "gr": GradientRemedy,
    "pcgrad": PCGrad,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "cagrad": CAGrad,
    "gradvac": GradVac,
    "imtl": IMTLG,
    "nash_mtl": NashMTL,
    "aligned_mtl": AlignedMTL,
    "upgrad": UPGrad,
    "famo": FAMO,
    "uw": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "rlw": RandomLossWeighting,
    "db_mtl": DBMTL,
    "graddrop": GradDrop,
    "pcgrad_onesided": OneSidedPCGrad,
    "cosine_gate": CosineGate,
    "metabalance": MetaBalance,
    "olaux": OLAux,
    "gr_project": GradientRemedyProjection,
    "gr_rescale": GradientRemedyRescale,
}


def available() -> list[str]:
    """The names of the registered resolvers, sorted.

    Example:
        >>> import gradsurgery
        >>> {"gr", "pcgrad", "sum"} <= set(gradsurgery.available())
        True
    """
    return sorted(_REGISTRY)


def register(name: str, resolver_class: type[Resolver], *, overwrite: bool = False) -> None:
    """Register a resolver class under ``name``, so that ``resolve(..., method=name)`` finds it.

    Args:
        name: the method's short name (lower case, e.g. ``"my_method"``).
        resolver_class: a subclass of :class:`~gradsurgery.resolvers.Resolver`.
        overwrite: allow replacing an existing name.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"Invalid name: {name!r} (expected a non-empty string)")
    if not (isinstance(resolver_class, type) and issubclass(resolver_class, Resolver)):
        raise TypeError(
            f"Invalid resolver_class: {resolver_class!r} (expected a Resolver subclass)"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a resolver named {name!r} is already registered; pass overwrite=True")
    _REGISTRY[name] = resolver_class


@functools.cache
def _options_of(resolver_class: type[Resolver]) -> tuple[tuple[str, ...], bool]:
    """The named constructor options of ``resolver_class``, and whether it also takes any
    other keyword (a ``**kwargs``); read once, as ``inspect`` is slow."""
    parameters = inspect.signature(resolver_class).parameters.values()
    named = tuple(
        parameter.name
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    )
    return named, any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters)


def get_resolver(name: str, **options: Any) -> Resolver:
    """Build the resolver registered as ``name`` with hyper-parameters ``options``.

    Raises:
        ValueError: unknown name (the message lists the known ones), or an option value out
            of its range (NaN and infinities included).
        TypeError: a ``name`` that is not a string, an option the method does not have
            (the message lists those it has; a constructor with ``**kwargs`` takes any), or
            an option value of the wrong type (a string, or a ``bool`` where a number is
            expected).

    Example:
        >>> import gradsurgery
        >>> gradsurgery.get_resolver("gr", k=3)
        GradientRemedy(k=3.0, max_stretch=None)
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid name: {name!r} (expected a registered resolver's name, a str; "
            "resolve() and backward() also take a resolver instance as it is)"
        )
    try:
        resolver_class = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), available(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"Unknown method: {name!r}{hint}; available methods: {', '.join(available())}"
        ) from None
    if not options:
        return resolver_class()
    accepted, any_keyword = _options_of(resolver_class)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any_keyword:
        raise TypeError(
            f"method {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(accepted) or '(none)'}"
        )
    return resolver_class(**options)
