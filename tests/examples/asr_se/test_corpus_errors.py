"""Bad input gives clear errors: missing Debian packages, corrupt or wrong-rate audio."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from examples.asr_se.corpus import CorpusError, MissingPackageError, build_corpus, sources
from examples.asr_se.corpus.__main__ import main
from examples.asr_se.corpus.audio import read_wav, write_wav
from examples.asr_se.corpus.manifest import MANIFEST_NAME, read_manifest, verify_corpus
from examples.asr_se.corpus.prompts import load_prompts


@pytest.mark.parametrize(
    ("attribute", "value", "package"),
    [
        ("ESPEAK_PROGRAM", "espeak-ng-not-installed", "espeak-ng"),
        ("FLITE_PROGRAM", "flite-not-installed", "flite"),
        ("ASTERISK_SOUNDS_DIR", Path("/nonexistent/sounds"), "asterisk-core-sounds-en-wav"),
        (
            "ASTERISK_TRANSCRIPTS",
            Path("/nonexistent/core-sounds-en.txt.gz"),
            "asterisk-core-sounds-en",
        ),
        ("MOH_DIR", Path("/nonexistent/moh"), "asterisk-moh-opsound-wav"),
    ],
)
def test_missing_debian_package_says_what_to_install(
    attribute: str, value: object, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, attribute, value)
    with pytest.raises(MissingPackageError, match=f"apt-get install {package}$"):
        build_corpus("tiny", tmp_path / "corpus", progress=False)
    assert not (tmp_path / "corpus").exists()  # nothing written before the inputs check out


def test_cli_reports_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sources, "FLITE_PROGRAM", "flite-not-installed")
    assert main(["build", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "apt-get install flite" in capsys.readouterr().err


def test_cli_reports_file_errors_in_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output folder that is a file, a document without markers or missing, a folder
    without a finished corpus: one line on stderr and status 1, not a traceback."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    doc = tmp_path / "doc.md"
    doc.write_text("no markers\n")
    tiny = ["--preset", "tiny", "--out"]
    for argv, message in [
        (["build", *tiny, str(a_file), "--no-progress"], "is a file, not a folder"),
        (["build", *tiny, str(a_file / "corpus"), "--no-progress"], "cannot create"),
        (["stats", *tiny, str(tiny_root), "--update-doc", str(doc)], "markers"),
        (["stats", *tiny, str(tiny_root), "--update-doc", str(tmp_path / "no.md")], "read"),
        (["stats", *tiny, str(tmp_path)], "holds no finished corpus"),
    ]:
        capsys.readouterr()
        assert main(argv) == 1, argv
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and message in error


def test_verify_of_a_changed_file_says_how_to_repair_it(tmp_path: Path, tiny_root: Path) -> None:
    """A file changed in place (same size) fails verify, and the advice it gives (delete
    it, build again) repairs the corpus, which build alone does not (it checks sizes)."""
    root = tmp_path / "corpus"
    shutil.copytree(tiny_root, root)
    record = read_manifest(root / MANIFEST_NAME)[0]
    changed = root / record["noisy"]
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0xFF
    changed.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match="Delete it and run `build` again") as error:
        verify_corpus(root)
    assert str(changed) in str(error.value)
    build_corpus("tiny", root, progress=False)  # sizes match: not repaired
    with pytest.raises(CorpusError, match="SHA-256 differs"):
        verify_corpus(root)
    changed.unlink()
    with pytest.warns(UserWarning, match="repairing"):
        build_corpus("tiny", root, progress=False)
    verify_corpus(root)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, r"Invalid seed: -1 \(expected an integer >= 0\)"),
        ({"seed": 1.5}, r"Invalid seed: 1\.5"),
        ({"seed": True}, r"Invalid seed: True"),
        ({"workers": 0}, r"Invalid workers: 0 \(expected None or an integer >= 1\)"),
    ],
)
def test_bad_seed_or_workers_are_refused_before_anything_is_written(
    options: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        build_corpus("tiny", tmp_path / "corpus", progress=False, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "corpus").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--seed", "-1"], "--seed must be >= 0, got -1"), (["--workers", "0"], "--workers must")],
)
def test_cli_refuses_bad_seed_or_workers(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["build", "--preset", "tiny", "--out", str(tmp_path / "corpus"), *option])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "corpus").exists()


def test_a_numpy_integer_seed_is_the_same_corpus(tiny_root: Path) -> None:
    # the seed is part of the corpus' identity, written as JSON: a NumPy integer is an int
    manifest = build_corpus("tiny", tiny_root, seed=np.int64(0), progress=False)
    assert json.loads((tiny_root / "corpus.json").read_text())["seed"] == 0
    assert manifest == tiny_root / "manifest.jsonl"


def _write(path: Path, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(800 * channels, dtype="<i2").tobytes())
    return path


def test_bad_audio_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"wide\.wav has sample rate 16000 Hz; expected 8000"):
        read_wav(_write(tmp_path / "wide.wav", 16000))
    with pytest.raises(CorpusError, match=r"stereo\.wav has 2 channel"):
        read_wav(_write(tmp_path / "stereo.wav", 8000, channels=2))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not a wav file at all")
    with pytest.raises(CorpusError, match=r"corrupt or unsupported WAV file .*junk\.wav"):
        read_wav(junk)
    cut = tmp_path / "cut.wav"
    write_wav(cut, np.ones(1000, dtype=np.int16))
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(CorpusError, match=r"corrupt WAV file .*cut\.wav"):
        read_wav(cut)
    with pytest.raises(CorpusError, match=r"not found: .*absent\.wav"):
        read_wav(tmp_path / "absent.wav")


def test_corrupt_real_prompt_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sources.asterisk_sounds_dir()
    fake = tmp_path / "sounds"
    for src in real.rglob("*.wav"):
        dst = fake / src.relative_to(real)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    (fake / "vm-goodbye.wav").unlink()
    _write(fake / "vm-goodbye.wav", 16000)
    monkeypatch.setattr(sources, "ASTERISK_SOUNDS_DIR", fake)
    with pytest.raises(CorpusError, match=r"vm-goodbye\.wav has sample rate 16000"):
        load_prompts()


def test_reading_a_corpus_under_another_preset_is_refused_in_one_line(
    tiny_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("verify", "stats", "figure"):
        assert main([command, "--preset", "full", "--out", str(tiny_root)]) == 1
        error = capsys.readouterr().err
        assert error == (
            f"error: {tiny_root} holds a corpus of preset 'tiny', not 'full': pass --out "
            "alone, or the corpus's own preset\n"
        )
    assert main(["verify", "--out", str(tiny_root)]) == 0  # its own preset, from corpus.json
    assert "all files of the tiny corpus match" in capsys.readouterr().out


def test_the_figure_of_a_corpus_other_than_the_full_default_stays_in_its_folder(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import examples.asr_se.corpus.__main__ as cli

    drawn: list[tuple[Path, Path]] = []
    pytest.importorskip("matplotlib")
    import examples.asr_se.corpus.figure as figure

    def record(root: Path, png: Path) -> Path:
        drawn.append((Path(root), Path(png)))
        return Path(png)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figure, "draw_spectrograms", record)
        assert main(["figure", "--out", str(tiny_root)]) == 0
        assert main(["figure", "--out", str(tiny_root), "--png", str(tmp_path / "x.png")]) == 0
    assert drawn == [
        (tiny_root, tiny_root / "corpus_spectrograms.png"),  # not the committed full picture
        (tiny_root, tmp_path / "x.png"),
    ]
    assert cli.FIGURE.parent.name == "figures"


def test_stats_records_the_command_that_shows_its_numbers(tiny_root: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- stats:tiny:begin -->\n<!-- stats:tiny:end -->\n")
    assert main(["stats", "--out", str(tiny_root), "--update-doc", str(doc)]) == 0
    command = f"python -m examples.asr_se.corpus stats --preset tiny --out {tiny_root}"
    assert f"_Generated by `{command}`._" in doc.read_text()
