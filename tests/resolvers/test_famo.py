"""FAMO against its loss written with autograd, the two ways "after step" losses arrive."""

from __future__ import annotations

import itertools

import pytest
import torch

import gradsurgery
from gradsurgery.resolvers import FAMO

G = torch.eye(3, dtype=torch.float64)


class AutogradFAMO:
    """FAMO as the paper states it, with autograd doing every derivative."""

    def __init__(self, T, lr=0.025, gamma=0.01, min_losses=None):
        self.logits = torch.zeros(T, dtype=torch.float64, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)
        self.bounds = torch.zeros(T, dtype=torch.float64) if min_losses is None else min_losses

    def weights(self, losses):
        """d/dL of sum_i z_i log(L_i - L*_i) / c, with c = sum_j z_j / (L_j - L*_j) detached."""
        losses = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
        z = torch.softmax(self.logits.detach(), dim=0)
        gaps = losses - self.bounds
        c = (z / gaps).sum().detach()
        (gradient,) = torch.autograd.grad((z * gaps.log() / c).sum(), losses)
        return gradient

    def update(self, before, after):
        delta = (torch.tensor(before) - self.bounds).log() - (
            torch.tensor(after) - self.bounds
        ).log()
        z = torch.softmax(self.logits, dim=0)
        (self.logits.grad,) = torch.autograd.grad(z, self.logits, grad_outputs=delta.double())
        self.optimizer.step()


LOSSES = [[1.0, 2.0, 4.0], [0.9, 1.9, 3.0], [0.8, 1.9, 2.5], [0.5, 1.8, 2.4], [0.45, 1.8, 1.0]]


def test_weights_are_the_gradient_of_famos_loss():
    d = gradsurgery.resolve(G, method="famo", losses=LOSSES[0])  # G = I: d is the weights
    torch.testing.assert_close(d, AutogradFAMO(3).weights(LOSSES[0]))
    torch.testing.assert_close(d, torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64) / 7)


def test_explicit_updates_match_the_autograd_reference():
    resolver, reference = FAMO(), AutogradFAMO(3)
    for before, after in itertools.pairwise(LOSSES):
        d = gradsurgery.resolve(G, method=resolver, losses=before)
        torch.testing.assert_close(d, reference.weights(before))
        resolver.update(after)
        reference.update(before, after)
        assert resolver.logits is not None
        torch.testing.assert_close(resolver.logits, reference.logits.detach())


def test_next_calls_losses_serve_as_the_after_step_losses():
    implicit, explicit = FAMO(), FAMO()
    for step, losses in enumerate(LOSSES):
        a = gradsurgery.resolve(G, method=implicit, losses=losses)
        if step > 0:
            explicit.update(losses)
        b = gradsurgery.resolve(G, method=explicit, losses=losses)
        assert torch.equal(a, b)
    assert implicit.logits is not None and explicit.logits is not None
    assert torch.equal(implicit.logits, explicit.logits)
    assert not torch.equal(implicit.logits, torch.zeros(3, dtype=torch.float64))


def test_weight_moves_toward_the_task_whose_log_loss_fell_least():
    resolver = FAMO(lr=0.1)
    for _ in range(20):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0, 1.0])
        resolver.update([0.5, 0.9, 0.99])
    assert resolver.logits is not None
    assert resolver.logits[2] > resolver.logits[1] > resolver.logits[0]


def test_min_losses_shift_the_logarithms():
    bounds = [-1.0, 0.0, 0.5]
    d = gradsurgery.resolve(G, method=FAMO(min_losses=bounds), losses=LOSSES[0])
    reference = AutogradFAMO(3, min_losses=torch.tensor(bounds, dtype=torch.float64))
    torch.testing.assert_close(d, reference.weights(LOSSES[0]))


