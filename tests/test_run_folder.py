"""Run folders: atomic files, strict JSON, the data manifest and the lock (lightning_inv/run_folder.py)."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
from torch.utils.data import Subset

from lightning_inv import files as run_folder
from lightning_inv.data.images import LabelledImage, LabelledImageDataset
from lightning_inv.files import (
    RunFolderError,
    RunLock,
    data_manifest,
    manifest_changes,
    read_json,
    write_atomically,
    write_csv,
    write_json,
)


def test_a_full_disk_leaves_the_old_file_no_temporary_and_one_line_naming_the_folder(
    tmp_path, monkeypatch
):
    """A write that fails half way (ENOSPC) must not touch the existing file nor leave its
    temporary file behind. Catches writing in place (the old file truncated) and a temporary
    file left to fill the disk further (torch.save's "unexpected pos" left a .tmp)."""
    target = tmp_path / "results.json"
    write_json(target, {"complete": False, "models": {"a": 1}})

    def full(descriptor):  # the data went into the page cache; the disk says no
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder.os, "fsync", full)
    with pytest.raises(RunFolderError) as caught:
        write_json(target, {"complete": True, "models": {"a": 1, "b": 2}})
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message and "full" in message
    assert "needs" in message and "--resume" in message
    assert json.loads(target.read_text()) == {"complete": False, "models": {"a": 1}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_files_get_the_permissions_of_any_new_file(tmp_path):
    """mkstemp made results.json 0600 while the CSVs were 0644 (catches a private temp mode)."""
    old = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_is_strict_and_csv_quotes_odd_names(tmp_path):
    """Bare NaN is not JSON (strict parsers reject it); names with tabs, commas and newlines
    must survive a CSV round trip (skipped.txt split them into columns and rows)."""
    write_json(tmp_path / "r.json", {"p": float("nan"), "q": [1.0, float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}")) == {
        "p": None, "q": [1.0, None]
    }  # fmt: skip
    odd = "a\tb,c\nd.jpg"
    write_csv(tmp_path / "s.csv", ["image", "reason"], [[odd, "broken"]])
    import csv

    rows = list(csv.reader((tmp_path / "s.csv").open(newline="")))
    assert rows == [["image", "reason"], [odd, "broken"]]


def test_a_damaged_json_file_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text('{"complete": fal')
    with pytest.raises(RunFolderError) as caught:
        read_json(tmp_path / "results.json")
    assert "damaged" in str(caught.value) and "\n" not in str(caught.value)


def _dataset(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name in names:
        path = folder / name
        if not path.exists():
            path.write_bytes(b"x" * (len(name) + 1))
        items.append(LabelledImage(path, 0, name))
    return LabelledImageDataset(items, 32)


def test_the_manifest_names_what_changed(tmp_path):
    """Catches a manifest that compares only the count (an image replaced by another of the same
    count), ignores the order a subset takes, or misses a file rewritten in place."""
    before = data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"]))
    assert (
        manifest_changes(before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"])))
        is None
    )
    added = manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png", "d.png"]))
    )
    assert "1 added: d.png" in added
    swapped = manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "e.png"]))
    )
    assert "1 added: e.png" in swapped and "1 removed: c.png" in swapped
    (tmp_path / "b.png").write_bytes(b"longer content now")
    assert "1 changed: b.png" in manifest_changes(
        before, data_manifest(_dataset(tmp_path, ["a.png", "b.png", "c.png"]))
    )
    full = _dataset(tmp_path, ["a.png", "c.png"])
    order = manifest_changes(
        data_manifest(Subset(full, [0, 1])), data_manifest(Subset(full, [1, 0]))
    )
    assert "another order" in order


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    first = RunLock(tmp_path).__enter__()
    with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"), RunLock(tmp_path):
        pass
    first.__exit__(None, None, None)
    with RunLock(tmp_path):  # released: the next run may take it
        pass
