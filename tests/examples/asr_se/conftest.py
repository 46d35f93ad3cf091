"""Shared fixtures for the asr_se corpus tests: one tiny corpus built once per session."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# `examples` is not an installed package: make it importable under a bare `pytest` too
# (`python -m pytest` from the repository root already has the root on sys.path).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.asr_se.corpus import build_corpus  # noqa: E402
from examples.asr_se.corpus.errors import MissingPackageError  # noqa: E402


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[Path], dict[str, str]]:
    """A function: folder -> {relative path: SHA-256} of every file under it."""
    return _tree_digest


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``tiny`` corpus (seed 0); skips when a Debian package is missing."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    try:
        build_corpus("tiny", root, seed=0, progress=False)
    except MissingPackageError as exc:  # the message says which package to apt-get install
        pytest.skip(str(exc))
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tiny_root: Path) -> Path:
    """The tiny corpus' manifest path."""
    return tiny_root / "manifest.jsonl"
