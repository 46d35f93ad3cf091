"""The benchmarks' command lines: what they refuse up front, and what ``--smoke`` leaves."""

from __future__ import annotations

import pytest
import torch

from benchmarks import _common, digits, kernel, overhead, regression, toy
from benchmarks.models import MODELS

MODULES = [overhead, kernel, toy, regression, digits]
LOWEST, HIGHEST = _common.SEED_RANGE


def refused(module, arguments, capsys) -> str:
    """``module.parse_args(arguments)``'s argparse error (exit status 2), checked."""
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(arguments)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.split(".")[-1])
@pytest.mark.parametrize("seed", [str(2**64), str(HIGHEST + 1), str(LOWEST - 1), "x"])
def test_a_seed_torch_cannot_take_is_refused_by_argparse(module, seed, capsys):
    assert "argument --seed" in refused(module, ["--smoke", "--seed", seed], capsys)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.split(".")[-1])
def test_the_extreme_seeds_are_taken(module):
    for seed in (LOWEST, -1, HIGHEST):
        assert module.parse_args(["--smoke", "--seed", str(seed)]).seed == seed


def test_the_highest_seed_leaves_room_for_every_offset_the_benchmarks_add():
    # The largest offsets: digits' test pairs (seed + 10_000), regression's data
    # (1000 + seed), each of --seeds (seed + i), the models' targets (seed + 1).
    torch.manual_seed(HIGHEST + 10_000 + 1_000)
    torch.Generator().manual_seed(HIGHEST + 10_000 + 1_000)
    torch.manual_seed(LOWEST)
    digits.load_pairs(2, seed=HIGHEST + 2, train=False)
    regression.setting_data("primary", HIGHEST + 2, regression.parse_args(["--smoke"]))
    MODELS["mlp"][0](2, HIGHEST, True)
    assert toy.optimise("sum", None, 2, 1, HIGHEST)["runs"]


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        (["--sizes", "1e6", "--max-gib", "0.001"], "--max-gib"),
        (["--tasks", "64", "--sizes", "1e8", "--max-gib", "1"], "--max-gib"),
        (["--tasks"], "--tasks"),
        (["--sizes"], "--sizes"),
    ],
)
def test_kernel_refuses_a_grid_with_no_cell_before_any_work(arguments, option, capsys):
    assert f"argument {option}" in refused(kernel, ["--smoke", *arguments], capsys)


def test_kernel_takes_a_grid_of_which_some_cells_fit():
    args = kernel.parse_args(["--smoke", "--sizes", "1e3", "1e9", "--max-gib", "1"])
    assert kernel.fitting_cells(args.sizes, args.tasks, args.max_gib) == [(1000, 2), (1000, 4)]


def test_toy_refuses_an_unknown_label_naming_the_valid_ones(capsys):
    error = refused(toy, ["--smoke", "--labels", "sum", "pcgrad(p)"], capsys)
    assert "argument --labels" in error and "'pcgrad(p)'" in error
    assert "'pcgrad[p]'" in error and "'single_task_f1'" in error


def test_toy_refuses_a_label_the_selected_methods_do_not_have(capsys):
    error = refused(toy, ["--smoke", "--methods", "sum", "--labels", "gr"], capsys)
    assert "'gr'" in error and "available: ['single_task_f1', 'sum']" in error


def test_toy_takes_known_labels():
    args = toy.parse_args(["--smoke", "--labels", "single_task_f1", "pcgrad[p]"])
    assert args.labels == ["single_task_f1", "pcgrad[p]"]
    assert [label for label, _, _ in toy.planned_runs(args.methods, args.labels)] == [
        "single_task_f1",
        "pcgrad[p]",
    ]


def test_regression_smoke_sizes_fill_only_what_is_not_given():
    given = regression.parse_args(
        ["--smoke", "--steps", "7", "--train", "500", "--test", "300", "--batch", "50"]
    )
    assert (given.steps, given.train, given.test, given.batch) == (7, 500, 300, 50)
    smoke = regression.parse_args(["--smoke"])
    assert (smoke.steps, smoke.seeds, smoke.train, smoke.test, smoke.batch) == (2, 1, 64, 64, 16)
    full = regression.parse_args([])
    assert (full.steps, full.seeds, full.train, full.test, full.batch) == (300, 3, 2000, 1000, 100)


def test_digits_smoke_sizes_fill_only_what_is_not_given():
    given = digits.parse_args(["--smoke", "--train-pairs", "500", "--batch", "64"])
    assert (given.train_pairs, given.batch, given.test_pairs) == (500, 64, 32)
    assert digits.parse_args(["--smoke"]).batch == 16
    assert digits.parse_args([]).batch == 128


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.split(".")[-1])
def test_a_bad_out_is_refused_before_any_work(module, tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    monkeypatch.setattr(module, "run", lambda args: pytest.fail("ran before checking --out"))
    with pytest.raises(SystemExit, match=f"Invalid --out: {a_file} cannot be a results folder"):
        module.main(["--smoke", "--quiet", "--out", str(a_file)])


@pytest.mark.parametrize(
    ("module", "option"),
    [(toy, "--methods"), (toy, "--labels"), (overhead, "--models"), (digits, "--methods")],
)
def test_a_selection_option_with_no_values_is_refused_rather_than_meaning_all(
    module, option, capsys
):
    assert f"argument {option}: expected at least one argument" in refused(
        module, ["--smoke", option], capsys
    )


def test_values_given_twice_are_run_once():
    assert regression.parse_args(["--problems", "gradnorm", "gradnorm"]).problems == ["gradnorm"]
    args = kernel.parse_args(["--smoke", "--tasks", "2", "2", "--sizes", "1000", "1e3"])
    assert args.tasks == [2] and args.sizes == [1000]


def test_the_recorded_command_is_quoted_for_the_shell(monkeypatch):
    monkeypatch.setattr("sys.argv", ["toy", "--labels", "pcgrad[p]", "--out", "/tmp/with space"])
    command = _common.machine()["command"]
    assert command.endswith("--labels 'pcgrad[p]' --out '/tmp/with space'")
