"""Draw the figures of the Concepts page from gradsurgery's own results.

Run from the repository root: ``python docs/figures/make_figures.py`` (writes
``docs/figures/conflict_and_dominance.png``; ``--out DIR`` writes elsewhere). Every
resolved direction in the picture is computed by :func:`gradsurgery.resolve`, so the
figure shows what the library does, not a sketch of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import gradsurgery

HERE = Path(__file__).resolve().parent

# Two 2-D cases, each a (primary, auxiliary) pair.
CONFLICT = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # 135 degrees apart
DOMINANCE = torch.tensor([[1.0, 0.0], [3.0, 10.0]])  # auxiliary about 10x longer

STYLE = {  # label -> (colour, line style)
    "primary $g_p$": ("#1f77b4", "-"),
    "auxiliary $g_a$": ("#ff7f0e", "-"),
    "sum (MTL)": ("#7f7f7f", "--"),
    "PCGrad": ("#2ca02c", "-"),
    "GR": ("#d62728", "-"),
}


def _arrow(ax: Axes, vector: torch.Tensor, label: str) -> None:
    colour, line = STYLE[label]
    x, y = float(vector[0]), float(vector[1])
    ax.annotate(
        "",
        xy=(x, y),
        xytext=(0, 0),
        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2.2, "linestyle": line},
    )
    ax.plot([], [], color=colour, linestyle=line, lw=2.2, label=label)


def _panel(ax: Axes, G: torch.Tensor, methods: list[str], title: str) -> None:
    vectors = {"primary $g_p$": G[0], "auxiliary $g_a$": G[1]}
    for method in methods:
        label = {"sum": "sum (MTL)", "pcgrad": "PCGrad", "gr": "GR"}[method]
        vectors[label] = gradsurgery.resolve(G, method=method, primary=0)
    for label, vector in vectors.items():
        _arrow(ax, vector, label)
    points = torch.stack([torch.zeros(2), *vectors.values()])
    low, high = points.min(dim=0).values - 0.6, points.max(dim=0).values + 0.6
    ax.set_xlim(float(low[0]), float(high[0]))
    ax.set_ylim(float(low[1]), float(high[1]))
    ax.set_aspect("equal")
    ax.axhline(0, color="#dddddd", lw=0.8, zorder=0)
    ax.axvline(0, color="#dddddd", lw=0.8, zorder=0)
    ax.set_title(title, fontsize=11)


def conflict_and_dominance(out: Path) -> Path:
    """The two failure modes of the plain sum, and what PCGrad and GR return instead."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5), width_ratios=[1.5, 1.0])
    _panel(left, CONFLICT, ["sum", "pcgrad", "gr"], "conflict: the angle exceeds 90°")
    _panel(
        right,
        DOMINANCE,
        ["sum", "gr"],
        "dominance: $\\|g_a\\| \\approx 10\\,\\|g_p\\|$",
    )
    handles, labels = left.get_legend_handles_labels()  # the left panel has every label
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path = out / "conflict_and_dominance.png"
    figure.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the PNGs to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(conflict_and_dominance(args.out))


if __name__ == "__main__":
    main()
