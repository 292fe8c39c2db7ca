"""Run folders of the command-line tools: a fresh default name, never overwriting results, each
finished model's per-image results for ``--resume``, the data manifest and one writer at a time
(docs/design.md, "Run folders")."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

from lightning_inv.data.datamodules import unwrap
from lightning_inv.files import RunFolderError, write_atomically

MANIFEST = "manifest.json"
LOCK = ".lock"


def default_run_folder(prefix: str, root: str | Path = "runs") -> Path:
    """Create and return ``runs/<prefix>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when a run
    started in the same second already took it). ``mkdir`` without ``exist_ok`` is atomic, so
    two runs never share a folder."""
    base = Path(root) / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a fresh run folder next to {base}")


def overwrite_refusal(folder: Path, overwrite: bool) -> str | None:
    """The error message when ``folder`` holds files and ``overwrite`` is off, else None."""
    if not overwrite and folder.exists() and any(folder.iterdir()):
        return f"{folder} exists and is not empty; pass --overwrite or another --output"
    return None


def save_model_results(path: Path, results: dict[str, Any], curves: dict[str, Any]) -> None:
    """One finished model's per-image results (``{protocol key: ProtocolResult}``) and Fig. 4
    curves as a compressed ``.npz`` (temporary file + rename), for ``evaluate.py --resume``."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for key, result in results.items():
        arrays[f"{key}|indices"], arrays[f"{key}|labels"] = result.indices, result.labels
        for name, values in result.values.items():
            arrays[f"{key}|value|{name}"] = values
        for layer, values in result.nonshiftability.items():
            arrays[f"{key}|shift|{layer}"] = values
            arrays[f"{key}|depth|{layer}"] = np.array(result.depths.get(layer, -1))
        for layer, values in result.lie_layers.items():
            arrays[f"{key}|lie|{layer}"] = values
            arrays[f"{key}|depth|{layer}"] = np.array(result.depths.get(layer, -1))
            arrays[f"{key}|kind|{layer}"] = np.array(result.kinds.get(layer, "other"))
        if result.p_true is not None:
            arrays[f"{key}|p_true"], arrays[f"{key}|top1"] = result.p_true, result.top1
    for key, sums in curves.items():
        arrays[f"{key}|curves"] = sums.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomically(path, buffer.getvalue())


def load_model_results(path: Path, protocols: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(per-image results, curves)`` that ``save_model_results`` wrote, for ``protocols``."""
    import numpy as np
    import torch

    from lightning_inv.measuring.core import ProtocolResult

    try:
        with np.load(path) as stored:
            arrays = dict(stored)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise RunFolderError(
            f"{path} is damaged ({type(err).__name__}: {err}); delete it and --resume measures "
            "that model again"
        ) from err
    results, curves = {}, {}
    for protocol in protocols:
        key = protocol.key
        if f"{key}|indices" not in arrays:
            raise RunFolderError(
                f"{path} holds no results for protocol {key}: the run's protocols changed; "
                "start a new run"
            )
        prefix_value, prefix_shift = f"{key}|value|", f"{key}|shift|"
        prefix_depth, prefix_lie, prefix_kind = f"{key}|depth|", f"{key}|lie|", f"{key}|kind|"
        results[key] = ProtocolResult(
            protocol=protocol,
            indices=arrays[f"{key}|indices"],
            labels=arrays[f"{key}|labels"],
            values={
                k[len(prefix_value) :]: v for k, v in arrays.items() if k.startswith(prefix_value)
            },
            p_true=arrays.get(f"{key}|p_true"),
            top1=arrays.get(f"{key}|top1"),
            nonshiftability={
                k[len(prefix_shift) :]: v for k, v in arrays.items() if k.startswith(prefix_shift)
            },
            depths={
                k[len(prefix_depth) :]: int(v)
                for k, v in arrays.items()
                if k.startswith(prefix_depth)
            },
            lie_layers={
                k[len(prefix_lie) :]: v for k, v in arrays.items() if k.startswith(prefix_lie)
            },
            kinds={
                k[len(prefix_kind) :]: str(v)
                for k, v in arrays.items()
                if k.startswith(prefix_kind)
            },
        )
        if f"{key}|curves" in arrays:
            curves[key] = torch.from_numpy(arrays[f"{key}|curves"])
    return results, curves


def data_manifest(dataset: Any) -> dict[str, Any]:
    """What ``dataset`` holds, in the order the run measures it: each image file's name, size and
    modification time (ns); data sets without files (digits) by their length and class."""
    base, order = unwrap(dataset)
    items = getattr(base, "items", None)
    if items is None:
        return {"kind": type(base).__name__, "length": len(dataset), "files": None}
    files = []
    for index in order:
        item = items[index]
        try:
            stat = os.stat(item.path)
            size, modified = stat.st_size, stat.st_mtime_ns
        except OSError:  # unreadable now: recorded as such (it is skipped and named)
            size, modified = None, None
        files.append({"name": item.name, "size": size, "mtime_ns": modified})
    return {"kind": type(base).__name__, "length": len(files), "files": files}


def manifest_changes(before: dict[str, Any], now: dict[str, Any], limit: int = 5) -> str | None:
    """What changed between two manifests, in one line (None: the same data in the same order)."""
    if before == now:
        return None
    if before.get("files") is None or now.get("files") is None:
        return (
            f"the data changed: {before.get('kind')} of {before.get('length')} items then, "
            f"{now.get('kind')} of {now.get('length')} now"
        )
    old = {f["name"]: f for f in before["files"]}
    new = {f["name"]: f for f in now["files"]}
    parts = []
    for label, names in (
        ("added", [n for n in new if n not in old]),
        ("removed", [n for n in old if n not in new]),
        ("changed", [n for n in new if n in old and new[n] != old[n]]),
    ):
        if names:
            shown = ", ".join(names[:limit]) + (
                f" (+{len(names) - limit})" if len(names) > limit else ""
            )
            parts.append(f"{len(names)} {label}: {shown}")
    if not parts:
        parts.append("the same files in another order")
    return "the data changed since the run started: " + "; ".join(parts)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.<pid>.tmp``) that a writer killed mid-write left in
    a run folder (SIGKILL leaves no chance to clean up); call it holding the folder's lock, so
    no live writer owns them. Returns what was removed."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunLock:
    """An exclusive lock on a run folder (``flock`` on ``.lock``) for the life of a run: a second
    process that wants to write the same folder is refused at once with the holder's pid.
    Where ``fcntl`` is missing (Windows) the lock is a no-op."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self._handle: Any = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"{self.path.parent} is being written by {holder}; wait for it to finish, "
                "or pass another --output"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock
            self._handle = None
