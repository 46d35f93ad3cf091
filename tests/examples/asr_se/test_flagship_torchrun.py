"""The trainer under ``torchrun --nproc-per-node 2`` (CPU, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_processes_train_in_step(tiny_root, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--standalone",
        "-m", "examples.asr_se", "train", "--preset", "tiny", "--system", "pcgrad",
        "--corpus-dir", str(tiny_root), "--runs", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    completed = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = tmp_path / "tiny" / "pcgrad" / "seed0"
    assert (run / "final.pt").exists()
    log = (run / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 2  # rank 0 alone writes the log: header and two steps
