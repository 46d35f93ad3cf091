"""GradNorm's synthetic regression, and a primary/auxiliary version of it.

Targets (Chen et al. 2018, as the code of LucasBoTang/GradNorm draws them):
:math:`f_i(x) = \\sigma_i \\tanh((B + \\varepsilon_i) x)` with
:math:`x \\sim U(0, 1)^{250}`, 100 outputs per task,
:math:`B \\sim N(0, 10^2)`, :math:`\\varepsilon_i \\sim N(0, 3.5^2)`. Model: a 4-layer
100-unit ReLU trunk shared by all tasks and one affine head per task; Adam.

Two problems (``--problems``), each in both settings below:

- ``gradnorm``: the targets above, as GradNorm's code draws them.
- ``centred``: :math:`x \\sim U(-1, 1)^{250}` and :math:`f_i(x) = \\sigma_i \\tanh((B +
  \\varepsilon_i) x / c)` with :math:`c = \\sqrt{250 \\cdot (10^2 + 3.5^2) / 3}`, so that
  each argument of tanh has standard deviation 1: the targets vary smoothly with
  :math:`x` instead of being nearly half-spaces (see below), and what the methods learn
  within the step budget can be compared.

The two settings:

- ``imbalanced``: two tasks with :math:`\\sigma = (1, 100)` on the same inputs; score: the
  test MSE of each task divided by :math:`\\sigma_i^2`, averaged over the tasks (lower is
  better).
- ``primary``: task 0 (:math:`\\sigma = 1`) has a small training set (``--primary-train``
  samples); a helpful auxiliary task shares :math:`B` (own :math:`\\varepsilon`), a
  conflicting one uses :math:`-B`; both auxiliaries draw from a large training set. Score:
  the primary test MSE. ``single_task`` trains on the primary task alone.

Mean and standard deviation over ``--seeds`` seeds (data, model and batches all seeded).
The ``train_mean`` row predicts each output's training mean whatever the input. In the
``gradnorm`` problem, with :math:`x \\sim U(0, 1)^{250}` and :math:`B` of standard
deviation 10, tanh's argument varies by about 50 (one standard deviation) over
:math:`x`, so each target is nearly the sign of an affine function of :math:`x`, a
half-space in 250 dimensions; a score near ``train_mean``'s means that nothing usable was
learnt about :math:`x`.

Run: ``python -m benchmarks.regression`` or ``--smoke``.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import _common
from benchmarks._common import (
    add_output_arguments,
    benchmark_parser,
    positive_float,
    positive_int,
)
from benchmarks._training import SINGLE_TASK, entries, scored_over_seeds, train
from benchmarks.models import MultiTaskModel

INPUTS, OUTPUTS, WIDTH = 250, 100, 100
B_STD, EPS_STD = 10.0, 3.5
TRAIN_MEAN = "train_mean"
"""The reference row that predicts each output's training mean (no model)."""
SETTINGS = ("imbalanced", "primary")
PROBLEMS = ("gradnorm", "centred")
CENTRED_SCALE = math.sqrt(INPUTS * (B_STD**2 + EPS_STD**2) / 3)
"""The standard deviation of :math:`(B + \\varepsilon_i) x` for :math:`x \\sim U(-1, 1)^{250}`."""


def table_key(setting: str, problem: str) -> str:
    """The results key of a setting on a problem (``imbalanced``, ``primary_centred``, ...)."""
    return setting if problem == "gradnorm" else f"{setting}_{problem}"


def make_model(tasks: int, seed: int) -> MultiTaskModel:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width_in = INPUTS
    for _ in range(4):
        layers += [nn.Linear(width_in, WIDTH), nn.ReLU()]
        width_in = WIDTH
    return MultiTaskModel(nn.Sequential(*layers), [nn.Linear(WIDTH, OUTPUTS) for _ in range(tasks)])


def setting_data(
    setting: str, seed: int, args: argparse.Namespace, problem: str = "gradnorm"
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1000 + seed)
    B = B_STD * torch.randn(OUTPUTS, INPUTS, generator=g)
    eps = [EPS_STD * torch.randn(OUTPUTS, INPUTS, generator=g) for _ in range(3)]

    def sample(n: int) -> Tensor:
        x = torch.rand(n, INPUTS, generator=g)
        return 2 * x - 1 if problem == "centred" else x

    scale = CENTRED_SCALE if problem == "centred" else 1.0

    def targets(x: Tensor, matrix: Tensor, sigma: float) -> Tensor:
        return sigma * torch.tanh(x @ matrix.T / scale)

    if setting == "imbalanced":
        sigmas = [1.0, 100.0]
        matrices = [B + eps[0], B + eps[1]]
        x_train, x_test = sample(args.train), sample(args.test)
        return {
            "sigmas": sigmas,
            "train_x": [x_train, x_train],
            "train_y": [targets(x_train, m, s) for m, s in zip(matrices, sigmas)],
            "test_x": x_test,
            "test_y": [targets(x_test, m, s) for m, s in zip(matrices, sigmas)],
        }
    sigmas = [1.0, 1.0, 1.0]
    matrices = [B + eps[0], B + eps[1], -B + eps[2]]
    x_primary, x_aux, x_test = sample(args.primary_train), sample(args.train), sample(args.test)
    return {
        "sigmas": sigmas,
        "train_x": [x_primary, x_aux, x_aux],
        "train_y": [targets(x, m, 1.0) for x, m in zip([x_primary, x_aux, x_aux], matrices)],
        "test_x": x_test,
        "test_y": [targets(x_test, m, 1.0) for m in matrices],
    }


