"""Speaking-rate probe: would the recogniser hear the human voice if it spoke faster?

The human test prompts run at about 12.6 characters per second, the training speech at
17.5 (``python -m examples.asr_se.corpus stats``), so the pace is one suspect for the
recogniser's near-100% WER on the human voice. The probe changes only the pace: it
time-stretches the clean test utterances with sox's ``tempo`` effect (WSOLA, pitch and
spectrum kept), decodes them with a trained system at each ``tempo`` factor (above 1:
faster), and scores them by voice engine (:func:`examples.asr_se.voices.score_by_engine`).
If the pace were the cause, speeding the human voice up to the training pace would bring
its WER down towards the synthetic voices'; slowing the synthetic voices down to the human
pace shows what the pace alone costs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from examples.asr_se import vocabulary
from examples.asr_se.corpus import NoisySpeechDataset, collate_batch
from examples.asr_se.corpus.errors import MissingPackageError
from examples.asr_se.corpus.manifest import read_manifest
from examples.asr_se.evaluate import hashed_subset
from examples.asr_se.model import JointModel
from examples.asr_se.train import RunExistsError, atomic_write_text, progress_bar
from examples.asr_se.voices import score_by_engine, voice_engine

DEFAULT_TEMPOS = (0.7, 0.85, 1.0, 1.2, 1.4, 1.6)
"""Tempo factors of the committed probe: the synthetic voices slowed to about the human
pace (0.7) up to the human voice sped past the training pace (1.4)."""
TEMPO_RANGE = (0.1, 100.0)
"""The factors sox's ``tempo`` effect takes."""


