"""The corpus numbers that CORPUS.md shows: computed from the manifest, written between markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.asr_se.corpus import CorpusError
from examples.asr_se.corpus.manifest import INFO_NAME, MANIFEST_NAME, read_manifest
from examples.asr_se.corpus.stats import corpus_stats, format_stats, update_doc


def test_counts_and_speaking_rate_follow_the_manifest(tiny_root: Path) -> None:
    records = read_manifest(tiny_root / MANIFEST_NAME)
    stats = corpus_stats(tiny_root)
    assert stats["examples"] == len(records)
    for name, numbers in stats["sets"].items():
        chosen = [r for r in records if r["test_set"] == name]
        utterances = {r["source"]: r for r in chosen}
        assert numbers["examples"] == len(chosen)
        assert numbers["utterances"] == len(utterances)
        characters = sum(len(r["text"]) for r in utterances.values())
        seconds = sum(r["duration"] for r in utterances.values())
        assert numbers["characters_per_second"] == pytest.approx(characters / seconds)
    table = format_stats(stats, markdown=True)
    assert "| chars/s |" in table and table.count("\n| ") == 1 + len(stats["sets"])


def test_update_doc_replaces_only_the_marked_block(tiny_root: Path, tmp_path: Path) -> None:
    stats = corpus_stats(tiny_root)
    doc = tmp_path / "doc.md"
    begin, end = f"<!-- stats:{stats['preset']}:begin -->", f"<!-- stats:{stats['preset']}:end -->"
    doc.write_text(f"before\n{begin}\nold numbers\n{end}\nafter\n")
    update_doc(doc, stats, command="the command")
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    assert "old numbers" not in text and "the command" in text and "| chars/s |" in text
    doc.write_text("no markers here\n")
    with pytest.raises(CorpusError, match="markers"):
        update_doc(doc, stats, command="the command")
    with pytest.raises(CorpusError, match="cannot read"):
        update_doc(tmp_path / "missing.md", stats, command="the command")


def test_stats_refuses_a_folder_without_a_finished_corpus(tiny_root: Path, tmp_path: Path):
    """A manifest beside no corpus.json, or an incomplete one (a build unfinished or
    repairing), is a CorpusError, not a FileNotFoundError or KeyError."""
    root = tmp_path / "corpus"
    root.mkdir()
    (root / MANIFEST_NAME).write_bytes((tiny_root / MANIFEST_NAME).read_bytes())
    with pytest.raises(CorpusError, match="holds no finished corpus"):
        corpus_stats(root)
    (root / INFO_NAME).write_text(json.dumps({"complete": False}))
    with pytest.raises(CorpusError, match="holds no finished corpus"):
        corpus_stats(root)
