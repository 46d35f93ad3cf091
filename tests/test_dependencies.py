"""The library runs on torch and NumPy alone: what it imports, and what it declares.

The example and the benchmarks have their own packages, as optional extras; the library
itself must import nothing else, at import time or later, except matplotlib inside
``ConflictMonitor.plot`` (the ``plot`` extra).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.source_imports import imported_modules

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "gradsurgery"
REQUIRED = {"torch", "numpy"}
OPTIONAL = {"matplotlib": "plot"}  # imported only inside a function, declared as this extra


def test_the_library_imports_only_the_standard_library_torch_and_numpy():
    allowed = set(sys.stdlib_module_names) | REQUIRED | {"gradsurgery"}
    strays = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for module, at_module_level in imported_modules(path.read_text(), str(path)):
            if module in allowed:
                continue
            if module in OPTIONAL and not at_module_level:
                continue
            where = "at module level" if at_module_level else "in a function"
            strays.append(f"{path.relative_to(ROOT)}: {module} ({where})")
    assert not strays, "the library may import only torch, numpy and the standard library"


def test_importing_every_module_loads_no_other_package():
    # Modules loaded by importing every gradsurgery module, beyond those that torch and
    # numpy load themselves: only the standard library and gradsurgery may remain.
    script = """
import json, pkgutil, sys, importlib
import torch, numpy
before = set(sys.modules)
import gradsurgery
for info in pkgutil.walk_packages(gradsurgery.__path__, "gradsurgery."):
    importlib.import_module(info.name)
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert "gradsurgery" in loaded
    assert loaded - set(sys.stdlib_module_names) - {"gradsurgery"} == set()


def test_pyproject_declares_torch_and_numpy_and_the_plot_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_name(requirement) for requirement in project["dependencies"]}
    assert required == REQUIRED
    extras = project["optional-dependencies"]
    for module, extra in OPTIONAL.items():
        assert module in {_name(requirement) for requirement in extras[extra]}
    # dev installs every other extra, so that the tests can exercise them all
    (bundle,) = [entry for entry in extras["dev"] if entry.startswith("gradsurgery[")]
    assert set(bundle[len("gradsurgery[") : -1].split(",")) == set(extras) - {"dev"}


def _name(requirement: str) -> str:
    """The distribution name of a requirement string such as ``torch>=2.4,<2.14``."""
    for index, character in enumerate(requirement):
        if not (character.isalnum() or character in "-_."):
            return requirement[:index].lower()
    return requirement.lower()