def run_one(
    setting: str,
    method: str | None,
    primary: int | None,
    seed: int,
    args: argparse.Namespace,
    problem: str = "gradnorm",
) -> dict[str, float]:
    data = setting_data(setting, seed, args, problem)
    tasks = len(data["sigmas"])
    model = make_model(tasks, seed)
    g = torch.Generator().manual_seed(seed)

    def losses_at(step: int) -> list[Tensor]:
        out = []
        for task in range(tasks):
            x, y = data["train_x"][task], data["train_y"][task]
            index = torch.randint(x.shape[0], (min(args.batch, x.shape[0]),), generator=g)
            features = model.trunk(x[index])
            out.append(nn.functional.mse_loss(model.heads[task](features), y[index]))
        return out

    torch.manual_seed(seed)
    train(model, losses_at, method=method, primary=primary, steps=args.steps, lr=args.lr)
    with torch.no_grad():
        _, outputs = model(data["test_x"])
        errors = [
            float(nn.functional.mse_loss(out, y)) / s**2
            for out, y, s in zip(outputs, data["test_y"], data["sigmas"])
        ]
    return _scores(setting, errors)


def _scores(setting: str, errors: list[float]) -> dict[str, float]:
    """A setting's scores from the per-task test errors (divided by sigma^2)."""
    if setting == "imbalanced":
        return {"score": sum(errors) / len(errors), **{f"task{i}": e for i, e in enumerate(errors)}}
    return {"score": errors[0]}


def mean_predictor(
    setting: str, seed: int, args: argparse.Namespace, problem: str = "gradnorm"
) -> dict[str, float]:
    """The scores of predicting each output's training mean, whatever the input: what a
    model that has learnt nothing about ``x`` gets (the ``train_mean`` reference row)."""
    data = setting_data(setting, seed, args, problem)
    errors = [
        float(((y_test - y_train.mean(0)) ** 2).mean()) / s**2
        for y_train, y_test, s in zip(data["train_y"], data["test_y"], data["sigmas"])
    ]
    return _scores(setting, errors)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    info = _common.machine(args.seed)
    results: dict[str, Any] = {}
    runs = entries(_common.variants(args.methods))
    total = len(args.problems) * sum(len(_labels_run(setting, runs)) for setting in SETTINGS)
    with _common.Progress(total, "regression", args.verbose) as progress:
        for problem in args.problems:
            for setting in SETTINGS:
                results[table_key(setting, problem)] = run_setting(setting, problem, args, progress)
    info["load_average_1_5_15_min_at_end"] = _common.load_average()
    settings = {
        k: getattr(args, k)
        for k in ("steps", "batch", "lr", "train", "primary_train", "test", "seeds", "problems")
    }
    return {"machine": info, "settings": settings, "results": results}


def _labels_run(
    setting: str, runs: list[tuple[str, str | None, int | None]]
) -> list[tuple[str, str | None, int | None]]:
    """The runs of ``setting``: a single task does not answer the imbalanced setting's
    two-task question."""
    return [run for run in runs if not (setting == "imbalanced" and run[0] == SINGLE_TASK)]


def run_setting(
    setting: str,
    problem: str,
    args: argparse.Namespace,
    progress: _common.Progress | None = None,
) -> dict[str, Any]:
    """Every method's scores (and the references') on one setting of one problem."""
    seeds = range(args.seed, args.seed + args.seeds)
    table: dict[str, Any] = {
        TRAIN_MEAN: scored_over_seeds(
            lambda seed: mean_predictor(setting, seed, args, problem), seeds
        )
    }
    for label, method, primary in _labels_run(setting, entries(_common.variants(args.methods))):
        run_seed = functools.partial(run_one, setting, method, primary, args=args, problem=problem)
        table[label] = scored_over_seeds(run_seed, seeds)
        if progress is not None:
            summary = table[label].get("summary", {}).get("score", table[label].get("error"))
            progress.advance(f"{table_key(setting, problem)} {label}: {summary}")
    return table


def write_outputs(result: dict[str, Any], out: Path) -> None:
    _common.write_json(out / "regression.json", result)
    (out / "regression.md").write_text(markdown(result))
    plot(result, out / "regression.png")


