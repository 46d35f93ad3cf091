"""An utterance's outputs do not depend on the padding of its batch, nor on its batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from examples.asr_se.config import get_preset
from examples.asr_se.features import frame_mask
from examples.asr_se.model import JointModel, length_aware_blstm, one_way_shells

TINY = get_preset("tiny").model
# two LSTM layers and two Conformer blocks: the second layer's reverse direction reads
# both directions of the first, and the second block reads the first's padded frames
DEEPER = replace(TINY, se_layers=2, blocks=2)
LENGTHS = [16000, 700, 9001, 2300]  # 2 s down to 87.5 ms, at 8 kHz
TOLERANCE = {"atol": 2e-5, "rtol": 1e-5}


def _batch(lengths: list[int], padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random speech-like rows of ``lengths`` samples, padded with zeros or with noise."""
    generator = torch.Generator().manual_seed(1)
    waves = torch.randn(len(lengths), max(lengths), generator=generator) * 0.1
    if padding == "zeros":
        waves *= torch.arange(waves.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return waves, torch.tensor(lengths)


@pytest.mark.parametrize("use_enhancer", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "noise"])
def test_a_batch_gives_each_utterance_what_it_gives_alone(use_enhancer: bool, padding: str):
    torch.manual_seed(0)
    model = JointModel(DEEPER, use_enhancer=use_enhancer).eval()
    waves, lengths = _batch(LENGTHS, padding)
    with torch.no_grad():
        batched = model(waves, lengths)
        resynthesised = None
        if batched.enhanced is not None:
            resynthesised = model.stft.inverse_each(batched.enhanced, batched.phase, lengths)
        for row, length in enumerate(LENGTHS):
            alone = model(waves[row : row + 1, :length], lengths[row : row + 1])
            frames, out_frames = int(alone.frames[0]), int(alone.out_frames[0])
            assert int(batched.out_frames[row]) == out_frames
            torch.testing.assert_close(
                batched.log_probs[row, :out_frames], alone.log_probs[0], **TOLERANCE
            )
            if alone.enhanced is None:
                continue
            assert batched.enhanced is not None and resynthesised is not None
            torch.testing.assert_close(
                batched.enhanced[row, :frames], alone.enhanced[0], **TOLERANCE
            )
            assert not batched.enhanced[row, frames:].any()  # zero at padded frames
            wave = model.stft.inverse(alone.enhanced, alone.phase, length)
            torch.testing.assert_close(resynthesised[row, :length], wave[0], **TOLERANCE)


def test_the_length_aware_lstm_is_the_packed_lstm_forward_and_backward():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 4, num_layers=2, batch_first=True, bidirectional=True)
    frames = torch.tensor([3, 7, 1, 6])
    x = torch.randn(4, 7, 5)
    valid = frame_mask(frames, 7).unsqueeze(-1)
    weights = torch.randn(4, 7, 8)  # a loss that reads every valid output

    mine = length_aware_blstm(lstm, one_way_shells(lstm), x, frames)
    mine_grads = torch.autograd.grad((mine * weights * valid).sum(), list(lstm.parameters()))
    packed = pack_padded_sequence(x, frames, batch_first=True, enforce_sorted=False)
    theirs, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=7)
    theirs_grads = torch.autograd.grad((theirs * weights * valid).sum(), list(lstm.parameters()))

    torch.testing.assert_close(mine * valid, theirs * valid)
    assert not mine[~valid.expand_as(mine)].any()
    for a, b in zip(mine_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_the_model_keeps_its_parameter_names():
    """Checkpoints of the model before it was made length-aware still load."""
    model = JointModel(TINY)
    names = list(model.state_dict())
    lstm = nn.LSTM(129, TINY.se_hidden, batch_first=True, bidirectional=True)
    assert [n for n in names if n.startswith("se.lstm.")] == [
        f"se.lstm.{n}" for n in lstm.state_dict()
    ]
    assert [n for n in names if n.startswith("asr.subsample.")] == [
        "asr.subsample.0.weight",
        "asr.subsample.0.bias",
        "asr.subsample.2.weight",
        "asr.subsample.2.bias",
    ]
    assert not any("shell" in name for name in names)


def test_evaluation_does_not_depend_on_the_batch_size(tiny_manifest: Path):
    from examples.asr_se.evaluate import evaluate

    torch.manual_seed(0)
    model = JointModel(TINY).eval()

    def scored(batch_size: int) -> dict:
        return evaluate(
            model,
            tiny_manifest,
            batch_size=batch_size,
            test_sets=["synthetic"],
            progress=False,
            stoi_per_condition=0,
        )

    one, many = scored(1), scored(32)
    assert one["hypotheses"] == many["hypotheses"]
    assert one["wer"] == many["wer"]
    assert len(one["se"]) == len(many["se"]) > 0
    counts = {(r["test_set"], r["noise"], r["snr"]): r["utterances"] for r in one["wer"]}
    assert all(r["utterances"] == counts[r["test_set"], r["noise"], r["snr"]] for r in one["se"])
    for a, b in zip(one["se"], many["se"], strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert b[key] == (pytest.approx(value, abs=1e-4) if isinstance(value, float) else value)
