"""Which runs the quality benchmarks make of each method: ``name`` and, where it differs,
``name[p]`` with ``primary=0``."""

from __future__ import annotations

import pytest
import torch

import gradsurgery
from benchmarks import _common


def resolved(method: str, G: torch.Tensor, losses: torch.Tensor, primary: int | None, seed: int):
    """A fresh resolver's direction, with torch's generator seeded alike for every call."""
    torch.manual_seed(seed)
    return gradsurgery.get_resolver(method)(G, primary=primary, losses=losses)


def same_without_primary(method: str) -> bool:
    """Whether ``primary=None`` and ``primary=0`` give the same direction bit for bit, on
    matrices of 2 and 3 tasks whose auxiliaries conflict with task 0."""
    for seed, tasks in [(0, 2), (1, 3), (2, 3), (3, 4)]:
        g = torch.Generator().manual_seed(seed)
        G = torch.randn(tasks, 40, generator=g, dtype=torch.float64)
        G[1:] -= 0.8 * G[:1]
        losses = torch.rand(tasks, generator=g, dtype=torch.float64) + 0.5
        if not torch.equal(
            resolved(method, G, losses, None, seed), resolved(method, G, losses, 0, seed)
        ):
            return False
    return True


@pytest.mark.parametrize("method", gradsurgery.available())
def test_primary_by_default_is_exactly_where_primary_0_changes_nothing(method):
    # The documented rule (reads_primary_only) against a probe of every registered method
    # with a primary form: a [p] run is made exactly where it can differ.
    if not _common.has_primary_form(method):
        assert not _common.primary_by_default(method)
        return
    assert _common.primary_by_default(method) == same_without_primary(method)


def test_no_primary_variant_repeats_its_plain_run():
    labels = {label: (method, primary) for label, method, primary in _common.variants()}
    for label, (method, primary) in labels.items():
        if primary is not None:
            assert label == f"{method}[p]" and not _common.primary_by_default(method)
    assert "pcgrad[p]" in labels and "graddrop[p]" in labels  # symmetric without a primary
    for method in ("gr", "gr_project", "cosine_gate", "metabalance", "olaux", "pcgrad_onesided"):
        if method in gradsurgery.available():
            assert method in labels and f"{method}[p]" not in labels


def test_a_method_that_cannot_be_built_has_no_default_primary():
    assert not _common.primary_by_default("no_such_method")


def test_the_toy_batches_only_resolvers_without_state_losses_or_draws() -> None:
    from benchmarks import toy

    # one batched call per step would share RLW's weights (drawn once per call) by every
    # run, and GradDrop's draws would not be each run's own
    assert not toy._is_stateless("rlw", None) and not toy._is_stateless("graddrop", 0)
    assert not toy._is_stateless("uw", None)  # losses and state
    assert toy._is_stateless("gr", 0) and toy._is_stateless("pcgrad", None)  # (T = 2)


def test_toy_runs_of_rlw_have_their_own_instances() -> None:
    from benchmarks import toy

    assert toy.optimise("rlw", None, steps=2, record_every=1, seed=0)["batched"] is False
