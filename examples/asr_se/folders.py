"""Whether an output folder can be written, checked before the work that fills it."""

from __future__ import annotations

import os
from pathlib import Path


def unusable_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot be used as (or made into) a folder to write in, or ``None``.

    The nearest part of the path that exists must be a folder that can be written to: a
    file there, or a folder without write permission, would stop the command only when it
    writes its results, after the work.
    """
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                return f"{path} is not a folder"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"{path} cannot be written to"
            return None
    return None  # (a relative path whose first part does not exist yet)
