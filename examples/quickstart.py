"""Train one two-task model with each resolver and print what the primary task reaches.

A shared MLP trunk feeds two heads. The primary task is a small regression problem; the
auxiliary task has plenty of data but its target is built from the NEGATED teacher, so
its gradients conflict with the primary's on the shared trunk. Every resolver trains the
same model from the same seed; the table reports the primary task's test error.

Run: ``python -m examples.quickstart`` (about 20 seconds on 2 CPU cores for every
resolver, 300 steps each); ``--methods`` and ``--steps`` choose fewer.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gradsurgery


def make_data(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(20, 1, generator=generator)
    x_primary = torch.randn(64, 20, generator=generator)
    x_aux = torch.randn(1024, 20, generator=generator)
    x_test = torch.randn(1024, 20, generator=generator)

    def target(x: torch.Tensor, sign: float) -> torch.Tensor:
        return torch.tanh(sign * x @ teacher)

    return {
        "x_primary": x_primary,
        "y_primary": target(x_primary, 1.0),
        "x_aux": x_aux,
        "y_aux": 3.0 * target(x_aux, -0.5),
        "x_test": x_test,
        "y_test": target(x_test, 1.0),
    }


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.primary = nn.Linear(64, 1)
        self.auxiliary = nn.Linear(64, 1)


def train(method: str, data: dict[str, torch.Tensor], steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    resolver = gradsurgery.get_resolver(method)
    mse = nn.functional.mse_loss
    for _ in range(steps):
        losses = {
            "primary": mse(model.primary(model.trunk(data["x_primary"])), data["y_primary"]),
            "auxiliary": mse(model.auxiliary(model.trunk(data["x_aux"])), data["y_aux"]),
        }
        optimizer.zero_grad()
        gradsurgery.backward(losses, model.parameters(), resolver=resolver, primary="primary")
        optimizer.step()
    with torch.no_grad():
        return float(mse(model.primary(model.trunk(data["x_test"])), data["y_test"]))


def main(argv: list[str] | None = None) -> None:
    registered = gradsurgery.available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    parser.add_argument("--methods", nargs="+", default=registered, help="registered names")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if not -(2**63) <= args.seed < 2**64:  # the seeds torch.manual_seed takes
        parser.error(f"--seed must be in [-2**63, 2**64), got {args.seed}")
    unknown = [method for method in args.methods if method not in registered]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; registered: {', '.join(registered)}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = make_data(args.seed)
    width = max(len("method"), *(len(method) for method in args.methods))
    print(f"primary-task test MSE after {args.steps} Adam steps (seed {args.seed})")
    print(f"{'method':<{width}} {'test MSE':>9} {'seconds':>8}")
    for method in args.methods:
        start = time.perf_counter()
        error = train(method, data, args.steps, args.seed)
        print(f"{method:<{width}} {error:>9.4f} {time.perf_counter() - start:>8.1f}")


if __name__ == "__main__":
    main()
