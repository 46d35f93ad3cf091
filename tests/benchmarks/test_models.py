"""The overhead benchmark's workloads: trunk + heads models and the flagship's SE+ASR model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.models import MODELS, SE_ASR_TASKS, MultiTaskModel, Workload


@pytest.fixture(scope="module")
def se_asr() -> Workload:
    builder, task_counts = MODELS["se_asr"]
    assert task_counts == (2,)
    return builder(2, 0, True)


def test_se_asr_gives_two_finite_scalar_losses(se_asr):
    features, losses = se_asr.forward()
    assert se_asr.tasks == 2 and se_asr.task_names == SE_ASR_TASKS == ("asr", "se")
    assert len(losses) == 2
    for loss in losses:
        assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert features.dim() == 3 and features.requires_grad  # (B, frames, bins) enhanced


def test_se_asr_shares_the_front_end_with_both_tasks(se_asr):
    shared = se_asr.shared_parameters()
    recogniser = list(se_asr.model.asr.parameters())
    assert {id(p) for p in shared} == {id(p) for p in se_asr.model.se.parameters()}
    _, (asr, se) = se_asr.forward()
    for loss in (asr, se):
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    # The recogniser is ASR's alone: SE reaches none of it.
    asr_grads = torch.autograd.grad(asr, recogniser, retain_graph=True, allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in asr_grads)
    se_grads = torch.autograd.grad(se, recogniser, retain_graph=True, allow_unused=True)
    assert all(g is None for g in se_grads)


def test_se_asr_features_are_the_cut_between_shared_and_task_parameters(se_asr):
    # The chain rule through the features gives each loss's whole gradient on the shared
    # parameters: what TorchJD's mtl_backward(losses, features=...) relies on.
    torch.manual_seed(0)
    features, losses = se_asr.forward()
    shared = se_asr.shared_parameters()
    for loss in losses:
        direct = torch.autograd.grad(loss, shared, retain_graph=True)
        (at_features,) = torch.autograd.grad(loss, features, retain_graph=True)
        chained = torch.autograd.grad(features, shared, at_features, retain_graph=True)
        for a, b in zip(direct, chained):
            torch.testing.assert_close(a, b)


def test_se_asr_has_exactly_two_tasks():
    builder, _ = MODELS["se_asr"]
    with pytest.raises(ValueError, match="tasks"):
        builder(3, 0, True)


def test_trunk_workloads_share_the_trunk():
    workload = MODELS["mlp"][0](4, 0, True)
    assert workload.tasks == 4
    trunk = list(workload.model.trunk.parameters())
    assert [id(p) for p in workload.shared_parameters()] == [id(p) for p in trunk]
    _, losses = workload.forward()
    assert len(losses) == 4
    shared, total = workload.parameter_count()
    assert shared == sum(p.numel() for p in trunk) < total


def test_workload_arguments_are_checked():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="shared"):
        Workload("w", model, forward_fn=lambda: (torch.zeros(1), []), task_names=("a",))
    with pytest.raises(ValueError, match="task_names"):
        Workload("w", model, forward_fn=lambda: (torch.zeros(1), []), shared=model)
    with pytest.raises(TypeError, match="MultiTaskModel"):
        Workload("w", model, torch.zeros(1, 2), [torch.zeros(1)])
    heads = MultiTaskModel(nn.Identity(), [nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="inputs and targets"):
        Workload("w", heads)
