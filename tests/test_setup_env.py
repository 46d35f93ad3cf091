"""``tools/setup_env.sh`` on a fresh Debian, where ``python3 -m venv`` needs python3-venv.

The script runs against stand-ins for the commands it calls (``python3``, ``dpkg-query``,
``apt-get``, ``id``) that log their arguments: a Debian whose python3 lacks ``ensurepip``
until python3-venv is installed, and whose other packages are all installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ensurepip exists once apt-get has installed python3-venv (the file "ensurepip").
PYTHON3 = """#!/bin/bash
echo "python3 $*" >> "$LOG"
if [ "$1" = -c ]; then [ -e "$STATE/ensurepip" ]; exit; fi
if [ "$1 $2" = "-m venv" ]; then
    venv="${@: -1}"
    mkdir -p "$venv/bin"
    cp "$STATE/venv_python" "$venv/bin/python"
    if [ -e "$STATE/ensurepip" ]; then touch "$venv/pip"; exit 0; fi
    echo "ensurepip is not available" >&2; exit 1
fi
exit 2
"""
VENV_PYTHON = """#!/bin/bash
echo "venv-python $*" >> "$LOG"
[ -e "$(dirname "$0")/../pip" ]
"""
DPKG_QUERY = """#!/bin/bash
package="${@: -1}"
if [ "$package" = python3-venv ] && [ ! -e "$STATE/ensurepip" ]; then exit 1; fi
printf 'install ok installed'
"""
APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$LOG"
case " $* " in *" python3-venv "*) touch "$STATE/ensurepip";; esac
"""
ID = """#!/bin/bash
echo "$USER_ID"
"""


@pytest.fixture
def debian(tmp_path: Path) -> dict[str, Path]:
    """A copy of the script in a project folder, and the stand-ins' folder and state."""
    project = tmp_path / "project"
    (project / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "setup_env.sh", project / "tools" / "setup_env.sh")
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    scripts = {
        bin_dir / "python3": PYTHON3,
        bin_dir / "dpkg-query": DPKG_QUERY,
        bin_dir / "apt-get": APT_GET,
        bin_dir / "id": ID,
        state / "venv_python": VENV_PYTHON,
    }
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    return {"project": project, "bin": bin_dir, "state": state, "log": tmp_path / "log"}


def run_setup(debian: dict[str, Path], user_id: int) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{debian['bin']}:/usr/bin:/bin",
        "STATE": str(debian["state"]),
        "LOG": str(debian["log"]),
        "USER_ID": str(user_id),
    }
    return subprocess.run(
        ["bash", "tools/setup_env.sh"],
        cwd=debian["project"],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


def logged(debian: dict[str, Path]) -> list[str]:
    return debian["log"].read_text().splitlines() if debian["log"].exists() else []


def test_as_root_it_installs_python3_venv_before_it_creates_the_venv(debian):
    completed = run_setup(debian, user_id=0)
    assert completed.returncode == 0, completed.stderr
    log = logged(debian)
    (install,) = [line for line in log if line.startswith("apt-get install")]
    assert install.endswith(" python3-venv")
    creating = log.index("python3 -m venv --clear .venv")
    assert log.index(install) < creating
    assert log[creating + 1 :] == [
        "venv-python -m pip install -q --upgrade pip",
        "venv-python -m pip install -q torch==2.13.0",
        "venv-python -m pip install -q -e .[dev]",
    ]


def test_without_root_it_names_python3_venv_and_stops(debian):
    completed = run_setup(debian, user_id=1000)
    assert completed.returncode == 1
    assert "sudo apt-get install python3-venv" in completed.stderr
    assert "cannot create .venv without python3-venv" in completed.stderr
    assert not any(line.startswith(("apt-get", "python3 -m venv")) for line in logged(debian))


def test_a_venv_left_without_pip_is_created_again(debian):
    """``python3 -m venv`` without ensurepip (an earlier version of the script, or a hand
    run) leaves ``.venv/bin/python`` and no pip: the venv is created again rather than its
    pip called."""
    half_made = debian["project"] / ".venv" / "bin"
    half_made.mkdir(parents=True)
    shutil.copy(debian["state"] / "venv_python", half_made / "python")
    (debian["state"] / "ensurepip").touch()

    completed = run_setup(debian, user_id=1000)

    assert completed.returncode == 0, completed.stderr
    assert "python3 -m venv --clear .venv" in logged(debian)
    assert (debian["project"] / ".venv" / "pip").exists()


def test_a_working_venv_is_kept_and_no_package_is_installed(debian):
    (debian["state"] / "ensurepip").touch()
    assert run_setup(debian, user_id=0).returncode == 0
    debian["log"].unlink()

    completed = run_setup(debian, user_id=0)

    assert completed.returncode == 0, completed.stderr
    log = logged(debian)
    assert not any(line.startswith(("apt-get", "python3 -m venv")) for line in log)
    assert log[-1] == "venv-python -m pip install -q -e .[dev]"
