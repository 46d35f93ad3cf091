"""The diagnostics refuse bad input with errors that name the argument, and leave the
monitor as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradsurgery
from gradsurgery.autograd import BackwardResult
from gradsurgery.diagnostics import ConflictMonitor, conflict_statistics


def result_of(J: list[list[float]]) -> BackwardResult:
    """A one-block result of task gradients ``J`` (rows), with weights 1."""
    G = torch.tensor(J, dtype=torch.float64)
    T = G.shape[0]
    return BackwardResult(
        tuple("ab"[:T]), (G @ G.T).unsqueeze(0), torch.ones(1, T, dtype=torch.float64), 2
    )


# -- a result without a Gram matrix says why -----------------------------------------------


def test_tasks_that_share_no_parameter_are_named_as_the_cause():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2))
    losses = {"a": a.pow(2).sum(), "b": (2 * b).sum()}
    result = gradsurgery.backward(losses, [a, b], resolver="gr", primary="a", diagnostics=True)
    assert result.gram is None and result.shared_parameters == 0
    monitor = ConflictMonitor(["a", "b"], primary="a")
    with pytest.raises(ValueError, match="shared_parameters == 0") as error:
        monitor.update(result)
    message = str(error.value)
    assert "share no parameter" in message
    assert "loss weighting" in message and "only in that case, pass diagnostics=True" in message
    assert monitor.history()["step"] == [] and monitor.skipped_steps == []


def test_a_resolver_without_a_gram_over_shared_parameters_is_told_diagnostics():
    monitor = ConflictMonitor(["a", "b"])
    with pytest.raises(ValueError, match="none for its 4 shared parameters; pass diagnostics=True"):
        monitor.update(BackwardResult(("a", "b"), None, None, 4))


# -- groups ----------------------------------------------------------------------------------


W = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 1.0], [3.0, 0.0]]))


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        (
            {"w": W},
            TypeError,
            r"group 'w' is a bare tensor .*wrap it in a list: \{'w': \[tensor\]\}",
        ),
        ([W], TypeError, "Invalid groups: expected a mapping .* got list"),
        ({"w": torch.nn.Linear(2, 2)}, TypeError, r"group 'w' is a module; pass its parameters"),
        ({"w": 3}, TypeError, "group 'w' is of type int, not an iterable"),
        ({"w": "w"}, TypeError, "group 'w' is of type str"),
        ({"w": [W, 3]}, TypeError, "item 1 of group 'w' is of type int, not a tensor"),
        ({1: [W]}, TypeError, "group names must be str"),
        ({"w": []}, ValueError, "group 'w' has no parameters"),
    ],
)
def test_groups_must_map_names_to_parameter_tensors(groups, error, match):
    with pytest.raises(error, match=match):
        ConflictMonitor(["a", "b"], groups=groups)


def test_a_group_of_one_tensor_in_a_list_is_recorded():
    monitor = ConflictMonitor(["a", "b"], primary="a", groups={"w": [W]})
    for step in (3, 8):
        losses = {"a": W.pow(2).sum(), "b": (W.sum() - 1).pow(2)}
        result = gradsurgery.backward(losses, [W], resolver="gr", primary="a", granularity="tensor")
        monitor.update(result, step=step)
    W.grad = None
    # W is the only shared parameter: its group holds every step, as "all" does
    assert monitor.history("w")["step"] == [3.0, 8.0]
    assert monitor.history("w") == monitor.history()
    # g_a = 2 W and g_b = 2 (sum W - 1) (1, ..., 1), with sum W = 3.5 > 1:
    # cos = sum W / (|W| sqrt(6))
    expected = float(W.detach().sum() / (W.detach().norm() * math.sqrt(6)))
    assert monitor.history("w")["cos_a_b"] == pytest.approx([expected, expected])


# -- column names ----------------------------------------------------------------------------


def test_task_names_whose_pair_columns_collide_are_refused():
    with pytest.raises(ValueError, match=r"\('a_b', 'c'\) and \('a', 'b_c'\) .* 'a_b_c'"):
        ConflictMonitor(["a_b", "c", "a", "b_c"])
    # underscores alone are fine: each pair keeps its own column
    monitor = ConflictMonitor(["a_b", "c", "d"])
    assert [c for c in monitor.columns if c.startswith("cos_")] == [
        "cos_a_b_c",
        "cos_a_b_d",
        "cos_c_d",
    ]


# -- conflict_statistics -----------------------------------------------------------------------


GRAM = torch.tensor([[1.0, -6.0], [-6.0, 37.0]], dtype=torch.float64)  # g = (1, 0), (-6, 1)


@pytest.mark.parametrize(
    ("primary", "error", "match"),
    [
        (2, ValueError, "Invalid primary: 2 is out of range for 2 task"),
        (-3, ValueError, "Invalid primary: -3 is out of range"),
        ("a", TypeError, "Invalid primary: 'a' .*task index"),
        (True, TypeError, "Invalid primary: True"),
        (1.0, TypeError, "Invalid primary: 1.0"),
    ],
)
def test_conflict_statistics_refuses_a_bad_primary(primary, error, match):
    with pytest.raises(error, match=match):
        conflict_statistics(GRAM.unsqueeze(0), primary=primary)


def test_conflict_statistics_takes_a_negative_primary_as_an_index_from_the_end():
    # primary = -1 is task 1, (-6, 1): ||g_0|| / ||g_1|| = 1/sqrt(37) < 5, no dominance
    last = conflict_statistics(GRAM, primary=-1)
    assert last.conflict and not last.dominance
    assert conflict_statistics(GRAM, primary=0).dominance  # sqrt(37) > 5


@pytest.mark.parametrize(
    ("gram", "weights", "error", "match"),
    [
        (GRAM.unsqueeze(0), torch.ones(1, 3), ValueError, r"weights: shape \(1, 3\) for 2 task"),
        (GRAM, torch.ones(3), ValueError, r"weights: shape \(3,\) for 2 task"),
        (GRAM, torch.ones(1, 1, 2), ValueError, r"weights: shape \(1, 1, 2\)"),
        (GRAM, torch.ones(2, 2), ValueError, "2 blocks of weights for 1 Gram"),
        (GRAM, [1.0, 1.0], TypeError, "Invalid weights: expected a tensor, got list"),
        (torch.ones(2, 3), None, ValueError, r"Invalid gram: shape \(2, 3\)"),
        (torch.ones(1, 1, 2, 2), None, ValueError, r"Invalid gram: shape \(1, 1, 2, 2\)"),
        (torch.ones(0, 2, 2), None, ValueError, "Invalid gram"),
        (GRAM.tolist(), None, TypeError, "Invalid gram: expected a tensor, got list"),
    ],
)
def test_conflict_statistics_refuses_bad_shapes(gram, weights, error, match):
    with pytest.raises(error, match=match):
        conflict_statistics(gram, weights)


def test_conflict_statistics_weights_of_one_block_may_be_one_row():
    one = conflict_statistics(GRAM, torch.ones(2, dtype=torch.float64))
    rows = conflict_statistics(GRAM.unsqueeze(0), torch.ones(1, 2, dtype=torch.float64))
    assert one.direction_cosine is not None and rows.direction_cosine is not None
    # d = g_0 + g_1 = (-5, 1): cos(d, g_0) = -5 / sqrt(26)
    assert float(one.direction_cosine[0]) == pytest.approx(-5 / math.sqrt(26))
    torch.testing.assert_close(one.direction_cosine, rows.direction_cosine)


# -- load_state_dict is all or nothing ---------------------------------------------------------


def saved_monitor() -> dict:
    monitor = ConflictMonitor(["a", "b"])
    for x in (-1.0, 2.0, 3.0):
        monitor.update(result_of([[1.0, 0.0], [x, 1.0]]))
    monitor.update(BackwardResult(("a", "b"), None, None, 2, finite=False))
    return monitor.state_dict()


def _without(key: str):
    def corrupt(state: dict) -> None:
        del state[key]

    return corrupt


def _set(key: str, value: object):
    def corrupt(state: dict) -> None:
        state[key] = value

    return corrupt


def _short_row(state: dict) -> None:
    state["rows"]["all"][1] = state["rows"]["all"][1][:-1]


def _text_in_row(state: dict) -> None:
    state["rows"]["all"][2][3] = "0.5"


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_without("updates"), r"lacks \['updates'\]"),
        (_without("skipped_steps"), r"lacks \['skipped_steps'\]"),
        (_without("rows"), r"lacks \['rows'\]"),
        (_set("updates", "4"), "updates holds '4', expected an int >= 0"),
        (_set("updates", -1), "updates holds -1"),
        (_set("updates", 4.0), "updates holds 4.0"),
        (_set("skipped_steps", None), "skipped_steps is of type NoneType, expected a list"),
        (_set("skipped_steps", [3.5]), "skipped_steps holds 3.5"),
        (_set("rows", [[0.0]]), r"saved groups list differ"),
        (_set("rows", {"all": None}), r"rows\['all'\] is of type NoneType"),
        (_short_row, r"rows\['all'\] holds a row that is not 11 numbers"),
        (_text_in_row, r"rows\['all'\] holds a row that is not 11 numbers"),
        (_set("k", 4.0), "saved k 4.0 differs"),
    ],
)
def test_a_bad_state_dict_leaves_the_monitor_unchanged(corrupt, match):
    live = ConflictMonitor(["a", "b"])
    live.update(result_of([[1.0, 0.0], [5.0, 1.0]]))
    before = live.state_dict()
    state = saved_monitor()
    corrupt(state)
    with pytest.raises(ValueError, match=match):
        live.load_state_dict(state)
    assert live.state_dict() == before
    live.update(result_of([[1.0, 0.0], [0.0, 1.0]]))
    assert live.history()["step"] == [0.0, 1.0]  # its own step numbering goes on


def test_load_state_dict_refuses_a_non_mapping_and_loads_a_good_one():
    live = ConflictMonitor(["a", "b"])
    with pytest.raises(TypeError, match="Invalid state_dict: expected a mapping, got list"):
        live.load_state_dict([])
    state = saved_monitor()
    live.load_state_dict(state)
    assert live.state_dict() == state
    assert live.skipped_steps == [3]
    live.update(result_of([[1.0, 0.0], [0.0, 1.0]]))
    assert live.history()["step"] == [0.0, 1.0, 2.0, 4.0]


def _nan_step(state: dict) -> None:
    state["rows"]["all"][0][0] = math.nan


def _fractional_step(state: dict) -> None:
    state["rows"]["all"][0][0] = 2.5


def _bool_in_row(state: dict) -> None:
    state["rows"]["all"][0][1] = True


@pytest.mark.parametrize("corrupt", [_nan_step, _fractional_step, _bool_in_row])
def test_a_row_whose_step_is_not_a_whole_number_is_refused(corrupt, tmp_path):
    live = ConflictMonitor(["a", "b"])
    state = saved_monitor()
    corrupt(state)
    with pytest.raises(ValueError, match=r"rows\['all'\] holds a row that is not 11 numbers"):
        live.load_state_dict(state)
    live.to_csv(tmp_path / "conflicts.csv")  # (a NaN step made it raise, a 2.5 step read 2)


# -- update checks everything before it counts or records -------------------------------


def test_update_refuses_what_is_not_a_result():
    monitor = ConflictMonitor(["a", "b"])
    with pytest.raises(TypeError, match=r"Invalid result: .*got NoneType.*Accumulator.resolve"):
        monitor.update(None)  # type: ignore[arg-type]
    assert monitor.state_dict()["updates"] == 0


@pytest.mark.parametrize("step", ["3", 2.7, [1], True])
def test_update_refuses_a_step_that_is_not_an_integer(step):
    monitor = ConflictMonitor(["a", "b"])
    with pytest.raises(TypeError, match="Invalid step"):
        monitor.update(result_of([[1.0, 0.0], [0.0, 1.0]]), step=step)
    assert monitor.history()["step"] == [] and monitor.state_dict()["updates"] == 0


def test_update_takes_a_numpy_integer_step():
    monitor = ConflictMonitor(["a", "b"])
    monitor.update(result_of([[1.0, 0.0], [0.0, 1.0]]), step=np.int64(7))
    assert monitor.history()["step"] == [7.0]


def _gram_of_three_tasks() -> BackwardResult:
    G = torch.eye(3, dtype=torch.float64)
    return BackwardResult(("a", "b"), G.unsqueeze(0), None, 3)


def _weights_of_other_blocks() -> BackwardResult:
    G = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    return BackwardResult(("a", "b"), G, torch.ones(1, 2, dtype=torch.float64), 2)


def _non_finite_gram() -> BackwardResult:
    G = torch.tensor([[1.0, math.nan], [math.nan, 1.0]], dtype=torch.float64)
    return BackwardResult(("a", "b"), G.unsqueeze(0), torch.ones(1, 2, dtype=torch.float64), 2)


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (_gram_of_three_tasks, r"its gram is \(1, 3, 3\), expected \(B, 2, 2\)"),
        (_weights_of_other_blocks, r"its weights are \(1, 2\), expected \(2, 2\)"),
        (_non_finite_gram, "non-finite entries, yet result.finite is True"),
    ],
)
def test_update_refuses_a_result_of_other_shapes_before_counting_it(result, match):
    monitor = ConflictMonitor(["a", "b"])
    with pytest.raises(ValueError, match=match):
        monitor.update(result())
    assert monitor.state_dict()["updates"] == 0 and monitor.history()["step"] == []
    monitor.update(result_of([[1.0, 0.0], [0.0, 1.0]]))
    assert monitor.history()["step"] == [0.0]
    ConflictMonitor(["a", "b"]).load_state_dict(monitor.state_dict())


def test_update_with_groups_refuses_a_result_without_its_blocks():
    w = torch.nn.Parameter(torch.ones(2))
    monitor = ConflictMonitor(["a", "b"], groups={"w": [w]})
    with pytest.raises(ValueError, match="0 blocks of parameters for 1 Gram matrices"):
        monitor.update(result_of([[1.0, 0.0], [0.0, 1.0]]))
    assert monitor.state_dict()["updates"] == 0


@pytest.mark.parametrize("task_names", [None, 3, (name for name in "ab")])
def test_task_names_must_be_a_sequence(task_names):
    with pytest.raises(TypeError, match="Invalid task_names"):
        ConflictMonitor(task_names)  # type: ignore[arg-type]


# -- conflict_statistics checks k and a finite gram --------------------------------------------


@pytest.mark.parametrize(
    ("k", "error"),
    [
        (math.nan, ValueError),
        (0.0, ValueError),
        (-1.0, ValueError),
        (True, TypeError),
        ("5", TypeError),
    ],
)
def test_conflict_statistics_refuses_a_bad_k(k, error):
    with pytest.raises(error, match="Invalid k"):
        conflict_statistics(torch.eye(2), k=k)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_conflict_statistics_refuses_a_non_finite_gram(bad):
    with pytest.raises(ValueError, match="Invalid gram: it has non-finite entries"):
        conflict_statistics(torch.tensor([[1.0, bad], [bad, 1.0]]))


def test_to_csv_names_a_missing_folder_and_leaves_no_partial_file(tmp_path):
    monitor = ConflictMonitor(["a", "b"])
    monitor.update(result_of([[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(FileNotFoundError, match="Invalid path"):
        monitor.to_csv(tmp_path / "missing" / "conflicts.csv")
    monitor.to_csv(tmp_path / "conflicts.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["conflicts.csv"]
