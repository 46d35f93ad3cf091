"""The one exception type the corpus builder raises for bad input.

A single class lets callers (the CLI, the flagship's training script) catch every
"your data or your machine is not as expected" problem in one place, while the
message always names the file, package or argument at fault and what was expected.
"""

from __future__ import annotations


class CorpusError(RuntimeError):
    """Bad input to the corpus builder: a missing package, a bad audio file, a stale manifest."""


class MissingPackageError(CorpusError):
    """A Debian package the corpus is built from is not installed."""

    def __init__(self, package: str, what: str) -> None:
        self.package = package
        super().__init__(
            f"{what} is missing: the Debian package {package!r} does not seem to be installed. "
            f"Install it with: apt-get install {package}"
        )
