"""A run is what it says it is: resume checks its data and config, every crash is resumable,
hostile inputs are skipped by name, bad settings are one-line errors (issue: run integrity).

Each test is a case a hostile but realistic user meets; the docstring says what went wrong
before (all of these failed on the earlier main)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import evaluate

SYNSETS = ("n01440764", "n01443537")
TINY = ["--models", "resnet10t", "--no-pretrained", "--image-size", "32", "--accelerator", "cpu",
        "--devices", "1", "--logger", "none", "--no-figures", "--resamples", "50",
        "--protocols", "translate_black", "--no-nonshiftability", "--batch-size", "2",
        "--save-every", "1"]  # fmt: skip


def _folder(root: Path, per_class: int = 3) -> Path:
    for k, synset in enumerate(SYNSETS):
        (root / synset).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (48, 40), (60 * i, 90 + 50 * k, 30)).save(root / synset / f"{i}.png")
    return root


def _data(root: Path) -> list[str]:
    return ["--data", "imagefolder", "--data-root", str(root)]


def _interrupt_after(monkeypatch, batches: int) -> None:
    """Stop the run as a Ctrl+C after ``batches`` batches would (in process)."""
    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return signal.SIGINT if calls["n"] >= batches else None

    monkeypatch.setattr(evaluate.StopRequests, "__call__", stop)


def _interrupted_run(tmp_path, monkeypatch, extra=()) -> tuple[Path, Path]:
    root, out = _folder(tmp_path / "photos"), tmp_path / "run"
    _interrupt_after(monkeypatch, 1)
    assert evaluate.main([*TINY, *_data(root), *extra, "--output", str(out)]) == 128 + signal.SIGINT
    monkeypatch.undo()
    assert json.loads((out / "results.json").read_text())["complete"] is False
    return root, out


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_resume_after_the_data_changed_is_refused_naming_the_images(tmp_path, monkeypatch, capsys):
    """Before: an added image shifted the indices, the saved states were given to other files,
    one image was never measured, and the run ended complete with P(top-1 change) 0.023 for a
    true 0.045."""
    root, out = _interrupted_run(tmp_path, monkeypatch)
    Image.new("RGB", (48, 40), "white").save(root / SYNSETS[0] / "new.png")
    assert evaluate.main(["--resume", str(out)]) == 2
    message = _error(capsys)
    assert "1 added: n01440764/new.png" in message and "--resume" in message
    (root / SYNSETS[0] / "new.png").unlink()
    Image.new("RGB", (50, 40), "black").save(root / SYNSETS[1] / "0.png")  # rewritten in place
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "1 changed: n01443537/0.png" in _error(capsys)
    assert json.loads((out / "results.json").read_text())["complete"] is False


def test_resume_after_an_edited_config_is_refused_naming_the_keys(tmp_path, monkeypatch, capsys):
    """Before: num_images 6 -> 4 in config.yaml measured one model on 6 images and the next on
    7 and compared them; changed protocols gave a KeyError traceback."""
    _, out = _interrupted_run(tmp_path, monkeypatch)
    config = out / "config.yaml"
    original = config.read_text()
    config.write_text(original + "num_images: 4\n")
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "num_images: None -> 4" in _error(capsys)
    config.write_text(original.replace("- translate_black", "- crop"))
    assert evaluate.main(["--resume", str(out)]) == 2
    assert "protocols: ['translate_black'] -> ['crop']" in _error(capsys)


def test_flags_beside_resume_are_applied_or_refused_never_ignored(tmp_path, monkeypatch, capsys):
    """Before: every flag given with --resume was ignored without a word."""
    _, out = _interrupted_run(tmp_path, monkeypatch)
    assert evaluate.main(["--resume", str(out), "--models", "resnet14t"]) == 2
    assert "--models would change what it measures" in _error(capsys)
    assert evaluate.main(["--resume", str(out), "--num-workers", "1"]) == 0
    assert "applying --num-workers 1" in capsys.readouterr().err
    saved = json.loads((out / "results.json").read_text())
    assert (
        saved["complete"] is True
        and saved["models"]["resnet10t"]["translate_black"]["num_images"] == 6
    )


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, monkeypatch, capsys):
    """Before: two resumes of one folder both measured and wrote the same files."""
    from lightning_inv.reporting.run_folder import RunLock

    _, out = _interrupted_run(tmp_path, monkeypatch)
    lock = RunLock(out).__enter__()
    try:
        assert evaluate.main(["--resume", str(out)]) == 1
        assert "is being written by pid" in _error(capsys)
    finally:
        lock.__exit__(None, None, None)


def test_complete_is_written_last_and_resume_finishes_lost_outputs(tmp_path, monkeypatch, capsys):
    """Before: results.json said complete: true before the CSVs and figures were written, so
    outputs lost to a full disk or a crash could never be redone (--resume refused a complete
    run)."""
    root, out = _folder(tmp_path / "photos"), tmp_path / "run"
    flags = [*[f for f in TINY if f != "--no-figures"], *_data(root), "--output", str(out)]

    def no_figures(*args, **kwargs):
        raise evaluate.RunFolderError(f"the disk of {out / 'figures'} is full")

    monkeypatch.setattr(evaluate, "write_figures", no_figures)
    assert evaluate.main(flags) == 1
    assert "--resume" in _error(capsys)
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is False and "resnet10t" in saved["models"]
    monkeypatch.undo()
    assert evaluate.main(["--resume", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["complete"] is True
    assert list((out / "figures").glob("*.png"))


def test_a_name_that_is_not_utf8_reaches_every_output(tmp_path, capsys):
    """Before: results.json said complete: true, then per_image.csv failed (header only), the
    measures CSV and skipped.txt were missing, exit 1, and --resume refused the run for good."""
    root = _folder(tmp_path / "photos", per_class=1)
    odd = os.path.join(os.fsencode(root / SYNSETS[0]), b"caf\xe9.png")
    Image.new("RGB", (48, 40), "red").save(os.fsdecode(odd))
    with open(os.path.join(os.fsencode(root / SYNSETS[1]), b"\xff\tbroken\n.png"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert evaluate.main([*TINY, *_data(root), "--output", str(out)]) == 0
    rows = list(csv.DictReader((out / "per_image.csv").open(encoding="utf-8", newline="")))
    assert "n01440764/caf\\xe9.png" in {r["image"] for r in rows}
    measures = list(
        csv.DictReader((out / "per_image_measures.csv").open(encoding="utf-8", newline=""))
    )
    assert {r["image"] for r in measures} == {r["image"] for r in rows}
    (skipped,) = list(csv.DictReader((out / "skipped.csv").open(encoding="utf-8", newline="")))
    assert skipped["image"] == "n01443537/\\xff\tbroken\n.png"
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (
        saved["complete"] is True and saved["skipped"]["resnet10t"][0]["image"] == skipped["image"]
    )


def test_decompression_bombs_and_huge_images_are_skipped_by_name(tmp_path):
    """Before: one 855 KB PNG of 30000 x 30000 killed the whole run with a traceback. A
    14000 x 14000 bilevel PNG is beyond Pillow's own bomb check, a 1200 x 1000 one beyond a
    limit set with --max-image-pixels; both are skipped and named, the rest measured."""
    root = _folder(tmp_path / "photos", per_class=2)
    Image.new("1", (14000, 14000)).save(root / SYNSETS[0] / "bomb.png")
    Image.new("RGB", (1200, 1000), "blue").save(root / SYNSETS[1] / "large.png")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        code = evaluate.main([*TINY, *_data(root), "--max-image-pixels", "1000000",
                              "--output", str(out)])  # fmt: skip
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    reasons = {s["image"]: s["reason"] for s in saved["skipped"]["resnet10t"]}
    assert set(reasons) == {"n01440764/bomb.png", "n01443537/large.png"}
    assert (
        "1,200,000 pixels" in reasons["n01443537/large.png"]
        and "--max-image-pixels" in reasons["n01443537/large.png"]
    )
    assert saved["models"]["resnet10t"]["translate_black"]["num_images"] == 4


def _bomb(path: Path, levels: int = 9) -> Path:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        name, previous = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("devices: banana\n", "--devices 'banana' is not auto"),
        ("accelerator: tpu\n", "--accelerator tpu is not one of auto, cpu"),
        ("seed: -1\n", "--seed must be in [0, 2^32)"),
        ("protocols: pair_shift\n", "protocols must be a list (protocols: [pair_shift])"),
        ("models: resnet10t\n", "models must be a list"),
        (b"seed: 1  # \xe9t\xe9\n", "is not UTF-8 text"),
        ("alias bomb", "aliases expand to more than 100,000 values"),
    ],
)
def test_bad_config_values_are_one_line_errors_before_any_folder_is_made(
    content, message, tmp_path, capsys
):
    """Before: tracebacks (accelerator: tpu after the output folder was made, so the next run
    needed --overwrite), a scalar protocols list failing inside jsonargparse, and a YAML alias
    bomb at 8 GB resident after 120 s."""
    config = tmp_path / "c.yaml"
    if content == "alias bomb":
        _bomb(config)
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    out = tmp_path / "out"
    start = time.monotonic()
    assert evaluate.main(["--config", str(config), "--output", str(out)]) == 2
    assert time.monotonic() - start < 20
    line = _error(capsys)
    assert message in line and not out.exists()


@pytest.mark.parametrize("damaged", ["results.json", "partial", "per_image"])
def test_damaged_resume_files_are_one_line_errors(damaged, tmp_path, monkeypatch, capsys):
    """Before: a truncated .pt, .npz or results.json gave a traceback on --resume."""
    root, out = _folder(tmp_path / "photos"), tmp_path / "run"
    flags = [*TINY, *_data(root), "--output", str(out)]
    flags[1:2] = ["resnet10t", "resnet14t"]
    _interrupt_after(monkeypatch, 4)  # the first model done (3 batches), the second begun
    assert evaluate.main(flags) == 128 + signal.SIGINT
    monkeypatch.undo()
    target = {"results.json": out / "results.json",
              "partial": out / "partial" / "model1.rank0.pt",
              "per_image": out / "per_image" / "model0.npz"}[damaged]  # fmt: skip
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2])
    code = evaluate.main(["--resume", str(out)])
    line = _error(capsys)
    assert (
        code in (1, 2)
        and str(target.name) in line
        and ("damaged" in line or "cannot be read" in line)
    )


@pytest.mark.slow
def test_sigkill_in_the_first_batches_then_resume_equals_an_uninterrupted_run(repo_root, tmp_path):
    """Before: a run killed during its first model (SIGKILL, the OOM killer, a full disk) had no
    results.json yet, and --resume failed with FileNotFoundError."""
    root = _folder(tmp_path / "photos", per_class=6)
    flags = [*TINY, *_data(root)]
    straight = subprocess.run([sys.executable, "evaluate.py", *flags, "--output", str(tmp_path / "a")],
                              cwd=repo_root, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    process = subprocess.Popen([sys.executable, "evaluate.py", *flags, "--output", str(out)],
                               cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    start = time.monotonic()
    while not (out / "partial").exists():  # killed in its first batches
        assert process.poll() is None and time.monotonic() - start < 240
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=60)
    assert json.loads((out / "results.json").read_text())["complete"] is False
    resumed = subprocess.run([sys.executable, "evaluate.py", "--resume", str(out)], cwd=repo_root,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    one, two = (
        json.loads((d / "results.json").read_text())["models"] for d in (tmp_path / "a", out)
    )
    assert one.keys() == two.keys()
    for key, row in one["resnet10t"].items():
        for name, value in row.items():
            assert two["resnet10t"][key][name] == pytest.approx(value, abs=1e-6), (key, name)
    assert not list(out.glob("**/.*.tmp"))


def test_exif_orientation_is_a_stated_choice(tmp_path):
    """A phone photo stored landscape with an EXIF 'rotate 90' tag: measured as stored by
    default (as torchvision, timm and the reference scripts load it), with one warning that
    names the flag; rotated with --exif-orientation apply. Before: silently as stored."""
    from lightning_inv.data import images as module
    from lightning_inv.data.images import LabelledImage, LabelledImageDataset

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), "green").save(path, exif=exif)
    items = [LabelledImage(path, 0, "phone.jpg")]
    module._rotated_warned = False
    with pytest.warns(UserWarning, match="--exif-orientation apply"):
        stored = LabelledImageDataset(items, 16, keep_original=True)[0]
    turned = LabelledImageDataset(items, 16, keep_original=True, exif_orientation="apply")[0]
    assert stored["original"].shape == (3, 20, 40) and turned["original"].shape == (3, 40, 20)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data.init_args.augmentation.translate=1.5"],
         "--data.augmentation.translate is a fraction of the side in [0, 1), got 1.5"),
        (["--trainer.default_root_dir={blocked}/run"], "cannot write to run folder"),
        (["--trainer.logger.init_args.save_dir={blocked}/wandb"], "cannot write to run folder"),
    ],
)  # fmt: skip
def test_train_settings_are_one_line_errors(
    flags, message, repo_root, tmp_path, capsys, monkeypatch
):
    """Before: a 109-line chain of parser errors with the message buried inside (augmentation
    out of range), a NotADirectoryError traceback (a run or W&B folder that cannot be made)."""
    import train

    blocked = tmp_path / "a file"
    blocked.write_text("x")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = train.main(["fit", "--config", str(repo_root / "configs/digits_smoke.yaml"),
                       f"--trainer.default_root_dir={tmp_path / 'ok'}", "--overwrite=true",
                       *[f.format(blocked=blocked) for f in flags]])  # fmt: skip
    assert code == 2
    assert message in _error(capsys)


def test_a_one_class_image_folder_is_refused_before_the_model_is_built(tmp_path):
    """Before: the data module's error advised --model.num_classes=1, which then crashed inside
    torchmetrics."""
    from lightning_inv.data.training import ImageFolderDataModule
    from lightning_inv.models.classifier import ConfigError, InvarianceClassifier

    for split in ("train", "val"):
        (tmp_path / split / "cats").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / split / "cats" / "0.png")
    with pytest.raises(ConfigError, match="needs at least 2 classes"):
        ImageFolderDataModule(tmp_path, image_size=32)
    with pytest.raises(ConfigError, match=r"--model\.num_classes must be >= 2"):
        InvarianceClassifier("resnet10t", pretrained=False, num_classes=1)
