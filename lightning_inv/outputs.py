"""Run folders of the command-line tools: a fresh default name, and never overwriting results."""

from __future__ import annotations

import time
from pathlib import Path


def default_run_folder(prefix: str, root: str | Path = "runs") -> Path:
    """``runs/<prefix>-<YYYYmmdd-HHMMSS>``: a new folder per run."""
    return Path(root) / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")


def overwrite_refusal(folder: Path, overwrite: bool) -> str | None:
    """The error message when ``folder`` holds files and ``overwrite`` is off, else None."""
    if not overwrite and folder.exists() and any(folder.iterdir()):
        return f"{folder} exists and is not empty; pass --overwrite or another --output"
    return None
