"""The conflict monitor, checked against cosines, norms and angles computed directly."""

from __future__ import annotations

import csv
import io
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import gradsurgery
from gradsurgery.autograd import BackwardResult
from gradsurgery.diagnostics import (
    ConflictMonitor,
    conflict_statistics,
    cosine_from_gram,
    direction_cosine_from_gram,
    norm_ratio_from_gram,
)


def cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


@given(
    tasks=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_direction_cosine_equals_direct_computation(tasks, sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    J = torch.randn(tasks, sum(sizes), generator=generator, dtype=torch.float64)
    weights = torch.randn(len(sizes), tasks, generator=generator, dtype=torch.float64)
    blocks = J.split(sizes, dim=1)
    d = torch.cat([w @ block for w, block in zip(weights, blocks)])
    gram = torch.stack([block @ block.T for block in blocks])
    actual = direction_cosine_from_gram(gram, weights)
    expected = torch.tensor([cos(d, J[i]) for i in range(tasks)], dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_direction_cosine_of_zero_direction_is_zero():
    J = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert direction_cosine_from_gram(J @ J.T, torch.ones(2)).tolist() == [0.0, 0.0]


def test_cosines_of_parallel_gradients_stay_within_one():
    # g = (1.5, -0.3, -2.2) and 10 g: G_ij / (||g_i|| ||g_j||) rounds above 1 in float64.
    g = torch.tensor([1.5, -0.3, -2.2], dtype=torch.float64)
    J = torch.stack([g, 10 * g])
    gram = J @ J.T
    norms = gram.diagonal().sqrt()
    assert float(gram[0, 1] / (norms[0] * norms[1])) > 1.0  # the case
    cosine = cosine_from_gram(gram)
    assert cosine.dtype == torch.float64 and float(cosine.max()) == 1.0


def test_cosines_of_a_half_precision_gram_are_computed_in_float32():
    J = torch.tensor([[3e-4, 1e-4], [1e-4, 2e-4]], dtype=torch.float64)
    gram = J @ J.T
    cosine = cosine_from_gram(gram.to(torch.float16))
    assert cosine.dtype == torch.float16
    assert float(cosine.abs().max()) <= 1.0
    torch.testing.assert_close(cosine.double(), cosine_from_gram(gram), rtol=2e-2, atol=2e-2)
    ratio = norm_ratio_from_gram(gram.to(torch.float16))
    torch.testing.assert_close(ratio.double(), norm_ratio_from_gram(gram), rtol=2e-2, atol=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_gram_gives_nan_cosines_not_zero(bad):
    gram = torch.tensor([[1.0, 0.5], [0.5, bad]], dtype=torch.float64)
    assert math.isnan(float(cosine_from_gram(gram)[0, 1]))
    assert all(map(math.isnan, direction_cosine_from_gram(gram, torch.ones(2)).tolist()))


def test_results_and_statistics_compare_by_identity():
    result = BackwardResult(("a", "b"), torch.eye(2).unsqueeze(0), torch.ones(1, 2), 2)
    twin = BackwardResult(("a", "b"), torch.eye(2).unsqueeze(0), torch.ones(1, 2), 2)
    assert result == result and result != twin  # (compared tensors raised)
    stats = conflict_statistics(torch.eye(2))
    assert stats == stats and stats != conflict_statistics(torch.eye(2))


def test_plot_counts_every_step_in_the_cosine_histogram():
    pytest.importorskip("matplotlib")
    monitor = ConflictMonitor(["a", "b"])
    for result in synthetic([(2.0, 0.0), (-1.0, 1.0), (3.0, 0.0)]):
        monitor.update(result)
    state = monitor.state_dict()
    state["rows"]["all"][0][5] = 1.0000000000000004  # cos_a_b as older code could record
    monitor.load_state_dict(state)
    figure = monitor.plot()
    heights = [patch.get_height() for patch in figure.axes[2].patches]
    assert sum(heights) == 3


def test_statistics_by_hand():
    # g_p = (1, 0), g_a = (-6, 1): conflicting, ||g_a|| / ||g_p|| = sqrt(37) > 5.
    J = torch.tensor([[1.0, 0.0], [-6.0, 1.0]], dtype=torch.float64)
    stats = conflict_statistics(J @ J.T, primary=0)
    assert stats.conflict and stats.dominance and stats.conflict_blocks == 1.0
    assert stats.norms.tolist() == pytest.approx([1.0, math.sqrt(37)])
    assert float(stats.norm_ratio[1, 0]) == pytest.approx(math.sqrt(37))
    assert float(stats.cosine[0, 1]) == pytest.approx(-6 / math.sqrt(37))
    assert stats.angles is None
    # K above the ratio: no dominance; a third task that only conflicts with the auxiliary
    # counts without a primary, not with one.
    J3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -1.0]], dtype=torch.float64)
    assert not conflict_statistics(J3 @ J3.T, primary=0).conflict
    assert conflict_statistics(J3 @ J3.T).conflict
    assert not conflict_statistics(J @ J.T, k=7.0, primary=0).dominance


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4))
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.tanh(self.trunk(x))
        return {"a": self.head_a(z).pow(2).mean(), "b": (self.head_b(z) - 2).pow(2).mean()}


X = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))


def trunk_gradients(trunk: list[torch.Tensor], losses: dict[str, torch.Tensor]) -> list:
    """Each task's gradient of the trunk, flattened, collected by hand."""
    return [
        torch.cat([t.flatten() for t in torch.autograd.grad(loss, trunk, retain_graph=True)])
        for loss in losses.values()
    ]


@pytest.mark.parametrize("granularity", ["global", "tensor"])
def test_monitor_matches_direct_gradients(granularity):
    model = TwoHeads()
    trunk = list(model.trunk.parameters())
    losses = model.losses(X)
    g = trunk_gradients(trunk, losses)
    result = gradsurgery.backward(
        losses, model.parameters(), resolver="gr", primary="a", granularity=granularity
    )
    d = torch.cat([p.grad.flatten() for p in trunk])  # the resolved direction itself
    monitor = ConflictMonitor(["a", "b"], k=5.0, primary="a")
    monitor.update(result, step=7)
    row = monitor.history()
    assert row["step"] == [7.0]
    assert row["cos_a_b"][0] == pytest.approx(cos(g[0], g[1]), rel=1e-5)
    assert row["ratio_a_b"][0] == pytest.approx(float(g[0].norm() / g[1].norm()), rel=1e-5)
    assert row["norm_b"][0] == pytest.approx(float(g[1].norm()), rel=1e-5)
    for name, grad in zip("ab", g):
        angle = math.degrees(math.acos(max(-1.0, min(1.0, cos(d, grad)))))
        assert row[f"angle_{name}"][0] == pytest.approx(angle, abs=1e-3)
    assert row["conflict"][0] == float(cos(g[0], g[1]) < 0)


@pytest.mark.parametrize("resolver", ["gr", "sum"])
@pytest.mark.parametrize("loss_weights", [{"a": 0.7, "b": 0.3}, {"a": 1.0, "b": 0.0}])
def test_angles_are_those_of_the_direction_taken_with_loss_weights(resolver, loss_weights):
    # the Gram is that of the weighted gradients c_i g_i, the weights those of g_i: the
    # monitor must pair them right to measure the direction's angle to each task
    model = TwoHeads()
    trunk = list(model.trunk.parameters())
    losses = model.losses(X)
    g = trunk_gradients(trunk, losses)
    result = gradsurgery.backward(
        losses,
        model.parameters(),
        resolver=resolver,
        primary="a",
        weights=loss_weights,
        diagnostics=True,
    )
    d = torch.cat([p.grad.flatten() for p in trunk])
    monitor = ConflictMonitor(["a", "b"], primary="a")
    monitor.update(result)
    row = monitor.history()
    for name, grad in zip("ab", g):  # compared as cosines: acos is ill-conditioned near 0
        if loss_weights[name] == 0.0:
            continue  # its weighted gradient, all the Gram knows of it, is zero
        reported = math.cos(math.radians(row[f"angle_{name}"][0]))
        assert reported == pytest.approx(cos(d, grad), abs=1e-5)