def test_loss_at_or_below_its_bound_is_an_error_and_changes_nothing():
    resolver = FAMO(min_losses=[0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"task 1 is 1\.0, not above its lower bound 1\.0"):
        gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0, 1.0])
    assert resolver.state_dict() == {}
    with pytest.raises(ValueError, match="min_losses has 3"):
        gradsurgery.resolve(torch.eye(2), method=resolver, losses=[1.0, 2.0])


def test_update_without_a_step_is_an_error():
    resolver = FAMO()
    with pytest.raises(RuntimeError, match="no step awaits"):
        resolver.update([1.0, 1.0, 1.0])
    gradsurgery.resolve(G, method=resolver, losses=[1.0, 1.0, 1.0])
    resolver.update([0.5, 0.5, 0.5])
    with pytest.raises(RuntimeError, match="no step awaits"):
        resolver.update([0.5, 0.5, 0.5])


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_update_refuses_a_non_finite_loss_and_keeps_the_logits(bad):
    resolver = FAMO()
    gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0, 3.0])
    state = resolver.state_dict()
    with pytest.raises(ValueError, match=r"task 1 is (inf|nan) \(expected a finite loss\)"):
        resolver.update([0.9, bad, 2.9])
    assert str(resolver.state_dict()) == str(state)
    resolver.update([0.9, 1.9, 2.9])  # the step still awaits its update
    assert resolver.logits is not None and torch.isfinite(resolver.logits).all()
    assert torch.isfinite(gradsurgery.resolve(G, method=resolver, losses=[1.0, 2.0, 3.0])).all()


def test_weights_stay_finite_for_a_loss_next_to_its_bound():
    d = gradsurgery.resolve(G, method="famo", losses=[1e-310, 1.0, 1e300])
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_state_restores_exactly_with_a_pending_step():
    resolver = FAMO()
    for losses in LOSSES[:3]:
        gradsurgery.resolve(G, method=resolver, losses=losses)
    restored = FAMO()
    restored.load_state_dict(resolver.state_dict())
    for losses in LOSSES[3:]:
        assert torch.equal(
            gradsurgery.resolve(G, method=resolver, losses=losses),
            gradsurgery.resolve(G, method=restored, losses=losses),
        )
    assert resolver.logits is not None and restored.logits is not None
    assert torch.equal(resolver.logits, restored.logits)


def test_the_glue_runs_one_backward_pass():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    hidden = 2.0 * x
    passes = []
    hidden.register_hook(lambda grad: passes.append(1))
    # Losses 6 and 8: weights (1/6, 1/8) / (1/6 + 1/8) = (4/7, 3/7).
    result = gradsurgery.backward([hidden.sum(), hidden.prod()], [x], resolver="famo")
    assert len(passes) == 1 and result.gram is None
    expected = 2.0 * (4 / 7 * torch.ones(2) + 3 / 7 * torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"lr": 0.0}, ValueError, "lr"),
        ({"gamma": -1.0}, ValueError, "gamma"),
        ({"min_losses": [0.0, float("nan")]}, ValueError, "min_losses"),
        ({"min_losses": []}, ValueError, "min_losses"),
        ({"min_losses": "low"}, TypeError, "min_losses"),
        ({"min_losses": True}, TypeError, "min_losses"),
        ({"min_losses": [True, False]}, TypeError, "min_losses"),
        ({"min_losses": torch.tensor([True])}, TypeError, "min_losses"),
        ({"min_losses": [10**400, 0]}, ValueError, "min_losses"),
    ],
)
def test_invalid_options(options, error, name):
    with pytest.raises(error, match=name):
        FAMO(**options)


def test_a_changed_number_of_tasks_is_refused():
    resolver = FAMO()
    gradsurgery.resolve(torch.eye(2, dtype=torch.float64), method=resolver, losses=[1.0, 2.0])
    with pytest.raises(ValueError, match="Invalid losses: got 3 values for 2 task"):
        resolver.update([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"FAMO has state for 2 tasks, got 3; .*start over"):
        gradsurgery.resolve(torch.eye(3, dtype=torch.float64), method=resolver, losses=[1.0] * 3)
