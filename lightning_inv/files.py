"""Files that are whole or absent: every file the tools write goes through ``open_atomically``.

A temporary file in the same folder, flushed to disk, then renamed over the target, so a reader,
an interrupt or a full disk never sees half a file; a write that fails removes its temporary
file and raises ``RunFolderError`` with one line that names the folder and the space the file
needed (docs/design.md, "Run folders"). JSON is strict (NaN as null); CSVs go through the csv
module.
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
