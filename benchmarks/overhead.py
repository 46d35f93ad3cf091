"""What one training step costs with each resolver, against the plain summed-loss step.

For every model of :data:`benchmarks.models.MODELS`, every registered resolver (both
granularities) and every peer-library method (TorchJD, LibMTL), one training step is:
forward, task gradients, resolution, ``optimizer.step()``. It is timed INTERLEAVED with the
baseline step ``sum(losses).backward(); optimizer.step()`` on the same model and batch, in
the same process: baseline and method alternate (in alternating order) for ``--repeats``
pairs after ``--warmup`` steps of each, and for more pairs until they have taken
``--min-seconds`` (a quick step gets hundreds; ``pairs`` in each record says how many).
Reported: ``ratio_time`` = median(method) / median(baseline), with the 25th and 75th
percentiles of the per-pair ratios and a 95% confidence interval for their median
(:func:`median_interval`).

Head to head: each method gradsurgery shares with a peer is also timed interleaved with
that peer's step directly (gradsurgery at global granularity), in pairs as above (at least
``--head-to-head-repeats`` of them, by default ``--repeats``), and
``head_to_head`` in ``overhead_run.json`` holds the median of the
per-pair ratios ours / theirs, its 95% confidence interval and the ratios' quartiles: one
ratio's noise, where the quotient of the two steps' ratios to the baseline would compound
two. A comparison counts as faster or slower when the interval is on that side of 1.

Peak memory is the most bytes that tensors allocated during one step hold at once, read
from torch's profiler (allocation and free events of its CPU allocator, see
:mod:`benchmarks._memory`): exact, whatever the C allocator does with freed memory, and
blind to memory outside torch's allocator (Python objects, NumPy arrays, oneDNN's scratch
buffers). ``.grad`` is emptied before each measured step, so the step's own gradients
count. ``ratio_memory`` is the median over ``--memory-repeats`` measurements of the
method's peak over the baseline's.

Each model's records are also kept in ``overhead.partial.json`` as it finishes, until every
model the file holds is in the outputs, so that an interrupted run continues with
``--resume`` (one resumed with fewer ``--models`` leaves the others there): a model's ratios
are measured against its own baseline within the model's part of the run, so the models of
several sittings compare as those of one (``overhead.md`` names the models taken from an
earlier sitting, and when they ended). While the file holds finished models, a run without
``--resume`` refuses to start rather than overwrite them.

Run: ``python -m benchmarks.overhead`` (full: about 15 minutes on 2 cores for ``mlp`` and
``conv``, an estimated 20-25 more for ``se_asr``, whose summed-loss step takes about 0.25 s
on one thread) or ``--smoke``; ``--render`` times nothing and rewrites the markdown and the
plots from the JSON outputs of ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import gradsurgery
from benchmarks import _common
from benchmarks._memory import peak_tensor_bytes
from benchmarks.models import MODELS, Workload
from benchmarks.peers import PeerMethod, alias_key, peer_methods, peer_note

GRANULARITIES = ("global", "tensor")
Step = Callable[[], None]

PARTIAL_FILE = "overhead.partial.json"
"""The models finished so far, with what they depend on (see :func:`run`)."""

OVERHEAD_CODE = (
    "gradsurgery",
    "benchmarks/overhead.py",
    "benchmarks/models.py",
    "benchmarks/peers.py",
    "benchmarks/_common.py",
    "benchmarks/_memory.py",
    "examples/asr_se/*.py",
)
"""The files a model's records are computed from (``se_asr`` is the flagship's model)."""

MAX_PAIRS = 1000
"""The most pairs ``--min-seconds`` adds to a cell (1000 pairs of the quickest step here,
about 2.5 ms, take 5 s)."""


# --- memory -----------------------------------------------------------------------------


def peak_step_bytes(step: Step, before: Callable[[], None]) -> int:
    """Peak tensor memory allocated during ``step()`` (``before()`` runs first, unmeasured;
    see :func:`benchmarks._memory.peak_tensor_bytes`)."""
    before()
    return peak_tensor_bytes(step)


# --- steps ------------------------------------------------------------------------------


def baseline_step(workload: Workload, optimizer: torch.optim.Optimizer) -> Step:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _, losses = workload.forward()
        torch.autograd.backward(torch.stack(losses).sum())
        optimizer.step()

    return step


def resolver_step(
    workload: Workload, optimizer: torch.optim.Optimizer, method: str, granularity: str
) -> Step:
    resolver = gradsurgery.get_resolver(method)
    parameters = list(workload.model.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _, losses = workload.forward()
        gradsurgery.backward(losses, parameters, resolver=resolver, granularity=granularity)  # type: ignore[arg-type]
        optimizer.step()

    return step


def peer_step(workload: Workload, optimizer: torch.optim.Optimizer, peer: PeerMethod) -> Step:
    backward = peer.build(workload.shared_parameters(), workload.tasks)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        features, losses = workload.forward()
        backward(features, losses)
        optimizer.step()

    return step


# --- measurement ------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    r"""A distribution-free confidence interval for the median of ``values``: the order
    statistics :math:`x_{(k)}, x_{(n + 1 - k)}` with the largest :math:`k` such that
    :math:`P(B \le k - 1) \le (1 - c) / 2` for :math:`B \sim \mathrm{Bin}(n, 1/2)`
    (the interval then covers the median with probability at least :math:`c`). Below six
    values no such :math:`k` exists at 95%: the whole range is returned."""
    ordered = sorted(values)
    n = len(ordered)
    bound = Fraction((1.0 - confidence) / 2) * 2**n  # exact: 2^n overflows a float at 1024
    below, k = 0, 0  # below = 2^n P(B <= k - 1)
    while k < n and below + math.comb(n, k) <= bound:
        below += math.comb(n, k)
        k += 1
    if k == 0:
        return ordered[0], ordered[-1]
    return ordered[k - 1], ordered[n - k]


def _timed(step: Step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(
    step: Step,
    baseline: Step,
    clear: Callable[[], None],
    *,
    warmup: int,
    repeats: int,
    memory_repeats: int,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Time ``step`` interleaved with ``baseline`` in ``repeats`` pairs, and in more until
    the pairs have taken ``min_seconds`` (at most :data:`MAX_PAIRS`), so that a quick step
    gets the many pairs a difference of a percent or two needs; then their peak memory,
    interleaved."""
    for _ in range(warmup):
        baseline()
        step()
    method_times: list[float] = []
    baseline_times: list[float] = []
    spent = 0.0
    index = 0
    while index < repeats or (spent < min_seconds and index < MAX_PAIRS):
        if index % 2:
            baseline_times.append(_timed(baseline))
            method_times.append(_timed(step))
        else:
            method_times.append(_timed(step))
            baseline_times.append(_timed(baseline))
        spent += method_times[-1] + baseline_times[-1]
        index += 1
    pair_ratios = [m / b for m, b in zip(method_times, baseline_times)]
    record: dict[str, Any] = {
        "pairs": len(pair_ratios),
        "ratio_time": statistics.median(method_times) / statistics.median(baseline_times),
        "ratio_time_pair_median": statistics.median(pair_ratios),
        "ratio_time_q25": _quantile(pair_ratios, 0.25),
        "ratio_time_q75": _quantile(pair_ratios, 0.75),
        "ratio_time_ci95": list(median_interval(pair_ratios)),
        "ms_method": 1e3 * statistics.median(method_times),
        "ms_baseline": 1e3 * statistics.median(baseline_times),
    }
    method_peaks: list[int] = []
    baseline_peaks: list[int] = []
    for _ in range(memory_repeats):
        baseline_peaks.append(peak_step_bytes(baseline, clear))
        method_peaks.append(peak_step_bytes(step, clear))
    if method_peaks:
        ratios = (
            [m / b for m, b in zip(method_peaks, baseline_peaks)] if all(baseline_peaks) else []
        )
        record.update(
            ratio_memory=statistics.median(ratios) if ratios else None,
            mib_method=statistics.median(method_peaks) / 2**20,
            mib_baseline=statistics.median(baseline_peaks) / 2**20,
        )
    else:
        record.update(ratio_memory=None, mib_method=None, mib_baseline=None)
    return record


