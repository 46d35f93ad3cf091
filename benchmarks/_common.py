"""What every benchmark shares: the machine record, output files, and resolvers by name.

Every benchmark iterates over :func:`gradsurgery.available` at run time, so a resolver is
benchmarked the moment it is registered. A resolver that fails is recorded with its error,
never allowed to stop the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

import gradsurgery

RESULTS = Path(__file__).resolve().parent / "results"

PRIMARY_METHODS = frozenset(
    {
        "gr",
        "gr_project",
        "gr_rescale",
        "pcgrad",
        "pcgrad_onesided",
        "cosine_gate",
        "metabalance",
        "olaux",
        "graddrop",
    }
)
"""Methods with a primary/auxiliary form. Those that are symmetric without a primary are
also run with ``primary=0`` (see :func:`variants`): PCGrad, and GradDrop, whose primary
task gets a leak of 1 (its gradient passes whole, only the auxiliaries are sign-dropped).

Any registered method promising ``"primary_nonconflicting"`` is added at run time.
"""

SEED_RANGE = (-(2**63), 2**63 - 1)
"""The seeds ``--seed`` takes. ``torch.manual_seed`` and ``torch.Generator.manual_seed``
take ``[-2**63, 2**64 - 1]``; the benchmarks add offsets to the seed (the models' targets
``seed + 1``, regression's data ``1000 + seed``, digits' test pairs ``seed + 10_000``, and
``seed + i`` for the ``i``-th of ``--seeds``), so the upper half is left for them."""


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(seed: int | None = None) -> dict[str, Any]:
    """The facts a reader needs to weigh the numbers, recorded with every result."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "command": "python -m " + shlex.join([_module_name(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gradsurgery": gradsurgery.__version__,
        "git_commit": git_describe(),
        "load_average_1_5_15_min_at_start": load,
        "seed": seed,
        "environment": {
            name: os.environ[name] for name in _RECORDED_ENVIRONMENT if name in os.environ
        },
    }


_RECORDED_ENVIRONMENT = ("GLIBC_TUNABLES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_ARENA_MAX")
"""Environment variables that change timings, recorded when set."""


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def output_dir(path: str | os.PathLike[str] | None) -> Path:
    """The results folder (``benchmarks/results`` unless ``--out`` says otherwise), created
    if need be. Each benchmark calls it before any work, so that a bad ``--out`` costs none.

    Raises:
        SystemExit: the folder cannot be created (``--out`` names a file, say).
    """
    out = RESULTS if path is None else Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"Invalid --out: {out} cannot be a results folder ({error})") from None
    return out


