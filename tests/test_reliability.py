"""No silent wrong numbers, no lost runs: each case as a user meets it (issue: labels, output
folders, interrupts, resume, clear errors)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import evaluate
from lightning_inv.data.images import LabelMappingError
from lightning_inv.data.training import ImageFolderDataModule
from lightning_inv.reporting.run_folder import default_run_folder

TINY = ["--models", "resnet10t", "--no-pretrained", "--num-classes", "10", "--data", "digits",
        "--image-size", "32", "--accelerator", "cpu", "--devices", "1", "--logger", "none",
        "--no-figures"]  # fmt: skip


def _photos(folder, count=2, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, (40 * i, 120, 200)).save(folder / f"{i}.png")


def _error(capsys) -> str:
    return capsys.readouterr().err


# -- silent wrong numbers -------------------------------------------------------------------------


def test_one_stray_folder_beside_synsets_is_refused_not_scored_in_folder_order(tmp_path, capsys):
    # Before: lite0's accuracy fell to 0.00 with exit code 0 (labels silently in folder order).
    for synset in ("n01440764", "n01443537"):
        _photos(tmp_path / synset)
    _photos(tmp_path / "my_photos")
    args = ["--data", "imagefolder", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")]
    assert evaluate.main(args) == 2
    assert "my_photos" in _error(capsys) and not (tmp_path / "o" / "results.json").exists()
    assert evaluate.main([*args, "--labels", "imagenet", "--overwrite"]) == 2
    assert "my_photos" in _error(capsys)


def test_a_root_of_train_and_val_is_refused_for_an_imagenet_head(tmp_path, capsys):
    _photos(tmp_path / "train" / "n01440764")
    _photos(tmp_path / "val" / "n01440764")
    assert evaluate.main(["--data", "imagefolder", "--data-root", str(tmp_path),
                          "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    message = _error(capsys)
    assert "1000-class head" in message and "2 classes" in message


def test_a_ten_class_checkpoint_on_synset_folders_is_refused_before_any_compute(tmp_path, capsys):
    _photos(tmp_path / "n01440764")
    args = [*TINY[:5], "--data", "imagefolder", "--data-root", str(tmp_path),
            "--output", str(tmp_path / "o")]  # fmt: skip
    assert evaluate.main(args) == 2
    assert "10-class head" in _error(capsys) and not (tmp_path / "o" / "results.json").exists()


def test_val_classes_take_the_training_index_of_the_same_name(tmp_path):
    # Before: val = {cats, fish} was numbered on its own, so val's fish got train's dogs' label.
    for cls in ("cats", "dogs", "fish"):
        _photos(tmp_path / "train" / cls, 1)
    for cls in ("cats", "fish"):
        _photos(tmp_path / "val" / cls, 1)
    module = ImageFolderDataModule(tmp_path, image_size=32)
    assert module.classes == ["cats", "dogs", "fish"] and module.num_classes == 3
    assert sorted({item.label for item in module.val_items}) == [0, 2]
    _photos(tmp_path / "val" / "zebras", 1)
    with pytest.raises(LabelMappingError, match="zebras"):
        ImageFolderDataModule(tmp_path, image_size=32)


# -- lost or mixed results --------------------------------------------------------------------


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    first, second = (
        default_run_folder("evaluate", tmp_path),
        default_run_folder("evaluate", tmp_path),
    )
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name)


def test_output_problems_are_found_before_any_model_loads(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert evaluate.main(["--output", str(blocker)]) == 2
    assert "is a file" in _error(capsys)
    assert evaluate.main(["--output", str(blocker / "below")]) == 2
    assert "cannot write" in _error(capsys)


def test_rerunning_into_the_same_folder_rewrites_the_csv_instead_of_appending(tmp_path):
    args = [*TINY, "--num-images", "3", "--protocols", "translate_black", "--output", str(tmp_path)]
    assert evaluate.main(args) == 0
    assert evaluate.main([*args, "--overwrite"]) == 0
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 3 * 5  # one run's rows: 3 images x 5 views (+-2 px at 32 px)


def test_all_models_are_resolved_and_unreadable_images_named(tmp_path, capsys):
    args = [*TINY, "--protocols", "translate_black", "--output", str(tmp_path / "a")]
    args[1:2] = ["resnet10t", "resnet_99"]
    assert evaluate.main(args) == 2  # refused before resnet10t is measured
    assert "resnet_99" in _error(capsys) and not (tmp_path / "a" / "results.json").exists()
    folder = tmp_path / "photos" / "n01440764"
    _photos(folder, 1)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    lite = ["--models", "tf_efficientnet_lite0", "--data", "imagefolder", "--data-root",
            str(tmp_path / "photos"), "--protocols", "translate_mean", "--no-figures",
            "--logger", "none", "--no-nonshiftability"]  # fmt: skip
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
    assert "all 1 images were unreadable" in _error(capsys)


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
def test_bad_flags_are_one_line_errors_naming_the_flag(flags, message, tmp_path, capsys):
    if "gpu" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert evaluate.main([*flags, "--output", str(tmp_path)]) == 2
    assert message in _error(capsys)


# -- interrupts and resume (subprocesses: signals as a user sends them) ---------------------


def _evaluate(repo_root, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(repo_root / "evaluate.py"), *args], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _stop_when(process: subprocess.Popen, path, timeout: float = 240.0) -> int:
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=120)


@pytest.mark.slow
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(repo_root, tmp_path):
    args = [*TINY, "--num-images", "60", "--batch-size", "2", "--save-every", "2",
            "--protocols", "translate_black", "random_location", "--no-nonshiftability"]  # fmt: skip
    args[1:2] = ["resnet10t", "resnet14t"]
    straight = _evaluate(repo_root, *args, "--output", str(tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.communicate()[1][-3000:]
    run = tmp_path / "run"
    # 1. SIGTERM in the middle of the first model: its states so far are on disk.
    first = _evaluate(repo_root, *args, "--output", str(run))
    assert _stop_when(first, run / "partial" / "model0.rank0.pt") == 128 + signal.SIGTERM
    saved = json.loads((run / "results.json").read_text())
    assert saved["complete"] is False and saved["missing"] == ["resnet10t", "resnet14t"]
    # 2. Resumed, then SIGTERM right after the first model has finished.
    second = _evaluate(repo_root, "--resume", str(run))
    assert _stop_when(second, run / "per_image" / "model0.npz") == 128 + signal.SIGTERM
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


def test_resume_refuses_a_folder_that_is_not_an_unfinished_run(tmp_path, capsys):
    assert evaluate.main(["--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in _error(capsys)


# -- train.py: one run folder ----------------------------------------------------------------


def _train(repo_root, cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run([sys.executable, str(repo_root / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_train_keeps_one_run_per_folder_and_moves_every_path_with_it(repo_root, tmp_path):
    config = ["fit", "--config", str(repo_root / "configs/digits_smoke.yaml"),
              "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'mine'}"]  # fmt: skip
    done = _train(repo_root, tmp_path, *config)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "mine"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert list(run.glob("wandb/offline-run-*")) and not (tmp_path / "runs").exists()
    done = _train(repo_root, tmp_path, *config)  # a rerun: refused, nothing touched
    assert done.returncode == 2 and "holds an earlier run" in done.stderr
    assert "--ckpt_path" in done.stderr and "--overwrite" in done.stderr
    done = _train(repo_root, tmp_path, *config, "--overwrite=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=0-step=3.ckpt",
        "last.ckpt",
    ]
    assert len(list(run.glob("wandb/offline-run-*"))) == 1  # the earlier W&B run went with it


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--model.lr=-1", "--model.lr must be >= 1e-12"),
     ("--data.batch_size=0", "--data.batch_size must be >= 1")],
)  # fmt: skip
def test_train_range_errors_name_the_flag(flag, message, repo_root, tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py"])  # not pytest's arguments
    code = train.main(["fit", "--config", str(repo_root / "configs/digits_smoke.yaml"), flag,
                       f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_sigterm_during_training_saves_last_ckpt_and_exits_non_zero(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(repo_root / "train.py"), "fit", "--config",
         str(repo_root / "configs/digits_smoke.yaml"), "--trainer.max_epochs=50",
         "--trainer.logger=false", f"--trainer.default_root_dir={run}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert _stop_when(process, run / "invariance_history.json") == 128 + signal.SIGTERM
    assert "stopped: saved" in process.communicate()[1]
    checkpoint = torch.load(
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] >= 3  # at least the first epoch's steps, then the stop