def shared_direction(workload: Workload, backward: Callable[[], None]) -> Tensor:
    """The ``.grad`` a backward leaves on the shared parameters, flattened."""
    workload.model.zero_grad(set_to_none=True)
    backward()
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
            for p in workload.shared_parameters()
        ]
    )


UNIFORM_FIRST_STEP = (
    "first step: both weightings start uniform, so this checks only the plumbing, not the weighting"
)

FIRST_STEP_NOTES: dict[tuple[str, str], str] = {
    ("libmtl", "dwa"): UNIFORM_FIRST_STEP,
    ("libmtl", "gradnorm"): UNIFORM_FIRST_STEP,
    ("libmtl", "uncertainty"): UNIFORM_FIRST_STEP,
    **{
        (library, "gradvac"): "first step: the target cosines start at 0 in both libraries, "
        "so only conflicting pairs are changed, as by PCGrad; the targets' update is not checked"
        for library in ("torchjd", "libmtl")
    },
}
"""``(library, key of ALIASES)`` -> what the direction check, one step from a fresh state,
cannot see of the method: its first step in both libraries is a plainer method's."""

RANDOM_NOTES: dict[str, tuple[int, str]] = {
    "pcgrad": (3, "random projection order (T > 2): the libraries' draws need not match"),
    "gradvac": (3, "random order of the other tasks (T > 2): the libraries' draws need not match"),
    "rlw": (2, "random weights: both sides are seeded alike, but their draws need not match"),
}
"""Key of ALIASES -> (the fewest tasks at which it draws random numbers, note)."""


