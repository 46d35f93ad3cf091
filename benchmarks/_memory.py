"""The peak tensor memory of one call, read from torch's profiler.

:func:`peak_tensor_bytes` runs the call under ``torch.profiler.profile(profile_memory=True)``,
which records every allocation and free of torch's CPU allocator with the allocator's
running total of bytes allocated after it. The peak is the largest total during the call
minus the total before its first event: the most bytes that tensors allocated during the
call held at once (its tensors, their ``.grad``, autograd's buffers, optimizer state),
counted exactly, whatever the C allocator does with freed memory. What torch's allocator
does not serve is not counted: Python objects, NumPy arrays, oneDNN's scratch buffers.
Memory allocated before the call and freed during it lowers the total only if it was
allocated under a profiler too (the allocator records sizes only while one runs): in a
benchmark step, a stateful method's small state tensors from the step measured before.

The event tree is read through ``torch._C._profiler`` (the API that torch's own memory
timeline uses); ``tests/benchmarks/test_memory.py`` checks it on the torch installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from torch._C._profiler import _ExtraFields_Allocation
from torch.profiler import ProfilerActivity, profile


def peak_tensor_bytes(call: Callable[[], object]) -> int:
    """The peak bytes held by tensors that ``call()`` allocates on the CPU (0 if none).

    What is written to file descriptor 2 meanwhile is dropped: the profiler's library logs
    each start and stop there whatever its log level, and torch's allocator a warning at
    the first free (and each thousandth after) of memory allocated before any profiler
    started. So is what ``call()`` itself writes to the process's stderr: run it once
    outside first (a benchmark's warm-up steps do) to see its warnings."""
    profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with native_stderr_silenced():
        profiler.start()
        try:
            call()
        finally:
            profiler.stop()
    allocations = _cpu_allocations(profiler)
    if not allocations:
        return 0
    first = min(allocations, key=lambda allocation: allocation[0])[1]
    before = first.total_allocated - first.alloc_size
    return max(0, max(fields.total_allocated for _, fields in allocations) - before)


def _cpu_allocations(profiler: profile) -> list[tuple[int, _ExtraFields_Allocation]]:
    """The profiler's allocation and free events of CPU memory, with their start times
    (ns), in any order."""
    assert profiler.profiler is not None and profiler.profiler.kineto_results is not None
    found = []
    pending = list(profiler.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        fields = event.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == "cpu":
            found.append((event.start_time_ns, fields))
    return found


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what is written to file descriptor 2 to the null device meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
