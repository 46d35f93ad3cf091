"""PyTorch access to a built corpus: a ``Dataset`` over the manifest and a padding collate.

Example::

    from torch.utils.data import DataLoader
    from examples.asr_se.corpus import NoisySpeechDataset, collate_batch

    train = NoisySpeechDataset("data/asr_se/quick/manifest.jsonl", "train")
    loader = DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate_batch)
    test_b = NoisySpeechDataset(manifest, "test", test_set="real_unseen_text", noise="radio", snr=0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .audio import read_wav
from .manifest import read_manifest, verify_files

SPLITS = ("train", "dev", "test")
TEST_SETS = ("train", "dev", "real_seen_text", "real_unseen_text", "synthetic")


def _as_set(value: Any) -> set[Any] | None:
    if value is None:
        return None
    if isinstance(value, str | int | float):
        return {value}
    return set(value)


class NoisySpeechDataset(Dataset[dict[str, Any]]):
    """Examples of one split of the corpus, optionally filtered.

    Args:
        manifest: path of ``manifest.jsonl``.
        split: ``"train"``, ``"dev"`` or ``"test"``.
        test_set: keep only these test sets (``"real_seen_text"``, ``"real_unseen_text"``,
            ``"synthetic"``; a str or an iterable).
        noise: keep only these noise types (``"none"`` is the clean condition).
        snr: keep only these SNRs in dB (``float("inf")`` selects the clean condition).
        verify: also check every file's SHA-256 against the manifest (slow on ``full``);
            existence and size are always checked.

    Items are dicts: ``id``, ``noisy`` and ``clean`` (1-D float32 tensors in [-1, 1];
    ``clean`` is scaled by the mixture's gain so that ``noisy - clean`` is the added
    noise), ``text``, ``voice``, ``noise``, ``snr`` (``inf`` for clean), ``split``,
    ``test_set``, ``noise_set`` (``"A"``, ``"B"`` or ``"clean"``).

    Raises:
        CorpusError: if the manifest is missing or malformed, or a file it lists is missing
            or does not match (naming the file).
        ValueError: on a bad ``split`` or a filter that selects nothing.
    """

    def __init__(
        self,
        manifest: str | Path,
        split: str,
        *,
        test_set: str | Iterable[str] | None = None,
        noise: str | Iterable[str] | None = None,
        snr: float | Iterable[float] | None = None,
        verify: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        records = read_manifest(self.manifest)
        test_sets, noises, snrs = _as_set(test_set), _as_set(noise), _as_set(snr)
        if test_sets is not None and not test_sets <= set(TEST_SETS):
            raise ValueError(f"test_set must be among {TEST_SETS}, got {sorted(test_sets)}")
        if snrs is not None:
            snrs = {float(s) for s in snrs}

        def keep(r: dict[str, Any]) -> bool:
            r_snr = float("inf") if r["snr"] is None else float(r["snr"])
            return (
                r["split"] == split
                and (test_sets is None or r["test_set"] in test_sets)
                and (noises is None or r["noise"] in noises)
                and (snrs is None or r_snr in snrs)
            )

        self.records = [r for r in records if keep(r)]
        if not self.records:
            available = sorted({(r["split"], r["test_set"], r["noise"]) for r in records})
            raise ValueError(
                f"no example of {self.manifest} matches split={split!r}, test_set={test_set!r}, "
                f"noise={noise!r}, snr={snr!r}; available (split, test_set, noise): {available}"
            )
        verify_files(self.root, self.records, deep=verify)
        self.durations = [float(r["duration"]) for r in self.records]
        """Duration in seconds of every example (for length-bucketed batching); a list
        built once, so that sorting by ``durations[i]`` costs no more than the sort."""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        noisy, _ = read_wav(self.root / r["noisy"])
        clean, _ = read_wav(self.root / r["clean"])
        gain = float(r.get("gain", 1.0))
        return {
            "id": r["id"],
            "noisy": torch.from_numpy(noisy.astype("float32") / 32768.0),
            "clean": torch.from_numpy(clean.astype("float32") * (gain / 32768.0)),
            "text": r["text"],
            "voice": r["voice"],
            "noise": r["noise"],
            "snr": float("inf") if r["snr"] is None else float(r["snr"]),
            "split": r["split"],
            "test_set": r["test_set"],
            "noise_set": r["noise_set"],
        }


def collate_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad a list of dataset items into a batch.

    Returns:
        ``noisy`` and ``clean``: (B, N) float32, N the longest item; ``lengths``: (B,)
        int64 sample counts; ``texts`` and ``ids``: lists; and the metadata lists
        ``voices``, ``noises``, ``snrs``, ``splits``, ``test_sets``, ``noise_sets``.
    """
    if not items:
        raise ValueError("collate_batch needs at least one item")
    lengths = torch.tensor([int(it["noisy"].numel()) for it in items], dtype=torch.int64)
    n = int(lengths.max())
    noisy = torch.zeros(len(items), n, dtype=torch.float32)
    clean = torch.zeros(len(items), n, dtype=torch.float32)
    for i, it in enumerate(items):
        noisy[i, : it["noisy"].numel()] = it["noisy"]
        clean[i, : it["clean"].numel()] = it["clean"]
    return {
        "noisy": noisy,
        "clean": clean,
        "lengths": lengths,
        "texts": [it["text"] for it in items],
        "ids": [it["id"] for it in items],
        "voices": [it["voice"] for it in items],
        "noises": [it["noise"] for it in items],
        "snrs": [it["snr"] for it in items],
        "splits": [it["split"] for it in items],
        "test_sets": [it["test_set"] for it in items],
        "noise_sets": [it["noise_set"] for it in items],
    }
