"""What Gradient Remedy costs per training step of the flagship model, against the MTL baseline.

Both systems take steps on the same batches, interleaved in one process (which goes first
alternates), so that load on the machine hits both alike. Printed: the median step time of
each, their ratio (target: GR at most 1.25x the baseline), and the share of GR's step spent
in the resolver's own arithmetic (target: under 3%), timed around ``resolve_blocks``.

    python -m examples.asr_se.speed --preset quick --steps 30
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from examples.asr_se.config import PRESETS, get_preset
from examples.asr_se.corpus import build_corpus, default_out_dir
from examples.asr_se.corpus.errors import CorpusError
from examples.asr_se.folders import unusable_folder
from examples.asr_se.provenance import machine
from examples.asr_se.train import Trainer


def _timed_resolver(trainer: Trainer, spent: list[float]) -> None:
    """Wrap the trainer's resolver so that each call's duration lands in ``spent``."""
    resolver = trainer.resolver
    assert resolver is not None
    inner: Callable[..., Any] = resolver.resolve_blocks

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = inner(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return result

    resolver.resolve_blocks = timed  # type: ignore[method-assign]


def measure(
    preset_name: str, steps: int, warmup: int, threads: int, manifest: Path
) -> dict[str, Any]:
    """Median step seconds of ``sum`` and ``gr`` on identical batches, and GR's resolver share."""
    preset = get_preset(preset_name)
    # the baseline's conflict monitor would add task gradients: measure the plain MTL step
    train = replace(preset.train, threads=threads, monitor_every=10**9)
    preset = replace(preset, train=train)
    torch.set_num_threads(threads)
    trainers = {
        name: Trainer(preset, name, 0, manifest, Path("/nonexistent"), progress=False)
        for name in ("sum", "gr")
    }
    resolver_seconds: list[float] = []
    _timed_resolver(trainers["gr"], resolver_seconds)
    seconds: dict[str, list[float]] = {"sum": [], "gr": []}
    shares: list[float] = []
    for step in range(warmup + steps):
        batch, _ = trainers["sum"]._next_batch()
        names = ("sum", "gr") if step % 2 == 0 else ("gr", "sum")  # neither always goes first
        for name in names:
            trainer = trainers[name]
            resolver_seconds.clear()
            start = time.perf_counter()
            trainer._step(batch, "joint")
            elapsed = time.perf_counter() - start
            if step >= warmup:
                seconds[name].append(elapsed)
                if name == "gr":
                    shares.append(sum(resolver_seconds) / elapsed)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "preset": preset_name,
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "batch_size": preset.train.batch_size,
        "granularity": preset.train.granularity,
        "median_step_seconds": median,
        "ratio_gr_to_sum": median["gr"] / median["sum"],
        "resolver_share_of_gr_step": statistics.median(shares),
    }


_MINIMA = {"steps": 1, "warmup": 0, "threads": 1}
"""The least value of each count option."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The options, or argparse's usage error (exit status 2) before any work."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.asr_se.speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=30, help="measured steps per system")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--corpus-dir", type=Path, help="default data/asr_se/<corpus preset>")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    for option, least in _MINIMA.items():
        if getattr(args, option) < least:
            parser.error(f"--{option} must be >= {least}, got {getattr(args, option)}")
    if args.json is not None:  # before the measurement, which would be lost
        problem = "it is a folder" if args.json.is_dir() else unusable_folder(args.json.parent)
        if problem:
            parser.error(f"--json {str(args.json)!r}: {problem}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    corpus = get_preset(args.preset).corpus
    try:
        manifest = build_corpus(corpus, args.corpus_dir or default_out_dir(corpus), progress=False)
    except CorpusError as error:  # bad input or state: one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = measure(args.preset, args.steps, args.warmup, args.threads, manifest)
    result["machine"] = machine()
    given = argv if argv is not None else sys.argv[1:]
    result["command"] = "python -m examples.asr_se.speed " + shlex.join(given)
    median = result["median_step_seconds"]
    print(
        f"preset {args.preset}, {args.threads} threads, "
        f"{args.steps} steps each after {args.warmup} warm-up"
    )
    print(f"median step: sum {median['sum']:.3f} s, gr {median['gr']:.3f} s")
    print(f"gr / sum: {result['ratio_gr_to_sum']:.3f}  (target <= 1.25)")
    share = 100 * result["resolver_share_of_gr_step"]
    print(f"resolver arithmetic share of the gr step: {share:.2f}%  (target < 3%)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