def agreement_note(row: dict[str, Any]) -> str:
    """Why a row of the direction check need not agree, or proves less than its cosine
    says: the peer's :attr:`~benchmarks.peers.PeerMethod.note`, and the notes of
    :data:`FIRST_STEP_NOTES` and :data:`RANDOM_NOTES`. Derived from the row's method,
    library and tasks alone, so that it applies to the rows of an earlier run too."""
    key = alias_key(row["method"])
    notes = [peer_note(row["library"], row["method"])]
    notes.append(FIRST_STEP_NOTES.get((row["library"], key), ""))
    fewest, random_note = RANDOM_NOTES.get(key, (0, ""))
    if random_note and row.get("tasks", fewest) >= fewest:
        notes.append(random_note)
    return "; ".join(note for note in notes if note)


def direction_agreement(
    workload: Workload, peers: list[PeerMethod], registered: set[str]
) -> list[dict[str, Any]]:
    """Cosine between gradsurgery's direction and each peer's, same model state and batch,
    with each row's :func:`agreement_note`."""
    rows: list[dict[str, Any]] = []
    parameters = list(workload.model.parameters())
    for peer in peers:
        if peer.method not in registered:
            continue
        row: dict[str, Any] = {
            "model": workload.name,
            "tasks": workload.tasks,
            "method": peer.method,
            "library": peer.library,
        }
        row["note"] = agreement_note(row)
        try:
            torch.manual_seed(0)
            resolver = gradsurgery.get_resolver(peer.method)

            def ours(resolver: Any = resolver) -> None:
                _, losses = workload.forward()
                gradsurgery.backward(losses, parameters, resolver=resolver)

            mine = shared_direction(workload, ours)
            backward = peer.build(workload.shared_parameters(), workload.tasks)

            def theirs(backward: Any = backward) -> None:
                features, losses = workload.forward()
                backward(features, losses)

            torch.manual_seed(0)
            other = shared_direction(workload, theirs)
            cosine = torch.nn.functional.cosine_similarity(
                mine.double(), other.double(), dim=0
            ).item()
            row.update(
                cosine=cosine, norm_ratio=(mine.norm() / other.norm().clamp(min=1e-30)).item()
            )
        except Exception as error:
            row.update(cosine=None, norm_ratio=None, error=_common.error_text(error))
        rows.append(row)
    workload.model.zero_grad(set_to_none=True)
    return rows


