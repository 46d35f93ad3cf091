"""Training one system: seeded, checkpointed, resumable exactly, logged to plain CSV files.

A run lives in one folder::

    config.json       the preset, system and seed it was started with
    checkpoint.pt     model, optimizer, scheduler, resolver state, data position, RNG state
    train_log.csv     one row per step: losses, gradient norm, learning rate, seconds
    conflicts.csv     gradsurgery's ConflictMonitor record: cosine, norm ratio, conflict and
                      dominance of the ASR and SE gradients per monitored step
    conflicts.json    its summary, and conflicts.png its picture
    sittings.jsonl    one line per sitting (fresh start or resume): when, from which step,
                      on which git commit and machine (see ``provenance.py``)
    final.pt          the trained model (written last: its presence means "done")

Under ``torchrun --nproc-per-node N`` each process takes every N-th utterance of each
batch; gradients are averaged over the processes by :func:`gradsurgery.backward` (the task
gradients BEFORE resolution, so every process takes the same step), and only rank 0
writes files. See ``launch.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import gradsurgery
from examples.asr_se import launch
from examples.asr_se.batching import epoch_batches
from examples.asr_se.config import Preset, TrainConfig
from examples.asr_se.corpus import NoisySpeechDataset, collate_batch
from examples.asr_se.model import JointModel, ModelConfig, asr_loss, se_loss
from examples.asr_se.provenance import record_sitting
from examples.asr_se.systems import System, folder_name, get_system

TRAIN_LOG_FIELDS = (
    "step",
    "epoch",
    "stage",
    "loss_asr",
    "loss_se",
    "grad_norm",
    "lr",
    "skipped",
    "seconds",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run."""


class RunExistsError(FileExistsError):
    """A fresh start in a run folder that already holds a checkpoint."""


class SettingsError(ValueError):
    """A run folder or record made with settings other than those asked for (its
    ``config.json`` does not match :func:`run_identity`)."""


