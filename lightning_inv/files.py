"""Run folders that say what they hold: atomic files, the data manifest, one writer at a time.

Every file a run writes goes through ``write_atomically``: a temporary file in the same folder,
flushed to disk, then renamed over the target, so a reader, an interrupt or a full disk never
leaves half a file; a write that fails removes its temporary file and raises ``RunFolderError``
with one line that names the folder and the space the file needed. ``data_manifest`` records
what a run measures (each image's name, size and modification time, in the order used), and
``manifest_changes`` names what differs when a run is resumed. ``RunLock`` lets one process at
a time write a run folder (docs/design.md, "Run folders").
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
LOCK = ".lock"


class RunFolderError(RuntimeError):
    """A run folder cannot be written, read or resumed; the message is one line with the fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def open_atomically(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A handle on a temporary file beside ``path`` (text: UTF-8, no newline translation);
    when the block ends it is flushed to disk and renamed over ``path`` with the permissions of
    any new file (0666 minus the umask). An error (full disk, no permission) removes the
    temporary file, leaves ``path`` as it was and raises ``RunFolderError``; an exception from
    the block itself removes the temporary file and propagates."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    handle: IO[Any] | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if binary:
            handle = temporary.open("xb")
        else:
            handle = temporary.open("x", encoding="utf-8", newline="")
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as err:
        written = handle.tell() if handle is not None and not handle.closed else 0
        _discard(handle, temporary)
        raise RunFolderError(_describe(err, path, written)) from err
    except BaseException:
        _discard(handle, temporary)
        raise


def _discard(handle: IO[Any] | None, temporary: Path) -> None:
    if handle is not None and not handle.closed:
        with suppress(OSError):
            handle.close()
    temporary.unlink(missing_ok=True)


def write_atomically(path: Path, content: bytes | str) -> Path:
    """Write ``content`` (str: UTF-8) to ``path`` atomically (``open_atomically``)."""
    with open_atomically(path, binary=isinstance(content, bytes)) as handle:
        handle.write(content)
    return Path(path)


def _describe(err: OSError, path: Path, size: int) -> str:
    folder = path.parent
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        return (
            f"the disk of {folder} is full: writing {path.name} needs more than {_size(size)}, "
            f"{_size(free)} free; free some space, then continue with --resume {folder}"
        )
    reason = err.strerror or str(err)
    return f"cannot write {path.name} in {folder} ({reason}); pass a writable folder"


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (strict JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, content: Any) -> Path:
    """``content`` as strict JSON (NaN and infinities as null), atomically."""
    return write_atomically(path, json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A UTF-8 CSV through the csv module (quotes names with commas, tabs or newlines), streamed
    to its temporary file (millions of rows need no copy in memory), atomically."""
    with open_atomically(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def read_json(path: Path) -> Any:
    """A JSON file of a run folder; ``RunFolderError`` when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunFolderError(f"{path} is missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"{path} is damaged ({type(err).__name__}: {err}); it cannot be resumed: start a new "
            "run, or delete the file if a backup of it exists"
        ) from err


# -- what a run measured ---------------------------------------------------------------------------


def data_manifest(dataset: Any) -> dict[str, Any]:
    """What ``dataset`` holds, in the order the run measures it: each image file's name, size and
    modification time (ns); data sets without files (digits) by their length and class."""
    from torch.utils.data import Subset

    positions: list[int] | None = None
    base = dataset
    while isinstance(base, Subset):
        inner = list(base.indices)
        positions = inner if positions is None else [inner[i] for i in positions]
        base = base.dataset
    items = getattr(base, "items", None)
    if items is None:
        return {"kind": type(base).__name__, "length": len(dataset), "files": None}
    order = positions if positions is not None else list(range(len(items)))
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


# -- one writer at a time --------------------------------------------------------------------------


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