# --- the run ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested model, method and peer; with ``args.resume``, the models kept in
    ``overhead.partial.json`` of ``args.out`` by an interrupted run of the same settings,
    methods, peers, torch, machine (CPU, cores, timing-relevant environment) and committed
    code (:data:`OVERHEAD_CODE`, unchanged since) are taken as they are."""
    torch.set_num_threads(args.threads)
    info = _common.machine(args.seed)
    selected = _common.methods(args.methods)
    peers: list[PeerMethod] = []
    peer_missing: dict[str, str] = {}
    if args.no_peers:
        peer_missing = {library: "not run (--no-peers)" for library in ("torchjd", "libmtl")}
    else:
        peers, peer_missing = peer_methods()
    configs = [
        (name, tasks)
        for name, (_, task_counts) in MODELS.items()
        if not args.models or name in args.models
        for tasks in (task_counts[:1] if args.smoke else task_counts)
    ]
    settings = {
        "warmup": args.warmup,
        "repeats": args.repeats,
        "head_to_head_repeats": args.head_to_head_repeats,
        "memory_repeats": args.memory_repeats,
        "min_seconds": args.min_seconds,
        "optimizer": "SGD(lr=1e-4)",
    }
    partial = _common.output_dir(args.out) / PARTIAL_FILE
    key = {
        "settings": {**settings, "threads": args.threads, "seed": args.seed, "smoke": args.smoke},
        "methods": selected,
        "peers": sorted(f"{peer.library}:{peer.method}" for peer in peers),
        "torch": info["torch"],
        "machine": {name: info[name] for name in ("cpu", "cores", "environment")},
        "code": _common.code_version(OVERHEAD_CODE),
    }
    finished = _common.kept_parts(partial, key, args.resume)
    parts: dict[str, Any] = {}
    to_measure = [(name, tasks) for name, tasks in configs if f"{name}-T{tasks}" not in finished]
    shared_methods = [peer for peer in peers if peer.method in selected]
    steps = len(to_measure) * (2 * len(selected) + len(peers) + len(shared_methods))
    with _common.Progress(steps, "overhead", args.verbose) as progress:
        for model_name, tasks in configs:
            label = f"{model_name}-T{tasks}"
            if label in finished:
                parts[label] = finished[label]
                continue
            parts[label] = _measure_model(args, model_name, tasks, selected, peers, progress)
            _common.keep_parts(partial, key, {**finished, **parts})
    info["resumed"] = {label: parts[label]["ended"] for label in parts if label in finished}
    info["load_average_1_5_15_min_at_end"] = _common.load_average()
    return {
        "machine": info,
        "records": [record for part in parts.values() for record in part["records"]],
        "direction_agreement": [row for part in parts.values() for row in part["agreement"]],
        "head_to_head": [row for part in parts.values() for row in part["head_to_head"]],
        "peers_missing": peer_missing,
        "settings": settings,
    }


def _measure_model(
    args: argparse.Namespace,
    model_name: str,
    tasks: int,
    selected: list[str],
    peers: list[PeerMethod],
    progress: _common.Progress,
) -> dict[str, Any]:
    """One model's records (every method and peer against its summed-loss step), the
    head-to-head timing of each method gradsurgery shares with a peer, and direction
    agreement, with the time it ended."""
    records: list[dict[str, Any]] = []
    builder, _ = MODELS[model_name]
    workload = builder(tasks, args.seed, args.smoke)
    shared, total = workload.parameter_count()
    optimizer = torch.optim.SGD(workload.model.parameters(), lr=1e-4)
    baseline = baseline_step(workload, optimizer)

    def clear(optimizer: torch.optim.Optimizer = optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    entries: list[tuple[str, str, str, Callable[[], Step]]] = []
    for method in selected:
        for granularity in GRANULARITIES:
            entries.append(
                (
                    "gradsurgery",
                    method,
                    granularity,
                    functools.partial(resolver_step, workload, optimizer, method, granularity),
                )
            )
    for peer in peers:
        entries.append(
            (
                peer.library,
                peer.method,
                "global",
                functools.partial(peer_step, workload, optimizer, peer),
            )
        )
    for library, method, granularity, make in entries:
        record: dict[str, Any] = {
            "library": library,
            "model": model_name,
            "method": method,
            "granularity": granularity,
            "tasks": tasks,
            "shared_parameters": shared,
            "parameters": total,
        }
        try:
            torch.manual_seed(args.seed)
            step = make()
            record.update(
                measure(
                    step,
                    baseline,
                    clear,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    memory_repeats=args.memory_repeats,
                    min_seconds=args.min_seconds,
                )
            )
        except Exception as error:
            record.update(ratio_time=None, ratio_memory=None, error=_common.error_text(error))
        records.append(record)
        progress.advance(_progress(record))
    head_to_head: list[dict[str, Any]] = []
    for peer in peers:
        if peer.method in selected:
            row = _head_to_head(args, model_name, workload, optimizer, clear, peer)
            head_to_head.append(row)
            progress.advance(_head_to_head_progress(row))
    # Fresh model state for the direction check: same weights for everyone.
    fresh = builder(tasks, args.seed, args.smoke)
    agreement = direction_agreement(fresh, peers, set(selected))
    return {
        "records": records,
        "head_to_head": head_to_head,
        "agreement": agreement,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _head_to_head(
    args: argparse.Namespace,
    model_name: str,
    workload: Workload,
    optimizer: torch.optim.Optimizer,
    clear: Callable[[], None],
    peer: PeerMethod,
) -> dict[str, Any]:
    """gradsurgery's step (global granularity) timed interleaved with the peer's step of the
    same method, on the same model and batch: ``ratio_time`` is the median of the per-pair
    ratios ours / theirs, with its confidence interval (which :func:`_verdict` reads) and
    their quartiles. Pairing the two directly keeps the comparison's noise to that of one
    ratio, where dividing the two steps' ratios to the summed-loss step compounds two."""
    row: dict[str, Any] = {
        "model": model_name,
        "tasks": workload.tasks,
        "method": peer.method,
        "library": peer.library,
    }
    try:
        torch.manual_seed(args.seed)
        ours = resolver_step(workload, optimizer, peer.method, "global")
        theirs = peer_step(workload, optimizer, peer)
        timed = measure(
            ours,
            theirs,
            clear,
            warmup=args.warmup,
            repeats=args.head_to_head_repeats,
            memory_repeats=0,
            min_seconds=args.min_seconds,
        )
        row.update(
            ratio_time=timed["ratio_time_pair_median"],
            ratio_time_q25=timed["ratio_time_q25"],
            ratio_time_q75=timed["ratio_time_q75"],
            ratio_time_ci95=timed["ratio_time_ci95"],
            pairs=timed["pairs"],
            ms_ours=timed["ms_method"],
            ms_theirs=timed["ms_baseline"],
        )
    except Exception as error:
        row.update(ratio_time=None, error=_common.error_text(error))
    return row