def write_json(path: Path, payload: Any, indent: int | None = 1) -> None:
    """Write ``payload`` to ``path`` atomically (an interruption leaves the old file)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(payload, indent=indent, default=str) + "\n")
    os.replace(partial, path)


class Progress:
    """A progress bar with its ETA over a benchmark's ``total`` units of work (tqdm, on
    stderr), above which each finished unit's line is printed; with ``enabled=False``
    (``--quiet``) neither. Use as a context manager, so that the bar is closed."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, unit="run", dynamic_ncols=True)

    def advance(self, line: str | None = None) -> None:
        """One unit done; print ``line`` (if any) above the bar."""
        if self._bar is None:
            return
        if line is not None:
            self._bar.write(line)
        self._bar.update(1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()


def kept_parts(path: Path, key: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The finished parts of an interrupted run that :func:`keep_parts` left in ``path``,
    to be taken back by a run with ``resume`` (``--resume``) made with that run's ``key``
    (settings, torch, and the commit of the code the results depend on).

    With ``resume``, a file made with another key is left to be overwritten, and a line on
    stderr says which of the key's fields differ. A key whose ``code`` is ``None``
    (uncommitted changes, so no commit says what made the parts) matches nothing, and a
    file made with such a key is overwritten without a word.

    Raises:
        SystemExit: ``path`` holds finished parts and ``resume`` is false: the run would
            overwrite them; the message says to pass ``--resume`` or delete the file.
    """
    try:
        kept = json.loads(path.read_text())
    except OSError:
        return {}
    except ValueError:
        if resume:
            print(f"--resume: {path} is damaged (not JSON); starting over", file=sys.stderr)
        return {}
    parts = kept.get("parts") if isinstance(kept, dict) else None
    held = kept.get("key") if isinstance(kept, dict) else None
    if not isinstance(parts, dict) or not parts or not isinstance(held, dict):
        return {}
    if held.get("code") is None:  # made from uncommitted code: no run can take it back
        return {}
    if not resume:
        raise SystemExit(
            f"{path} holds the finished parts {sorted(parts)} of an interrupted run: pass "
            "--resume to keep them (they are kept only for the same settings and committed "
            "code), or delete the file to start over"
        )
    if held == key:  # (held's code is a commit, so key's is too)
        return dict(parts)
    if key.get("code") is None:
        why = "this run's code has uncommitted changes"
    else:
        differing = sorted(name for name in set(key) | set(held) if held.get(name) != key.get(name))
        why = "it was made with other " + ", ".join(differing)
    print(f"--resume: nothing taken back from {path} ({why}); starting over", file=sys.stderr)
    return {}


def keep_parts(path: Path, key: dict[str, Any], parts: dict[str, Any]) -> None:
    """Write the finished ``parts`` of a run with its ``key`` to ``path`` (atomically), for
    :func:`kept_parts` to take back after an interruption."""
    write_json(path, {"key": key, "parts": parts}, indent=None)


def drop_parts(path: Path, written: Iterable[str]) -> list[str]:
    """Delete ``path``, the parts :func:`keep_parts` kept, once every part it holds is in
    the outputs (``written``, the parts' labels); a part outside them (a resumed run with a
    narrower selection leaves the others' finished work there) keeps the file for a later
    ``--resume``. Returns the labels of the parts left in it."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return []
    parts = kept.get("parts", {}) if isinstance(kept, dict) else {}
    left = sorted(set(parts) - set(written))
    if not left:
        path.unlink(missing_ok=True)
    return left


def code_version(paths: Sequence[str]) -> str | None:
    """The last commit that changed any of ``paths`` (repository-relative; git pathspecs),
    or ``None`` when one of them has uncommitted changes or git cannot tell."""
    from examples.asr_se.provenance import last_clean_change

    return last_clean_change(paths)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 3 significant digits."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(info: dict[str, Any]) -> str:
    keys = [
        "command",
        "date",
        "cpu",
        "cores",
        "torch",
        "torch_threads",
        "environment",
        "seed",
        "load_average_1_5_15_min_at_start",
        "load_average_1_5_15_min_at_end",
        "resumed",
    ]
    return "\n".join(f"- {key}: `{info.get(key)}`" for key in keys if key in info)


def methods(selected: Sequence[str] | None = None) -> list[str]:
    """The registered resolvers (all of them, or those in ``selected`` that exist)."""
    names = gradsurgery.available()
    if selected:
        unknown = sorted(set(selected) - set(names))
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; available: {names}")
        return [name for name in names if name in selected]
    return names


def has_primary_form(name: str) -> bool:
    """Whether ``name`` is a primary/auxiliary method."""
    if name in PRIMARY_METHODS:
        return True
    try:
        return "primary_nonconflicting" in gradsurgery.get_resolver(name).promises
    except Exception:
        return False


def primary_by_default(name: str) -> bool:
    """Whether ``name`` takes task 0 as its primary when given ``primary=None``, so that
    ``primary=0`` gives the same result by construction.

    The rule: a resolver whose weights read only the Gram's diagonal and the primary task's
    row (``reads_primary_only``: GR and its ablations, the cosine gate, MetaBalance,
    OL-AUX, one-sided PCGrad) must have a primary task even when none is given, and
    :meth:`~gradsurgery.resolvers.base.GramResolver.resolve_blocks` forms that row for
    task 0 then (``0 if primary is None else primary``); its weights therefore take task 0
    too. A resolver that cannot be built is not.
    """
    try:
        resolver = gradsurgery.get_resolver(name)
    except Exception:
        return False
    return bool(getattr(resolver, "reads_primary_only", False))


def variants(selected: Sequence[str] | None = None) -> list[tuple[str, str, int | None]]:
    """``(label, method, primary)`` for every registered method, plus ``label[p]`` with
    ``primary=0`` for primary/auxiliary methods that are symmetric without it.

    A method that takes task 0 as primary when given none (:func:`primary_by_default`:
    GR-like methods, the cosine gate, ...) gets one run only: its ``[p]`` run would repeat
    it bit for bit.
    """
    out: list[tuple[str, str, int | None]] = []
    for name in methods(selected):
        out.append((name, name, None))
        if has_primary_form(name) and not primary_by_default(name):
            out.append((f"{name}[p]", name, 0))
    return out


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def git_describe() -> str | None:
    """The commit the code ran at (12 hex digits), with ``+dirty`` when tracked code (not
    results) differs from it; ``None`` outside a git checkout."""
    from examples.asr_se.provenance import code_version  # as the flagship's runs record it

    version = code_version()
    if version["commit"] is None:
        return None
    return version["commit"][:12] + ("+dirty" if version["dirty"] else "")


def benchmark_parser(name: str, description: str, smoke_help: str) -> argparse.ArgumentParser:
    """The arguments every benchmark has: ``--smoke`` and ``--methods`` (add the rest, then
    :func:`add_output_arguments`)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--methods", nargs="+", help="only these registered resolvers")
    return parser


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1 (a count of pairs, steps or seeds)."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 0 (warm-up steps)."""
    return _integer(text, 0)


def positive_size(text: str) -> int:
    """An ``argparse`` type: a size of at least 1, also written as a float (``1e5``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size >= 1, got {text!r}") from None
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole size >= 1, got {text!r}")
    return int(value)


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number above 0 (a learning rate, a memory limit)."""
    return _real(text, strictly_positive=True)


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: a finite number of at least 0 (a minimum duration)."""
    return _real(text, strictly_positive=False)


def torch_seed(text: str) -> int:
    """An ``argparse`` type: a seed within :data:`SEED_RANGE` (what ``torch.manual_seed``
    takes, less room for the offsets the benchmarks add)."""
    low, high = SEED_RANGE
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"expected a seed from -2**63 to 2**63 - 1 (torch's range, with room for the "
            f"offsets the benchmarks add), got {value}"
        )
    return value


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {minimum}, got {text!r}"
        ) from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def _real(text: str, *, strictly_positive: bool) -> float:
    bound = "> 0" if strictly_positive else ">= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (strictly_positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
    return value


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--seed``, ``--out`` and ``--quiet``, shared by every benchmark."""
    parser.add_argument(
        "--seed",
        type=torch_seed,
        default=0,
        help="seed of every run (default 0; from -2**63 to 2**63 - 1)",
    )
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--quiet", dest="verbose", action="store_false")
