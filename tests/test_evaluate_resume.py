"""Interrupts and --resume through evaluate.py: a run is what it says it is (its data, its
config, its files), and a resumed run ends like one that never stopped (docs/design.md,
"Run folders")."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from tiny_runs import SYNSETS, TINY_DIGITS, TINY_FOLDER, folder_data

import evaluate
from lightning_inv.cli import evaluation
from lightning_inv.files import RunFolderError
from lightning_inv.reporting import outputs


def _interrupt_after(monkeypatch, batches: int) -> None:
    """Stop the run as a Ctrl+C after ``batches`` batches would (in process)."""
    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return signal.SIGINT if calls["n"] >= batches else None

    monkeypatch.setattr(evaluation.StopRequests, "__call__", stop)


def _interrupted_run(tmp_path, monkeypatch, photo_folder) -> tuple[Path, Path]:
    root, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    _interrupt_after(monkeypatch, 1)
    assert (
        evaluate.main([*TINY_FOLDER, *folder_data(root), "--output", str(out)])
        == 128 + signal.SIGINT
    )
    monkeypatch.undo()
    assert json.loads((out / "results.json").read_text())["complete"] is False
    return root, out


def test_resume_after_the_data_changed_is_refused_naming_the_images(
    tmp_path, monkeypatch, last_error, photo_folder
):
    """Before: an added image shifted the indices, the saved states were given to other files,
    one image was never measured, and the run ended complete with P(top-1 change) 0.023 for a
    true 0.045."""
    root, out = _interrupted_run(tmp_path, monkeypatch, photo_folder)
    Image.new("RGB", (48, 40), "white").save(root / SYNSETS[0] / "new.png")
    assert evaluate.main(["--resume", str(out)]) == 2
    message = last_error()
    assert "1 added: n01440764/new.png" in message and "--resume" in message
    (root / SYNSETS[0] / "new.png").unlink()
    Image.new("RGB", (50, 40), "black").save(root / SYNSETS[1] / "0.png")  # rewritten in place
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "1 changed: n01443537/0.png" in last_error()
    assert json.loads((out / "results.json").read_text())["complete"] is False


def test_resume_after_an_edited_config_is_refused_naming_the_keys(
    tmp_path, monkeypatch, last_error, photo_folder
):
    """Before: num_images 6 -> 4 in config.yaml measured one model on 6 images and the next on
    7 and compared them; changed protocols gave a KeyError traceback."""
    _, out = _interrupted_run(tmp_path, monkeypatch, photo_folder)
    config = out / "config.yaml"
    original = config.read_text()
    config.write_text(original + "num_images: 4\n")
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "num_images: None -> 4" in last_error()
    config.write_text(original.replace("- translate_black", "- crop"))
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "protocols: ['translate_black'] -> ['crop']" in last_error()


def test_flags_beside_resume_are_applied_or_refused_never_ignored(
    tmp_path, monkeypatch, capsys, last_error, photo_folder
):
    """Before: every flag given with --resume was ignored without a word."""
    _, out = _interrupted_run(tmp_path, monkeypatch, photo_folder)
    assert evaluate.main(["--resume", str(out), "--models", "resnet14t"]) == 2
    assert "--models would change what it measures" in last_error()
    assert evaluate.main(["--resume", str(out), "--num-workers", "1"]) == 0
    assert "applying --num-workers 1" in capsys.readouterr().err
    saved = json.loads((out / "results.json").read_text())
    assert (
        saved["complete"] is True
        and saved["models"]["resnet10t"]["translate_black"]["num_images"] == 6
    )


def test_a_second_process_on_the_same_folder_is_refused(
    tmp_path, monkeypatch, last_error, photo_folder
):
    """Before: two resumes of one folder both measured and wrote the same files."""
    from lightning_inv.reporting.run_folder import RunLock

    _, out = _interrupted_run(tmp_path, monkeypatch, photo_folder)
    lock = RunLock(out).__enter__()
    try:
        assert evaluate.main(["--resume", str(out)]) == 1
        assert "is being written by pid" in last_error()
    finally:
        lock.__exit__(None, None, None)


def test_complete_is_written_last_and_resume_finishes_lost_outputs(
    tmp_path, monkeypatch, last_error, photo_folder
):
    """Before: results.json said complete: true before the CSVs and figures were written, so
    outputs lost to a full disk or a crash could never be redone (--resume refused a complete
    run)."""
    root, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    flags = [
        *[f for f in TINY_FOLDER if f != "--no-figures"],
        *folder_data(root),
        "--output",
        str(out),
    ]

    def no_figures(*args, **kwargs):
        raise RunFolderError(f"the disk of {out / 'figures'} is full")

    monkeypatch.setattr(outputs, "write_figures", no_figures)
    assert evaluate.main(flags) == 1
    assert "--resume" in last_error()
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is False and "resnet10t" in saved["models"]
    monkeypatch.undo()
    assert evaluate.main(["--resume", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["complete"] is True
    assert list((out / "figures").glob("*.png"))


@pytest.mark.parametrize("damaged", ["results.json", "partial", "per_image"])
def test_damaged_resume_files_are_one_line_errors(
    damaged, tmp_path, monkeypatch, last_error, photo_folder
):
    """Before: a truncated .pt, .npz or results.json gave a traceback on --resume."""
    root, out = photo_folder(tmp_path / "photos"), tmp_path / "run"
    flags = [*TINY_FOLDER, *folder_data(root), "--output", str(out)]
    flags[1:2] = ["resnet10t", "resnet14t"]
    _interrupt_after(monkeypatch, 4)  # the first model done (3 batches), the second begun
    assert evaluate.main(flags) == 128 + signal.SIGINT
    monkeypatch.undo()
    target = {
        "results.json": out / "results.json",
        "partial": out / "partial" / "model1.rank0.pt",
        "per_image": out / "per_image" / "model0.npz",
    }[damaged]
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2])
    code = evaluate.main(["--resume", str(out)])
    line = last_error()
    assert (
        code in (1, 2)
        and str(target.name) in line
        and ("damaged" in line or "cannot be read" in line)
    )


def test_output_problems_are_found_before_any_model_loads(tmp_path, last_error):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert evaluate.main(["--output", str(blocker)]) == 2
    assert "is a file" in last_error()
    assert evaluate.main(["--output", str(blocker / "below")]) == 2
    assert "cannot write" in last_error()


def test_rerunning_into_the_same_folder_rewrites_the_csv_instead_of_appending(tmp_path):
    args = [
        *TINY_DIGITS,
        "--num-images",
        "3",
        "--protocols",
        "translate_black",
        "--output",
        str(tmp_path),
    ]
    assert evaluate.main(args) == 0
    assert evaluate.main([*args, "--overwrite"]) == 0
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 3 * 5  # one run's rows: 3 images x 5 views (+-2 px at 32 px)


def test_resume_refuses_a_folder_that_is_not_an_unfinished_run(tmp_path, last_error):
    assert evaluate.main(["--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in last_error()


def _evaluate(repo_root, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(repo_root / "evaluate.py"), *args],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(repo_root, tmp_path, stop_when):
    args = [
        *TINY_DIGITS,
        "--num-images",
        "60",
        "--batch-size",
        "2",
        "--save-every",
        "2",
        "--protocols",
        "translate_black",
        "random_location",
        "--no-nonshiftability",
    ]
    args[1:2] = ["resnet10t", "resnet14t"]
    straight = _evaluate(repo_root, *args, "--output", str(tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-3000:]
    run = tmp_path / "run"
    # 1. SIGTERM in the middle of the first model: its states so far are on disk.
    first = _evaluate(repo_root, *args, "--output", str(run))
    assert stop_when(first, run / "partial" / "model0.rank0.pt") == 128 + signal.SIGTERM
    saved = json.loads((run / "results.json").read_text())
    assert saved["complete"] is False and saved["missing"] == ["resnet10t", "resnet14t"]
    # 2. Resumed, then SIGTERM right after the first model has finished.
    second = _evaluate(repo_root, "--resume", str(run))
    assert stop_when(second, run / "per_image" / "model0.npz") == 128 + signal.SIGTERM
    out = second.communicate()[0]
    assert "already measured (resumed)" in out
    saved = json.loads((run / "results.json").read_text())
    assert saved["complete"] is False and list(saved["models"]) == ["resnet10t"]
    # 3. Resumed to the end: the same numbers, rows and comparisons as the uninterrupted run.
    third = _evaluate(repo_root, "--resume", str(run))
    assert third.wait(timeout=300) == 0, third.communicate()[1][-3000:]
    one, two = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "straight", run))
    assert two["complete"] is True
    for model, rows in one["models"].items():
        for key, row in rows.items():
            for name, value in row.items():
                assert two["models"][model][key][name] == pytest.approx(value, abs=1e-6), (
                    key,
                    name,
                )
    for pair, rows in one["comparisons"].items():
        for key, measures in rows.items():
            for name, d in measures.items():
                other = two["comparisons"][pair][key][name]
                assert other["difference"] == pytest.approx(d["difference"], abs=1e-6)
                assert other["ci95"] == pytest.approx(d["ci95"], abs=1e-6)
    rows = [
        list(csv.DictReader((d / "per_image.csv").open())) for d in (tmp_path / "straight", run)
    ]
    assert [(r["image"], r["model"], r["top1"]) for r in rows[0]] == [
        (r["image"], r["model"], r["top1"]) for r in rows[1]
    ]
    assert not list((run / "partial").glob("*.pt"))  # in-progress states are gone once done


@pytest.mark.slow
def test_sigkill_in_the_first_batches_then_resume_equals_an_uninterrupted_run(
    repo_root, tmp_path, photo_folder
):
    """Before: a run killed during its first model (SIGKILL, the OOM killer, a full disk) had no
    results.json yet, and --resume failed with FileNotFoundError."""
    root = photo_folder(tmp_path / "photos", per_class=6)
    flags = [*TINY_FOLDER, *folder_data(root)]
    straight = subprocess.run(
        [sys.executable, "evaluate.py", *flags, "--output", str(tmp_path / "a")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    process = subprocess.Popen(
        [sys.executable, "evaluate.py", *flags, "--output", str(out)],
        cwd=repo_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    start = time.monotonic()
    while not (out / "partial").exists():  # killed in its first batches
        assert process.poll() is None and time.monotonic() - start < 240
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=60)
    assert json.loads((out / "results.json").read_text())["complete"] is False
    resumed = subprocess.run(
        [sys.executable, "evaluate.py", "--resume", str(out)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    one, two = (
        json.loads((d / "results.json").read_text())["models"] for d in (tmp_path / "a", out)
    )
    assert one.keys() == two.keys()
    for key, row in one["resnet10t"].items():
        for name, value in row.items():
            assert two["resnet10t"][key][name] == pytest.approx(value, abs=1e-6), (key, name)
    assert not list(out.glob("**/.*.tmp"))


def test_resume_removes_the_temporary_files_a_killed_writer_left(
    tmp_path, monkeypatch, photo_folder
):
    """SIGKILL in the middle of a write leaves ``.<name>.<pid>.tmp`` behind (the process gets
    no chance to clean up); the resumed run, holding the folder's lock, removes it. Catches
    temporaries that pile up in a run folder over crashes."""
    _, out = _interrupted_run(tmp_path, monkeypatch, photo_folder)
    (out / "partial" / ".model0.rank0.pt.99999.tmp").write_bytes(b"half a file")
    (out / ".results.json.99999.tmp").write_text("{")
    assert evaluate.main(["--resume", str(out)]) == 0
    assert not list(out.rglob(".*.tmp"))
