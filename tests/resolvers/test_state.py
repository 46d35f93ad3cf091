"""Every registered resolver's ``state_dict``: a fresh state resets it, a foreign one is refused.

Parametrised over ``gradsurgery.available()``, so a resolver is checked the moment it is
registered; the round trip of a used state is tested per resolver, beside its algorithm.
"""

from __future__ import annotations

import copy

import pytest
import torch

import gradsurgery

METHODS = gradsurgery.available()


def three_steps(resolver: gradsurgery.Resolver) -> list[torch.Tensor]:
    """Directions of three calls with changing gradients and losses (random draws seeded)."""
    G = torch.tensor([[1.0, 0.5, -0.3], [-0.8, 0.4, 0.9]], dtype=torch.float64)
    directions = []
    for step in range(3):
        torch.manual_seed(step)
        losses = torch.tensor([1.0 + 0.1 * step, 2.0 - 0.3 * step], dtype=torch.float64)
        directions.append(
            gradsurgery.resolve((1 + step) * G, method=resolver, primary=0, losses=losses)
        )
    return directions


@pytest.mark.parametrize("method", METHODS)
def test_loading_a_fresh_state_makes_a_used_resolver_fresh(method):
    fresh_state = gradsurgery.get_resolver(method).state_dict()
    used = gradsurgery.get_resolver(method)
    three_steps(used)
    used.load_state_dict(fresh_state)
    expected = three_steps(gradsurgery.get_resolver(method))
    for got, want in zip(three_steps(used), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_a_state_with_unknown_keys_is_refused_by_name_and_changes_nothing(method):
    resolver = gradsurgery.get_resolver(method)
    three_steps(resolver)
    state = resolver.state_dict()
    with pytest.raises(ValueError, match=f"{type(resolver).__name__}.*not_a_key"):
        resolver.load_state_dict({"not_a_key": 1})
    torch.testing.assert_close(resolver.state_dict(), state, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("method", METHODS)
def test_non_finite_gradients_raise_and_leave_the_state_as_it_was(method, bad):
    # A training loop that catches the error and skips the batch must go on exactly as if
    # the batch had never come: the same state, the same next direction.
    skipped, never_seen = gradsurgery.get_resolver(method), gradsurgery.get_resolver(method)
    three_steps(skipped)
    three_steps(never_seen)
    state = copy.deepcopy(skipped.state_dict())
    G = torch.tensor([[1.0, 0.5, -0.3], [-0.8, bad, 0.9]], dtype=torch.float64)
    losses = torch.tensor([1.5, 0.5], dtype=torch.float64)
    torch.manual_seed(3)
    with pytest.raises(ValueError, match="task 1 has non-finite values"):
        gradsurgery.resolve(G, method=skipped, primary=0, losses=losses)
    torch.testing.assert_close(skipped.state_dict(), state, rtol=0, atol=0, equal_nan=True)
    G[1, 1] = 0.2
    directions = []
    for resolver in (skipped, never_seen):
        torch.manual_seed(4)
        directions.append(gradsurgery.resolve(G, method=resolver, primary=0, losses=losses))
    torch.testing.assert_close(directions[0], directions[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "method", ["uw", "gradnorm", "olaux", "dwa", "famo", "db_mtl", "metabalance", "gradvac"]
)
def test_learned_state_for_other_tasks_is_refused_not_dropped(method):
    """A resolver that has learned per-task state refuses a call with another number of
    tasks (and keeps its state); ``load_state_dict({})`` starts it over. UW, GradNorm and
    OL-AUX used to reset their learned weights silently, GradVac its targets."""
    resolver = gradsurgery.get_resolver(method)
    three_steps(resolver)
    state = copy.deepcopy(resolver.state_dict())
    G = torch.tensor([[1.0, 0.5], [-0.8, 0.4], [0.3, 1.0]], dtype=torch.float64)
    losses = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match="tasks") as refused:
        gradsurgery.resolve(G, method=resolver, primary=0, losses=losses)
    if method not in ("db_mtl", "metabalance"):  # (theirs hold gradient-shaped state)
        assert str(refused.value) == (
            f"{type(resolver).__name__} has state for 2 tasks, got 3; use the same tasks "
            "every step, or load_state_dict({}) to start over"
        )
    torch.testing.assert_close(resolver.state_dict(), state, rtol=0, atol=0)
    resolver.load_state_dict({})
    expected = gradsurgery.resolve(
        G, method=gradsurgery.get_resolver(method), primary=0, losses=losses
    )
    torch.testing.assert_close(
        gradsurgery.resolve(G, method=resolver, primary=0, losses=losses), expected
    )


def _corrupted(state: dict, path: tuple, value: object) -> dict:
    """A deep copy of ``state`` with the entry at ``path`` (keys) set to ``value``."""
    state = copy.deepcopy(state)
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return state


@pytest.mark.parametrize(
    ("method", "path", "value", "match"),
    [
        ("uw", ("optimizer", "exp_avg"), torch.tensor([0.123]), "exp_avg"),
        ("uw", ("optimizer", "step"), -1, "step"),
        ("famo", ("optimizer", "exp_avg_sq"), torch.zeros(5), "exp_avg_sq"),
        ("gradnorm", ("exp_avg",), torch.zeros(1), "exp_avg"),
        ("gradnorm", ("step",), 2.5, "step"),
        ("nash_mtl", ("step",), -2, "step"),
        ("db_mtl", ("step",), -1, "step"),
        ("olaux", ("steps",), -2, "steps"),
        ("dwa", ("calls",), "5", "calls"),
        ("dwa", ("history",), [torch.ones(2)] * 3, "history"),
    ],
)
def test_a_malformed_state_is_refused_naming_the_entry_and_changes_nothing(
    method, path, value, match
):
    resolver = gradsurgery.get_resolver(method, **({"epoch_length": 1} if method == "dwa" else {}))
    three_steps(resolver)
    state = copy.deepcopy(resolver.state_dict())
    with pytest.raises((TypeError, ValueError), match=match):
        resolver.load_state_dict(_corrupted(state, path, value))
    torch.testing.assert_close(resolver.state_dict(), state, rtol=0, atol=0)


def test_nash_mtl_takes_a_float32_alpha_as_float64():
    resolver = gradsurgery.get_resolver("nash_mtl")
    three_steps(resolver)
    state = resolver.state_dict()
    resolver.load_state_dict({**state, "alpha": state["alpha"].float()})
    assert resolver.state_dict()["alpha"].dtype == torch.float64
    three_steps(resolver)  # (a float32 alpha failed at the next step)


def test_olaux_loaded_past_a_shorter_horizon_updates_at_its_next_step():
    saved = gradsurgery.get_resolver("olaux", horizon=5)
    G = torch.tensor([[1.0, 0.5], [-0.8, 0.4]], dtype=torch.float64)
    for _ in range(4):
        saved(G, primary=0)
    shorter = gradsurgery.get_resolver("olaux", horizon=3)
    shorter.load_state_dict(saved.state_dict())  # 4 steps into a horizon of 3
    before = shorter.state_dict()["task_weights"].clone()
    shorter(G, primary=0)  # (== never held again: the weights were frozen for good)
    assert not torch.equal(shorter.state_dict()["task_weights"], before)
    assert shorter.state_dict()["steps"] == 0


def test_dwa_loaded_past_its_epoch_length_ends_the_epoch_at_its_next_call():
    saved = gradsurgery.get_resolver("dwa")  # epochs ended by hand: 5 calls so far
    G = torch.eye(2, dtype=torch.float64)
    for _ in range(5):
        saved(G, losses=torch.tensor([1.0, 2.0], dtype=torch.float64))
    ends = gradsurgery.get_resolver("dwa", epoch_length=3)
    ends.load_state_dict(saved.state_dict())
    ends(G, losses=torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert ends.epochs_completed == 1 and ends.state_dict()["calls"] == 0