def _head_to_head_progress(row: dict[str, Any]) -> str:
    where = f"{row['model']}-T{row['tasks']} {row['method']:14s} ours / {row['library']:7s}"
    if row.get("error"):
        return f"{where} FAILED {row['error']}"
    return f"{where} time x{row['ratio_time']:.2f}"


def _progress(record: dict[str, Any]) -> str:
    if record.get("error"):
        where = f"{record['model']}-T{record['tasks']} {record['library']}"
        return f"{where} {record['method']} FAILED {record['error']}"
    memory = record["ratio_memory"]
    return (
        f"{record['model']}-T{record['tasks']} {record['library']:11s} {record['method']:14s} "
        f"{record['granularity']:6s} time x{record['ratio_time']:.2f} "
        f"memory x{memory if memory is None else round(memory, 2)}"
    )


# --- outputs ----------------------------------------------------------------------------


RECORDS_FILE = "overhead.json"
RUN_FILE = "overhead_run.json"
"""The JSON outputs: the records (a list), and the rest of the result (machine, settings,
head to head, direction agreement, missing peers)."""


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """The JSON outputs, then :func:`render_outputs`."""
    _common.write_json(out / RECORDS_FILE, result["records"])
    _common.write_json(out / RUN_FILE, {k: v for k, v in result.items() if k != "records"})
    render_outputs(result, out)


def render_outputs(result: dict[str, Any], out: Path) -> None:
    """``overhead.md``, ``overhead.png`` and ``overhead_peers.png`` from a result (what
    :func:`load_result` reads back from the JSON outputs)."""
    (out / "overhead.md").write_text(markdown(result))
    plot(result["records"], out / "overhead.png")
    if result.get("head_to_head"):
        plot_head_to_head(result["head_to_head"], out / "overhead_peers.png")


def load_result(out: Path) -> dict[str, Any]:
    """The result whose JSON outputs :func:`write_outputs` wrote to ``out``: what
    ``overhead_run.json`` holds, with the records of ``overhead.json``."""
    try:
        run_part = json.loads((out / RUN_FILE).read_text())
        records = json.loads((out / RECORDS_FILE).read_text())
        if not isinstance(run_part, dict) or not isinstance(records, list):
            raise ValueError("not the JSON objects a run writes")
        for name in ("machine", "direction_agreement", "head_to_head", "peers_missing"):
            if name not in run_part:
                raise ValueError(f"{RUN_FILE} has no {name!r}")
    except ValueError as error:
        raise SystemExit(f"--render: {out} does not hold a run's outputs ({error})") from None
    return {**run_part, "records": records}


def _row_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["library"], record["method"], record["granularity"]


def _verdict(row: dict[str, Any]) -> str:
    """``faster``/``slower`` when the 95% confidence interval of the median per-pair ratio
    ours / theirs lies below/above 1, else ``within the noise``."""
    low, high = row["ratio_time_ci95"]
    if high < 1:
        return "faster"
    if low > 1:
        return "slower"
    return "within the noise"


