"""The kernel benchmark's paired timing, on a fake clock (no real time is measured)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import kernel


class FakeClock:
    """``perf_counter`` that advances only when a fake call runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def call_taking(self, *durations: float):
        """A call whose successive runs take ``durations`` (the last one repeats)."""
        remaining = list(durations)

        def call() -> None:
            self.now += remaining.pop(0) if len(remaining) > 1 else remaining[0]

        return call


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(kernel.time, "perf_counter", fake.perf_counter)
    return fake


def test_short_calls_are_timed_back_to_back_for_the_minimum_sample(clock):
    timer = kernel.Timer.calibrated(clock.call_taking(0.001), min_sample_seconds=0.0045)
    assert timer.calls == 5  # ceil(4.5 ms / 1 ms)
    assert timer.seconds() == pytest.approx(0.001)  # the mean of one call, not the sample
    # warm-up, one call, the five that lasted the minimum, then one sample
    assert clock.now == pytest.approx(0.001 + 0.001 + 5 * 0.001 + 5 * 0.001)


def test_long_calls_are_timed_one_at_a_time(clock):
    assert kernel.Timer.calibrated(clock.call_taking(0.2), 0.005).calls == 1
    assert kernel.Timer.calibrated(clock.call_taking(0.2), 0.0).calls == 1


def test_a_slow_first_call_is_a_warm_up_that_sizes_nothing(clock):
    # a slow first call (fresh buffers, cold caches) sized the samples to 2 calls: 2 ms,
    # a quarter of the minimum sample
    timer = kernel.Timer.calibrated(clock.call_taking(0.004, 0.001), 0.008)
    assert timer.calls == 8
    assert timer.seconds() == pytest.approx(0.001)


def test_samples_grow_until_they_last_the_minimum(clock):
    # calls that get quicker once warm: every estimate is checked by a sample of its own
    timer = kernel.Timer.calibrated(clock.call_taking(0.0, 0.003, 0.002, 0.001), 0.006)
    assert timer.calls == 6  # 1 call: 3 ms, 2: 3 ms, 4: 4 ms, 6: 6 ms


def test_pairs_give_the_median_ratio_not_the_ratio_of_medians(clock):
    # pairs (resolve, copy) of (4, 1), (6, 3), (8, 2) ms: ratios 4, 2, 4
    resolve = kernel.Timer(clock.call_taking(0.004, 0.006, 0.008), calls=1)
    copy = kernel.Timer(clock.call_taking(0.001, 0.003, 0.002), calls=1)
    paired = kernel.time_paired(resolve, copy, repeats=3)
    assert paired.ratio == pytest.approx(4.0)  # the ratio of the medians would be 3
    assert paired.seconds == pytest.approx(0.006)
    assert paired.reference_seconds == pytest.approx(0.002)


def test_a_negative_minimum_sample_is_refused(capsys):
    with pytest.raises(SystemExit):
        kernel.parse_args(["--min-sample-ms", "-1"])
    assert "--min-sample-ms" in capsys.readouterr().err


def test_repeats_must_be_positive():
    assert kernel.parse_args(["--repeats", "3"]).repeats == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            kernel.parse_args(["--repeats", bad])


def test_the_fixed_cost_is_the_call_on_a_few_columns_over_the_whole_copy(clock, monkeypatch):
    # resolve takes 6 ms on the whole (2, 1000) matrix and 2 ms on its first 16 columns;
    # the copy of the whole takes 1 ms: into out= it is 6 copies, of which 2 are fixed.
    seen = []

    def fake_resolve(G, *, method, losses, out):
        seen.append((tuple(G.shape), tuple(out.shape)))
        clock.now += 0.006 if G.shape[1] == 1000 else 0.002

    monkeypatch.setattr(kernel.gradsurgery, "resolve", fake_resolve)
    args = kernel.parse_args(["--repeats", "3", "--min-sample-ms", "0"])
    copy = kernel.Timer(clock.call_taking(0.001), calls=1)
    G = torch.zeros(2, 1000)
    timed = kernel._into_out(G, object(), torch.ones(2), copy, args)
    assert set(seen) == {((2, 1000), (1000,)), ((2, kernel.FIXED_COST_COLUMNS), (16,))}
    assert timed["out_ratio_to_copy"] == pytest.approx(6.0)
    assert timed["fixed_ratio_to_copy"] == pytest.approx(2.0)
    assert timed["fixed_seconds"] == pytest.approx(0.002)


def test_the_plot_keeps_every_method_ratio_in_view():
    records = [{"ratio_to_copy": 2.0, "out_ratio_to_copy": 1.0, "fixed_ratio_to_copy": 0.01}]
    assert kernel.plot_floor(records) == kernel.FIXED_COST_FLOOR  # the fixed cost may leave
    records.append({"ratio_to_copy": 0.2, "out_ratio_to_copy": None})
    assert kernel.plot_floor(records) == pytest.approx(0.16)