def test_a_refused_result_leaves_the_monitor_as_it_was():
    model = TwoHeads()
    result = gradsurgery.backward(
        model.losses(X), model.parameters(), resolver="gr", primary="a", granularity="global"
    )
    monitor = ConflictMonitor(
        ["a", "b"], primary="a", groups={"first": model.trunk[0].parameters()}
    )
    with pytest.raises(ValueError, match="straddles"):
        monitor.update(result)  # the one global block holds the whole trunk and both heads
    assert monitor.history()["step"] == [] and monitor.history("first")["step"] == []
    no_gram = gradsurgery.backward(model.losses(X), model.parameters(), resolver="sum")
    with pytest.raises(ValueError, match="diagnostics=True"):
        monitor.update(no_gram)
    tensor_wise = gradsurgery.backward(
        model.losses(X), model.parameters(), resolver="gr", primary="a", granularity="tensor"
    )
    monitor.update(tensor_wise)
    assert monitor.history()["step"] == [0.0]  # the refused calls took no step number


def synthetic(pairs: list[tuple[float, float]]) -> list[BackwardResult]:
    """Results whose two task gradients are g_a = (1, 0), g_b = (x, y)."""
    results = []
    for x, y in pairs:
        J = torch.tensor([[1.0, 0.0], [x, y]], dtype=torch.float64)
        gram = (J @ J.T).unsqueeze(0)
        results.append(BackwardResult(("a", "b"), gram, torch.ones(1, 2, dtype=torch.float64), 2))
    return results


def test_summary_shares_and_quantiles():
    pairs = [(-1.0, 1.0), (2.0, 0.0), (-10.0, 0.0), (0.0, 3.0)]
    monitor = ConflictMonitor(["a", "b"], k=5.0, primary="a")
    for result in synthetic(pairs):
        monitor.update(result)
    monitor.update(BackwardResult(("a", "b"), None, None, 2, finite=False))
    summary = monitor.summary()
    assert summary["steps"] == 4 and summary["skipped_steps"] == 1
    assert monitor.skipped_steps == [4]
    assert summary["conflict_share"] == 0.5  # steps 0 and 2
    assert summary["dominance_share"] == 0.25  # step 2: ||g_b|| = 10 > 5
    cosines = [x / math.hypot(x, y) for x, y in pairs]
    assert summary["mean_cosine"]["a_b"] == pytest.approx(sum(cosines) / 4)
    ratios = torch.tensor([1 / math.hypot(x, y) for x, y in pairs], dtype=torch.float64)
    assert summary["norm_ratio_quantiles"]["a_b"]["q50"] == pytest.approx(
        float(torch.quantile(ratios, 0.5))
    )


def test_quantiles_of_finite_ratios_are_torch_quantiles():
    pairs = [(-1.0, 1.0), (2.0, 0.0), (-10.0, 0.0), (0.0, 3.0), (0.5, 0.5)]
    monitor = ConflictMonitor(["a", "b"])
    for result in synthetic(pairs):
        monitor.update(result)
    ratios = torch.tensor(monitor.history()["ratio_a_b"], dtype=torch.float64)
    quantiles = monitor.summary()["norm_ratio_quantiles"]["a_b"]
    for name, q in (("q5", 0.05), ("q25", 0.25), ("q50", 0.5), ("q75", 0.75), ("q95", 0.95)):
        assert quantiles[name] == pytest.approx(float(torch.quantile(ratios, q)), rel=1e-12)


