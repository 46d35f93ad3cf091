"""Running the trainer under ``torchrun --nproc-per-node N`` (CPU processes, gloo backend).

    torchrun --nproc-per-node 2 -m examples.asr_se train --preset quick --system gr

Each process reads every N-th utterance of each batch, so the global batch and the data
order are those of a single process. :func:`gradsurgery.backward` averages the task
gradients over the processes before resolving them, so every process takes the same
step; only rank 0 writes logs and checkpoints. BatchNorm statistics are per process (the
saved model holds rank 0's), and a checkpoint resumes with the same number of processes.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def init_from_environment() -> None:
    """Join the process group ``torchrun`` describes (a no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def shutdown() -> None:
    """Leave the process group after a successful run (a no-op for a single process).

    A process that exits without it may abort with "terminate called without an active
    exception": gloo's worker threads are torn down during interpreter finalisation. It is
    not called after an error, where another process may still wait in a collective.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (valid on rank 0; ``[value]`` alone)."""
    rank, world = rank_and_world()
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object(value, gathered if rank == 0 else None, dst=0)
    return gathered


def barrier() -> None:
    """Wait for every process (a no-op for a single process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def check_same_parameters(module: Any) -> None:
    """Raise if the processes' parameters differ (they must: every process takes one step).

    Compares one float64 checksum per parameter tensor across processes; a no-op for a
    single process.
    """
    import torch

    if rank_and_world()[1] == 1:
        return
    checksums = torch.stack([p.detach().double().sum() for p in module.parameters()])
    everyone = gather(checksums)
    if rank_and_world()[0] == 0 and any(not torch.equal(c, everyone[0]) for c in everyone):
        raise RuntimeError("the processes' parameters diverged: their steps were not identical")
    barrier()