def _versus_peers(head_to_head: list[dict[str, Any]], columns: list[tuple[str, int]]) -> list[str]:
    """Lines of the section timing gradsurgery (global) head to head with each peer, method
    by method: the median per-pair ratio ours / theirs with its 95% confidence interval."""
    cells: dict[tuple[str, str], dict[tuple[str, int], dict[str, Any]]] = {}
    for row in head_to_head:
        cells.setdefault((row["method"], row["library"]), {})[(row["model"], row["tasks"])] = row
    if not cells:
        return []
    table: list[list[Any]] = []
    verdicts: dict[str, list[str]] = {"faster": [], "slower": [], "within the noise": []}
    for (method, library), by_column in sorted(cells.items(), key=lambda item: item[0][::-1]):
        line: list[Any] = [method, library]
        for column in columns:
            timed = by_column.get(column)
            if timed is None or timed.get("ratio_time") is None:
                line.append("–" if timed is None else "failed")
                continue
            verdict = _verdict(timed)
            mark = {"faster": "", "slower": " ✗", "within the noise": " ~"}[verdict]
            low, high = timed["ratio_time_ci95"]
            line.append(f"{timed['ratio_time']:.3f} ({low:.3f}-{high:.3f}){mark}")
            verdicts[verdict].append(f"{method} vs {library} on {column[0]} T={column[1]}")
        table.append(line)
    compared = sum(len(cases) for cases in verdicts.values())
    summary = f"gradsurgery is faster in {len(verdicts['faster'])} of {compared} comparisons"
    for verdict in ("slower", "within the noise"):
        if verdicts[verdict]:
            summary += f"; {verdict} in {len(verdicts[verdict])}: {', '.join(verdicts[verdict])}"
    header = ["method", "peer"] + [f"{m} T={t}" for m, t in columns]
    return [
        "## Against the peers, head to head",
        "",
        "For each method both libraries have, gradsurgery's step (global granularity) and "
        "the peer's are timed interleaved with each other, on the same model and batch: "
        "the median of the per-pair ratios ours / theirs, with its 95% confidence interval "
        "(distribution-free, from the order statistics); below 1, gradsurgery's step is "
        "faster. A cell is counted faster or slower only when the interval is on that side "
        "of 1 (✗: slower; ~: within the noise). `overhead_run.json` also has each cell's "
        f"number of pairs and the quartiles of the pairs' ratios. {summary}.",
        "",
        _common.markdown_table(header, table),
        "",
    ]


def _agreement_number(value: float | None) -> str | None:
    """A cosine or norm ratio to six digits: three (the tables' default) show 0.99955 as 1."""
    return None if value is None else f"{value:.6g}"


