"""Where the Debian packages the corpus is built from put their files.

Every path and program the builder reads from the system is named here, next to
the package that provides it, so that a missing package is reported as
``apt-get install <package>`` instead of a bare ``FileNotFoundError``. Tests
monkeypatch these module attributes to simulate a machine without a package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import MissingPackageError

#: Allison's prompts, 8 kHz 16-bit mono WAV (package asterisk-core-sounds-en-wav).
ASTERISK_SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_SOUNDS_PACKAGE = "asterisk-core-sounds-en-wav"

#: Their transcripts (package asterisk-core-sounds-en).
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_TRANSCRIPTS_PACKAGE = "asterisk-core-sounds-en"

#: Five music-on-hold tracks, 8 kHz 16-bit mono WAV (package asterisk-moh-opsound-wav).
MOH_DIR = Path("/usr/share/asterisk/moh")
MOH_PACKAGE = "asterisk-moh-opsound-wav"

#: Text-to-speech programs and the packages that provide them.
ESPEAK_PROGRAM = "espeak-ng"
ESPEAK_PACKAGE = "espeak-ng"
FLITE_PROGRAM = "flite"
FLITE_PACKAGE = "flite"


def require_program(program: str, package: str) -> str:
    """Return the absolute path of ``program`` or raise naming the package to install.

    Args:
        program: executable name looked up on ``PATH``.
        package: Debian package that provides it.

    Raises:
        MissingPackageError: when the program is not on ``PATH``.
    """
    path = shutil.which(program)
    if path is None:
        raise MissingPackageError(package, f"the program {program!r}")
    return path


def require_path(path: Path, package: str) -> Path:
    """Return ``path`` if it exists, else raise naming the package that provides it."""
    if not Path(path).exists():
        raise MissingPackageError(package, f"{path}")
    return Path(path)


def espeak() -> str:
    """Path of the espeak-ng program."""
    return require_program(ESPEAK_PROGRAM, ESPEAK_PACKAGE)


def flite() -> str:
    """Path of the flite program."""
    return require_program(FLITE_PROGRAM, FLITE_PACKAGE)


def asterisk_sounds_dir() -> Path:
    """Directory of the real test prompts."""
    return require_path(ASTERISK_SOUNDS_DIR, ASTERISK_SOUNDS_PACKAGE)


def asterisk_transcripts() -> Path:
    """Gzipped transcript file of the real test prompts."""
    return require_path(ASTERISK_TRANSCRIPTS, ASTERISK_TRANSCRIPTS_PACKAGE)


def moh_track(name: str) -> Path:
    """Path of one music-on-hold track (``name`` without ``.wav``)."""
    require_path(MOH_DIR, MOH_PACKAGE)
    return require_path(MOH_DIR / f"{name}.wav", MOH_PACKAGE)
