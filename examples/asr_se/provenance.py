"""On what code and machine a run was trained: one line per sitting in ``sittings.jsonl``.

A run of the full preset may be trained across several sittings (``--resume``), and the
code may change between them. Each sitting appends one JSON line to the run folder's
``sittings.jsonl``: when it began (UTC), at which step, the git commit of this process's
code and whether the working tree had uncommitted changes to tracked files, and the
machine. The commit is read once, when this module is first imported (at the start of
the process, before any run), because a long ``compare`` keeps the code it started with
while the repository may move on under it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch

__all__ = [
    "RESULT_PATHS",
    "SITTINGS_FILE",
    "CodeVersion",
    "code_version",
    "last_clean_change",
    "machine",
    "record_sitting",
]

SITTINGS_FILE = "sittings.jsonl"


def machine() -> str:
    """Cores, CPU model, torch and Python versions, and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


_REPOSITORY = Path(__file__).resolve().parents[2]


def _git(*arguments: str) -> str | None:
    """The output of ``git arguments`` in this repository, or ``None`` without git."""
    try:
        done = subprocess.run(
            ["git", *arguments],
            cwd=_REPOSITORY,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class CodeVersion(TypedDict):
    """The git commit of the code (``None`` without git or a repository) and whether tracked
    files outside :data:`RESULT_PATHS` differed from it (``None`` when unknown)."""

    commit: str | None
    dirty: bool | None


RESULT_PATHS = ("benchmarks/results", "examples/asr_se/results", "examples/asr_se/RESULTS.md")
"""Committed results, which runs themselves rewrite (``compare`` writes the report when it
ends): not code, so changes there do not make the working tree "dirty"."""


def code_version() -> CodeVersion:
    """The :class:`CodeVersion` of the working tree now (all ``None`` where git or the
    repository is absent, as in an installed copy)."""
    commit = _git("rev-parse", "HEAD")
    excluded = [f":(exclude){path}" for path in RESULT_PATHS]
    status = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def last_clean_change(paths: Sequence[str]) -> str | None:
    """The last commit that changed any of ``paths`` (relative to the repository root),
    or ``None`` when one of them has uncommitted changes or git cannot tell: what a
    result computed from those files alone depends on."""
    if _git("status", "--porcelain", "--untracked-files=no", "--", *paths) != "":
        return None
    return _git("log", "-1", "--format=%H", "--", *paths) or None


PROCESS_CODE = code_version()
"""The code this process imported (read at import; see the module's docstring)."""


def record_sitting(run_dir: Path, step: int) -> dict[str, Any]:
    """Append the line of a sitting that begins at ``step`` to ``run_dir``'s
    ``sittings.jsonl`` and return it."""
    line = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step": step,
        **PROCESS_CODE,
        "machine": machine(),
    }
    with open(run_dir / SITTINGS_FILE, "a") as handle:
        handle.write(json.dumps(line) + "\n")
    return line
