"""Hostile and mistaken inputs through evaluate.py: skipped by name, refused with one line that
names the problem and the fix, never a silently wrong number."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_runs import SYNSETS, TINY_DIGITS, TINY_FOLDER, folder_data

import evaluate


def test_one_stray_folder_beside_synsets_is_refused_not_scored_in_folder_order(
    tmp_path, last_error, write_photos
):
    # Before: lite0's accuracy fell to 0.00 with exit code 0 (labels silently in folder order).
    for synset in ("n01440764", "n01443537"):
        write_photos(tmp_path / synset)
    write_photos(tmp_path / "my_photos")
    args = ["--data", "imagefolder", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")]
    assert evaluate.main(args) == 2
    assert "my_photos" in last_error() and not (tmp_path / "o" / "results.json").exists()
    assert evaluate.main([*args, "--labels", "imagenet", "--overwrite"]) == 2
    assert "my_photos" in last_error()


def test_a_root_of_train_and_val_is_refused_for_an_imagenet_head(
    tmp_path, last_error, write_photos
):
    write_photos(tmp_path / "train" / "n01440764")
    write_photos(tmp_path / "val" / "n01440764")
    assert (
        evaluate.main(
            ["--data", "imagefolder", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")]
        )
        == 2
    )
    message = last_error()
    assert "1000-class head" in message and "2 classes" in message


def test_a_ten_class_checkpoint_on_synset_folders_is_refused_before_any_compute(
    tmp_path, last_error, write_photos
):
    write_photos(tmp_path / "n01440764")
    args = [
        *["--models", "resnet10t", "--no-pretrained", "--num-classes", "10"],
        "--data",
        "imagefolder",
        "--data-root",
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
    ]
    assert evaluate.main(args) == 2
    assert "10-class head" in last_error() and not (tmp_path / "o" / "results.json").exists()


def test_all_models_are_resolved_and_unreadable_images_named(tmp_path, last_error, write_photos):
    args = [*TINY_DIGITS, "--protocols", "translate_black", "--output", str(tmp_path / "a")]
    args[1:2] = ["resnet10t", "resnet_99"]
    assert evaluate.main(args) == 2  # refused before resnet10t is measured
    assert "resnet_99" in last_error() and not (tmp_path / "a" / "results.json").exists()
    folder = tmp_path / "photos" / "n01440764"
    write_photos(folder, 1)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    lite = [
        "--models",
        "tf_efficientnet_lite0",
        "--data",
        "imagefolder",
        "--data-root",
        str(tmp_path / "photos"),
        "--protocols",
        "translate_mean",
        "--no-figures",
        "--logger",
        "none",
        "--no-nonshiftability",
    ]
    with pytest.warns(UserWarning, match="gone.png"):
        assert evaluate.main([*lite, "--output", str(tmp_path / "b")]) == 0
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    (skipped,) = saved["skipped"]["tf_efficientnet_lite0"]
    assert skipped["image"] == "n01440764/gone.png" and "No such file" in skipped["reason"]
    (row,) = list(csv.DictReader((tmp_path / "b" / "skipped.csv").open(newline="")))
    assert (row["model"], row["image"]) == ("tf_efficientnet_lite0", "n01440764/gone.png")
    (folder / "0.png").unlink()  # now every image is unreadable: an error, not an empty table
    with pytest.warns(UserWarning):
        assert evaluate.main([*lite, "--output", str(tmp_path / "c")]) == 1
    assert "all 1 images were unreadable" in last_error()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--chunk-size", "0"], "--chunk-size must be at least 1"),
        (["--precision", "17"], "--precision 17 is not one of"),
        (["--image-size", "100000"], "--image-size must be in [8, 2048]"),
        (["--accelerator", "gpu"], "no CUDA GPU"),
    ],
)
def test_bad_flags_are_one_line_errors_naming_the_flag(flags, message, tmp_path, last_error):
    if "gpu" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert evaluate.main([*flags, "--output", str(tmp_path)]) == 2
    assert message in last_error()


def test_a_name_that_is_not_utf8_reaches_every_output(tmp_path, photo_folder):
    """Before: results.json said complete: true, then per_image.csv failed (header only), the
    measures CSV and skipped.txt were missing, exit 1, and --resume refused the run for good."""
    root = photo_folder(tmp_path / "photos", per_class=1)
    odd = os.path.join(os.fsencode(root / SYNSETS[0]), b"caf\xe9.png")
    Image.new("RGB", (48, 40), "red").save(os.fsdecode(odd))
    with open(os.path.join(os.fsencode(root / SYNSETS[1]), b"\xff\tbroken\n.png"), "wb") as f:
        f.write(b"not an image")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        assert evaluate.main([*TINY_FOLDER, *folder_data(root), "--output", str(out)]) == 0
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


def test_decompression_bombs_and_huge_images_are_skipped_by_name(tmp_path, photo_folder):
    """Before: one 855 KB PNG of 30000 x 30000 killed the whole run with a traceback. A
    14000 x 14000 bilevel PNG is beyond Pillow's own bomb check, a 1200 x 1000 one beyond a
    limit set with --max-image-pixels; both are skipped and named, the rest measured."""
    root = photo_folder(tmp_path / "photos", per_class=2)
    Image.new("1", (14000, 14000)).save(root / SYNSETS[0] / "bomb.png")
    Image.new("RGB", (1200, 1000), "blue").save(root / SYNSETS[1] / "large.png")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        code = evaluate.main(
            [
                *TINY_FOLDER,
                *folder_data(root),
                "--max-image-pixels",
                "1000000",
                "--output",
                str(out),
            ]
        )
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
    content, message, tmp_path, last_error
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
    line = last_error()
    assert message in line and not out.exists()


def test_loop_sizes_follow_the_device_unless_given(monkeypatch):
    """A GPU gets large batches and decoding processes, the CPU small ones, with passes of views
    that shrink as the views grow, and a flag always wins (0 workers too): catches the GPU
    defaults on the CPU (a 64-image batch of views in memory), the CPU's 0 workers on a GPU
    (decoding in the loop's process), the CPU chunk growing with the canvas instead of
    shrinking, and a given ``--num-workers 0`` taken for "not given"."""
    from lightning_inv.cli.evaluate_config import GPU_SIZES, EvaluateConfig

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    cpu = EvaluateConfig(accelerator="cpu")
    assert [cpu.loop_sizes(side) for side in (224, 448, 64, 16)] == [
        (4, 16, 0),
        (4, 8, 0),
        (4, 56, 0),
        (4, 224, 0),
    ]
    batch, chunk, workers = EvaluateConfig(accelerator="gpu").loop_sizes()
    assert (batch, chunk) == GPU_SIZES[:2] and workers == min(GPU_SIZES[2], 4)
    given = EvaluateConfig(accelerator="gpu", batch_size=3, chunk_size=7, num_workers=0)
    assert given.loop_sizes() == (3, 7, 0)
    auto = EvaluateConfig(accelerator="auto").loop_sizes()
    assert auto == ((*GPU_SIZES[:2], 4) if torch.cuda.is_available() else (4, 16, 0))
