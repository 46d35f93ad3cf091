"""Command line: build, check, describe and picture the offline noisy-speech corpus.

Examples::

    python -m examples.asr_se.corpus build --preset quick            # -> data/asr_se/quick
    python -m examples.asr_se.corpus build --preset full --out /data/full --seed 1
    python -m examples.asr_se.corpus verify --out data/asr_se/quick  # re-hash every file
    python -m examples.asr_se.corpus stats --preset quick --markdown
    python -m examples.asr_se.corpus figure --preset full   # -> examples/asr_se/figures/
    python -m examples.asr_se.corpus figure --preset quick  # -> data/asr_se/quick/

``verify``, ``stats`` and ``figure`` read the corpus in ``--out`` (default: the preset's
folder); given ``--out`` alone, they take that corpus's preset.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .build import build_corpus, default_out_dir
from .errors import CorpusError
from .manifest import read_info, verify_corpus
from .presets import PRESETS

FIGURE = Path(__file__).resolve().parents[1] / "figures" / "corpus_spectrograms.png"
"""The committed picture, of the full preset's corpus in its default folder."""


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else default_out_dir(args.preset or "quick")


def _read_preset(args: argparse.Namespace) -> str:
    """The preset of the corpus that ``verify``, ``stats`` or ``figure`` reads: the one in
    its ``corpus.json`` (or ``--preset``, or quick, where there is none yet).

    Raises:
        CorpusError: ``--preset`` names another preset than the corpus in ``--out``.
    """
    info = read_info(_out(args))
    config = info.get("config") if isinstance(info, dict) else None
    held = config.get("name") if isinstance(config, dict) else None
    if args.preset is not None and held is not None and held != args.preset:
        raise CorpusError(
            f"{_out(args)} holds a corpus of preset {held!r}, not {args.preset!r}: pass "
            "--out alone, or the corpus's own preset"
        )
    return str(held or args.preset or "quick")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (1, with a one-line message, on a CorpusError)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.asr_se.corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("build", "build (or finish, or check) a corpus"),
        ("verify", "check every file of a built corpus against its manifest hashes"),
        ("stats", "print the corpus numbers"),
        ("figure", "draw clean/noisy spectrograms, one pair per noise type"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--preset",
            choices=sorted(PRESETS),
            help="default: quick (for build), or the preset of the corpus in --out",
        )
        p.add_argument("--out", help="corpus folder (default: data/asr_se/<preset>)")
        if name == "build":
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--workers", type=int, default=None, help="worker processes")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "stats":
            p.add_argument("--markdown", action="store_true", help="print a Markdown table")
            p.add_argument(
                "--update-doc", metavar="MD", help="write the table into MD between markers"
            )
        if name == "figure":
            p.add_argument(
                "--png",
                help="default: examples/asr_se/figures/corpus_spectrograms.png for the full "
                "preset's corpus in its default folder, else corpus_spectrograms.png in the "
                "corpus folder",
            )
    args = parser.parse_args(argv)
    if args.command == "build":
        if args.seed < 0:
            parser.error(f"--seed must be >= 0, got {args.seed}")
        if args.workers is not None and args.workers < 1:
            parser.error(f"--workers must be >= 1, got {args.workers}")
    try:
        if args.command == "build":
            start = time.perf_counter()
            manifest = build_corpus(
                args.preset or "quick",
                _out(args),
                seed=args.seed,
                progress=not args.no_progress,
                workers=args.workers,
            )
            print(f"corpus ready: {manifest} ({time.perf_counter() - start:.1f} s)")
        elif args.command == "verify":
            preset = _read_preset(args)
            info = verify_corpus(_out(args), deep=True)
            print(
                f"{_out(args)}: all files of the {preset} corpus match the manifest (content "
                f"hash {info['content_hash']})"
            )
        elif args.command == "stats":
            from .stats import corpus_stats, format_stats, update_doc

            _read_preset(args)
            stats = corpus_stats(_out(args))
            print(format_stats(stats, markdown=args.markdown))
            if args.update_doc:
                command = ["python", "-m", "examples.asr_se.corpus", "stats"]
                command += ["--preset", stats["preset"]]
                command += ["--out", args.out] if args.out else []
                update_doc(args.update_doc, stats, command=shlex.join(command))
        elif args.command == "figure":
            from .figure import draw_spectrograms

            preset = _read_preset(args)
            png = args.png or (
                FIGURE if preset == "full" and not args.out else _out(args) / FIGURE.name
            )
            print(f"wrote {draw_spectrograms(_out(args), png)}")
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
