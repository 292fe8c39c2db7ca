"""Read the records of an offline W&B run file (``run-*.wandb``), for tests that check what a
run would upload. The file is W&B's header (``:W&B``, 2 magic bytes, a version byte) and then
LevelDB's log format: 32 KiB blocks of chunks, each ``crc32 (4) | length (2, LE) | type (1) |
data`` (type 1 a whole record, 2/3/4 its first/middle/last piece); a record is a protobuf
``wandb.proto.wandb_internal_pb2.Record``."""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

HEADER = 7
BLOCK = 32768
CHUNK_HEADER = 7


def records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    out, piece, position = [], b"", HEADER
    while position + CHUNK_HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < CHUNK_HEADER:  # the block's tail is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            position += left
            continue
        body = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        piece = body if kind in (1, 2) else piece + body
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(piece)
            out.append(record)
            piece = b""
    return out


def run_file(folder: Path) -> Path:
    """The one ``run-*.wandb`` file under an offline run folder (``offline-run-*``)."""
    (found,) = folder.glob("run-*.wandb")
    return found
