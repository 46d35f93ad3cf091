"""Every public name has a docstring: the API reference is built from them.

Public means: the names in ``gradsurgery.__all__``, every registered resolver class and
every class in ``gradsurgery.resolvers.__all__`` with their public methods and
properties, and the public functions and classes of every public module of the package
(its ``__all__`` when it has one). A method that overrides a documented method inherits
its docstring, as Sphinx shows it; a class must have its own.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import gradsurgery
import gradsurgery.resolvers


def _public_modules() -> list[ModuleType]:
    modules = [gradsurgery]
    for info in pkgutil.walk_packages(gradsurgery.__path__, prefix="gradsurgery."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            modules.append(importlib.import_module(info.name))
    return modules


def _module_names(module: ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]


def _resolver_classes() -> list[type]:
    classes = {type(gradsurgery.get_resolver(name)) for name in gradsurgery.available()}
    classes |= {
        value
        for value in (
            getattr(gradsurgery.resolvers, name) for name in gradsurgery.resolvers.__all__
        )
        if inspect.isclass(value)
    }
    return sorted(classes, key=lambda cls: cls.__qualname__)


def _own_class_doc(cls: type) -> str:
    """The class's own docstring; a dataclass's generated signature does not count."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return doc.strip()


def _public_members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, property):
            yield name, value


def _where(value: Any) -> str:
    try:
        path = inspect.getsourcefile(value)
        _, line = inspect.getsourcelines(value)
    except (TypeError, OSError):
        return ""
    return f" ({path}:{line})"


def _missing_docstrings() -> list[str]:
    missing: list[str] = []
    classes: dict[str, type] = {}
    for module in _public_modules():
        if not (module.__doc__ or "").strip():
            missing.append(f"module {module.__name__}")
        for name in _module_names(module):
            value = getattr(module, name)
            label = f"{module.__name__}.{name}"
            if inspect.isclass(value):
                classes.setdefault(f"{value.__module__}.{value.__qualname__}", value)
            elif inspect.isfunction(value) and not (inspect.getdoc(value) or "").strip():
                missing.append(f"function {label}{_where(value)}")
    for cls in _resolver_classes():
        classes.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for label, cls in sorted(classes.items()):
        if issubclass(cls, BaseException) and cls.__doc__:
            continue
        if not _own_class_doc(cls):
            missing.append(f"class {label}{_where(cls)}")
        for name, member in _public_members(cls):
            if not (inspect.getdoc(member) or "").strip():
                target = member.fget if isinstance(member, property) else member
                missing.append(f"method {label}.{name}{_where(target)}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = _missing_docstrings()
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)


def test_the_check_sees_the_public_surface() -> None:
    # Guard against a walk that silently finds nothing: the names every version has.
    modules = {module.__name__ for module in _public_modules()}
    assert {"gradsurgery", "gradsurgery.resolve", "gradsurgery.resolvers.gr"} <= modules
    names = {cls.__name__ for cls in _resolver_classes()}
    assert {"GradientRemedy", "PCGrad", "Sum", "Resolver", "GramResolver"} <= names


def test_the_check_reports_an_undocumented_method() -> None:
    class Documented:
        """A class."""

        def public(self) -> None:
            pass

    assert _own_class_doc(Documented) == "A class."
    names = [name for name, member in _public_members(Documented) if not inspect.getdoc(member)]
    assert names == ["public"]
