"""Run records: the small files of a scored run, kept where the repository can hold them.

A run folder (``runs/<preset>/<system>/seed<N>``) holds checkpoints of several MB and is
not committed. Its record holds what the report is computed from and what a reader may
want to recompute: the run's settings (``config.json``), its training log, its conflict
statistics, the code and machine of each sitting (``sittings.jsonl``), every decoded test
utterance (gzipped) and its scores (``evaluation.json``). Records live beside the report
(``results/runs/<system>/seed<N>``), so a grid spread over several sittings keeps its
finished runs even where the run folders are gone (a fresh clone):
:func:`examples.asr_se.compare.run_grid` skips a recorded run, and
:func:`examples.asr_se.compare.collect` reads records only.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from examples.asr_se.systems import folder_name

RECORD_FILES = (
    "config.json",
    "train_log.csv",
    "conflicts.json",
    "hypotheses.jsonl",
    "sittings.jsonl",
    "evaluation.json",  # last: its presence marks the record complete
)
"""The files a record copies from its run folder, in the order they are copied."""

OPTIONAL = frozenset({"conflicts.json", "sittings.jsonl"})
"""Record files a scored run may lack: systems without task gradients to monitor have no
conflict statistics, and runs trained before 2026-11-30 have no sittings."""

REQUIRED = tuple(name for name in RECORD_FILES if name not in OPTIONAL)


class RecordError(ValueError):
    """A damaged record: its ``config.json`` does not name a run."""


COMPRESSED = frozenset({"hypotheses.jsonl"})
"""Files kept gzipped in a record (``<name>.gz``): the decoded test utterances are about
1 MB of text per run of the full preset, a fifth of that compressed."""


def recorded_name(name: str) -> str:
    """The name of run-folder file ``name`` inside a record."""
    return name + ".gz" if name in COMPRESSED else name


def record_dir_for(root: Path, system: str, seed: int) -> Path:
    """The record folder of one (system, seed) run under ``root``."""
    return root / folder_name(system) / f"seed{seed}"


def recorded_runs(root: Path) -> list[tuple[str, int]]:
    """The ``(system, seed)`` of every complete record under ``root``, sorted, as each
    record's ``config.json`` names them (a folder name writes a variant's ``:`` as ``+``,
    so the folder alone cannot say which it was).

    Raises:
        RecordError: a complete record whose ``config.json`` is unreadable or names no run.
    """
    runs = []
    for evaluation in root.glob("*/seed*/evaluation.json"):
        path = evaluation.parent / "config.json"
        try:
            config = json.loads(path.read_text())
            runs.append((str(config["system"]), int(config["seed"])))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RecordError(
                f"{path}: not a run's settings ({error!r}); the record is damaged: restore "
                "it from git or move its folder away"
            ) from error
    return sorted(runs)


def is_recorded(record_dir: Path) -> bool:
    """Whether ``record_dir`` holds a complete record (its ``evaluation.json`` is copied
    last, so a record interrupted while being written counts as absent)."""
    return (record_dir / "evaluation.json").exists()


def record_run(run_dir: Path, record_dir: Path) -> Path:
    """Copy the record files of the scored run in ``run_dir`` to ``record_dir``, each
    atomically and ``evaluation.json`` last.

    Raises:
        FileNotFoundError: ``run_dir`` lacks a required file (it is not scored yet);
            nothing is copied then.
    """
    missing = [name for name in REQUIRED if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a scored run: it has no {', '.join(missing)}")
    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / "evaluation.json").unlink(missing_ok=True)  # incomplete until re-copied
    for name in RECORD_FILES:
        source = run_dir / name
        if not source.exists():
            continue
        target = record_dir / recorded_name(name)
        temporary = target.with_name(target.name + ".tmp")
        if name in COMPRESSED:
            # mtime 0: the same run gives the same bytes, so re-recording changes nothing
            with source.open("rb") as raw, gzip.GzipFile(temporary, "wb", mtime=0) as packed:
                shutil.copyfileobj(raw, packed)
        else:
            shutil.copyfile(source, temporary)
        temporary.replace(target)
    return record_dir