def test_quantiles_reach_inf_from_a_zero_task_gradient_never_nan():
    # g_b = 0 gives ||g_a|| / ||g_b|| = inf; the others 1/2 and 1/4. Sorted: 1/4, 1/2, inf,
    # at positions h = q (n - 1) = 2q: q5 -> h 0.1: 1/4 + 0.1 (1/4) = 0.275; q25 -> h 0.5:
    # 0.375; q50 -> h 1: 1/2; q75, q95 -> between 1/2 and inf: inf (the interpolation's limit)
    monitor = ConflictMonitor(["a", "b"], primary="a")
    for result in synthetic([(0.0, 0.0), (2.0, 0.0), (4.0, 0.0)]):
        monitor.update(result)
    assert monitor.history()["ratio_a_b"] == [math.inf, 0.5, 0.25]
    assert monitor.summary()["norm_ratio_quantiles"]["a_b"] == pytest.approx(
        {"q5": 0.275, "q25": 0.375, "q50": 0.5, "q75": math.inf, "q95": math.inf}
    )
    # two zero steps of three: every quantile past the finite one is inf
    monitor.update(synthetic([(0.0, 0.0)])[0])  # sorted: 1/4, 1/2, inf, inf
    quantiles = monitor.summary()["norm_ratio_quantiles"]["a_b"]
    assert quantiles["q25"] == pytest.approx(0.25 + 0.75 * 0.25)  # h = 0.75
    assert quantiles["q50"] == math.inf and quantiles["q95"] == math.inf


def test_quantile_rule_with_infinities_of_both_signs():
    from gradsurgery.diagnostics import _quantile

    data = [-math.inf, math.inf]  # no limit: the nearer order statistic
    assert _quantile(data, 0.25) == -math.inf and _quantile(data, 0.75) == math.inf
    assert _quantile([-math.inf, 1.0, 3.0], 0.25) == -math.inf  # h = 0.5, below -inf
    assert _quantile([-math.inf, 1.0, 3.0], 0.75) == 2.0  # h = 1.5, finite neighbours
    assert _quantile([math.inf, math.inf], 0.3) == math.inf  # equal neighbours