def stretch(samples: Tensor, factor: float, sample_rate: int) -> Tensor:
    """``samples`` (1-D, in [-1, 1]) played ``factor`` times faster at the same pitch, by
    sox's ``tempo -s`` (WSOLA tuned for speech), without dither, so the same samples give
    the same output; ``factor == 1`` returns them unchanged.

    Raises:
        ValueError: ``factor`` is outside :data:`TEMPO_RANGE`.
        MissingPackageError: sox is not installed.
    """
    if not TEMPO_RANGE[0] <= factor <= TEMPO_RANGE[1]:
        raise ValueError(f"factor must be in {list(TEMPO_RANGE)} (sox's tempo), got {factor!r}")
    if factor == 1.0:
        return samples
    sox = shutil.which("sox")
    if sox is None:
        raise MissingPackageError("sox", "the sox program (for the tempo effect)")
    pcm = (samples.numpy() * 32768.0).round().clip(-32768, 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", str(sample_rate), "-e", "signed", "-b", "16", "-c", "1"]
    # -D: no dither, which sox adds at random when it writes 16-bit samples
    command = [sox, "-q", "-D", *raw, "-", *raw, "-", "tempo", "-s", repr(float(factor))]
    output = subprocess.run(command, input=pcm, capture_output=True, check=True).stdout
    return torch.from_numpy(np.frombuffer(output, dtype="<i2").astype(np.float32) / 32768.0)


def training_pace(manifest: Path) -> float:
    """Characters per second of the training speech, silences included: the pace the
    recogniser learnt (reference characters over the total duration of the train split)."""
    train = [r for r in read_manifest(manifest) if r["split"] == "train"]
    if not train:
        raise ValueError(f"{manifest} has no train split")
    return sum(len(r["text"]) for r in train) / sum(float(r["duration"]) for r in train)


@torch.no_grad()
def probe_tempo(
    models: Mapping[str, JointModel],
    manifest: Path,
    tempos: Sequence[float] = DEFAULT_TEMPOS,
    *,
    per_condition: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score each of ``models`` (by system name) on the clean test utterances played at
    each of ``tempos``; each utterance is stretched once per tempo, for all of them.

    ``per_condition`` keeps, of each test set, the clean utterances that ``evaluate``
    scores with the same setting (the lowest CRC-32 of their ids; ``None``: all).

    Returns:
        One record per system, tempo and voice engine: ``system``, ``tempo``,
        ``characters_per_second`` (reference characters over the stretched duration,
        silences included, as the corpus statistics count them) and the fields of
        :func:`~examples.asr_se.voices.score_by_engine` (``condition`` is ``"clean"``).

    Raises:
        ValueError: no model, or ``tempos`` is empty or holds a factor outside
            :data:`TEMPO_RANGE`.
    """
    if not models:
        raise ValueError("models must name at least one trained system")
    low, high = TEMPO_RANGE
    if not tempos or not all(low <= t <= high for t in tempos):
        raise ValueError(f"tempos must be factors in [{low:g}, {high:g}], got {list(tempos)!r}")
    dataset = NoisySpeechDataset(manifest, "test", snr=float("inf"))
    kept = hashed_subset(dataset.records, per_condition)
    indices = [i for i, r in enumerate(dataset.records) if r["id"] in kept]
    utterances = {dataset.records[i]["id"]: dataset.records[i] for i in indices}
    sample_rate = next(iter(models.values())).config.sample_rate
    scored: dict[tuple[str, float], list[dict[str, Any]]] = {}
    bar = progress_bar(len(tempos) * len(indices) * len(models), 0, "tempo probe", progress)
    for tempo in tempos:
        items = []
        for index in indices:
            item = dataset[index]
            # the clean condition: noisy and clean are the same signal
            item["noisy"] = item["clean"] = stretch(item["noisy"], tempo, sample_rate)
            items.append(item)
        items.sort(key=lambda item: item["noisy"].numel())
        pace: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for item in items:
            totals = pace[voice_engine(item["voice"])]
            totals[0] += len(item["text"])
            totals[1] += item["noisy"].numel() / sample_rate
        for system, model in models.items():
            hypotheses = []
            for start in range(0, len(items), batch_size):
                batch = collate_batch(items[start : start + batch_size])
                outputs = model(batch["noisy"], batch["lengths"])
                texts = vocabulary.greedy_decode(outputs.log_probs, outputs.out_frames)
                hypotheses += [
                    {"id": i, "hypothesis": t} for i, t in zip(batch["ids"], texts, strict=True)
                ]
                bar.update(len(batch["ids"]))
            scored[(system, tempo)] = [
                {
                    "system": system,
                    "tempo": tempo,
                    "characters_per_second": pace[record["engine"]][0] / pace[record["engine"]][1],
                    **record,
                }
                for record in score_by_engine(hypotheses, utterances)
            ]
    bar.close()
    # by system, then tempo, as the committed probe lists them
    return [record for system in models for tempo in tempos for record in scored[(system, tempo)]]


def probed_runs(out_dir: Path) -> set[tuple[str, int]]:
    """The ``(system, seed)`` runs whose probe ``out_dir``'s ``tempo_probe.json`` holds
    (none where there is no such file).

    Raises:
        RunExistsError: a ``tempo_probe.json`` that is not the JSON :func:`write_probe`
            writes (then it is not replaced either).
    """
    path = out_dir / "tempo_probe.json"
    try:
        records = json.loads(path.read_text())["records"]
        return {(str(r["system"]), int(r["seed"])) for r in records}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunExistsError(
            f"{path} is not a tempo probe ({type(error).__name__}: {error}); move it away"
        ) from None


def write_probe(
    records: list[dict[str, Any]], out_dir: Path, *, training_pace: float, **provenance: Any
) -> list[Path]:
    """Write ``tempo_probe.json`` (``provenance`` fields, ``training_pace``, then
    ``records``) and the figure ``tempo_probe.png`` (:func:`plot_probe`) into ``out_dir``;
    returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "tempo_probe.json"
    atomic_write_text(
        data,
        json.dumps({**provenance, "training_pace": training_pace, "records": records}, indent=1),
    )
    return [data, plot_probe(records, out_dir / "tempo_probe.png", training_pace)]


def plot_probe(records: list[dict[str, Any]], path: Path, training_pace: float) -> Path:
    """WER and CER against the speaking rate reached at each tempo: one colour per voice
    engine, one line style per system, the tempo factor written by each point and the
    training speech's pace marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(r["system"] for r in records))
    engines = list(dict.fromkeys(r["engine"] for r in records))
    styles = ["-", "--", ":", "-."]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, (rate, label) in zip(axes, [("wer", "WER (%)"), ("cer", "CER (%)")], strict=True):
        for e, engine in enumerate(engines):
            for s, system in enumerate(systems):
                chosen = sorted(
                    (r for r in records if r["engine"] == engine and r["system"] == system),
                    key=lambda r: r["tempo"],
                )
                pace = [r["characters_per_second"] for r in chosen]
                axis.plot(
                    pace,
                    [100 * r[rate] for r in chosen],
                    styles[s % len(styles)],
                    marker="o",
                    markersize=3,
                    color=f"C{e}",
                    label=f"{engine}, {system}",
                )
                if s == 0:
                    for r, x in zip(chosen, pace, strict=True):
                        axis.annotate(
                            f"{r['tempo']:g}x",
                            (x, 100 * r[rate]),
                            fontsize=7,
                            textcoords="offset points",
                            xytext=(3, 3),
                        )
        axis.axvline(training_pace, color="grey", linewidth=1)
        axis.annotate(
            "training pace", (training_pace, 0.02), xycoords=("data", "axes fraction"), fontsize=7
        )
        axis.set_xlabel("speaking rate (characters per second)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("Clean test speech played faster or slower (sox tempo)")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
