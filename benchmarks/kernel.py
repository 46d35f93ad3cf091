"""``resolve()`` alone on large matrices: bytes of gradient read per second.

For each ``(T, P)`` in the grid whose float32 matrix fits ``--max-gib``, and each registered
resolver, ``gradsurgery.resolve(G, method=..., losses=...)`` is timed against the
machine's own memory bandwidth on the same matrix: ``buffer.copy_(G)``, which reads the
matrix once and writes a same-size buffer. The two are timed in ``--repeats`` interleaved
pairs after one warm-up, so that a drift of the machine's speed during the run (other
processes, frequency) moves both alike, and ``ratio_to_copy`` is the median of the pairs'
ratios of ``resolve``'s time to the copy's. A call shorter than :data:`MIN_SAMPLE_SECONDS`
is timed as the mean of enough back-to-back calls to last that long (timeit's autorange):
at P = 1e5 a copy takes tens of microseconds, where one call's timing is mostly jitter.
The goal for the cheap methods (``sum``, ``gr``, ``pcgrad`` with ``T = 2``, and the cosine
gate) is a ratio of at most 3. For them, ``resolve(..., out=direction)`` into one
preallocated ``(P,)`` buffer is timed too, in its own pairs with the copy
(``out_ratio_to_copy``): a new result's allocation, whose pages are faulted in afresh
above the C allocator's mmap threshold, costs more than the method's passes at large P.
And the same call on a ``(T, 16)`` matrix into a ``(16,)`` buffer, also paired with the
copy (``fixed_ratio_to_copy``): the call's fixed cost (argument checks, the ``T x T``
algebra, each operator's dispatch), which the goal must also cover at small P.

``--profile`` adds, for the cheap methods at the smallest and the largest size run, one
call's wall time, its operators' time and its top operators by self CPU time
(``torch.profiler``), to show where time goes when the goal is missed.

Run: ``python -m benchmarks.kernel`` (full) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

import gradsurgery
from benchmarks import _common
from benchmarks._common import add_output_arguments, benchmark_parser
from benchmarks._memory import native_stderr_silenced

CHEAP = ("sum", "gr", "pcgrad", "cosine_gate")
GOAL = 3.0


MIN_SAMPLE_SECONDS = 0.005
"""The shortest timed sample: shorter calls are repeated back to back within one sample."""

FIXED_COST_COLUMNS = 16
"""Columns of the matrix on which a call's fixed cost is timed: its passes over so few
columns take well under a microsecond."""


@dataclass
class Timer:
    """One callable, warmed up, timed in samples of ``calls`` back-to-back calls."""

    call: Callable[[], Any]
    calls: int

    @classmethod
    def calibrated(cls, call: Callable[[], Any], min_sample_seconds: float) -> Timer:
        """Warm ``call`` up (one untimed call: a first call pays for faulting in fresh
        buffers and cold caches), then size its samples: the number of back-to-back calls
        grows, from one, until they have lasted ``min_sample_seconds``, each estimate from
        the time of the last (as :mod:`timeit`'s autorange grows its loop)."""
        call()
        calls = 1
        while True:
            start = time.perf_counter()
            for _ in range(calls):
                call()
            elapsed = time.perf_counter() - start
            if elapsed >= min_sample_seconds:
                return cls(call, calls)
            calls = max(calls + 1, math.ceil(calls * min_sample_seconds / max(elapsed, 1e-9)))

    def seconds(self) -> float:
        """The mean time of one call over one sample."""
        start = time.perf_counter()
        for _ in range(self.calls):
            self.call()
        return (time.perf_counter() - start) / self.calls


@dataclass(frozen=True)
class Paired:
    """Medians over the interleaved pairs of a timed call and its reference."""

    seconds: float
    reference_seconds: float
    ratio: float
    """The median of the pairs' ratios (not the ratio of the medians)."""


def time_paired(call: Timer, reference: Timer, repeats: int) -> Paired:
    """Time ``reference`` then ``call``, ``repeats`` times over."""
    times: list[float] = []
    references: list[float] = []
    for _ in range(repeats):
        references.append(reference.seconds())
        times.append(call.seconds())
    return Paired(
        seconds=statistics.median(times),
        reference_seconds=statistics.median(references),
        ratio=statistics.median(t / r for t, r in zip(times, references)),
    )


def _matrix(tasks: int, size: int, seed: int) -> torch.Tensor:
    """A ``(T, P)`` float32 matrix with conflicting rows; large ones tile a random block."""
    generator = torch.Generator().manual_seed(seed)
    block = min(size, 1_000_000)
    base = torch.randn(tasks, block, generator=generator)
    base[1:] -= 0.5 * base[:1]  # some conflict with task 0, so the surgery branches run
    if block == size:
        return base
    reps = -(-size // block)
    return base.repeat(1, reps)[:, :size].contiguous()


def is_cheap(method: str, tasks: int) -> bool:
    return method in CHEAP and (method != "pcgrad" or tasks == 2)


def fitting_cells(
    sizes: Sequence[int], tasks: Sequence[int], max_gib: float
) -> list[tuple[int, int]]:
    """The ``(P, T)`` cells of the grid whose float32 matrix takes at most ``max_gib``."""
    return [(size, T) for size in sizes for T in tasks if T * size * 4 <= max_gib * 2**30]


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    info = _common.machine(args.seed)
    selected = _common.methods(args.methods)
    records: list[dict[str, Any]] = []
    cells = fitting_cells(args.sizes, args.tasks, args.max_gib)
    progress = _common.Progress(len(cells) * len(selected), "kernel", args.verbose)
    with progress:
        for size, tasks in cells:
            nbytes = tasks * size * 4
            G = _matrix(tasks, size, args.seed)
            losses = torch.ones(tasks)
            buffer = torch.empty_like(G)
            copy = Timer.calibrated(partial(buffer.copy_, G), args.min_sample_seconds)
            new_direction = time_paired(
                Timer.calibrated(partial(torch.zeros, size), args.min_sample_seconds),
                copy,
                args.repeats,
            )
            for method in selected:
                record: dict[str, Any] = {
                    "method": method,
                    "tasks": tasks,
                    "size": size,
                    "bytes": nbytes,
                    "copy_seconds": new_direction.reference_seconds,
                    "copy_gb_per_s": nbytes / new_direction.reference_seconds / 1e9,
                    "new_direction_ratio": new_direction.ratio,
                    "cheap": is_cheap(method, tasks),
                }
                try:
                    torch.manual_seed(args.seed)
                    resolver = gradsurgery.get_resolver(method)
                    resolve = Timer.calibrated(
                        partial(gradsurgery.resolve, G, method=resolver, losses=losses),
                        args.min_sample_seconds,
                    )
                    paired = time_paired(resolve, copy, args.repeats)
                    record.update(
                        seconds=paired.seconds,
                        gb_per_s=nbytes / paired.seconds / 1e9,
                        ratio_to_copy=paired.ratio,
                        paired_copy_seconds=paired.reference_seconds,
                        calls_per_sample=resolve.calls,
                    )
                except Exception as error:
                    record.update(seconds=None, gb_per_s=None, ratio_to_copy=None)
                    record["error"] = _common.error_text(error)
                if record["cheap"] and not record.get("error"):
                    try:
                        record.update(_into_out(G, resolver, losses, copy, args))
                    except Exception as error:  # the new result's timing stands
                        record.update(out_ratio_to_copy=None)
                        record["out_error"] = _common.error_text(error)
                records.append(record)
                progress.advance(_progress(record))
            del G, buffer
    profiled = [_widest(cells, 0), _widest(cells, -1)] if args.profile and cells else []
    profiles = profile_cheap(profiled, selected, args)
    info["load_average_1_5_15_min_at_end"] = _common.load_average()
    return {
        "machine": info,
        "settings": {
            "repeats": args.repeats,
            "min_sample_seconds": args.min_sample_seconds,
            "max_gib": args.max_gib,
            "dtype": "float32",
        },
        "records": records,
        "profiles": profiles,
    }


def _into_out(
    G: torch.Tensor,
    resolver: gradsurgery.resolvers.Resolver,
    losses: torch.Tensor,
    copy: Timer,
    args: argparse.Namespace,
) -> dict[str, float]:
    """``resolve(..., out=direction)`` into one ``(P,)`` buffer, paired with the copy: the
    method's own passes over the matrix, without allocating (and faulting in) a result.
    And the same on the first :data:`FIXED_COST_COLUMNS` columns of ``G``, paired with the
    copy of the whole: the call's fixed cost, in copies of ``G``."""
    paired = time_paired(_into_buffer(G, resolver, losses, args), copy, args.repeats)
    small = G[:, :FIXED_COST_COLUMNS].clone()
    fixed = time_paired(_into_buffer(small, resolver, losses, args), copy, args.repeats)
    return {
        "out_seconds": paired.seconds,
        "out_ratio_to_copy": paired.ratio,
        "fixed_seconds": fixed.seconds,
        "fixed_ratio_to_copy": fixed.ratio,
    }


def _into_buffer(
    G: torch.Tensor,
    resolver: gradsurgery.resolvers.Resolver,
    losses: torch.Tensor,
    args: argparse.Namespace,
) -> Timer:
    """A calibrated timer of ``resolve(G, ..., out=direction)`` into one ``(P,)`` buffer."""
    direction = torch.empty(G.shape[1], dtype=G.dtype)
    return Timer.calibrated(
        partial(gradsurgery.resolve, G, method=resolver, losses=losses, out=direction),
        args.min_sample_seconds,
    )


def _progress(record: dict[str, Any]) -> str:
    if record.get("error"):
        where = f"T={record['tasks']} P={record['size']:.0e}"
        return f"{where} {record['method']} FAILED {record['error']}"
    return (
        f"T={record['tasks']:2d} P={record['size']:.0e} {record['method']:16s} "
        f"{record['gb_per_s']:7.2f} GB/s  x{record['ratio_to_copy']:.2f} of a copy"
    )


PROFILED_CALLS = 20
"""Calls per profile, averaged: one call's first operators carry the profiler's start-up."""


def _widest(cells: list[tuple[int, int]], index: int) -> tuple[int, int]:
    """``(T, P)``: the most tasks run at the ``index``-th smallest size."""
    size = sorted({size for size, _ in cells})[index]
    return max(tasks for size_, tasks in cells if size_ == size), size


def profile_cheap(
    where: list[tuple[int, int]], selected: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """For each cheap method, at each ``(T, P)`` of ``where`` and at ``(2, P)``, per call
    (the mean of :data:`PROFILED_CALLS`): the top operators by self CPU time (``top``),
    the self CPU time of all operators (``operators_ms``) and the wall time (``wall_ms``),
    both under the profiler. The wall time beyond the operators is the call's Python."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, dict[str, Any]] = {}
    for T, size in sorted({(T, size) for tasks, size in where for T in (2, tasks)}):
        G = _matrix(T, size, args.seed)
        losses = torch.ones(T)
        for method in selected:
            if not is_cheap(method, T):
                continue
            try:
                resolver = gradsurgery.get_resolver(method)
                gradsurgery.resolve(G, method=resolver, losses=losses)
                # (Kineto logs each profiler start and stop to fd 2, whatever its level)
                with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
                    start = time.perf_counter()
                    for _ in range(PROFILED_CALLS):
                        gradsurgery.resolve(G, method=resolver, losses=losses)
                    wall = (time.perf_counter() - start) / PROFILED_CALLS
            except Exception:
                continue  # the failure is already in the records
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            per_call = 1e3 * PROFILED_CALLS  # microseconds in all calls -> milliseconds in one
            out[f"{method} T={T} P={size:.0e}"] = {
                "wall_ms": wall * 1e3,
                "operators_ms": sum(e.self_cpu_time_total for e in events) / per_call,
                "top": [
                    {
                        "op": e.key,
                        "calls": e.count / PROFILED_CALLS,
                        "self_ms": e.self_cpu_time_total / per_call,
                    }
                    for e in events[:6]
                ],
            }
        del G
    return out


def write_outputs(result: dict[str, Any], out: Path) -> None:
    _common.write_json(out / "kernel.json", result)
    (out / "kernel.md").write_text(markdown(result))
    plot(result["records"], out / "kernel.png")


def markdown(result: dict[str, Any]) -> str:
    records = result["records"]
    columns = sorted({(r["tasks"], r["size"]) for r in records}, key=lambda c: (c[1], c[0]))
    methods = sorted({r["method"] for r in records})
    lookup = {(r["method"], r["tasks"], r["size"]): r for r in records}

    def cell(record: dict[str, Any] | None) -> str:
        if record is None:
            return "–"
        if record.get("error"):
            return "failed"
        mark = " ✓" if record["cheap"] and record["ratio_to_copy"] <= GOAL else ""
        mark = " ✗" if record["cheap"] and record["ratio_to_copy"] > GOAL else mark
        return f"{record['ratio_to_copy']:.2f}{mark}"

    header = ["method"] + [f"T={t} P={p:.0e}" for t, p in columns]
    rows = [[m] + [cell(lookup.get((m, t, p))) for t, p in columns] for m in methods]
    copy_rows = [
        [
            f"T={t} P={p:.0e}",
            round(lookup_any["bytes"] / 2**20, 1),
            round(lookup_any["copy_gb_per_s"], 2),
            round(lookup_any["new_direction_ratio"], 2),
        ]
        for t, p in columns
        for lookup_any in [next(r for r in records if r["tasks"] == t and r["size"] == p)]
    ]
    goal_rows = [
        [
            r["method"],
            r["tasks"],
            f"{r['size']:.0e}",
            r.get("gb_per_s"),
            None if r.get("ratio_to_copy") is None else round(r["ratio_to_copy"], 2),
            None
            if r.get("ratio_to_copy") is None
            else round(r["ratio_to_copy"] - r["new_direction_ratio"], 2),
            _verdict(r.get("ratio_to_copy")),
            None if r.get("out_ratio_to_copy") is None else round(r["out_ratio_to_copy"], 2),
            _verdict(r.get("out_ratio_to_copy")),
            None if r.get("fixed_ratio_to_copy") is None else round(r["fixed_ratio_to_copy"], 2),
            None
            if r.get("fixed_ratio_to_copy") is None
            else round(r["out_ratio_to_copy"] - r["fixed_ratio_to_copy"], 2),
        ]
        for r in records
        if r["cheap"]
    ]
    failures = sorted({(r["method"], r["error"]) for r in records if r.get("error")})
    parts = [
        "# `resolve()` throughput on large matrices",
        "",
        "Produced by `python -m benchmarks.kernel` (see `benchmarks/README.md`). float32 "
        "matrices; each cell is the time of `gradsurgery.resolve(G, method=...)` divided by "
        "the time of `buffer.copy_(G)` on the same matrix (one read and one write of the "
        "matrix), the median over pairs of the two timed one after the other; calls "
        "shorter than the settings' `min_sample_seconds` are timed back to back for that "
        "long. ✓/✗: a cheap method meets/misses the goal of at most "
        f"{GOAL:g}x.",
        "",
        "## Machine",
        "",
        _common.machine_markdown(result["machine"]),
        f"- settings: `{result['settings']}`",
        "",
        "## The copy reference",
        "",
        "A method returns a new `(P,)` direction: the last column is the time of "
        "`torch.zeros(P)` over the copy's (paired as above), the floor that allocating "
        "(and, above glibc's mmap threshold, faulting in fresh pages for) the result costs "
        "any method. The copy's GB/s is from those pairs.",
        "",
        _common.markdown_table(
            ["matrix", "MiB", "copy GB/s (bytes of G / time)", "new (P,) tensor, x copy"],
            copy_rows,
        ),
        "",
        "## Time of resolve / time of copy",
        "",
        _common.markdown_table(header, rows),
        "",
        f"## The goal for the cheap methods (at most {GOAL:g}x a copy)",
        "",
        "`less the new tensor`: the ratio minus that of `torch.zeros(P)` (the copy "
        "reference's last column), i.e. the method's own passes over the data. `out=`: "
        "`resolve(G, ..., out=direction)` writing into one preallocated `(P,)` buffer, "
        "timed in its own pairs with the copy. The goal is judged on each: "
        "a new result, and into `out=`. `fixed cost`: the same call into `out=` on the "
        f"matrix's first {FIXED_COST_COLUMNS} columns, over the copy of the whole matrix "
        "(paired likewise): what a call costs whatever P (argument checks, the T x T "
        "algebra, each operator's dispatch); `out= less fixed` is what is left, the passes "
        "over the data. Where the fixed cost alone exceeds the goal, no pass over the data "
        "can meet it.",
        "",
        _common.markdown_table(
            [
                "method",
                "T",
                "P",
                "GB/s read",
                "x copy",
                "less the new tensor",
                "goal",
                "x copy, out=",
                "goal, out=",
                "fixed cost, x copy",
                "out= less fixed",
            ],
            goal_rows,
        ),
        "",
    ]
    if result["profiles"]:
        parts += [
            "## Where the time goes (torch.profiler, top operators by self CPU time)",
            "",
            "Each cheap method at the smallest and the largest size, per call (the mean of "
            f"{PROFILED_CALLS} under the profiler, which slows small calls): the wall time, the "
            "self CPU time of all its operators, and the top operators. What the operators "
            "leave of the wall time is the call's Python.",
            "",
        ]
        for name, profiled in result["profiles"].items():
            parts += [
                f"**{name}**: {profiled['wall_ms']:.3g} ms, of which "
                f"{profiled['operators_ms']:.3g} ms in operators",
                "",
                _common.markdown_table(
                    ["op", "calls", "self ms"],
                    [[r["op"], r["calls"], r["self_ms"]] for r in profiled["top"]],
                ),
                "",
            ]
    if failures:
        parts += ["## Failures", ""] + [f"- `{m}`: `{e}`" for m, e in failures] + [""]
    return "\n".join(parts)


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return "met" if ratio <= GOAL else "MISSED"


def _series(records: list[dict[str, Any]], method: str, key: str) -> list[tuple[float, float]]:
    """``(size, record[key])`` of ``method``'s records that have that value, by size."""
    return sorted(
        (r["size"], r[key]) for r in records if r["method"] == method and r.get(key) is not None
    )


FIXED_COST_FLOOR = 0.3
"""The plot's lowest ratio, unless a method's own ratio lies lower: the fixed cost, which
falls as 1/P, leaves the axis at large P instead of squashing the rest."""


def plot_floor(records: list[dict[str, Any]]) -> float:
    """The plot's lowest ratio: :data:`FIXED_COST_FLOOR`, or lower to keep every method's
    own ratio (a new result or into ``out=``) in view."""
    measured = [
        float(r[k]) for r in records for k in ("ratio_to_copy", "out_ratio_to_copy") if r.get(k)
    ]
    return min([FIXED_COST_FLOOR] + [0.8 * ratio for ratio in measured])


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_counts = sorted({r["tasks"] for r in records})
    fig, axes = plt.subplots(
        1, len(task_counts), figsize=(3.6 * len(task_counts), 3.6), sharey=True, squeeze=False
    )
    cheap_methods = sorted({r["method"] for r in records if r["cheap"]})
    bottom = plot_floor(records)
    colours = {method: f"C{index}" for index, method in enumerate(cheap_methods)}
    for ax, tasks in zip(axes[0], task_counts):
        subset = [r for r in records if r["tasks"] == tasks]
        others_labelled = False
        for method in sorted({r["method"] for r in subset}):
            points = _series(subset, method, "ratio_to_copy")
            if not points:
                continue
            if not is_cheap(method, tasks):  # context: every other method, in grey
                label = None if others_labelled else "other methods"
                ax.plot(*zip(*points), color="0.75", linewidth=0.7, label=label, zorder=1)
                others_labelled = True
                continue
            ax.plot(*zip(*points), "-", marker=".", color=colours[method], label=method)
            into = _series(subset, method, "out_ratio_to_copy")
            if into:
                ax.plot(
                    *zip(*into),
                    "--",
                    marker="x",
                    color=colours[method],
                    label=f"{method}, out=",
                    linewidth=1,
                )
            fixed = _series(subset, method, "fixed_ratio_to_copy")
            if fixed:  # falls as 1/P: below the axis from about P = 1e7
                ax.plot(
                    *zip(*fixed),
                    ":",
                    marker="o",
                    markersize=3,
                    fillstyle="none",
                    color=colours[method],
                    label=f"{method}, fixed cost",
                    linewidth=1,
                )
        ax.axhline(GOAL, color="k", linewidth=0.8, linestyle=":", label=f"goal ({GOAL:g}x)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom)
        ax.set_title(f"T = {tasks}")
        ax.set_xlabel("P")
    axes[0][0].set_ylabel("time of resolve / time of copy")
    # One legend for all panels, from the one with the most entries (T = 2 has pcgrad).
    handles, labels = max(
        (ax.get_legend_handles_labels() for ax in axes[0]), key=lambda h: len(h[1])
    )
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(
        "kernel",
        "Throughput of resolve() on large matrices against a same-size copy.",
        "small matrices only (seconds)",
    )
    parser.add_argument(
        "--sizes",
        nargs="*",
        type=_common.positive_size,
        default=None,
        help="values of P (default 1e5 1e6 1e7 1e8)",
    )
    parser.add_argument(
        "--tasks",
        nargs="*",
        type=_common.positive_int,
        default=None,
        help="values of T (default 2 4 8 16)",
    )
    parser.add_argument(
        "--max-gib",
        type=_common.positive_float,
        default=2.0,
        help="skip matrices larger than this (default 2 GiB)",
    )
    parser.add_argument(
        "--repeats",
        type=_common.positive_int,
        default=None,
        help="interleaved timed pairs (default 5)",
    )
    parser.add_argument(
        "--min-sample-ms",
        type=_common.non_negative_float,
        default=None,
        help="time shorter calls back to back for this long, in milliseconds "
        f"(default {MIN_SAMPLE_SECONDS * 1e3:g})",
    )
    parser.add_argument("--profile", action="store_true", help="profile the cheap methods")
    parser.add_argument("--threads", type=_common.positive_int, default=None)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1000, 10_000] if args.smoke else [10**5, 10**6, 10**7, 10**8]
    if args.tasks is None:
        args.tasks = [2, 4] if args.smoke else [2, 4, 8, 16]
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 5
    if args.min_sample_ms is None:
        args.min_sample_ms = 0.0 if args.smoke else MIN_SAMPLE_SECONDS * 1e3
    args.min_sample_seconds = args.min_sample_ms / 1e3
    if args.threads is None:
        args.threads = 1 if args.smoke else torch.get_num_threads()
    for option, values in (("--sizes", args.sizes), ("--tasks", args.tasks)):
        if not values:
            parser.error(f"argument {option}: expected at least one value")
    args.sizes = list(dict.fromkeys(args.sizes))  # a cell given twice is timed once
    args.tasks = list(dict.fromkeys(args.tasks))
    if not fitting_cells(args.sizes, args.tasks, args.max_gib):
        smallest = min(args.tasks) * min(args.sizes) * 4 / 2**30
        parser.error(
            f"argument --max-gib: no (T, P) cell fits {args.max_gib:g} GiB (the smallest, "
            f"T = {min(args.tasks)} and P = {min(args.sizes):g}, takes {smallest:.3g} GiB)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _common.output_dir(args.out)  # a bad --out fails before any work
    result = run(args)
    write_outputs(result, out)
    return result


if __name__ == "__main__":
    main()