def _rows(table: dict[str, Any], keys: Sequence[str]) -> list[list[Any]]:
    rows = []
    ranked = sorted(
        table.items(),
        key=lambda kv: kv[1].get("summary", {}).get("score", {}).get("mean", float("inf")),
    )
    for label, entry in ranked:
        if "error" in entry:
            rows.append([label] + ["failed"] * len(keys) + [entry["error"]])
            continue
        cells = [
            f"{entry['summary'][k]['mean']:.4g} ± {entry['summary'][k]['std']:.2g}" for k in keys
        ]
        rows.append([label, *cells, ""])
    return rows


PROBLEM_TITLES = {
    "gradnorm": "GradNorm's problem: x ~ U(0, 1)^250, tanh nearly saturated",
    "centred": "Centred problem: x ~ U(-1, 1)^250, tanh's argument of unit deviation",
}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# GradNorm synthetic regression",
        "",
        "Produced by `python -m benchmarks.regression` (see `benchmarks/README.md`). "
        f"Adam lr {s['lr']}, {s['steps']} steps, batch {s['batch']}, {s['train']} training "
        f"and {s['test']} test samples; mean ± standard deviation over {s['seeds']} seeds. "
        "Lower is better. `[p]`: run with `primary=0`. `train_mean` predicts each "
        "output's training mean whatever the input (no model): a method scoring above "
        "it has learnt nothing usable about the inputs. The two problems are defined in "
        "the module docstring of `benchmarks/regression.py`.",
        "",
        "## Machine",
        "",
        _common.machine_markdown(result["machine"]),
        "",
    ]
    for problem in s.get("problems", ["gradnorm"]):
        imbalanced = result["results"][table_key("imbalanced", problem)]
        primary = result["results"][table_key("primary", problem)]
        lines += [
            f"## {PROBLEM_TITLES[problem]}",
            "",
            "### Scale-imbalanced tasks (sigma = 1, 100)",
            "",
            "Test MSE / sigma^2 per task, and their mean (the score).",
            "",
            _common.markdown_table(
                ["method", "score", "task 0 (sigma 1)", "task 1 (sigma 100)", "error"],
                _rows(imbalanced, ["score", "task0", "task1"]),
            ),
            "",
            "### Primary task with a helpful and a conflicting auxiliary task",
            "",
            f"Primary test MSE; the primary task has {s['primary_train']} training samples, "
            f"the auxiliaries {s['train']}.",
            "",
            _common.markdown_table(
                ["method", "primary test MSE", "error"], _rows(primary, ["score"])
            ),
            "",
        ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = result["settings"].get("problems", ["gradnorm"])
    rows = max(len(t) for t in result["results"].values())
    fig, axes = plt.subplots(
        len(problems), 2, figsize=(11, len(problems) * (0.5 + 0.22 * rows)), squeeze=False
    )
    for row, problem in zip(axes, problems):
        for ax, setting in zip(row, SETTINGS):
            table = result["results"][table_key(setting, problem)]
            items = [(k, v["summary"]["score"]) for k, v in table.items() if "summary" in v]
            items.sort(key=lambda kv: kv[1]["mean"])
            labels = [k for k, _ in items]
            ax.barh(
                range(len(items)),
                [v["mean"] for _, v in items],
                xerr=[v["std"] for _, v in items],
                color=[
                    "tab:gray" if k in (SINGLE_TASK, TRAIN_MEAN, "sum") else "tab:blue"
                    for k in labels
                ],
            )
            ax.set_yticks(range(len(items)), labels, fontsize=7)
            ax.invert_yaxis()
            score = "mean test MSE / sigma^2" if setting == "imbalanced" else "primary test MSE"
            ax.set_title(f"{problem}, {setting}: {score}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(
        "regression",
        "GradNorm's synthetic regression and a primary/auxiliary version.",
        "a few steps (seconds)",
    )
    parser.add_argument("--steps", type=positive_int, default=None, help="(default 300)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="(default 3)")
    parser.add_argument("--batch", type=positive_int, default=None, help="(default 100)")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument(
        "--train",
        type=positive_int,
        default=None,
        help="training samples of the imbalanced tasks and the auxiliaries (default 2000)",
    )
    parser.add_argument("--primary-train", type=positive_int, default=100)
    parser.add_argument("--test", type=positive_int, default=None, help="(default 1000)")
    parser.add_argument(
        "--problems",
        nargs="+",
        choices=PROBLEMS,
        default=list(PROBLEMS),
        help="which versions of the problem to run (default: both; see the module docstring)",
    )
    parser.add_argument("--threads", type=positive_int, default=1)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    smoke = {"steps": 2, "seeds": 1, "train": 64, "test": 64, "batch": 16}
    full = {"steps": 300, "seeds": 3, "train": 2000, "test": 1000, "batch": 100}
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:  # what is given explicitly stands, with --smoke too
            setattr(args, key, value)
    args.problems = list(dict.fromkeys(args.problems))  # a problem given twice runs once
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _common.output_dir(args.out)  # a bad --out fails before any work
    result = run(args)
    write_outputs(result, out)
    return result


if __name__ == "__main__":
    main()