def _baseline_rows(
    records: list[dict[str, Any]], columns: list[tuple[str, int]]
) -> list[list[Any]]:
    """One row per model: its size, and the median (range) of the baseline step's time
    and peak memory over its records."""

    def median_and_range(values: list[float], digits: int) -> str | None:
        if not values:
            return None
        low, mid, high = min(values), statistics.median(values), max(values)
        return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"

    rows = []
    for model, tasks in columns:
        cell = [
            r
            for r in records
            if (r["model"], r["tasks"]) == (model, tasks) and r.get("ms_baseline") is not None
        ]
        if not cell:
            continue
        memory = [r["mib_baseline"] for r in cell if r.get("mib_baseline") is not None]
        rows.append(
            [
                f"{model} T={tasks}",
                cell[0]["shared_parameters"],
                cell[0]["parameters"],
                median_and_range([r["ms_baseline"] for r in cell], 2),
                median_and_range(memory, 2),
            ]
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    records = result["records"]
    columns = sorted(
        {(r["model"], r["tasks"]) for r in records}, key=lambda c: (c[0] != "mlp", c[0], c[1])
    )
    rows: dict[tuple[str, str, str], dict[tuple[str, int], dict[str, Any]]] = {}
    for record in records:
        rows.setdefault(_row_key(record), {})[(record["model"], record["tasks"])] = record
    order = sorted(rows, key=lambda k: (k[1], k[0] != "gradsurgery", k[0], k[2]))
    header = ["method", "library", "granularity"] + [f"{m} T={t}" for m, t in columns]

    def cell(record: dict[str, Any] | None, key: str) -> str:
        if record is None:
            return "–"
        if record.get("error"):
            return "failed"
        value = record.get(key)
        if value is None:
            return "–"
        if key == "ratio_time":
            return f"{value:.2f} [{record['ratio_time_q25']:.2f}, {record['ratio_time_q75']:.2f}]"
        return f"{value:.2f}"

    time_rows = [
        [k[1], k[0], k[2]] + [cell(rows[k].get(c), "ratio_time") for c in columns] for k in order
    ]
    memory_rows = [
        [k[1], k[0], k[2]] + [cell(rows[k].get(c), "ratio_memory") for c in columns] for k in order
    ]
    base_rows = _baseline_rows(records, columns)
    failures = [
        [r["library"], r["method"], r["granularity"], f"{r['model']} T={r['tasks']}", r["error"]]
        for r in records
        if r.get("error")
    ]
    seen_failures: dict[tuple[str, str, str], list[str]] = {}
    for library, method, _granularity, where, error in failures:
        seen_failures.setdefault((library, method, error), []).append(where)
    agreement = result["direction_agreement"]
    agreement_rows = [
        [
            a["method"],
            a["library"],
            f"{a['model']}",
            _agreement_number(a.get("cosine")),
            _agreement_number(a.get("norm_ratio")),
            agreement_note(a),
            a.get("error", ""),
        ]
        for a in agreement
    ]
    parts = [
        "# Overhead of one training step, relative to the summed-loss step",
        "",
        "Produced by `python -m benchmarks.overhead` (see `benchmarks/README.md`). "
        "Each cell: median step time with the method / median summed-loss step time, "
        "measured interleaved in the same process, with [25th, 75th] percentiles of the "
        "per-pair ratios. Peers are called through their own APIs (TorchJD "
        "`mtl_backward` + `jac_to_grad`; LibMTL weighting `.backward`), global granularity.",
        "",
        "## Machine",
        "",
        _common.machine_markdown(result["machine"]),
        f"- settings: `{result['settings']}`",
        "",
        "## Baseline (summed-loss step) per model",
        "",
        "The median over the records of the model (each measures its own baseline, "
        "interleaved with its method), with their range.",
        "",
        _common.markdown_table(
            ["model", "shared params", "params", "ms / step", "peak step MiB"], base_rows
        ),
        "",
        "## Time ratio (median [q25, q75])",
        "",
        _common.markdown_table(header, time_rows),
        "",
        *_versus_peers(result.get("head_to_head", []), columns),
        "## Peak memory ratio",
        "",
        "Peak bytes held by tensors allocated during one step (method / summed-loss "
        "baseline); method in the module docstring of `benchmarks/overhead.py`.",
        "",
        _common.markdown_table(header, memory_rows),
        "",
        "## Do the directions agree with the peers?",
        "",
        "Cosine between gradsurgery's direction (global granularity, default options) and "
        "the peer's, on the shared parameters, same weights and batch, one step from a fresh "
        "state. The note says why a row need not agree (random choices, different defaults "
        "or variants), why the norms differ where the directions agree (`norm:`, the "
        "libraries' scale conventions) or what its agreement does not show (a first step "
        "that both libraries take as a plainer method).",
        "",
        _common.markdown_table(
            ["method", "peer", "model", "cosine", "norm ours/theirs", "note", "error"],
            agreement_rows,
        ),
        "",
        "## Peers that could not be run",
        "",
    ]
    for library, reason in result["peers_missing"].items():
        parts.append(f"- {library}: {reason}")
    if not result["peers_missing"]:
        parts.append("None: both are installed (their failing methods are listed below).")
    parts += ["", "## Failures", ""]
    if not seen_failures:
        parts.append("None.")
    for (library, method, error), wheres in sorted(seen_failures.items()):
        parts.append(f"- {library} `{method}` on {', '.join(sorted(set(wheres)))}: `{error}`")
    return "\n".join(parts) + "\n"


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = sorted(
        {(r["model"], r["tasks"]) for r in records}, key=lambda c: (c[0] != "mlp", c[0], c[1])
    )
    row_keys = sorted(
        {_row_key(r) for r in records}, key=lambda k: (k[1], k[0] != "gradsurgery", k[0], k[2])
    )
    lookup = {(_row_key(r), (r["model"], r["tasks"])): r for r in records}
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.3 * len(columns) * 2, 1.2 + 0.24 * len(row_keys)))
    for ax, key, title in zip(axes, ("ratio_time", "ratio_memory"), ("time", "peak memory")):
        data = np.full((len(row_keys), len(columns)), np.nan)
        for i, row in enumerate(row_keys):
            for j, column in enumerate(columns):
                value = lookup.get((row, column), {}).get(key)
                if value is not None:
                    data[i, j] = value
        image = ax.imshow(np.log2(data), cmap="RdYlGn_r", vmin=-1, vmax=4, aspect="auto")
        for i in range(len(row_keys)):
            for j in range(len(columns)):
                text = _plot_text(lookup.get((row_keys[i], columns[j])), data[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(columns)), [f"{m}\nT={t}" for m, t in columns], fontsize=7)
        ax.set_yticks(
            range(len(row_keys)),
            [f"{m} ({lib if lib != 'gradsurgery' else g})" for lib, m, g in row_keys],
            fontsize=6,
        )
        ax.set_title(f"{title} / summed-loss step")
        fig.colorbar(image, ax=ax, label="log2 ratio", shrink=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_text(record: dict[str, Any] | None, value: float) -> str:
    """A cell's text in ``overhead.png``: the ratio; ``fail`` where the step raised; ``–``
    where there is no record, or no ratio without an error (no memory measurement, or a
    baseline that allocated nothing)."""
    if record is not None and record.get("error"):
        return "fail"
    return "–" if math.isnan(value) else f"{value:.2g}"


def plot_head_to_head(head_to_head: list[dict[str, Any]], path: Path) -> None:
    """One cell per method, peer and model: the median per-pair ratio ours / theirs,
    coloured green below 1 and red above; cells whose 95% interval contains 1 are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = sorted(
        {(r["model"], r["tasks"]) for r in head_to_head}, key=lambda c: (c[0] != "mlp", c[0], c[1])
    )
    keys = sorted({(r["library"], r["method"]) for r in head_to_head})
    lookup = {((r["library"], r["method"]), (r["model"], r["tasks"])): r for r in head_to_head}
    data = np.full((len(keys), len(columns)), np.nan)
    fig, ax = plt.subplots(figsize=(3 + 1.1 * len(columns), 1.2 + 0.26 * len(keys)))
    for i, key in enumerate(keys):
        for j, column in enumerate(columns):
            row = lookup.get((key, column))
            if row is None or row.get("ratio_time") is None:
                ax.text(j, i, "–" if row is None else "fail", ha="center", va="center", fontsize=6)
                continue
            data[i, j] = row["ratio_time"]
            ax.text(j, i, f"{row['ratio_time']:.2f}", ha="center", va="center", fontsize=6)
            if _verdict(row) == "within the noise":
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", linewidth=0, alpha=0.4
                    )
                )
    image = ax.imshow(np.log2(data), cmap="RdYlGn_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{m}\nT={t}" for m, t in columns], fontsize=7)
    ax.set_yticks(range(len(keys)), [f"{m} vs {lib}" for lib, m in keys], fontsize=7)
    ax.set_title("gradsurgery step / peer step (hatched: 95% interval contains 1)", fontsize=8)
    fig.colorbar(image, ax=ax, label="log2 ratio", shrink=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _common.benchmark_parser(
        "overhead",
        (
            "Time and peak memory of one training step with each resolver and each peer "
            "method, as ratios to the summed-loss step measured interleaved with it."
        ),
        "tiny models, few steps (seconds)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), help=f"only these models ({', '.join(MODELS)})"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip TorchJD and LibMTL")
    parser.add_argument(
        "--repeats", type=_common.positive_int, default=None, help="timed pairs (default 30)"
    )
    parser.add_argument(
        "--head-to-head-repeats",
        type=_common.positive_int,
        default=None,
        help="timed pairs of each head-to-head comparison with a peer, at least "
        "(default: --repeats)",
    )
    parser.add_argument(
        "--min-seconds",
        type=_common.non_negative_float,
        default=None,
        help="time each cell in more pairs until they take this long (default 1; smoke 0)",
    )
    parser.add_argument(
        "--warmup", type=_common.non_negative_int, default=None, help="warm-up steps (default 3)"
    )
    parser.add_argument(
        "--memory-repeats", type=_common.positive_int, default=None, help="(default 3)"
    )
    parser.add_argument(
        "--threads",
        type=_common.positive_int,
        default=None,
        help="torch threads (default: torch's; smoke: 1)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"keep the models an interrupted run left in OUT/{PARTIAL_FILE} (same settings, "
        "methods, peers, torch and committed code) and do the rest; without it, a run refuses "
        "to overwrite such a file",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help=f"time nothing: rewrite OUT's overhead.md and PNG plots from OUT/{RUN_FILE} "
        f"and OUT/{RECORDS_FILE} (what a run wrote), e.g. after a change of the tables; "
        "the other options are ignored",
    )
    _common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        out = _common.RESULTS if args.out is None else Path(args.out)
        missing = [name for name in (RUN_FILE, RECORDS_FILE) if not (out / name).is_file()]
        if missing:
            parser.error(f"argument --render: {out} has no {' or '.join(missing)}")
    if args.threads is None:
        args.threads = 1 if args.smoke else torch.get_num_threads()
    defaults = (2, 1, 1, 0.0) if args.smoke else (30, 3, 3, 1.0)
    for name, default in zip(("repeats", "warmup", "memory_repeats", "min_seconds"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.head_to_head_repeats is None:
        args.head_to_head_repeats = args.repeats
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _common.output_dir(args.out)
    if args.render:
        result = load_result(out)
        render_outputs(result, out)
        return result
    result = run(args)
    write_outputs(result, out)
    models = {f"{row['model']}-T{row['tasks']}" for row in result["records"]}
    left = _common.drop_parts(out / PARTIAL_FILE, models)
    if left and args.verbose:
        print(f"{out / PARTIAL_FILE} keeps the finished models {left} for a later --resume")
    return result


if __name__ == "__main__":
    main()
