"""Every resolver on the 2-D two-task toy problem, with the Nash-MTL protocol.

Five starts (:data:`benchmarks.toy_problem.NASH_MTL_STARTS`), balanced (``scale = 1``) and
imbalanced (``scale = 0.1``: :math:`f_1` multiplied by 0.1) losses, Adam with lr 1e-3,
``--steps`` steps (the Nash-MTL paper uses 35k). Each start has its own resolver instance
(stateful resolvers keep their own state). Primary/auxiliary methods also run with
``primary=0`` (task :math:`f_1`), unless they take task 0 without it
(:func:`benchmarks._common.variants`); ``single_task_f1`` is Adam on :math:`f_1` alone, the
reference for the primary-task criterion: reach :math:`\\arg\\min f_1` (within
``F1_TOLERANCE`` of its minimum) at least as reliably and as fast as single-task training.

Writes ``toy.json``, ``toy.md``, ``toy.png`` (small multiples) and ``toy/<method>.png``.
Each finished run is also kept in ``toy.partial.json`` until every run the file holds is in
the outputs, so that a run interrupted (it takes about 30 minutes on one core) continues
with ``--resume`` (one resumed with fewer ``--labels`` leaves the others there): each
label's optimisation is seeded on its own, so the results are those of a straight run.
While the file holds finished runs, a run without ``--resume`` refuses to start rather
than overwrite them.

Run: ``python -m benchmarks.toy --steps 35000`` or ``--smoke``.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import gradsurgery
from benchmarks import _common
from benchmarks.toy_problem import NASH_MTL_STARTS, toy_losses

SINGLE_TASK = "single_task_f1"
"""Label of the reference run: Adam on f_1 alone."""
SCALES = (1.0, 0.1)
F1_MIN = -19.99  # f_1's minimum near (7, -8.43), checked by a grid search in _f1_minimum
F1_TOLERANCE = 0.05
PARETO_X2 = (-8.5, -8.3)


def _f1_minimum() -> float:
    """min f_1 by a fine grid around (7, -8.43): the reference for the primary criterion."""
    x1 = torch.linspace(6.5, 7.5, 201, dtype=torch.float64)
    x2 = torch.linspace(-8.8, -8.0, 201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(x1, x2, indexing="ij"), dim=-1)
    return float(toy_losses(grid)[0].min())


LOSS_FLOOR = 21.0
"""Loss-aware resolvers see :math:`f_i + 21 s_i` (FAMO's toy sets :math:`L^* = -21 s`):
the toy losses are negative, and log-based methods need positive losses. A constant shift
leaves every gradient unchanged."""


def _is_stateless(method: str, primary: int | None) -> bool:
    """Whether ``method`` can resolve all runs in one batched call (one block per run): it
    needs no losses, keeps no state and draws no random numbers (RLW draws its weights
    once per call, which every block of the call, so every run, would share)."""
    resolver = gradsurgery.get_resolver(method)
    if resolver.needs_losses:
        return False
    probe = torch.tensor([[1.0, 0.5], [-0.5, 1.0]], dtype=torch.float64)
    directions = []
    for seed in (0, 1):  # (optimise seeds the global generator again afterwards)
        torch.manual_seed(seed)
        directions.append(resolver(probe, primary=primary))
    return not resolver.state_dict() and torch.equal(*directions)


def optimise(
    method: str | None, primary: int | None, steps: int, record_every: int, seed: int
) -> dict[str, Any]:
    """Adam from every start at both scales; ``method=None`` is single-task Adam on f_1.

    Stateless resolvers that need no losses resolve every run in ONE call, one block per
    run (:meth:`~gradsurgery.resolvers.Resolver.resolve_blocks`); the others get one
    instance per run, called on that run's 2 x 2 matrix and shifted losses.
    """
    starts = torch.tensor(NASH_MTL_STARTS, dtype=torch.float64)
    scales = torch.tensor(SCALES, dtype=torch.float64).repeat_interleave(len(starts))
    x = starts.repeat(len(SCALES), 1).clone().requires_grad_(True)
    runs = x.shape[0]
    optimizer = torch.optim.Adam([x], lr=1e-3)
    torch.manual_seed(seed)
    batched = method is not None and _is_stateless(method, primary)
    torch.manual_seed(seed)
    count = 1 if batched else runs
    resolvers = [gradsurgery.get_resolver(method) for _ in range(count)] if method else []
    f1_min = _f1_minimum()
    paths = [[x[i].detach().tolist()] for i in range(runs)]
    reached: list[int | None] = [None] * runs
    for step in range(1, steps + 1):
        f1, f2 = toy_losses(x)
        f1 = f1 * scales
        with torch.no_grad():
            hit = (f1 / scales) <= f1_min + F1_TOLERANCE
        if bool(hit.any()):
            for i in range(runs):
                if reached[i] is None and bool(hit[i]):
                    reached[i] = step - 1
        g1 = torch.autograd.grad(f1.sum(), x, retain_graph=method is not None)[0]
        if method is None:
            direction = g1
        elif batched:
            G = torch.stack([g1.reshape(-1), torch.autograd.grad(f2.sum(), x)[0].reshape(-1)])
            resolution = resolvers[0].resolve_blocks(G, [2] * runs, primary=primary)
            direction = resolution.direction.reshape(runs, 2)
        else:
            g2 = torch.autograd.grad(f2.sum(), x)[0]
            shift = LOSS_FLOOR * torch.stack([scales, torch.ones_like(scales)], dim=1)
            losses = torch.stack([f1, f2], dim=1).detach() + shift
            direction = torch.stack(
                [
                    resolvers[i](torch.stack([g1[i], g2[i]]), primary=primary, losses=losses[i])
                    for i in range(runs)
                ]
            )
        if not bool(torch.isfinite(direction).all()):
            raise FloatingPointError(f"non-finite direction at step {step}")
        optimizer.zero_grad()
        x.grad = direction
        optimizer.step()
        if step % record_every == 0 or step == steps:
            for i in range(runs):
                paths[i].append([round(v, 3) for v in x[i].detach().tolist()])
    with torch.no_grad():
        f1_end, f2_end = toy_losses(x)
    return {
        "batched": batched,
        "runs": [
            {
                "start": list(NASH_MTL_STARTS[i % len(starts)]),
                "scale": float(scales[i]),
                "end": x[i].detach().tolist(),
                "f1": float(f1_end[i]),
                "f2": float(f2_end[i]),
                "on_pareto_set": _on_pareto(x[i].detach()),
                "reached_f1_min_at_step": reached[i],
                "path": paths[i],
            }
            for i in range(runs)
        ],
    }


def _on_pareto(x: torch.Tensor) -> bool:
    return bool(-7.05 <= x[0] <= 7.05 and PARETO_X2[0] <= x[1] <= PARETO_X2[1])


PARTIAL_FILE = "toy.partial.json"
"""The runs finished so far, with what they depend on (see :func:`run`)."""


TOY_CODE = (
    "gradsurgery",
    "benchmarks/toy.py",
    "benchmarks/toy_problem.py",
    "benchmarks/_common.py",
)
"""The files the toy's results are computed from."""


def _code_version() -> str | None:
    """The last commit that changed :data:`TOY_CODE`, or ``None`` when it has uncommitted
    changes (or git cannot tell)."""
    return _common.code_version(TOY_CODE)


def planned_runs(
    methods: Sequence[str] | None, labels: Sequence[str] | None = None
) -> list[tuple[str, str | None, int | None]]:
    """``(label, method, primary)`` of every run: ``single_task_f1``, then every variant of
    the ``methods`` (:func:`benchmarks._common.variants`); only those in ``labels`` if any
    are given."""
    out: list[tuple[str, str | None, int | None]] = [(SINGLE_TASK, None, None)]
    out += _common.variants(methods)
    if labels:
        out = [entry for entry in out if entry[0] in labels]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested run; with ``args.resume``, those kept in ``toy.partial.json`` of
    ``args.out`` by an interrupted run of the same steps, seed, torch and committed toy
    code (:data:`TOY_CODE`, unchanged since) are taken as they are."""
    torch.set_num_threads(1)
    info = _common.machine(args.seed)
    planned = planned_runs(args.methods, args.labels)
    partial = _common.output_dir(args.out) / PARTIAL_FILE
    key = {"steps": args.steps, "seed": args.seed, "torch": info["torch"], "code": _code_version()}
    finished = _common.kept_parts(partial, key, args.resume)
    results: dict[str, Any] = {}
    record_every = max(1, args.steps // 100)
    to_run = [entry for entry in planned if entry[0] not in finished]
    results.update({label: finished[label] for label, _, _ in planned if label in finished})
    with _common.Progress(len(to_run), "toy", args.verbose) as progress:
        for label, method, primary in to_run:
            start = time.perf_counter()
            try:
                result = optimise(method, primary, args.steps, record_every, args.seed)
            except Exception as error:
                result = {"error": _common.error_text(error)}
            result.update(method=method, primary=primary, seconds=time.perf_counter() - start)
            results[label] = result
            _common.keep_parts(partial, key, {**finished, **results})
            progress.advance(f"{label}: {result.get('error') or _summary(result)}")
    results = {label: results[label] for label, _, _ in planned}  # in the planned order
    info["resumed"] = [label for label in results if label in finished]
    info["load_average_1_5_15_min_at_end"] = _common.load_average()
    return {
        "machine": info,
        "settings": {
            "steps": args.steps,
            "lr": 1e-3,
            "optimizer": "Adam",
            "scales": SCALES,
            "f1_min": _f1_minimum(),
            "f1_tolerance": F1_TOLERANCE,
        },
        "results": results,
    }


def _summary(result: dict[str, Any]) -> str:
    runs = result["runs"]
    pareto = sum(r["on_pareto_set"] for r in runs)
    primary = sum(r["reached_f1_min_at_step"] is not None for r in runs)
    return f"{pareto}/{len(runs)} on the Pareto set, {primary}/{len(runs)} at argmin f1"


# --- outputs ----------------------------------------------------------------------------


def write_outputs(result: dict[str, Any], out: Path, *, per_method: bool = True) -> None:
    _common.write_json(out / "toy.json", result, indent=None)
    (out / "toy.md").write_text(markdown(result))
    plot_all(result, out / "toy.png")
    if per_method:
        folder = out / "toy"
        folder.mkdir(exist_ok=True)
        for label, entry in result["results"].items():
            if "runs" in entry:
                plot_method(label, entry, folder / f"{label}.png")


def _end_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows of "Where each run ends": per label and scale, the end points and counts; a
    failed label's error in the error column."""
    rows: list[list[Any]] = []
    for label, entry in results.items():
        if "error" in entry:
            rows.append([label, None, "failed", None, None, entry["error"]])
            continue
        for scale in SCALES:
            runs = [r for r in entry["runs"] if r["scale"] == scale]
            ends = "; ".join(f"({r['end'][0]:.2f}, {r['end'][1]:.2f})" for r in runs)
            rows.append(
                [
                    label,
                    scale,
                    ends,
                    sum(r["on_pareto_set"] for r in runs),
                    sum(r["reached_f1_min_at_step"] is not None for r in runs),
                    "",
                ]
            )
    return rows


def _has_primary(label: str, entry: dict[str, Any]) -> bool:
    """Whether a run has task 0 as its primary: the single-task reference, a ``[p]`` run,
    or a method that takes task 0 without being told (:func:`_common.primary_by_default`)."""
    if label == SINGLE_TASK or entry.get("primary") is not None:
        return True
    method = entry.get("method")
    return method is not None and _common.primary_by_default(method)


def _primary_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows of the primary-task criterion: per run with a primary and scale, the steps at
    which each start reaches argmin f1, the reference's, and :func:`_verdict`."""
    reference = results.get(SINGLE_TASK, {})
    rows: list[list[Any]] = []
    for label, entry in results.items():
        if "runs" not in entry or not _has_primary(label, entry):
            continue
        for scale in SCALES:
            steps = [r["reached_f1_min_at_step"] for r in entry["runs"] if r["scale"] == scale]
            ref_steps = [
                r["reached_f1_min_at_step"]
                for r in reference.get("runs", [])
                if r["scale"] == scale
            ]
            rows.append(
                [
                    label,
                    scale,
                    " ".join("–" if s is None else str(s) for s in steps),
                    " ".join("–" if s is None else str(s) for s in ref_steps),
                    _verdict(steps, ref_steps),
                ]
            )
    return rows


def markdown(result: dict[str, Any]) -> str:
    settings = result["settings"]
    parts = [
        "# The 2-D toy problem (Nash-MTL protocol)",
        "",
        f"Produced by `python -m benchmarks.toy` (see `benchmarks/README.md`): Adam lr 1e-3, "
        f"{settings['steps']} steps, from the five Nash-MTL starts "
        f"{list(NASH_MTL_STARTS)}, with f1 scaled by 1 and by 0.1. Methods marked `[p]` run "
        "with `primary=0` (f1); methods that take task 0 as primary without it (GR-type "
        "methods, the cosine gate, MetaBalance, OL-AUX, one-sided PCGrad) run once.",
        "",
        "## Machine",
        "",
        _common.machine_markdown(result["machine"]),
        "",
        "## Where each run ends",
        "",
        f"On the Pareto set: -7.05 <= x1 <= 7.05 and {PARETO_X2[0]} <= x2 <= {PARETO_X2[1]}. "
        f"At argmin f1: f1 within {settings['f1_tolerance']} of its minimum "
        f"{settings['f1_min']:.4f} at some step.",
        "",
        _common.markdown_table(
            [
                "method",
                "scale",
                "end points (starts in order)",
                "on Pareto (of 5)",
                "reached argmin f1",
                "error",
            ],
            _end_rows(result["results"]),
        ),
        "",
        "## Primary-task criterion: reach argmin f1 at least as reliably and as fast as "
        "single-task Adam on f1",
        "",
        "Steps at which each start first reaches argmin f1 (– = never), against "
        "single-task Adam on f1 from the same start. Verdict: `meets`; `less reliable` "
        "(from fewer starts than the single task); `slower` (a start reaches it later than "
        "1.1 times the single task's step plus 10, or not at all); `no reference` "
        f"(`{SINGLE_TASK}` was not run or failed).",
        "",
        _common.markdown_table(
            ["method", "scale", "steps (method)", "steps (single task)", "verdict"],
            _primary_rows(result["results"]),
        ),
        "",
    ]
    return "\n".join(parts)


NO_REFERENCE = "no reference"
"""The verdict without single-task runs to compare with."""


def _verdict(steps: list[int | None], reference: list[int | None]) -> str:
    """``meets``, ``less reliable``, ``slower``, or :data:`NO_REFERENCE` when
    ``reference`` (the single task's steps from the same starts) is empty."""
    if not reference:
        return NO_REFERENCE
    worse_reliability = sum(s is not None for s in steps) < sum(r is not None for r in reference)
    if worse_reliability:
        return "less reliable"
    slower = [
        s for s, r in zip(steps, reference) if r is not None and (s is None or s > 1.1 * r + 10)
    ]
    return "slower" if slower else "meets"


@functools.lru_cache(maxsize=4)
def _surface(scale: float) -> tuple[Any, Any, Any]:
    x1 = torch.linspace(-10, 10, 120, dtype=torch.float64)
    x2 = torch.linspace(-10, 10, 120, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(x1, x2, indexing="xy"), dim=-1)
    f1, f2 = toy_losses(grid, scale)
    return x1.numpy(), x2.numpy(), (f1 + f2).numpy()


def _contours(ax: Any, scale: float) -> None:
    ax.contour(*_surface(scale), levels=18, linewidths=0.4, cmap="Greys")
    ax.plot([-7, 7], [-8.3552, -8.3552], color="tab:green", linewidth=2, alpha=0.6)


def _pareto_front() -> tuple[list[float], list[float]]:
    x1 = torch.linspace(-7, 7, 200, dtype=torch.float64)
    x = torch.stack([x1, torch.full_like(x1, -8.3552)], dim=-1)
    f1, f2 = toy_losses(x)
    return f1.tolist(), f2.tolist()


COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown")


def _draw_paths(ax: Any, entry: dict[str, Any], scale: float, loss_space: bool) -> None:
    runs = [r for r in entry["runs"] if r["scale"] == scale]
    for colour, r in zip(COLOURS, runs):
        path = torch.tensor(r["path"], dtype=torch.float64)
        if loss_space:
            f1, f2 = toy_losses(path)
            ax.plot(f1.numpy(), f2.numpy(), color=colour, linewidth=1)
            ax.plot(float(f1[-1]), float(f2[-1]), "o", color=colour, markersize=3)
        else:
            ax.plot(path[:, 0].numpy(), path[:, 1].numpy(), color=colour, linewidth=1)
            ax.plot(path[0, 0], path[0, 1], "x", color=colour, markersize=4)
            ax.plot(path[-1, 0], path[-1, 1], "o", color=colour, markersize=3)


def plot_method(label: str, entry: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.1))
    front = _pareto_front()
    for column, scale in enumerate(SCALES):
        ax = axes[2 * column]
        _contours(ax, scale)
        _draw_paths(ax, entry, scale, loss_space=False)
        ax.set_title(f"{label}, scale {scale:g}: x space", fontsize=8)
        ax.set_aspect("equal")
        ax = axes[2 * column + 1]
        ax.plot(front[0], front[1], color="tab:green", linewidth=2, alpha=0.6)
        _draw_paths(ax, entry, 1.0 if scale == 1.0 else scale, loss_space=True)
        ax.set_xlabel("f1 (unscaled)", fontsize=7)
        ax.set_ylabel("f2", fontsize=7)
        ax.set_title(f"scale {scale:g}: loss space", fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def plot_all(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [(k, v) for k, v in result["results"].items() if "runs" in v]
    columns = 6
    rows = max(1, math.ceil(len(entries) / columns * 2))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.1 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    index = 0
    for label, entry in entries:
        for scale in SCALES:
            ax = flat[index]
            index += 1
            _contours(ax, scale)
            _draw_paths(ax, entry, scale, loss_space=False)
            ax.set_title(f"{label} (scale {scale:g})", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in flat[index:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _common.benchmark_parser(
        "toy",
        "Every resolver on the 2-D two-task toy problem (Nash-MTL protocol).",
        "a few steps (seconds)",
    )
    parser.add_argument(
        "--steps", type=_common.positive_int, default=None, help="Adam steps (default 35000)"
    )
    parser.add_argument(
        "--labels", nargs="+", help="only these runs, e.g. single_task_f1 sum gr 'pcgrad[p]'"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"keep the runs an interrupted run left in OUT/{PARTIAL_FILE} (same steps, "
        "seed, torch and committed code) and do the rest; without it, a run refuses to "
        "overwrite such a file",
    )
    _common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 5 if args.smoke else 35_000
    if args.labels:
        known = [label for label, _, _ in planned_runs(args.methods)]
        unknown = [label for label in args.labels if label not in known]
        if unknown:
            parser.error(
                f"argument --labels: unknown label(s) {unknown}"
                + (" (for these --methods)" if args.methods else "")
                + f"; available: {known}"
            )
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _common.output_dir(args.out)  # a bad --out fails before any work
    result = run(args)
    write_outputs(result, out, per_method=True)
    left = _common.drop_parts(out / PARTIAL_FILE, result["results"])
    if left and args.verbose:
        print(f"{out / PARTIAL_FILE} keeps the finished runs {left} for a later --resume")
    return result


if __name__ == "__main__":
    main()
