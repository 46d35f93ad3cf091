"""Offline noisy-speech corpus for the asr_se example (SE + ASR), built from Debian packages.

Training speech is text-to-speech (espeak-ng, flite); the real, never-trained-on test
speech is Allison's Asterisk prompts; noises are generated, babble from held-out voices,
a RATS-like radio channel, and music on hold. See ``examples/asr_se/CORPUS.md``.

Public API::

    build_corpus(config, out_dir, *, seed=0, progress=True) -> manifest path
    NoisySpeechDataset(manifest, split, *, test_set=None, noise=None, snr=None)
    collate_batch(items) -> dict of padded tensors, lengths and metadata
    normalize_text(s) -> str over " 'a-z"
    CorpusConfig, PRESETS, CorpusError
"""

from __future__ import annotations

from .build import build_corpus, default_out_dir
from .dataset import NoisySpeechDataset, collate_batch
from .errors import CorpusError, MissingPackageError
from .manifest import verify_corpus
from .presets import PRESETS, CorpusConfig, get_config
from .text import ALPHABET, normalize_text

__all__ = [
    "ALPHABET",
    "PRESETS",
    "CorpusConfig",
    "CorpusError",
    "MissingPackageError",
    "NoisySpeechDataset",
    "build_corpus",
    "collate_batch",
    "default_out_dir",
    "get_config",
    "normalize_text",
    "verify_corpus",
]
