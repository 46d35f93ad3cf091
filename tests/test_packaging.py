"""What ``pip install gradsurgery`` gets: the wheel and the sdist, built with the project's
own build backend (hatchling) from this tree.

The wheel holds the library alone and requires torch and NumPy alone; its long
description, the README, links into the repository by absolute addresses (PyPI cannot
resolve relative ones). The sdist holds the library and its tests, and each test it holds
imports nothing the sdist leaves out (the example, the benchmarks, the docs' helpers), so
that its test suite runs from it.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("hatchling")
from hatchling.builders.sdist import SdistBuilder  # noqa: E402
from hatchling.builders.wheel import WheelBuilder  # noqa: E402

from tests.source_imports import imported_modules  # noqa: E402


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """The wheel's file names, and its METADATA."""
    directory = tmp_path_factory.mktemp("wheel")
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(directory), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        return names, archive.read(metadata).decode()


@pytest.fixture(scope="module")
def sdist_members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Path inside the sdist (without its top folder) -> content, for every file."""
    directory = tmp_path_factory.mktemp("sdist")
    (archive,) = SdistBuilder(str(ROOT)).build(directory=str(directory), versions=["standard"])
    members = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                inside = PurePosixPath(*PurePosixPath(member.name).parts[1:])
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[str(inside)] = extracted.read()
    return members


def test_the_wheel_holds_the_library_and_requires_torch_and_numpy(wheel_metadata):
    names, metadata = wheel_metadata
    lines = metadata.splitlines()
    library = {name for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert {name.split("/")[0] for name in library} == {"gradsurgery"}
    expected = {
        str(path.relative_to(ROOT).as_posix())
        for path in (ROOT / "gradsurgery").rglob("*")
        if path.suffix in {".py", ".typed"}
    }
    assert library == expected
    required = [
        line for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert sorted(line.split()[1].split("<")[0].split(">")[0] for line in required) == [
        "numpy",
        "torch",
    ]


def test_the_long_description_links_into_the_repository_by_absolute_addresses(wheel_metadata):
    _, metadata = wheel_metadata
    _, description = metadata.split("\n\n", 1)  # the headers, then the README
    readme = (ROOT / "README.md").read_text()
    assert description.strip().splitlines()[0] == readme.splitlines()[0]
    link = re.compile(r"\]\(([^)\s]+)\)")
    relative = [t for t in link.findall(readme) if not t.startswith(("http", "#", "mailto:"))]
    assert relative, "the README links into the repository: nothing to check"
    (repository,) = re.findall(r"^Project-URL: Repository, (\S+)$", metadata, re.MULTILINE)
    base = repository + "/blob/main/"
    targets = link.findall(description)
    assert all(target.startswith(("https://", "http://", "#")) for target in targets)
    assert [base + target for target in relative] == [
        target for target in targets if target.startswith(base)
    ]


def test_the_sdist_holds_the_library_and_its_tests(sdist_members):
    names = set(sdist_members)
    assert {"README.md", "LICENSE", "pyproject.toml", "PKG-INFO"} <= names
    library = {
        str(path.relative_to(ROOT).as_posix()) for path in (ROOT / "gradsurgery").rglob("*.py")
    }
    assert library <= names
    assert "tests/conftest.py" in names and "tests/test_resolve.py" in names
    assert "tests/resolvers/test_gr.py" in names
    top = {name.split("/")[0] for name in names}
    expected = {"gradsurgery", "tests", "README.md", "LICENSE", "pyproject.toml", "PKG-INFO"}
    assert top == expected | {".gitignore"}  # (hatchling always ships the .gitignore)


def test_every_test_in_the_sdist_imports_only_what_the_sdist_or_the_dev_extra_has(
    sdist_members,
):
    # A top-level name that is a folder or module of this repository (or a helper of the
    # docs' Sphinx extensions) is importable only from a checkout: the sdist must hold it.
    shipped = {name.split("/")[0] for name in sdist_members}
    local = {
        path.name for path in ROOT.iterdir() if path.is_dir() and not path.name.startswith(".")
    }
    local |= {path.stem for path in ROOT.glob("*.py")}
    local |= {path.stem for path in (ROOT / "docs" / "_ext").glob("*.py")}
    strays = []
    for name, content in sorted(sdist_members.items()):
        if not name.endswith(".py"):
            continue
        for module, _ in imported_modules(content.decode(), name):
            if module in local and module not in shipped:
                strays.append(f"{name} imports {module}")
    assert not strays, "tests in the sdist that need the repository:\n  " + "\n  ".join(strays)
