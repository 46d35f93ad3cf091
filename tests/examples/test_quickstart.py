"""``python -m examples.quickstart``: a table row per method, and clear refusals."""

from __future__ import annotations

import math
import re

import pytest

from examples import quickstart


def test_one_row_per_method_with_a_finite_error(capsys):
    quickstart.main(["--steps", "3", "--methods", "sum", "pcgrad_onesided", "gr"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "primary-task test MSE after 3 Adam steps (seed 0)"
    header, *rows = lines[1:]
    assert header.split() == ["method", "test", "MSE", "seconds"]
    assert [row.split()[0] for row in rows] == ["sum", "pcgrad_onesided", "gr"]
    for row in rows:
        assert math.isfinite(float(row.split()[1]))
        assert len(row) == len(header)  # the columns line up, whatever the names' lengths


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--seed", str(2**64)], "--seed must be in \\[-2\\*\\*63, 2\\*\\*64\\)"),
        (["--methods", "sum", "nope"], "--methods: unknown \\['nope'\\]; registered: "),
    ],
)
def test_bad_arguments_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