@dataclass
class Position:
    """Where training stands: the next step to take and the data position of that step."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def run_dir_for(root: Path, preset: str, system: str, seed: int) -> Path:
    """The folder of one (preset, system, seed) run under ``root``."""
    return root / preset / folder_name(system) / f"seed{seed}"


_GRID_FIELDS = ("systems", "seeds")
"""Preset fields that say which runs a grid holds, not how one run is made: adding a
system or a seed to a preset leaves its finished runs valid."""


def run_identity(preset: Preset, system: str, seed: int) -> dict[str, Any]:
    """The settings that define a run (its ``config.json``): the preset less its grid
    fields (``systems``, ``seeds``), the system and the seed."""
    settings = {k: v for k, v in preset.to_dict().items() if k not in _GRID_FIELDS}
    return {"preset": settings, "system": system, "seed": seed}


def _defaults(section: type) -> dict[str, Any]:
    """The JSON form of the default of every field of a config dataclass that has one."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(section):
        if item.default is not dataclasses.MISSING:
            values[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            values[item.name] = item.default_factory()

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return value

    return {name: json.loads(json.dumps(plain(value))) for name, value in values.items()}


def same_run(stored: Any, identity: dict[str, Any]) -> bool:
    """Whether ``stored`` (a ``config.json`` or a checkpoint's identity) names the run that
    ``identity`` names.

    Runs recorded by older versions still match when nothing that shapes them changed:
    grid fields in ``stored`` are ignored, and a model or training setting that ``stored``
    lacks (one added to the presets since) matches when ``identity`` holds its default,
    which every such setting is chosen to be the old behaviour at.
    """
    if not isinstance(stored, dict):
        return False
    stored = json.loads(json.dumps(stored))
    preset = stored.get("preset")
    if isinstance(preset, dict):
        preset = {k: v for k, v in preset.items() if k not in _GRID_FIELDS}
        for key, section in (("model", ModelConfig), ("train", TrainConfig)):
            if isinstance(preset.get(key), dict):
                preset[key] = {**_defaults(section), **preset[key]}
        stored = {**stored, "preset": preset}
    return bool(stored == json.loads(json.dumps(identity)))


def build_model(preset: Preset, system: System) -> JointModel:
    """The joint model of ``system`` (without the front end for ``noisy_asr``)."""
    return JointModel(preset.model, use_enhancer=system.use_enhancer)


class Trainer:
    """Trains one system of a preset with one seed, in ``run_dir``.

    Args:
        preset: the experiment preset.
        system_name: a reference system or a registered resolver name (see ``systems.py``).
        seed: seeds the model, dropout and the data order.
        manifest: the corpus manifest.
        run_dir: the run's folder (created).
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        preset: Preset,
        system_name: str,
        seed: int,
        manifest: Path,
        run_dir: Path,
        *,
        progress: bool = True,
    ) -> None:
        self.preset, self.seed, self.run_dir, self.progress = preset, seed, Path(run_dir), progress
        self.system = get_system(system_name)
        self.config = preset.train
        self.rank, self.world = launch.rank_and_world()
        if self.config.batch_size < self.world:
            raise ValueError(
                f"batch_size {self.config.batch_size} is smaller than the {self.world} processes"
            )
        torch.manual_seed(seed)
        self.model = build_model(preset, self.system)
        self.dataset = NoisySpeechDataset(manifest, "train")
        self.durations = self.dataset.durations
        self.batches_per_epoch = math.ceil(len(self.dataset) / self.config.batch_size)
        self.se_steps = (
            round(self.config.se_pretrain_fraction * self.config.steps)
            if self.system.se_pretrain
            else 0
        )
        self.total_steps = self.se_steps + self.config.steps
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        options = {**self.config.resolver_options, **self.system.options}
        self.granularity = self.system.granularity or self.config.granularity
        self.resolver = (
            gradsurgery.get_resolver(self.system.resolver, **options)
            if self.system.resolver is not None
            else None
        )
        self.monitor = (
            gradsurgery.ConflictMonitor(
                ["asr", "se"], k=float(options.get("k", 5.0)), primary="asr"
            )
            if self.resolver is not None
            else None
        )
        self.position = Position()
        self._order: list[list[int]] = []
        self._order_epoch = -1

    # -- schedule -------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        """Linear warm-up then cosine decay, restarted for the ASR stage of ``frozen_se``."""
        length = self.se_steps if step < self.se_steps else self.config.steps
        local = step if step < self.se_steps else step - self.se_steps
        warmup = min(self.config.warmup, max(1, length // 4))
        if local < warmup:
            return (local + 1) / warmup
        progress = (local - warmup) / max(1, length - warmup)
        floor = self.config.lr_floor
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def final_path(self) -> Path:
        return self.run_dir / "final.pt"

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this trainer."""
        return run_identity(self.preset, self.system.name, self.seed)

    def save_checkpoint(self) -> None:
        rng = launch.gather(
            {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            }
        )
        if self.rank != 0:
            return
        state = {
            "identity": self.identity(),
            "position": vars(self.position).copy(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "resolver": self.resolver.state_dict() if self.resolver is not None else {},
            "monitor": self.monitor.state_dict() if self.monitor is not None else {},
            "rng": rng,
        }
        atomic_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> None:
        state = read_checkpoint(self.checkpoint_path)
        missing = [key for key in RESUME_KEYS if key not in state]
        if missing:
            raise CheckpointError(
                f"{self.checkpoint_path} lacks {missing}, which a resume needs (a final.pt "
                "holds the trained model only; resume from the run's own checkpoint.pt)"
            )
        if not same_run(state.get("identity"), self.identity()):
            raise CheckpointError(
                f"{self.checkpoint_path} belongs to another run (preset, system or seed differ); "
                "start a fresh run folder or delete it"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.resolver is not None:
            self.resolver.load_state_dict(state["resolver"])
        if self.monitor is not None:
            self.monitor.load_state_dict(state["monitor"])
        if len(state["rng"]) != self.world:
            raise CheckpointError(
                f"{self.checkpoint_path} was written by {len(state['rng'])} process(es); resume "
                f"it with the same number, not {self.world}"
            )
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.position = Position(**state["position"])
        if self.rank == 0:
            truncate_log(self.run_dir / "train_log.csv", self.position.step)

    # -- data -----------------------------------------------------------------------------
    def _next_batch(self) -> tuple[dict[str, Any], bool]:
        """The batch at the current data position, and whether it ends an epoch."""
        if self._order_epoch != self.position.epoch:
            self._order = epoch_batches(
                self.durations,
                self.config.batch_size,
                self.seed,
                self.position.epoch,
                min_size=self.world,
            )
            self._order_epoch = self.position.epoch
        index = self._order[self.position.batch]
        self.position.batch += 1
        epoch_end = self.position.batch == len(self._order)
        if epoch_end:
            self.position.epoch += 1
            self.position.batch = 0
        shard = index[self.rank :: self.world]
        return collate_batch([self.dataset[i] for i in shard]), epoch_end

    # -- one step -------------------------------------------------------------------------
    def _stage(self, step: int) -> str:
        if self.system.se_pretrain:
            return "se" if step < self.se_steps else "asr"
        return "asr" if self.system.resolver is None else "joint"

    def _step(self, batch: dict[str, Any], stage: str) -> dict[str, float]:
        model = self.model
        model.train()
        if stage == "asr" and model.se is not None:
            model.se.eval()  # frozen front end: no dropout, no grad
        outputs = model(batch["noisy"], batch["lengths"])
        clean_magnitude, _ = model.stft(batch["clean"], batch["lengths"])
        losses: dict[str, Tensor] = {
            "asr": asr_loss(outputs.log_probs, outputs.out_frames, batch["texts"])
        }
        if outputs.enhanced is not None:
            losses["se"] = se_loss(outputs.enhanced, clean_magnitude, outputs.frames)
        self.optimizer.zero_grad(set_to_none=True)
        if stage in ("se", "asr"):  # one task; backward() also averages over processes
            module: nn.Module | None = model.se if stage == "se" else model.asr
            assert module is not None
            gradsurgery.backward({stage: losses[stage]}, module.parameters(), resolver="sum")
        else:
            assert self.resolver is not None
            monitored = self.position.step % self.config.monitor_every == 0
            result = gradsurgery.backward(
                losses,
                model.parameters(),
                resolver=self.resolver,
                primary="asr",
                weights={"asr": self.config.asr_weight, "se": self.config.se_weight},
                granularity=self.granularity,  # type: ignore[arg-type]
                diagnostics=monitored,
            )
            if result.gram is not None and self.monitor is not None and self.rank == 0:
                self.monitor.update(result, step=self.position.step)
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip))
        skipped = not math.isfinite(grad_norm)
        if not skipped:
            self.optimizer.step()
        self.scheduler.step()
        row = {
            "loss_asr": float(losses["asr"].detach()),
            "loss_se": float(losses["se"].detach()) if "se" in losses else float("nan"),
            "grad_norm": grad_norm,
            "skipped": int(skipped),
        }
        return row

    def _write_conflicts(self) -> None:
        """The conflict record as CSV, its summary as JSON and its picture as PNG."""
        if self.rank != 0 or self.monitor is None or not self.monitor.history()["step"]:
            return
        self.monitor.to_csv(self.run_dir / "conflicts.csv")
        summary = self.monitor.summary()
        history = self.monitor.history()
        summary["trace"] = {key: history[key] for key in ("step", "conflict_blocks", "cos_asr_se")}
        atomic_write_text(self.run_dir / "conflicts.json", json.dumps(summary, indent=1))
        import matplotlib

        matplotlib.use("Agg")
        figure = self.monitor.plot(self.run_dir / "conflicts.png")
        import matplotlib.pyplot as plt

        plt.close(figure)

    # -- the loop -------------------------------------------------------------------------
    def train(self, *, resume: bool = False) -> Path:
        """Train to the end (resuming from ``checkpoint.pt`` if asked) and return ``final.pt``.

        Raises:
            CheckpointError: ``resume`` with a missing, corrupt or foreign checkpoint.
            RunExistsError: a fresh start in a folder that already holds a checkpoint.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(self.config.threads)
        if resume:
            self.load_checkpoint()
        elif self.checkpoint_path.exists():
            raise RunExistsError(
                f"{self.run_dir} already holds a checkpoint: pass --resume to continue it, "
                "or choose another run folder"
            )
        elif self.rank == 0:
            atomic_write_text(
                self.run_dir / "config.json", json.dumps(self.identity(), indent=2, sort_keys=True)
            )
            # a sitting stopped before its first checkpoint left rows this start retakes
            (self.run_dir / "train_log.csv").unlink(missing_ok=True)
        if self.rank == 0:
            record_sitting(self.run_dir, self.position.step)
        train_log = CsvLog(self.run_dir / "train_log.csv", TRAIN_LOG_FIELDS, self.rank == 0)
        bar = progress_bar(
            self.total_steps,
            self.position.step,
            f"{self.system.name} seed {self.seed}",
            self.progress and self.rank == 0,
        )
        try:
            while self.position.step < self.total_steps:
                start = time.perf_counter()
                stage = self._stage(self.position.step)
                lr = self.scheduler.get_last_lr()[0]
                epoch = self.position.epoch  # before the batch: its last one moves it on
                batch, epoch_end = self._next_batch()
                row = self._step(batch, stage)
                step = self.position.step
                train_log.write(
                    {
                        "step": step,
                        "epoch": epoch,
                        "stage": stage,
                        "lr": lr,
                        "seconds": time.perf_counter() - start,
                        **row,
                    }
                )
                self.position.step += 1
                bar.update(1)
                bar.set_postfix(asr=f"{row['loss_asr']:.3f}", se=f"{row['loss_se']:.4f}")
                if epoch_end or self.position.step % self.config.checkpoint_every == 0:
                    train_log.flush()
                    self.save_checkpoint()
        finally:
            bar.close()
            train_log.close()
        launch.check_same_parameters(self.model)
        self.save_checkpoint()
        self._write_conflicts()
        if self.rank == 0:
            final = {"identity": self.identity(), "model": self.model.state_dict()}
            atomic_save(final, self.final_path)
        launch.barrier()
        return self.final_path


class CsvLog:
    """Appends rows to a CSV file (header written once), flushed at checkpoints.

    A disabled log (processes other than rank 0) writes nothing.
    """

    def __init__(self, path: Path, fields: tuple[str, ...], enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        new = not path.exists() or path.stat().st_size == 0
        self.handle = path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=fields)
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self.writer.writerow(row)

    def flush(self) -> None:
        if self.enabled:
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        if self.enabled:
            self.handle.close()


def truncate_log(path: Path, step: int) -> None:
    """Drop rows at or after ``step``: a resumed run rewrites them as it retakes those steps.

    Rows before the checkpoint were flushed with it; a row written after it may have been
    cut short by a hard kill, and is dropped with the rest (whole rows only are kept).
    """
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header = rows[0]

    def before(row: list[str]) -> bool:
        return len(row) == len(header) and row[0].isdigit() and int(row[0]) < step

    kept = [header] + [row for row in rows[1:] if before(row)]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file, then rename: an interruption never leaves half a
    file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: an interruption never leaves half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


RESUME_KEYS = (
    "identity",
    "position",
    "model",
    "optimizer",
    "scheduler",
    "resolver",
    "monitor",
    "rng",
)
"""What a checkpoint holds for a resume (:meth:`Trainer.save_checkpoint`)."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint, with a clear error for a missing or corrupt file."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for damaged files
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this example")
    return state


def progress_bar(total: int, initial: int, description: str, enabled: bool) -> Any:
    """A tqdm bar with ETA (or a silent stand-in when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True
    )
