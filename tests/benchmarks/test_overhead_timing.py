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
    assert record["pairs"] >= 50  # 2 ms a pair
    assert time.perf_counter() - start >= 0.1


def test_min_seconds_stops_at_max_pairs(monkeypatch):
    monkeypatch.setattr(overhead, "MAX_PAIRS", 12)
    assert timed(busy(1e-4), busy(1e-4), repeats=3, min_seconds=60.0)["pairs"] == 12
    assert timed(busy(1e-4), busy(1e-4), repeats=20, min_seconds=60.0)["pairs"] == 20


def test_a_step_twice_as_long_has_a_ratio_of_two():
    record = timed(busy(2e-3), busy(1e-3), repeats=3, min_seconds=0.1)
    assert record["ratio_time_pair_median"] == pytest.approx(2.0, rel=0.25)
    assert record["ratio_time_q25"] <= record["ratio_time_pair_median"] <= record["ratio_time_q75"]
