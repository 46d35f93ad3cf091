"""The recogniser's output alphabet: CTC blank, space, apostrophe and a-z."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BLANK = 0
SYMBOLS = " 'abcdefghijklmnopqrstuvwxyz"
"""Characters after the blank, in index order (index 1 is the space)."""
SIZE = 1 + len(SYMBOLS)
_INDEX = {character: index + 1 for index, character in enumerate(SYMBOLS)}


def encode(text: str) -> list[int]:
    """Token indices of a normalised transcript (see ``corpus.normalize_text``)."""
    try:
        return [_INDEX[character] for character in text]
    except KeyError as error:
        raise ValueError(
            f"transcript {text!r} has character {error.args[0]!r} outside {SYMBOLS!r}; "
            "normalise it with examples.asr_se.corpus.normalize_text"
        ) from None


def encode_batch(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Concatenated targets and their lengths, as ``torch.nn.functional.ctc_loss`` wants."""
    encoded = [encode(text) for text in texts]
    targets = torch.tensor([index for item in encoded for index in item], dtype=torch.long)
    lengths = torch.tensor([len(item) for item in encoded], dtype=torch.long)
    return targets, lengths


def greedy_decode(log_probs: Tensor, lengths: Tensor) -> list[str]:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: ``(B, T, SIZE)`` frame log-probabilities.
        lengths: ``(B,)`` valid frames per utterance.
    """
    best = log_probs.argmax(dim=-1).tolist()
    texts = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        characters, previous = [], BLANK
        for index in path[:length]:
            if index != previous and index != BLANK:
                characters.append(SYMBOLS[index - 1])
            previous = index
        texts.append(" ".join("".join(characters).split()))
    return texts
