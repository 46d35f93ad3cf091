"""How ``overhead`` times a step against its baseline: how many pairs, and the ratios."""

from __future__ import annotations

import time

import pytest

from benchmarks import overhead


def busy(seconds: float):
    def step() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return step


def timed(step, baseline, **options):
    return overhead.measure(step, baseline, lambda: None, warmup=1, memory_repeats=0, **options)


def test_repeats_alone_fix_the_number_of_pairs():
    record = timed(busy(1e-4), busy(1e-4), repeats=7)
    assert record["pairs"] == 7


def test_min_seconds_adds_pairs_until_they_have_taken_that_long():
    start = time.perf_counter()
    record = timed(busy(1e-3), busy(1e-3), repeats=3, min_seconds=0.1)
    # A pair takes at least 2 ms (more when the machine is busy): 50 pairs at most, and
    # more than the 3 repeats unless each pair took over 30 ms.
    assert 3 < record["pairs"] <= 50
    assert time.perf_counter() - start >= 0.1


def test_min_seconds_stops_at_max_pairs(monkeypatch):
    monkeypatch.setattr(overhead, "MAX_PAIRS", 12)
    assert timed(busy(1e-4), busy(1e-4), repeats=3, min_seconds=60.0)["pairs"] == 12
    assert timed(busy(1e-4), busy(1e-4), repeats=20, min_seconds=60.0)["pairs"] == 20


def test_a_step_twice_as_long_has_a_ratio_of_two():
    record = timed(busy(2e-3), busy(1e-3), repeats=3, min_seconds=0.1)
    assert record["ratio_time_pair_median"] == pytest.approx(2.0, rel=0.25)
    assert record["ratio_time_q25"] <= record["ratio_time_pair_median"] <= record["ratio_time_q75"]


@pytest.mark.parametrize(
    ("n", "ranks"),
    # Ranks (1-based) of the classical 95% interval for the median (binomial tables).
    [(6, (1, 6)), (10, (2, 9)), (20, (6, 15)), (100, (40, 61))],
)
def test_median_interval_takes_the_order_statistics_of_the_binomial(n, ranks):
    values = [float(i) for i in range(n, 0, -1)]  # n .. 1: the interval must sort them
    assert overhead.median_interval(values) == (float(ranks[0]), float(ranks[1]))


def test_median_interval_of_many_values_is_near_the_normal_approximation():
    n = 3000  # beyond a float's 2^1023
    low, high = overhead.median_interval([float(i) for i in range(1, n + 1)])
    half_width = 1.96 * n**0.5 / 2
    assert abs(low - (n / 2 - half_width)) <= 2 and abs(high - (n / 2 + half_width)) <= 2


def test_median_interval_of_too_few_values_is_their_range():
    assert overhead.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)


def test_verdict_reads_the_interval():
    row = {"ratio_time": 1.02, "ratio_time_q25": 0.95, "ratio_time_q75": 1.08}
    assert overhead._verdict({**row, "ratio_time_ci95": [1.01, 1.03]}) == "slower"
    assert overhead._verdict({**row, "ratio_time_ci95": [0.97, 0.99]}) == "faster"
    assert overhead._verdict({**row, "ratio_time_ci95": [0.99, 1.03]}) == "within the noise"


def test_head_to_head_repeats_default_to_repeats_and_must_be_positive():
    assert overhead.parse_args(["--repeats", "7"]).head_to_head_repeats == 7
    args = overhead.parse_args(["--repeats", "7", "--head-to-head-repeats", "40"])
    assert (args.repeats, args.head_to_head_repeats) == (7, 40)
    for bad in (["--repeats", "0"], ["--head-to-head-repeats", "-3"], ["--repeats", "x"]):
        with pytest.raises(SystemExit):
            overhead.parse_args(bad)
