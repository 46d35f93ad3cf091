"""Every registered resolver lowers both losses of the 2-D toy from a conflicting start.

The toy is the two-task problem of CAGrad, Nash-MTL and FAMO (``benchmarks/toy_problem.py``).
Each method runs through :func:`gradsurgery.backward` for a couple of hundred Adam steps.

**The start (9, -1).** It is one of the Nash-MTL protocol's five starts. There the two task
gradients conflict (checked below): f1 pulls x2 up and f2 pulls it down, since their
sigmoid-like mixing weights multiply losses of opposite signs. It is also a start from which
"lower both losses" is a fair demand of every kind of method: the Pareto set lies at
x2 ~ -8.4, and every Pareto point with x1 > -3.6 has lower f1 AND lower f2 than the start,
including the primary task's own optimum (7, -8.43), which primary/auxiliary methods (task
0 = f1 is the primary) head for. From (-7.5, -0.5), by contrast, f2 is lower at the start
than at f1's optimum, so a primary-task method that does its job raises f2 there.

**The losses are shifted by +21.** Both losses are bounded below by about -20 (FAMO's toy
sets L* = -21 for the same reason). Adding a constant changes no gradient, but it makes the
loss values positive, as the loss-aware methods need (logarithms in FAMO and DB-MTL, loss
ratios in GradNorm and DWA, uncertainty weighting's fixed point e^s = L).
"""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from benchmarks.toy_problem import toy_losses
from tests.fresh import fresh_resolver

START = (9.0, -1.0)
SHIFT = 21.0
STEPS = 200
LR = 0.1
MIN_DECREASE = 1.0  # both losses must fall by at least this much (they start at -8.8 and 2.8)

# Options that make a method exercise what it does within a 200-step run.
TOY_OPTIONS: dict[str, dict[str, object]] = {
    "dwa": {"epoch_length": 10},  # with the default (epochs ended by hand) DWA is the sum here
    # OL-AUX's estimate needs the model's learning rate. Its unconstrained default lets a
    # conflicting auxiliary's weight turn negative, i.e. it then climbs f2 on purpose; here
    # the weight swings in sign (between about +104 and -124 over 400 steps) and whether f2
    # ends lower depends on where the swing stops. The constrained form (ReLU on the weights,
    # the reference's `constrained_weights`) drops the conflicting auxiliary instead.
    "olaux": {"model_lr": LR, "nonnegative": True},
}

# Methods that genuinely cannot lower both losses on this toy, with the reason.
EXPECTED_FAILURES: dict[str, str] = {}


def build(name: str) -> gradsurgery.resolvers.Resolver:
    # seeded: random methods draw the same numbers on every run
    return fresh_resolver(name, **TOY_OPTIONS.get(name, {}))


def test_the_start_is_a_conflict():
    x = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    f1, f2 = toy_losses(x)
    (g1,) = torch.autograd.grad(f1, x, retain_graph=True)
    (g2,) = torch.autograd.grad(f2, x)
    cosine = torch.dot(g1, g2) / (g1.norm() * g2.norm())
    assert cosine < -0.5  # strongly opposed: about -0.83


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(name, marks=pytest.mark.xfail(reason=EXPECTED_FAILURES[name], strict=True))
        if name in EXPECTED_FAILURES
        else name
        for name in gradsurgery.available()
    ],
)
def test_method_lowers_both_losses(method):
    torch.manual_seed(0)
    x = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=LR)
    resolver = build(method)
    with torch.no_grad():
        start = torch.stack(toy_losses(x))
    for _ in range(STEPS):
        optimizer.zero_grad()
        f1, f2 = toy_losses(x)
        gradsurgery.backward([f1 + SHIFT, f2 + SHIFT], [x], resolver=resolver)
        optimizer.step()
    with torch.no_grad():
        end = torch.stack(toy_losses(x))
    assert torch.isfinite(x).all()
    decrease = start - end
    assert (decrease >= MIN_DECREASE).all(), (
        f"{method}: f1 {start[0]:.2f} -> {end[0]:.2f}, f2 {start[1]:.2f} -> {end[1]:.2f} "
        f"at x = ({x[0]:.2f}, {x[1]:.2f})"
    )
