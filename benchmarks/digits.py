"""Two overlapping digits: per-task accuracy of each resolver (a small MultiMNIST).

In the spirit of MultiMNIST, from the 8x8 digits that ship with scikit-learn
(``sklearn.datasets.load_digits``; no download): each image puts one digit at columns
0-7 and another at columns 4-11 of an 8 x 12 canvas, combined by pixel-wise maximum, so
the two overlap by half. Task 0 is the left label, task 1 the right one. The digits are
split into training and test digits BEFORE pairing, so no test digit is seen in training.

Model: a LeNet-like trunk (conv 16, conv 32, max-pool, linear 64) and one linear head per
task; Adam lr 1e-3, batch 128. Accuracy per task on the test pairs, mean and standard
deviation over ``--seeds`` seeds. ``single_task`` trains on the left digit alone.

Run: ``python -m benchmarks.digits`` or ``--smoke``.
"""

from __future__ import annotations

import argparse
import functools
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
from benchmarks._training import entries, scored_over_seeds, train
from benchmarks.models import MultiTaskModel


def load_pairs(pairs: int, seed: int, train: bool) -> tuple[Tensor, Tensor]:
    """``pairs`` canvases ``(N, 1, 8, 12)`` in [0, 1] and labels ``(N, 2)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    split = 1200  # digits 0..1199 for training pairs, the remaining 597 for test pairs
    images, labels = (images[:split], labels[:split]) if train else (images[split:], labels[split:])
    g = torch.Generator().manual_seed(seed + (0 if train else 10_000))
    left = torch.randint(len(images), (pairs,), generator=g)
    right = torch.randint(len(images), (pairs,), generator=g)
    canvas = torch.zeros(pairs, 1, 8, 12)
    canvas[:, 0, :, 0:8] = images[left]
    canvas[:, 0, :, 4:12] = torch.maximum(canvas[:, 0, :, 4:12], images[right])
    return canvas, torch.stack([labels[left], labels[right]], dim=1)


def make_model(seed: int) -> MultiTaskModel:
    torch.manual_seed(seed)
    trunk = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 6, 64),
        nn.ReLU(),
    )
    return MultiTaskModel(trunk, [nn.Linear(64, 10) for _ in range(2)])


def run_one(
    method: str | None, primary: int | None, seed: int, args: argparse.Namespace
) -> dict[str, float]:
    x_train, y_train = load_pairs(args.train_pairs, seed, train=True)
    x_test, y_test = load_pairs(args.test_pairs, seed, train=False)
    model = make_model(seed)
    g = torch.Generator().manual_seed(seed)

    def losses_at(step: int) -> list[Tensor]:
        index = torch.randint(len(x_train), (args.batch,), generator=g)
        _, outputs = model(x_train[index])
        return [
            nn.functional.cross_entropy(out, y_train[index, t]) for t, out in enumerate(outputs)
        ]

    torch.manual_seed(seed)
    train(model, losses_at, method=method, primary=primary, steps=args.steps, lr=args.lr)
    with torch.no_grad():
        _, outputs = model(x_test)
        accuracy = [
            float((out.argmax(1) == y_test[:, t]).float().mean()) for t, out in enumerate(outputs)
        ]
    return {"left": accuracy[0], "right": accuracy[1], "mean": sum(accuracy) / 2}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    info = _common.machine(args.seed)
    table: dict[str, Any] = {}
    runs = entries(_common.variants(args.methods))
    with _common.Progress(len(runs), "digits", args.verbose) as progress:
        for label, method, primary in runs:
            run_seed = functools.partial(run_one, method, primary, args=args)
            table[label] = scored_over_seeds(run_seed, range(args.seed, args.seed + args.seeds))
            progress.advance(f"{label}: {table[label].get('summary', table[label].get('error'))}")
    info["load_average_1_5_15_min_at_end"] = _common.load_average()
    settings = {
        k: getattr(args, k) for k in ("steps", "batch", "lr", "train_pairs", "test_pairs", "seeds")
    }
    return {"machine": info, "settings": settings, "results": table}


def write_outputs(result: dict[str, Any], out: Path) -> None:
    _common.write_json(out / "digits.json", result)
    (out / "digits.md").write_text(markdown(result))
    plot(result, out / "digits.png")


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = []
    ranked = sorted(
        result["results"].items(),
        key=lambda kv: -kv[1].get("summary", {}).get("mean", {}).get("mean", -1.0),
    )
    for label, entry in ranked:
        if "error" in entry:
            rows.append([label, "failed", "", "", entry["error"]])
            continue
        summary = entry["summary"]
        rows.append(
            [label]
            + [
                f"{100 * summary[k]['mean']:.1f} ± {100 * summary[k]['std']:.1f}"
                for k in ("left", "right", "mean")
            ]
            + [""]
        )
    return "\n".join(
        [
            "# Two overlapping 8x8 digits (MultiMNIST-like): test accuracy per task, %",
            "",
            "Produced by `python -m benchmarks.digits` (see `benchmarks/README.md`). "
            f"{s['train_pairs']} training pairs, {s['test_pairs']} test pairs from held-out "
            f"digits, Adam lr {s['lr']}, {s['steps']} steps of batch {s['batch']}; mean ± "
            f"standard deviation over {s['seeds']} seeds. `single_task` trains on the left "
            "digit only (its right-digit head is untrained). `[p]`: `primary=0` (left).",
            "",
            "## Machine",
            "",
            _common.machine_markdown(result["machine"]),
            "",
            _common.markdown_table(["method", "left", "right", "mean", "error"], rows),
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, v["summary"]) for k, v in result["results"].items() if "summary" in v]
    items.sort(key=lambda kv: -kv[1]["mean"]["mean"])
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.22 * len(items)))
    for offset, (key, colour) in enumerate((("left", "tab:blue"), ("right", "tab:orange"))):
        ax.barh(
            [i + 0.4 * offset for i in range(len(items))],
            [100 * v[key]["mean"] for _, v in items],
            height=0.4,
            xerr=[100 * v[key]["std"] for _, v in items],
            color=colour,
            label=key,
        )
    ax.set_yticks([i + 0.2 for i in range(len(items))], [k for k, _ in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy, %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(
        "digits",
        "Per-task accuracy on two overlapping 8x8 digits (sklearn, no download).",
        "a few steps (seconds)",
    )
    parser.add_argument("--steps", type=positive_int, default=None, help="(default 300)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="(default 3)")
    parser.add_argument("--batch", type=positive_int, default=None, help="(default 128)")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--train-pairs", type=positive_int, default=None, help="(default 6000)")
    parser.add_argument("--test-pairs", type=positive_int, default=None, help="(default 2000)")
    parser.add_argument("--threads", type=positive_int, default=1)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    smoke = {"steps": 2, "seeds": 1, "train_pairs": 64, "test_pairs": 32, "batch": 16}
    full = {"steps": 300, "seeds": 3, "train_pairs": 6000, "test_pairs": 2000, "batch": 128}
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:  # what is given explicitly stands, with --smoke too
            setattr(args, key, value)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = _common.output_dir(args.out)  # a bad --out fails before any work
    result = run(args)
    write_outputs(result, out)
    return result


if __name__ == "__main__":
    main()
