"""Corpus statistics, computed from the manifest (the numbers CORPUS.md shows).

``python -m examples.asr_se.corpus stats --out data/asr_se/quick --markdown`` prints
them; ``--update-doc examples/asr_se/CORPUS.md`` writes them between the
``<!-- stats:<preset>:begin -->`` / ``end`` markers of the document, so the
document's numbers are never typed by hand.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorpusError
from .manifest import INFO_NAME, MANIFEST_NAME, read_info, read_manifest

_SET_ORDER = ("train", "dev", "real_seen_text", "real_unseen_text", "synthetic")


def corpus_stats(root: str | Path) -> dict[str, Any]:
    """Summary numbers of a built corpus folder.

    Raises:
        CorpusError: the folder holds no finished corpus (no complete ``corpus.json``, as
            while a build is unfinished or repairing).
    """
    root = Path(root)
    info = read_info(root)
    if info is None or not info.get("complete") or "content_hash" not in info:
        raise CorpusError(
            f"{root} holds no finished corpus (no complete {INFO_NAME}): run `build` first"
        )
    records = read_manifest(root / MANIFEST_NAME)
    excluded_path = root / "excluded_prompts.jsonl"
    excluded = len(excluded_path.read_text().splitlines()) if excluded_path.exists() else 0
    sets: dict[str, dict[str, Any]] = {}
    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_set[r["test_set"]].append(r)
    for name in sorted(by_set, key=lambda s: _SET_ORDER.index(s) if s in _SET_ORDER else 99):
        recs = by_set[name]
        sources = {r["source"]: r["duration"] for r in recs}
        durations = np.array(list(sources.values()))
        characters = sum(len(text) for text in {r["source"]: r["text"] for r in recs}.values())
        sets[name] = {
            "examples": len(recs),
            "utterances": len(sources),
            "distinct_texts": len({r["text"] for r in recs}),
            "voices": len({r["voice"] for r in recs}),
            "noisy_hours": sum(r["duration"] for r in recs) / 3600,
            "clean_hours": float(durations.sum()) / 3600,
            "utt_seconds_p5_p50_p95": [
                round(float(q), 2) for q in np.percentile(durations, [5, 50, 95])
            ],
            # speaking rate over the whole clean utterance, leading and trailing silence too
            "characters_per_second": characters / float(durations.sum()),
            "noises": dict(sorted(Counter(r["noise"] for r in recs).items())),
            "snrs": sorted({r["snr"] for r in recs if r["snr"] is not None}),
            "clipping_gain_below_1": sum(1 for r in recs if r["gain"] < 1.0),
        }
    engines = Counter(r["voice"].split(":")[0] for r in by_set.get("train", []))
    return {
        "preset": info["config"]["name"],
        "seed": info["seed"],
        "content_hash": info["content_hash"],
        "examples": len(records),
        "audio_files": len({r["clean"] for r in records} | {r["noisy"] for r in records}),
        "excluded_real_prompts": excluded,
        "train_engines": dict(sorted(engines.items())),
        "sets": sets,
    }


def format_stats(stats: dict[str, Any], *, markdown: bool = False) -> str:
    """Human-readable (or Markdown table) rendering of :func:`corpus_stats`."""
    head = (
        f"preset `{stats['preset']}`, seed {stats['seed']}: {stats['examples']} examples, "
        f"{stats['audio_files']} audio files; real prompts excluded as non-speech/no audio: "
        f"{stats['excluded_real_prompts']}; training utterances by engine: "
        + ", ".join(f"{k} {v}" for k, v in stats["train_engines"].items())
        + f"; content hash `{stats['content_hash'][:16]}`"
    )
    cols = (
        "set",
        "examples",
        "utterances",
        "texts",
        "voices",
        "noisy h",
        "clean h",
        "utt s (p5/p50/p95)",
        "chars/s",
        "noises (examples)",
        "SNRs (dB)",
    )
    rows = []
    for name, s in stats["sets"].items():
        snrs = s["snrs"]
        snr_text = (
            f"{min(snrs):g} .. {max(snrs):g} (uniform)"
            if name in ("train", "dev")
            else ", ".join(f"{x:g}" for x in sorted(snrs, reverse=True))
        )
        if "none" in s["noises"]:
            snr_text += " + clean"
        rows.append(
            (
                name,
                str(s["examples"]),
                str(s["utterances"]),
                str(s["distinct_texts"]),
                str(s["voices"]),
                f"{s['noisy_hours']:.2f}",
                f"{s['clean_hours']:.2f}",
                "/".join(f"{x:g}" for x in s["utt_seconds_p5_p50_p95"]),
                f"{s['characters_per_second']:.1f}",
                ", ".join(f"{k} {v}" for k, v in s["noises"].items()),
                snr_text,
            )
        )
    if markdown:
        lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [head, "", "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def update_doc(doc: str | Path, stats: dict[str, Any], *, command: str) -> None:
    """Replace the text between ``<!-- stats:<preset>:begin -->`` and ``end`` in ``doc``.

    Raises:
        CorpusError: the document cannot be read or written, or lacks the markers for this
            preset.
    """
    doc = Path(doc)
    preset = stats["preset"]
    begin, end = f"<!-- stats:{preset}:begin -->", f"<!-- stats:{preset}:end -->"
    try:
        text = doc.read_text()
    except OSError as exc:
        raise CorpusError(f"cannot read {doc}: {exc.strerror}") from None
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise CorpusError(f"{doc} has no {begin} ... {end} markers")
    body = f"{begin}\n_Generated by `{command}`._\n\n{format_stats(stats, markdown=True)}\n{end}"
    try:
        doc.write_text(pattern.sub(lambda _: body, text))
    except OSError as exc:
        raise CorpusError(f"cannot write {doc}: {exc.strerror}") from None
