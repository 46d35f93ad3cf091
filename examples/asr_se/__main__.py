"""Command line of the flagship example.

python -m examples.asr_se build-corpus --preset quick
python -m examples.asr_se train --preset quick --system gr --seed 0 [--resume]
python -m examples.asr_se evaluate --preset quick --system gr --seed 0
python -m examples.asr_se compare --preset full [--systems sum gr] [--seeds 0 1 2]
python -m examples.asr_se tempo-probe --preset full [--systems sum gr] [--tempos 0.7 1 1.4]
python -m examples.asr_se demo          # what `make demo` runs
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from examples.asr_se import launch
from examples.asr_se.compare import check_records, collect, report_scope, run_grid
from examples.asr_se.config import PRESETS, Preset, get_preset
from examples.asr_se.corpus import build_corpus, default_out_dir
from examples.asr_se.corpus.errors import CorpusError
from examples.asr_se.evaluate import evaluate_run, load_trained
from examples.asr_se.folders import unusable_folder
from examples.asr_se.provenance import PROCESS_CODE, machine
from examples.asr_se.records import RecordError, recorded_runs
from examples.asr_se.report import print_table, write_report
from examples.asr_se.systems import get_system
from examples.asr_se.tempo import (
    DEFAULT_TEMPOS,
    TEMPO_RANGE,
    probe_tempo,
    probed_runs,
    training_pace,
    write_probe,
)
from examples.asr_se.train import (
    CheckpointError,
    RunExistsError,
    SettingsError,
    Trainer,
    run_dir_for,
)

REPO = Path(__file__).resolve().parents[2]
USER_ERRORS = (CorpusError, CheckpointError, RunExistsError, SettingsError, RecordError)
"""Errors of bad input or state (a corpus, checkpoint, run folder or record), which the
command line reports in one line, ``error: ...``; any other exception is a bug and keeps
its traceback."""
RUNS = REPO / "runs" / "asr_se"


def _corpus(preset: Preset, corpus_dir: Path | None, progress: bool) -> Path:
    out = corpus_dir or default_out_dir(preset.corpus)
    return build_corpus(preset.corpus, out, seed=0, progress=progress)


def _tempo_probe(
    args: argparse.Namespace,
    preset: Preset,
    manifest: Path,
    argv: list[str] | None,
    progress: bool,
) -> int:
    out = _report_folder(args, preset)
    torch.set_num_threads(preset.train.threads)
    models = {  # all loaded first: a missing or foreign checkpoint stops before any decoding
        system: load_trained(
            preset, system, run_dir_for(args.runs, preset.name, system, args.seed) / "final.pt"
        )
        for system in args.systems
    }
    scored = probe_tempo(
        models,
        manifest,
        args.tempos,
        per_condition=preset.train.test_per_condition,
        batch_size=preset.train.eval_batch_size,
        progress=progress,
    )
    records = [{"system": record["system"], "seed": args.seed, **record} for record in scored]
    paths = write_probe(
        records,
        out,
        training_pace=training_pace(manifest),
        command=_command_line(argv),
        machine=machine(),
        code=PROCESS_CODE,  # as the process started: edits made while it ran do not count
        per_condition=preset.train.test_per_condition,
    )
    for record in records:
        print(
            f"{record['system']:<10} {record['engine']:<7} tempo {record['tempo']:<5g} "
            f"{record['characters_per_second']:5.1f} chars/s  WER {100 * record['wer']:5.1f}  "
            f"CER {100 * record['cer']:5.1f}"
        )
    print("\n".join(map(str, paths)))
    return 0


def _keep_other_probes(out: Path, systems: list[str], seed: int) -> None:
    """Refuse to replace a ``tempo_probe.json`` in ``out`` that holds the probe of runs
    other than ``systems`` with ``seed``.

    Raises:
        RunExistsError: naming those runs.
    """
    held = probed_runs(out) - {(system, seed) for system in systems}
    if held:
        raise RunExistsError(
            f"{out / 'tempo_probe.json'} holds the probe of other runs {sorted(held)} "
            "(system, seed); pass --out another folder, or move the file away"
        )


def _report_folder(args: argparse.Namespace, preset: Preset) -> Path:
    """Where ``compare`` and ``demo`` write the report (its records in ``results/runs``)
    and ``tempo-probe`` its files: ``--out``, or the committed folder for the full preset,
    otherwise the preset's folder under ``--runs``."""
    given: Path | None = getattr(args, "out", None)
    if given is not None:
        return given
    if preset.name != "full":
        return Path(args.runs) / preset.name
    here = Path(__file__).parent
    return here / "results" if args.command == "tempo-probe" else here


def _output_folders(args: argparse.Namespace, preset: Preset) -> dict[str, Path]:
    """The folders the command will write into, by the option that names them."""
    folders = {"corpus-dir": args.corpus_dir or default_out_dir(preset.corpus)}
    if hasattr(args, "runs"):
        folders["runs"] = args.runs
    if args.command in ("compare", "demo", "tempo-probe"):
        folders["out"] = _report_folder(args, preset)
    return folders


