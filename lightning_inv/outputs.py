"""Run folders of the command-line tools: a fresh default name, and never overwriting results."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def default_run_folder(prefix: str, root: str | Path = "runs") -> Path:
    """``runs/<prefix>-<YYYYmmdd-HHMMSS>``: a new folder per run."""
    return Path(root) / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")


def overwrite_refusal(folder: Path, overwrite: bool) -> str | None:
    """The error message when ``folder`` holds files and ``overwrite`` is off, else None."""
    if not overwrite and folder.exists() and any(folder.iterdir()):
        return f"{folder} exists and is not empty; pass --overwrite or another --output"
    return None


def write_json_atomically(path: Path, content: Any) -> None:
    """Write ``content`` as JSON to a temporary file beside ``path``, then rename it over
    ``path``: a reader (or an interrupt) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(content, file, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
