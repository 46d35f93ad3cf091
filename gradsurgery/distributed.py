"""``torch.distributed`` glue: every rank resolves the same averaged task gradients.

Resolution is non-linear, so averaging resolved directions over ranks is not resolving
the averaged gradients. :func:`gradsurgery.backward` (and :class:`gradsurgery.Accumulator`)
therefore average the RAW task gradients over the process group before resolving:

1. two small float64 all-reduces: a fingerprint of the step (the number of tasks, their
   names in order, which parameters each task reached), checked so that ranks whose
   graphs differ fail together with a clear error instead of exchanging misaligned
   buffers or hanging, then the loss values (so loss-aware resolvers such as GradNorm see
   the same, averaged, losses everywhere);
2. rank 0's CPU random state is broadcast and the others resolve under a forked copy of it
   (their own state is restored after), so a random resolver (PCGrad's random order) makes
   the same draws on every rank;
3. the ``T x P`` task-gradient matrix of the shared parameters is all-reduced in place as
   one flat buffer (in buckets of at most :data:`BUCKET_NUMEL` elements), and the
   gradients of task-specific parameters are packed into one flat buffer per dtype and
   all-reduced the same way: a handful of collectives per step, never one per parameter.

Every rank then holds the identical matrix, runs the identical resolver on it and writes
the identical direction into ``.grad``. Under :class:`~torch.nn.parallel.DistributedDataParallel`
the task gradients are taken with :func:`torch.autograd.grad`, which never runs DDP's
gradient hooks: DDP's reducer sees a forward without a backward (which it allows) and
reduces nothing, so nothing is reduced twice and no ``no_sync()`` is needed. DDP still
broadcasts buffers (BatchNorm statistics) before each forward as usual.

This module holds the collectives; :mod:`gradsurgery.autograd` decides when to call them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "BUCKET_NUMEL",
    "DistributedMismatchError",
    "agree",
    "all_reduce_mean_",
    "is_initialized",
    "names_hash",
    "shared_random_state",
    "world_size",
]

BUCKET_NUMEL = 1 << 25
"""Largest number of elements sent in one all-reduce (128 MiB of float32)."""

ProcessGroup = dist.ProcessGroup


class DistributedMismatchError(RuntimeError):
    """The ranks disagree on the structure of a step (tasks, or the parameters they reach).

    Raised on EVERY rank at once (the check is a collective), so no rank is left waiting.
    """


def is_initialized() -> bool:
    """Whether the default ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: ProcessGroup | None) -> int:
    """The size of ``group`` (the default group for ``None``); 1 when not distributed."""
    if not is_initialized():
        return 1
    return int(dist.get_world_size(group))


def _source_rank(group: ProcessGroup | None) -> int:
    """The global rank of the group's rank 0."""
    if group is None or group is dist.group.WORLD:
        return 0
    return int(dist.get_global_rank(group, 0))


def agree(
    values: Tensor, fingerprint: Sequence[int], group: ProcessGroup | None, device: torch.device
) -> Tensor:
    """Average ``values`` over ``group`` and check that every rank has the same fingerprint.

    The fingerprint (small non-negative integers describing the step's structure, the
    number of values added to it) is all-reduced first, in float64 with its squares: the
    sums equal ``n x`` and ``n x^2`` for a rank's own ``x`` exactly when every rank has the
    same ``x`` (their variance is zero), so either every rank passes or every rank raises.
    Only then are the values all-reduced, in a buffer of the length every rank now agrees
    on (ranks that disagree on it cannot exchange buffers of different sizes: a backend
    aborts, or hangs, on that).

    Args:
        values: a 1-D float64 tensor (the loss values), averaged.
        fingerprint: integers below :math:`2^{20}`, as many on every rank.
        group: the process group.
        device: where the collectives run (the parameters' device, for NCCL).

    Returns:
        The averaged values, float64 on the CPU.

    Raises:
        DistributedMismatchError: the ranks' fingerprints differ.
    """
    n = world_size(group)
    own = torch.tensor([float(x) for x in (*fingerprint, values.numel())], dtype=torch.float64)
    header = torch.cat([own, own * own]).to(device)
    dist.all_reduce(header, group=group)
    header = header.cpu()
    k = own.shape[0]
    sums, squares = header[:k], header[k:]
    if not (torch.equal(sums, n * own) and torch.equal(squares, n * own * own)):
        raise DistributedMismatchError(
            "the ranks disagree on the structure of this step (the number of tasks, their "
            "names and order, or which parameters each task's loss reaches); every rank "
            "must compute the same losses, in the same order, from the same parameters. "
            f"This rank: {own.long().tolist()}, mean over ranks: {(sums / n).tolist()}"
        )
    buffer = values.to(torch.float64).reshape(-1).to(device)
    dist.all_reduce(buffer, group=group)
    return buffer.cpu() / n


def names_hash(names: Sequence[str] | None) -> int:
    """A hash of the ordered task names below :math:`2^{20}`, the same in every process
    (unlike :func:`hash`, which Python salts per process); 0 for unnamed tasks."""
    if names is None:
        return 0
    return zlib.crc32("\0".join(names).encode("utf-8")) % 1_048_573


def all_reduce_mean_(tensors: Sequence[Tensor], group: ProcessGroup | None) -> None:
    """Average each tensor over ``group``, in place, in a few bucketed collectives.

    Tensors of :data:`BUCKET_NUMEL` elements or more (the task-gradient matrix) are
    reduced chunk by chunk, in place where contiguous (else in a contiguous copy, copied
    back). The others are packed, per dtype and device, into flat buffers of at most
    :data:`BUCKET_NUMEL` elements, reduced, and copied back. Each tensor is divided by
    the world size BEFORE the sum, as DDP does, so that half-precision sums do not
    overflow.
    """
    n = world_size(group)
    if n == 1:
        return
    small: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        tensor.div_(n)
        if tensor.numel() >= BUCKET_NUMEL:
            flat = tensor.contiguous()
            for chunk in torch.split(flat.view(-1), BUCKET_NUMEL):
                dist.all_reduce(chunk, group=group)
            if flat is not tensor:
                tensor.copy_(flat)
        else:
            small.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group_tensors in small.values():
        for bucket in _buckets(group_tensors):
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat, group=group)
            offset = 0
            for tensor in bucket:
                size = tensor.numel()
                tensor.copy_(flat[offset : offset + size].view_as(tensor))
                offset += size


def _buckets(tensors: list[Tensor]) -> Iterator[list[Tensor]]:
    bucket: list[Tensor] = []
    size = 0
    for tensor in tensors:
        if bucket and size + tensor.numel() > BUCKET_NUMEL:
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


@contextmanager
def shared_random_state(group: ProcessGroup | None, device: torch.device) -> Iterator[None]:
    """Run the block under rank 0's CPU random state on every rank of ``group``.

    Rank 0 runs with its own generator, which advances as in a single process. The other
    ranks receive its state, run the block under a forked copy, and get their own state
    back afterwards (their data shuffling and dropout are untouched). So random draws
    inside the block (PCGrad's random order, random loss weights) agree across ranks.
    Resolvers with a private generator (``PCGrad(seed=...)``) agree when every rank
    builds them with the same seed.
    """
    if world_size(group) == 1:
        yield
        return
    state = torch.get_rng_state()
    if device.type == "cuda":  # NCCL collectives take CUDA tensors
        state_on_device = state.to(device)
        dist.broadcast(state_on_device, src=_source_rank(group), group=group)
        state = state_on_device.cpu()
    else:
        dist.broadcast(state, src=_source_rank(group), group=group)
    if dist.get_rank(group) == 0:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(state)
        yield