def _command_line(argv: list[str] | None) -> str:
    return "python -m examples.asr_se " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.asr_se", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, preset: bool = True, runs: bool = True) -> None:
        if preset:  # the demo is the quick preset's run: it takes no other
            p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
        p.add_argument(
            "--corpus-dir", type=Path, help="corpus folder (default data/asr_se/<corpus preset>)"
        )
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if runs:  # (building a corpus trains nothing)
            p.add_argument(
                "--runs",
                type=Path,
                default=RUNS,
                help=f"runs folder (default {RUNS.relative_to(REPO)})",
            )
            p.add_argument("--steps", type=int, help="override the preset's training steps")

    common(
        sub.add_parser("build-corpus", help="build (or finish building) the preset's corpus"),
        runs=False,
    )
    for name in ("train", "evaluate"):
        p = sub.add_parser(name, help=f"{name} one system with one seed")
        common(p)
        p.add_argument(
            "--system", required=True, help="noisy_asr, frozen_se or a resolver name (sum, gr, ...)"
        )
        p.add_argument("--seed", type=int, default=0)
        if name == "train":
            p.add_argument(
                "--resume", action="store_true", help="continue from the run's checkpoint"
            )
    p = sub.add_parser(
        "compare", help="train and score a grid of systems x seeds, then write the report"
    )
    common(p)
    p.add_argument("--systems", nargs="+", help="default: the preset's systems")
    p.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    p.add_argument(
        "--out",
        type=Path,
        help="report folder, with the finished runs' records in its results/runs (default "
        "examples/asr_se for full, else the runs folder)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the report from finished runs (it reads the corpus, built if "
        "missing, for the table by voice)",
    )
    p = sub.add_parser(
        "tempo-probe",
        help="score trained systems (final.pt) on the clean test speech played faster or slower",
    )
    common(p)
    p.add_argument("--systems", nargs="+", default=["sum", "gr", "noisy_asr"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tempos",
        nargs="+",
        type=float,
        default=list(DEFAULT_TEMPOS),
        help="speed factors (above 1: faster)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder of tempo_probe.json and .png (default examples/asr_se/results for full, "
        "else the runs folder)",
    )
    common(
        sub.add_parser(
            "demo",
            help="the quick preset's run: build the quick corpus, train and score sum and gr "
            "(compare --preset PRESET runs another preset's grid)",
        ),
        preset=False,
    )

    args = parser.parse_args(argv)
    preset = get_preset("quick" if args.command == "demo" else args.preset)
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        # a run folder of its own: runs of the preset's own length are not mixed with these
        name = f"{preset.name}-{args.steps}steps"
        preset = replace(preset, name=name, train=replace(preset.train, steps=args.steps))
    for option in ("seed", "seeds"):  # NumPy's generators, which draw the batches, take
        given = getattr(args, option, None)  # no negative seed
        for seed in [given] if isinstance(given, int) else given or []:
            if not 0 <= seed < 2**64:
                parser.error(f"--{option} must be in [0, 2**64), got {seed}")
    low, high = TEMPO_RANGE
    if args.command == "tempo-probe" and not all(low <= t <= high for t in args.tempos):
        parser.error(
            f"--tempos must be factors in [{low:g}, {high:g}] (sox's tempo), got {args.tempos}"
        )
    for option, folder in _output_folders(args, preset).items():  # before any work
        problem = unusable_folder(folder)
        if problem:
            parser.error(f"--{option} {str(folder)!r}: {problem}")
    named = [args.system] if getattr(args, "system", None) else getattr(args, "systems", None)
    for name in named or []:  # before any corpus is built or run trained
        try:
            get_system(name)
        except ValueError as error:
            parser.error(str(error))
    try:
        return _dispatch(args, preset, argv)
    except USER_ERRORS as error:  # bad input or state: one line
        print(f"error: {error}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, preset: Preset, argv: list[str] | None) -> int:
    """Run the parsed command."""
    progress = not args.no_progress
    if args.command == "build-corpus":
        print(_corpus(preset, args.corpus_dir, progress))
        return 0
    if args.command == "train":
        launch.init_from_environment()
        rank = launch.rank_and_world()[0]
        if rank == 0:  # one process builds the corpus; the others then find it finished
            _corpus(preset, args.corpus_dir, progress)
        launch.barrier()
        manifest = _corpus(preset, args.corpus_dir, progress and rank == 0)
        run_dir = run_dir_for(args.runs, preset.name, args.system, args.seed)
        trainer = Trainer(preset, args.system, args.seed, manifest, run_dir, progress=progress)
        print(trainer.train(resume=args.resume))
        launch.shutdown()
        return 0
    if args.command in ("compare", "demo"):
        return _compare(args, preset, argv, progress)
    if args.command == "tempo-probe":  # before the corpus is built
        _keep_other_probes(_report_folder(args, preset), args.systems, args.seed)
    manifest = _corpus(preset, args.corpus_dir, progress)
    if args.command == "evaluate":
        run_dir = run_dir_for(args.runs, preset.name, args.system, args.seed)
        print(evaluate_run(preset, args.system, run_dir, manifest, progress=progress))
        return 0
    assert args.command == "tempo-probe"
    return _tempo_probe(args, preset, manifest, argv, progress)


def _compare(
    args: argparse.Namespace, preset: Preset, argv: list[str] | None, progress: bool
) -> int:
    """``compare`` and ``demo``: train and score the grid, then write the report."""
    systems = preset.systems if args.command == "demo" or not args.systems else tuple(args.systems)
    seeds = preset.seeds if args.command == "demo" or not args.seeds else tuple(args.seeds)
    out = _report_folder(args, preset)
    records = out / "results" / "runs"
    start = time.perf_counter()
    # every record the report will hold, before the corpus or any training: not one made
    # otherwise
    check_records(preset, recorded_runs(records), records)
    manifest = _corpus(preset, args.corpus_dir, progress)
    if not getattr(args, "report_only", False):
        run_grid(preset, systems, seeds, args.runs, manifest, records, progress=progress)
    systems, seeds = report_scope(preset, systems, seeds, recorded_runs(records))
    results = collect(systems, seeds, records, manifest)
    command = _command_line(argv)
    report = write_report(
        preset,
        systems,
        seeds,
        results,
        out,
        command=command,
        grid_seconds=None if getattr(args, "report_only", False) else time.perf_counter() - start,
    )
    print_table(results, systems)
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
