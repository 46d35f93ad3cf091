"""Build the corpus: plan, render in parallel, record progress, resume, write the manifest.

``build_corpus`` is idempotent and resumable:

* a finished corpus (``corpus.json`` says ``complete`` and its manifest hash and file
  sizes check out) is returned at once;
* every file is written atomically (temp file + rename), and after each utterance
  with all its mixtures is written, a line with the files' SHA-256 is appended to
  ``progress.jsonl``; a rerun skips the items whose files still hash as recorded and
  renders the rest. Items draw their random numbers from their own ids, so an
  interrupted-and-resumed build is byte-identical to an uninterrupted one, whatever
  the number of worker processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import multiprocessing
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import sources
from .audio import (
    SAMPLE_RATE,
    atomic_write_bytes,
    read_wav,
    read_wav_float,
    sha256_file,
    to_int16,
    write_wav,
)
from .errors import CorpusError
from .manifest import (
    CORPUS_VERSION,
    INFO_NAME,
    MANIFEST_NAME,
    content_hash,
    dumps,
    manifest_bytes,
    read_info,
    read_manifest,
    verify_corpus,
)
from .mixing import mix, set_level
from .noise import NoiseBank, make_noise, radio_channel
from .plan import BabbleTalker, Plan, Source, item_rng, make_plan
from .presets import CorpusConfig, get_config
from .prompts import load_prompts
from .tts import Voice, all_voices, check_voices, partition_voices, synthesize

PROGRESS_NAME = "progress.jsonl"
BABBLE_PATH = "noise/babble.wav"
EXCLUDED_NAME = "excluded_prompts.jsonl"

#: Test hook: called in the main process with each finished task's id (after it is recorded).
_after_task: Callable[[str], None] | None = None


def default_out_dir(preset: str) -> Path:
    """``data/asr_se/<preset>`` under the repository root."""
    return Path(__file__).resolve().parents[3] / "data" / "asr_se" / preset


# --------------------------------------------------------------------------- worker side

_CTX: dict[str, Any] = {}


def _init_worker(root: str, seed: int, config: dict[str, Any], music: dict[str, str]) -> None:
    _CTX.clear()
    _CTX.update(root=Path(root), seed=seed, config=CorpusConfig.from_dict(config), music=music)


def _bank() -> NoiseBank:
    if "bank" not in _CTX:
        cfg: CorpusConfig = _CTX["config"]
        paths = {"babble": str(_CTX["root"] / BABBLE_PATH), **_CTX["music"]}
        seen = {"babble", *(f"music_a:{t}" for t in cfg.music_train_tracks)}
        _CTX["bank"] = NoiseBank.load(paths, test_fraction=cfg.test_noise_fraction, seen_names=seen)
    return _CTX["bank"]  # type: ignore[no-any-return]


def _render_talker(talker: BabbleTalker) -> np.ndarray:
    """One babble talker: its utterances back to back with short pauses, cut to length."""
    cfg: CorpusConfig = _CTX["config"]
    rng = item_rng(_CTX["seed"], f"babble-talker-{talker.index}")
    n = int(cfg.babble_seconds * SAMPLE_RATE)
    pieces = []
    for voice_id, text, rate, pitch in talker.utterances:
        pieces.append(synthesize(Voice.parse(voice_id), text, rate=rate, pitch=pitch))
        pieces.append(np.zeros(int(rng.uniform(0.05, 0.4) * SAMPLE_RATE), dtype=np.float32))
    x = np.concatenate(pieces)
    x = np.tile(x, int(np.ceil(n / x.size)))
    return np.roll(x, int(rng.integers(x.size)))[:n].astype(np.float32)


def _render_source(source: Source) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    """Write one clean utterance and all its mixtures; return its records and file hashes."""
    root: Path = _CTX["root"]
    seed: int = _CTX["seed"]
    if source.path:
        x = read_wav_float(source.path)
    else:
        x = synthesize(
            Voice.parse(source.voice),
            source.text,
            rate=source.rate or 1.0,
            pitch=source.pitch if source.pitch is not None else 50,
        )
    clean_q = to_int16(set_level(x, source.level_dbfs))
    clean_rel = f"clean/{source.split}/{source.id}.wav"
    clean_sha = write_wav(root / clean_rel, clean_q)
    files = {clean_rel: clean_sha}
    records = []
    for m in source.mixtures:
        gain, channel, noise_source = 1.0, None, None
        if m.noise == "none":
            noisy_rel, noisy_sha = clean_rel, clean_sha
        else:
            rng = item_rng(seed, m.id)
            bank = None if m.noise in ("white", "pink", "brown", "radio") else _bank()
            noise, noise_source = make_noise(m.noise, clean_q.size, rng, bank, m.role)
            if m.noise == "radio":
                channel = "radio"
            assert m.snr is not None
            distort = functools.partial(radio_channel, rng=rng) if channel else None
            noisy_q, gain = mix(clean_q, noise, m.snr, channel=distort)
            noisy_rel = f"noisy/{source.split}/{m.id}.wav"
            noisy_sha = write_wav(root / noisy_rel, noisy_q)
            files[noisy_rel] = noisy_sha
        records.append(
            {
                "id": m.id,
                "source": source.id,
                "split": source.split,
                "test_set": source.test_set,
                "noise": m.noise,
                "noise_set": m.noise_set,
                "snr": m.snr,
                "channel": channel,
                "noise_source": noise_source,
                "text": source.text,
                "voice": source.voice,
                "tts": None if source.path else {"rate": source.rate, "pitch": source.pitch},
                "prompt": source.prompt or None,
                "speech_level_dbfs": source.level_dbfs,
                "clean": clean_rel,
                "noisy": noisy_rel,
                "clean_sha256": clean_sha,
                "noisy_sha256": noisy_sha,
                "num_samples": int(clean_q.size),
                "duration": round(clean_q.size / SAMPLE_RATE, 4),
                "sample_rate": SAMPLE_RATE,
                "gain": gain,
            }
        )
    return source.id, records, files


def _run_task(task: BabbleTalker | Source) -> tuple[str, Any, Any]:
    if isinstance(task, BabbleTalker):
        return f"babble-talker-{task.index}", _render_talker(task), None
    return _render_source(task)


# --------------------------------------------------------------------------- main side


def _identity(config: CorpusConfig, seed: int) -> dict[str, Any]:
    identity: dict[str, Any] = json.loads(
        json.dumps({"version": CORPUS_VERSION, "seed": seed, "config": config.to_dict()})
    )
    return identity


def _check_identity(root: Path, info: dict[str, Any], identity: dict[str, Any]) -> None:
    mine = {k: info.get(k) for k in identity}
    if mine != identity:
        raise CorpusError(
            f"{root} holds a corpus built with preset {info.get('config', {}).get('name')!r}, "
            f"seed {info.get('seed')!r}, version {info.get('version')!r}, which differs from the "
            f"requested preset {identity['config']['name']!r}, seed {identity['seed']} (or their "
            "settings differ). Use another output folder or delete this one."
        )


def _files_ok(root: Path, files: dict[str, str]) -> bool:
    for rel, sha in files.items():
        path = root / rel
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return True


def _load_done(root: Path) -> dict[str, tuple[list[dict[str, Any]], dict[str, str]]]:
    """Tasks finished by an earlier run whose files still hash as recorded."""
    done: dict[str, tuple[list[dict[str, Any]], dict[str, str]]] = {}
    if (root / MANIFEST_NAME).is_file():  # a finished corpus being repaired
        try:
            by_source: dict[str, list[dict[str, Any]]] = {}
            for r in read_manifest(root / MANIFEST_NAME):
                by_source.setdefault(r["source"], []).append(r)
            for sid, recs in by_source.items():
                files = {r["clean"]: r["clean_sha256"] for r in recs}
                files.update({r["noisy"]: r["noisy_sha256"] for r in recs})
                done[sid] = (recs, files)
        except (CorpusError, KeyError):
            done = {}
        info = read_info(root) or {}
        if info.get("babble_sha256"):
            done["noise:babble"] = ([], {BABBLE_PATH: info["babble_sha256"]})
    progress = root / PROGRESS_NAME
    if progress.is_file():
        for line in progress.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[entry["task"]] = (entry["records"], entry["files"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by the interruption
    return {task: v for task, v in done.items() if _files_ok(root, v[1])}


def _map(
    fn: Callable[[Any], Any], tasks: list[Any], workers: int, initargs: tuple[Any, ...]
) -> Iterator[Any]:
    if workers <= 1 or len(tasks) <= 1:
        _init_worker(*initargs)
        for task in tasks:
            yield fn(task)
        return
    # fork: no re-import of the caller's __main__ (scripts need no main guard); workers
    # use only numpy/scipy and subprocesses, never torch, so forking is safe here.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        yield from pool.imap_unordered(fn, tasks, chunksize=1)


def _record(
    progress_file: Any, task: str, records: list[dict[str, Any]], files: dict[str, str]
) -> None:
    progress_file.write(dumps({"task": task, "records": records, "files": files}) + "\n")
    progress_file.flush()
    if _after_task is not None:
        _after_task(task)


def _build_babble(
    root: Path,
    plan: Plan,
    seed: int,
    workers: int,
    initargs: tuple[Any, ...],
    done: dict[str, Any],
    progress_file: Any,
    bar: Any,
) -> None:
    if "noise:babble" in done:
        return
    bar.set_postfix_str(f"making babble noise ({len(plan.babble)} talkers)")
    talkers = [
        np.asarray(x)
        for _, x, _ in sorted(
            _map(_run_task, list(plan.babble), workers, initargs), key=lambda t: t[0]
        )
    ]
    rng = item_rng(seed, "babble-mix")
    total = np.zeros_like(talkers[0], dtype=np.float64)
    for x in talkers:
        r = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
        total += x / r * 10 ** (rng.uniform(-3, 3) / 20)
    sha = write_wav(root / BABBLE_PATH, to_int16(set_level(total, -20.0)))
    _record(progress_file, "noise:babble", [], {BABBLE_PATH: sha})
    bar.set_postfix_str("babble done")


def _validate_inputs(
    config: CorpusConfig,
) -> tuple[list[Any], dict[str, float], Any, dict[str, str]]:
    sources.espeak()
    sources.flite()
    prompts = load_prompts()
    durations = {p.name: read_wav(p.path)[0].size / SAMPLE_RATE for p in prompts if not p.excluded}
    partition = partition_voices(
        all_voices(),
        test_accents=config.test_accents,
        test_variants=config.test_variants,
        babble_variants=config.babble_variants,
    )
    check_voices([*partition.train, *partition.test, *partition.babble])
    music = {f"music_a:{t}": str(sources.moh_track(t)) for t in config.music_train_tracks}
    music.update({f"music_b:{t}": str(sources.moh_track(t)) for t in config.music_test_tracks})
    for path in music.values():
        read_wav(path)  # validates rate and format, naming a bad file
    return prompts, durations, partition, music


def _is_count(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (NumPy's included, ``bool`` not) of at least ``minimum``."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and int(value) >= minimum
    )


def build_corpus(
    config: CorpusConfig | str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Build (or finish, or just check) a corpus and return its manifest path.

    Args:
        config: a :class:`CorpusConfig` or a preset name (``"tiny"``, ``"quick"``, ``"full"``).
        out_dir: output folder (e.g. ``data/asr_se/quick``).
        seed: the corpus seed; same config and seed give the same bytes.
        progress: show a tqdm progress bar.
        workers: worker processes (default: the config's, capped at the CPU count).

    Raises:
        ValueError: a negative or non-integer ``seed``, or ``workers`` below 1.
        CorpusError: on a missing Debian package, a bad source audio file, an output
            folder holding a different corpus, or one that is a file or cannot be created.
    """
    if not _is_count(seed, 0):
        raise ValueError(f"Invalid seed: {seed!r} (expected an integer >= 0)")
    if workers is not None and not _is_count(workers, 1):
        raise ValueError(f"Invalid workers: {workers!r} (expected None or an integer >= 1)")
    seed = int(seed)
    cfg = get_config(config)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise CorpusError(f"the corpus folder {root} is a file, not a folder")
    identity = _identity(cfg, seed)
    info = read_info(root)
    if info is not None:
        _check_identity(root, info, identity)
        if info.get("complete"):
            try:
                verify_corpus(root, deep=False)
                return root / MANIFEST_NAME
            except CorpusError as exc:
                warnings.warn(f"repairing the corpus in {root}: {exc}", stacklevel=2)

    prompts, durations, partition, music = _validate_inputs(cfg)
    plan = make_plan(cfg, seed, prompts, durations, partition)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the corpus folder {root}: {exc.strerror}") from None
    with _lock(root):
        return _build_locked(root, cfg, seed, identity, plan, prompts, music, progress, workers)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` so two builds never write one folder."""
    with open(root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"another build is writing {root}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(
    root: Path,
    cfg: CorpusConfig,
    seed: int,
    identity: dict[str, Any],
    plan: Plan,
    prompts: list[Any],
    music: dict[str, str],
    progress: bool,
    workers: int | None,
) -> Path:
    done = _load_done(root)  # before corpus.json is reset: a repair reuses its babble hash
    atomic_write_bytes(
        root / INFO_NAME, (json.dumps({**identity, "complete": False}, indent=1) + "\n").encode()
    )
    n_workers = max(1, min(workers or cfg.workers, os.cpu_count() or 1))
    initargs = (str(root), seed, cfg.to_dict(), music)

    todo = [s for s in plan.sources if s.id not in done]
    with (
        open(root / PROGRESS_NAME, "a") as progress_file,
        tqdm(
            total=len(plan.sources),
            initial=len(plan.sources) - len(todo),
            disable=not progress,
            desc=f"corpus {cfg.name}",
            unit="utt",
            dynamic_ncols=True,
        ) as bar,
    ):
        _build_babble(root, plan, seed, n_workers, initargs, done, progress_file, bar)
        for task, records, files in _map(_run_task, todo, n_workers, initargs):
            done[task] = (records, files)
            _record(progress_file, task, records, files)
            bar.update(1)

    records = [r for s in plan.sources for r in done[s.id][0]]
    _write_outputs(root, cfg, identity, records, prompts)
    return root / MANIFEST_NAME


def _write_outputs(
    root: Path,
    cfg: CorpusConfig,
    identity: dict[str, Any],
    records: list[dict[str, Any]],
    prompts: Iterable[Any],
) -> None:
    excluded = [{"prompt": p.name, "reason": p.excluded} for p in prompts if p.excluded]
    atomic_write_bytes(root / EXCLUDED_NAME, manifest_bytes(excluded))
    atomic_write_bytes(root / MANIFEST_NAME, manifest_bytes(records))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["test_set"]] = counts.get(r["test_set"], 0) + 1
    info = {
        **identity,
        "complete": True,
        "content_hash": content_hash(root / MANIFEST_NAME),
        "examples": len(records),
        "examples_per_test_set": dict(sorted(counts.items())),
        "babble_sha256": sha256_file(root / BABBLE_PATH),
    }
    atomic_write_bytes(
        root / INFO_NAME, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode()
    )
    (root / PROGRESS_NAME).unlink(missing_ok=True)
    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
