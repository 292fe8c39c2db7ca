"""Files that are whole or absent (lightning_inv/files.py): atomic writes, strict JSON, CSV."""

from __future__ import annotations

import csv
import errno
import json
import os
import stat

import pytest

from lightning_inv import files
from lightning_inv.files import RunFolderError, read_json, write_atomically, write_csv, write_json


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

    monkeypatch.setattr(files.os, "fsync", full)
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
        "p": None,
        "q": [1.0, None],
    }
    odd = "a\tb,c\nd.jpg"
    write_csv(tmp_path / "s.csv", ["image", "reason"], [[odd, "broken"]])
    rows = list(csv.reader((tmp_path / "s.csv").open(newline="")))
    assert rows == [["image", "reason"], [odd, "broken"]]


def test_a_damaged_json_file_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text('{"complete": fal')
    with pytest.raises(RunFolderError) as caught:
        read_json(tmp_path / "results.json")
    assert "damaged" in str(caught.value) and "\n" not in str(caught.value)
