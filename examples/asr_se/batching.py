"""Seeded, resumable batch order: shuffled buckets of similar-length utterances."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def epoch_batches(
    durations: Sequence[float], batch_size: int, seed: int, epoch: int, min_size: int = 1
) -> list[list[int]]:
    """The batches of one epoch, as lists of dataset indices.

    The order depends only on ``(seed, epoch)``: utterances are shuffled, cut into pools
    of 32 batches, sorted by duration within a pool (so a batch pads little), and the
    batches are shuffled again. A run resumed at batch ``i`` of an epoch therefore sees
    exactly the batches an uninterrupted run would. The last pool's last batch may be
    short; one shorter than ``min_size`` (the number of processes sharing each batch, so
    that none gets an empty share) joins the batch before it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(durations))
    pool = 32 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool].tolist(), key=lambda index: durations[index])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_size:
        batches[-2].extend(batches.pop())
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]
