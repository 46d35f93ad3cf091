"""Spectrogram picture of the corpus: one clean/noisy pair per noise type.

The pairs are real corpus files picked from the manifest (preferably one real
prompt in every test condition at the SNR nearest to 5 dB), so the picture shows
exactly what the models are trained and tested on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, read_wav
from .manifest import MANIFEST_NAME, read_manifest
from .noise import SEEN_NOISES, UNSEEN_NOISES

_TEST_SET_RANK = {"real_seen_text": 0, "real_unseen_text": 0, "synthetic": 1, "dev": 2, "train": 3}


def pick_examples(records: list[dict[str, Any]], target_snr: float = 5.0) -> list[dict[str, Any]]:
    """One record per noise type, preferring a single real prompt of 2-4 s near ``target_snr``."""
    noisy = [r for r in records if r["noise"] != "none"]
    by_source: dict[str, set[str]] = {}
    for r in noisy:
        by_source.setdefault(r["source"], set()).add(r["noise"])

    def source_rank(sid: str, recs: list[dict[str, Any]]) -> tuple[float, ...]:
        r = next(x for x in recs if x["source"] == sid)
        return (
            -len(by_source[sid]),
            _TEST_SET_RANK.get(r["test_set"], 9),
            abs(r["duration"] - 3.0),
            0,
        )

    picked = []
    for noise in (*SEEN_NOISES, *UNSEEN_NOISES):
        cands = [r for r in noisy if r["noise"] == noise]
        if not cands:
            continue
        best_source = min({r["source"] for r in cands}, key=lambda s: (source_rank(s, cands), s))
        cands = [r for r in cands if r["source"] == best_source]
        picked.append(min(cands, key=lambda r: (abs(float(r["snr"]) - target_snr), r["id"])))
    return picked


def draw_spectrograms(root: str | Path, png: str | Path) -> Path:
    """Draw the picture for the corpus in ``root`` and save it as ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    root, png = Path(root), Path(png)
    examples = pick_examples(read_manifest(root / MANIFEST_NAME))
    if not examples:
        raise ValueError(f"{root} has no noisy examples to draw")
    fig, axes = plt.subplots(
        len(examples),
        2,
        figsize=(10, 1.75 * len(examples) + 0.6),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for row, r in enumerate(examples):
        gain = float(r["gain"])
        for col, key in enumerate(("clean", "noisy")):
            x = read_wav(root / r[key])[0].astype(np.float64) / 32768.0
            if key == "clean":
                x = x * gain
            f, t, s = spectrogram(x, fs=SAMPLE_RATE, nperseg=256, noverlap=192)
            ax = axes[row, col]
            image = ax.pcolormesh(
                t,
                f / 1000,
                10 * np.log10(s + 1e-12),
                vmin=-110,
                vmax=-40,
                shading="auto",
                cmap="magma",
            )
            if key == "clean":
                words = r["text"] if len(r["text"]) <= 30 else r["text"][:27] + "..."
                title = f'clean [{r["test_set"]}] "{words}"'
            else:
                title = f"noisy: {r['noise']} (set {r['noise_set']}), {float(r['snr']):g} dB SNR"
            ax.set_title(title, fontsize=9, loc="left")
            ax.set_ylabel("kHz", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(examples) - 1:
                ax.set_xlabel("seconds", fontsize=8)
    assert image is not None
    fig.colorbar(image, ax=axes, shrink=0.6, label="power (dB)")
    fig.suptitle("asr_se corpus: clean vs noisy, one example per noise type", fontsize=11)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
