"""The corpus manifest (JSON lines) and its checks.

One line per example (a mixture of one clean utterance), with paths relative to
the manifest's folder::

    {"clean": "clean/test/real-vm-goodbye.wav", "clean_sha256": "...", "channel": null,
     "duration": 0.81, "gain": 1.0, "id": "real-vm-goodbye__babble_5", "noise": "babble",
     "noise_set": "A", "noisy": "noisy/test/real-vm-goodbye__babble_5.wav", "noisy_sha256": "...",
     "num_samples": 6480, "prompt": "vm-goodbye", "sample_rate": 8000, "snr": 5.0,
     "source": "real-vm-goodbye", "split": "test", "test_set": "real_seen_text",
     "text": "goodbye", "tts": null, "voice": "human:allison"}

``snr`` is ``null`` for the clean condition (where ``noisy`` is the clean file).
``corpus.json`` beside it records the config, the seed and ``content_hash``, the
SHA-256 of the manifest's bytes; since every line holds its files' SHA-256, that
one hash pins down the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .audio import sha256_file
from .errors import CorpusError

MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "corpus.json"
CORPUS_VERSION = 1
WAV_HEADER_BYTES = 44


def dumps(record: dict[str, Any]) -> str:
    """Canonical one-line JSON (sorted keys) so equal records are equal bytes."""
    return json.dumps(record, sort_keys=True, separators=(", ", ": "), ensure_ascii=True)


def manifest_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """The manifest file's bytes for these records."""
    return "".join(dumps(r) + "\n" for r in records).encode()


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Parse a manifest; errors name the file and the line.

    Raises:
        CorpusError: if the file is missing or a line is not a JSON object with the required keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(
            f"manifest not found: {path} (build the corpus with "
            "`python -m examples.asr_se.corpus build --preset quick`)"
        )
    records = []
    required = ("id", "clean", "noisy", "text", "split", "test_set", "noise", "num_samples")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            missing = [k for k in required if not isinstance(record, dict) or k not in record]
            if missing:
                raise CorpusError(f"{path}:{lineno}: record lacks {missing}")
            records.append(record)
    return records


def read_info(root: Path) -> dict[str, Any] | None:
    """``corpus.json`` of a corpus folder, or ``None`` when there is none."""
    path = root / INFO_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except json.JSONDecodeError as exc:
        raise CorpusError(f"corrupt corpus info file {path}: {exc}") from exc


def referenced_files(records: Iterable[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, num_samples) of every audio file the records use."""
    files: dict[str, tuple[str, int]] = {}
    for r in records:
        files[r["clean"]] = (r["clean_sha256"], r["num_samples"])
        files[r["noisy"]] = (r["noisy_sha256"], r["num_samples"])
    return files


def verify_files(root: Path, records: list[dict[str, Any]], *, deep: bool) -> None:
    """Check that every file of the manifest exists with the right size (and hash if ``deep``).

    Raises:
        CorpusError: naming the first missing, wrong-size or wrong-hash file.
    """
    for rel, (sha, n) in referenced_files(records).items():
        path = root / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorpusError(
                f"manifest {root / MANIFEST_NAME} lists {path}, which is missing"
            ) from None
        if size != WAV_HEADER_BYTES + 2 * n:
            raise CorpusError(
                f"{path} has {size} bytes; the manifest expects {WAV_HEADER_BYTES + 2 * n} "
                f"({n} samples). The file does not match the manifest: run `build` again "
                "with the same preset and seed, which writes it again."
            )
        if deep and sha256_file(path) != sha:
            raise CorpusError(
                f"{path} does not match the manifest (SHA-256 differs): the file changed "
                "after the build. Delete it and run `build` again with the same preset and "
                "seed, which writes the missing file again (on a finished corpus, `build` "
                "checks sizes, not contents)."
            )


def content_hash(manifest_path: Path) -> str:
    """SHA-256 of the manifest's bytes."""
    return hashlib.sha256(manifest_path.read_bytes()).hexdigest()


def verify_corpus(root: str | Path, *, deep: bool = True) -> dict[str, Any]:
    """Check a built corpus: complete, manifest hash as recorded, every file present (and hashed).

    Returns:
        The corpus info (``corpus.json``).

    Raises:
        CorpusError: naming what does not match.
    """
    root = Path(root)
    info = read_info(root)
    if info is None or not info.get("complete"):
        raise CorpusError(f"{root} holds no finished corpus (no complete {INFO_NAME})")
    manifest = root / MANIFEST_NAME
    records = read_manifest(manifest)
    if content_hash(manifest) != info.get("content_hash"):
        raise CorpusError(
            f"{manifest} does not match the content hash recorded in {root / INFO_NAME}"
        )
    verify_files(root, records, deep=deep)
    return info