def test_csv_and_state_dict_round_trip(tmp_path):
    monitor = ConflictMonitor(["a", "b"], primary=0)
    for result in synthetic([(-1.0, 1.0), (2.0, 0.0)]):
        monitor.update(result)
    path = tmp_path / "conflicts.csv"
    monitor.to_csv(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1"]
    assert float(rows[0]["cos_a_b"]) == pytest.approx(-1 / math.sqrt(2))
    assert rows[1]["conflict"] == "0.0" and rows[0]["group"] == "all"

    buffer = io.BytesIO()
    torch.save(monitor.state_dict(), buffer)
    buffer.seek(0)
    resumed = ConflictMonitor(["a", "b"], primary=0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.history() == monitor.history()
    resumed.update(synthetic([(0.0, 1.0)])[0])
    assert resumed.history()["step"] == [0.0, 1.0, 2.0]  # step numbering resumes
    with pytest.raises(ValueError, match="task_names"):
        ConflictMonitor(["x", "b"]).load_state_dict(monitor.state_dict())


def test_groups_need_tensor_granularity():
    model = TwoHeads()
    first = list(model.trunk[0].parameters())
    monitor = ConflictMonitor(["a", "b"], groups={"first": first})
    result = gradsurgery.backward(
        model.losses(X), model.parameters(), resolver="pcgrad", granularity="tensor"
    )
    monitor.update(result)
    losses = model.losses(X)
    g = [
        torch.cat([t.flatten() for t in torch.autograd.grad(loss, first, retain_graph=True)])
        for loss in losses.values()
    ]
    assert monitor.history("first")["cos_a_b"][0] == pytest.approx(cos(g[0], g[1]), rel=1e-5)
    assert monitor.groups == ("all", "first")
    whole = gradsurgery.backward(model.losses(X), model.parameters(), resolver="pcgrad")
    with pytest.raises(ValueError, match="straddles"):
        monitor.update(whole)


def test_plot_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    monitor = ConflictMonitor(["a", "b"], primary="a")
    for result in synthetic([(-1.0, 1.0), (2.0, 0.0), (-10.0, 0.0)]):
        monitor.update(result)
    figure = monitor.plot(tmp_path / "conflicts.png")
    assert (tmp_path / "conflicts.png").stat().st_size > 1000
    assert len(figure.axes) == 4


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monitor = ConflictMonitor(["a", "b"], primary="a")
    monitor.update(synthetic([(-1.0, 1.0)])[0])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now fails
    with pytest.raises(ImportError, match=r"gradsurgery\[plot\]"):
        monitor.plot()


def test_bad_input():
    model = TwoHeads()
    no_gram = gradsurgery.backward(model.losses(X), model.parameters(), resolver="sum")
    with pytest.raises(ValueError, match="diagnostics=True"):
        ConflictMonitor(["a", "b"]).update(no_gram)
    with pytest.raises(ValueError, match="tasks"):
        ConflictMonitor(["x", "y"]).update(no_gram)
    with pytest.raises(ValueError, match="Invalid k"):
        ConflictMonitor(["a", "b"], k=0)
    with pytest.raises(ValueError, match="Invalid primary"):
        ConflictMonitor(["a", "b"], primary="c")
    with pytest.raises(ValueError, match="distinct"):
        ConflictMonitor(["a", "a"])
    with pytest.raises(ValueError, match="Invalid group"):
        ConflictMonitor(["a", "b"]).summary("trunk")
    with pytest.raises(TypeError, match="Invalid task_names: 'ab'"):
        ConflictMonitor("ab")
    with pytest.raises(ValueError, match="Invalid primary: 2"):
        ConflictMonitor(["a", "b"], primary=2)
    with pytest.raises(ValueError, match="'all' is reserved"):
        ConflictMonitor(["a", "b"], groups={"all": model.trunk.parameters()})
    with pytest.raises(ValueError, match="saved groups \\['all'\\] differ"):
        ConflictMonitor(["a", "b"], groups={"trunk": model.trunk.parameters()}).load_state_dict(
            ConflictMonitor(["a", "b"]).state_dict()
        )
    with pytest.raises(ValueError, match="2 blocks of weights for 1 Gram"):
        direction_cosine_from_gram(torch.eye(2), torch.ones(2, 2))


def test_dominance_blocks_is_the_share_of_dominated_blocks():
    blocks = [
        torch.tensor([[1.0, 0.0], [6.0, 0.0]]),  # ||a|| / ||p|| = 6 > 5
        torch.tensor([[1.0, 0.0], [1.0, 1.0]]),  # ratio sqrt(2)
        torch.tensor([[0.5, 0.0], [0.0, 4.0]]),  # ratio 8
        torch.tensor([[2.0, 0.0], [-1.0, 0.0]]),  # conflict, ratio 0.5
    ]
    gram = torch.stack([J @ J.T for J in blocks]).double()
    stats = conflict_statistics(gram, primary=0, k=5.0)
    assert stats.dominance_blocks == 0.5
    assert stats.conflict_blocks == 0.25


def test_columns_name_the_csv_columns_after_step_and_group(tmp_path):
    monitor = ConflictMonitor(["a", "b"], primary=0)
    monitor.update(synthetic([(-1.0, 1.0)])[0])
    path = tmp_path / "conflicts.csv"
    monitor.to_csv(path)
    with open(path, newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["step", "group", *monitor.columns]
    assert "cos_a_b" in monitor.columns and "angle_b" in monitor.columns


def test_summary_of_a_monitor_without_steps_is_nan_not_an_error():
    summary = ConflictMonitor(["a", "b"]).summary()
    assert summary["steps"] == 0 and math.isnan(summary["conflict_share"])
    assert all(math.isnan(q) for q in summary["norm_ratio_quantiles"]["a_b"].values())


def test_the_monitors_primary_is_taken_as_the_front_door_takes_it():
    assert ConflictMonitor(["a", "b"], primary=-1).primary == 1
    assert ConflictMonitor(["a", "b"], primary=np.int64(0)).primary == 0
    assert ConflictMonitor(["a", "b"], primary="b").primary == 1
    with pytest.raises(TypeError, match="Invalid primary: True"):
        ConflictMonitor(["a", "b"], primary=True)
