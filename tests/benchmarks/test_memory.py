"""The peak tensor memory of a call, from torch's profiler: exact byte counts."""

from __future__ import annotations

import pytest
import torch

from benchmarks import overhead
from benchmarks._memory import peak_tensor_bytes

MB = 1_000_000


def floats(megabytes: int) -> torch.Tensor:
    return torch.empty(megabytes * MB // 4, dtype=torch.float32)


def test_a_tensor_kept_counts_its_bytes():
    kept = []
    assert peak_tensor_bytes(lambda: kept.append(floats(4))) == 4 * MB


def test_the_peak_is_the_most_held_at_once_not_the_sum_of_allocations():
    def one_after_the_other():
        first = floats(4)
        del first
        second = floats(2)
        del second

    def both_at_once():
        first = floats(4)
        second = floats(2)
        del first, second

    assert peak_tensor_bytes(one_after_the_other) == 4 * MB
    assert peak_tensor_bytes(both_at_once) == 6 * MB


def test_memory_held_before_the_call_is_not_counted():
    held = [floats(8)]

    def call():
        held.append(floats(1))
        held.pop(0)  # freed during the call, allocated before it

    assert peak_tensor_bytes(call) == 1 * MB
    assert peak_tensor_bytes(lambda: None) == 0


def test_a_training_step_counts_gradients_and_activations():
    torch.manual_seed(0)
    layer = torch.nn.Linear(500, 1000)
    inputs = torch.randn(10, 500)

    def step():
        layer(inputs).square().sum().backward()

    peak = peak_tensor_bytes(step)
    gradients = 4 * (500 * 1000 + 1000)
    activations = 4 * 10 * 1000
    assert gradients + activations <= peak <= gradients + 4 * activations


def test_the_profilers_log_lines_do_not_reach_stderr(capfd):
    peak_tensor_bytes(lambda: floats(1))
    assert capfd.readouterr().err == ""


def test_an_exception_in_the_call_stops_the_profiler():
    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        peak_tensor_bytes(failing)
    assert peak_tensor_bytes(lambda: floats(1)) == 1 * MB  # a second profiler starts


def test_the_memory_ratio_is_exact():
    kept = []

    def baseline():
        kept.append(floats(2))

    def step():
        kept.append(floats(3))

    record = overhead.measure(step, baseline, kept.clear, warmup=0, repeats=1, memory_repeats=2)
    assert record["ratio_memory"] == 1.5
    assert record["mib_baseline"] == 2 * MB / 2**20
