"""train.py as a user runs it (subprocess), resumption, early errors, and the augmentation seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from wandb_records import records, run_file

from callbacks import InvarianceEvaluation, InvarianceFigures
from lightning_inv.data.augment import (
    Augmentation,
    AugmentedDataset,
    EpochSeededSampler,
    build_transform,
)
from lightning_inv.data.digits import CentredDigits
from lightning_inv.data.training import DigitsDataModule, ImageFolderDataModule
from lightning_inv.models.classifier import ConfigError

SMOKE = "configs/digits_smoke.yaml"


def _run(repo_root, cwd, script: str, *args: str) -> subprocess.CompletedProcess:
    # A user's shell: no wandb-core service inherited from an earlier test of this process.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run(
        [sys.executable, str(repo_root / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _history(folder) -> list[dict]:
    return json.loads((folder / "invariance_history.json").read_text())["history"]


@pytest.mark.slow
def test_fit_writes_checkpoint_config_and_invariance_metrics(repo_root, tmp_path):
    done = _run(repo_root, tmp_path, "train.py", "fit", "--config", str(repo_root / SMOKE))
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/train/digits_smoke"
    checkpoint = run / "checkpoints/last.ckpt"
    assert checkpoint.is_file()
    assert "DigitsDataModule" in (run / "config.yaml").read_text()
    history = _history(run)
    assert [h["epoch"] for h in history] == [0, 1]
    # The same result keys as evaluate.py gives these protocols (one measuring core).
    for key in (
        "random_location_black_s0.3/accuracy",
        "random_location_black_s0.5/accuracy",
        "translate_black/p_top1_change",
        "translate_black/jagged_fraction",
        "translate_black/centred_accuracy",
    ):
        assert 0 <= history[-1][key] <= 1, key
    # The Lie derivative at the training placement, trained with its penalty (lie_penalty).
    assert history[-1]["lie_black_s0.5/lie_softmax_translate_x"] > 0
    # The run folder's page, named in the last lines: a curve per measure over the epochs.
    assert "report.html" in done.stdout.strip().splitlines()[-1]
    page = (run / "report.html").read_text()
    assert "lie_softmax_translate_x (lie_black_s0.5)" in page and "Epoch 1" in page
    (offline,) = (run / "wandb").glob("offline-run-*")  # W&B offline run to sync later
    # What W&B will show: a training job, the invariance curves against the epoch with their
    # minimum, maximum and last value in the summary.
    logged = records(run_file(offline))
    (wandb_run,) = [r.run for r in logged if r.HasField("run")]
    assert wandb_run.job_type == "train"
    metrics = {
        r.metric.glob_name or r.metric.name: r.metric for r in logged if r.HasField("metric")
    }
    assert metrics["invariance*"].step_metric == "epoch" and "epoch" in metrics
    summary = metrics["invariance*"].summary
    assert summary.min and summary.max and summary.last
    # The checkpoints as a model artifact (uploaded by `wandb sync`), for lineage.
    (artifact,) = [r.artifact for r in logged if r.HasField("artifact")]
    assert artifact.type == "model" and artifact.name == f"model-{wandb_run.run_id}"
    assert "last.ckpt" in [e.path for e in artifact.manifest.contents]
    assert "checkpoint artifact: model-" in done.stdout
    # Every training panel of the dashboard finds curves in this run.
    import re

    from lightning_inv.reporting.dashboard import definition

    keys = {
        u.key or "/".join(u.nested_key)
        for r in logged
        if r.HasField("summary")
        for u in r.summary.update
    }
    lines = [
        p["regex"] for s in definition("p")["sections"] for p in s["panels"] if p["kind"] == "line"
    ]
    assert lines and all(any(re.fullmatch(x, k) for k in keys) for x in lines)
    # Figures went to the W&B run (two per epoch), not left as files.
    media = sorted(
        p.name.split("_")[0]
        for p in run.glob("wandb/offline-run-*/files/media/images/figures/*.png")
    )
    assert media == ["accuracy", "accuracy", "heatmap", "heatmap"]
    # `train.py test` measures the checkpoint and keeps the training history.
    done = _run(
        repo_root,
        tmp_path,
        "train.py",
        "test",
        "--config",
        str(repo_root / SMOKE),
        f"--ckpt_path={checkpoint}",
        "--trainer.logger=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tested = json.loads((run / "invariance_test.json").read_text())
    assert tested["stage"] == "test" and 0 <= tested["translate_black/p_top1_change"] <= 1
    assert _history(run) == history
    assert "Test (train.py test)" in (run / "report.html").read_text()
    # evaluate.py re-creates the model from the checkpoint's hyperparameters.
    done = _run(
        repo_root,
        tmp_path,
        "evaluate.py",
        "--models",
        str(checkpoint),
        "--data",
        "digits",
        "--num-images",
        "4",
        "--protocols",
        "translate_black",
        "random_location",
        "--scales",
        "0.5",
        "--location-fill",
        "black",
        "--object-scale",
        "0.5",
        "--max-shift",
        "2",
        "--logger",
        "none",
        "--no-figures",
        "--output",
        str(tmp_path / "eval"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "eval/results.json").read_text())["models"][str(checkpoint)]
    assert results["translate_black"]["num_images"] == 4
    assert "random_location_black_s0.5" in results


@pytest.mark.slow
def test_resumed_run_ends_like_an_uninterrupted_one(repo_root, tmp_path):
    """Catches a resumed run whose random draws (lie_penalty's directions in the smoke config,
    dropout elsewhere) differ from the uninterrupted run's: global states not restored, or a
    data loader that draws from the global generator when Lightning creates its iterator."""
    # The cosine schedule spans 2 epochs in both, so stopping after 1 epoch is an interruption.
    config = [
        "--config",
        str(repo_root / SMOKE),
        "--trainer.logger=false",
        "--model.schedule_epochs=2",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir(), split.mkdir()
    done = _run(repo_root, straight, "train.py", "fit", *config)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _run(repo_root, split, "train.py", "fit", *config, "--trainer.max_epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = split / "runs/train/digits_smoke/checkpoints/last.ckpt"
    done = _run(repo_root, split, "train.py", "fit", *config, f"--ckpt_path={checkpoint}")
    assert done.returncode == 0, done.stderr[-3000:]
    # Without W&B the figure callback writes PNG files and does nothing else.
    figures = sorted(p.name for p in (straight / "runs/train/digits_smoke/figures").iterdir())
    assert figures == [
        "accuracy_vs_scale_epoch000.png",
        "accuracy_vs_scale_epoch001.png",
        "heatmap_translate_epoch000.png",
        "heatmap_translate_epoch001.png",
    ]
    one = _history(straight / "runs/train/digits_smoke")
    two = _history(split / "runs/train/digits_smoke")
    assert [h["epoch"] for h in two] == [
        0,
        1,
    ]  # the first epoch's record came back from the checkpoint
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert b[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_wrong_class_count_and_nan_loss_stop_with_a_clear_message(repo_root, tmp_path):
    config = ["--config", str(repo_root / SMOKE), "--trainer.logger=false"]
    done = _run(repo_root, tmp_path, "train.py", "fit", *config, "--model.num_classes=7")
    assert done.returncode == 1
    assert "the data has 10 classes but the model was built with num_classes=7" in done.stderr
    assert not (
        tmp_path / "runs/train/digits_smoke/checkpoints"
    ).exists()  # stopped before training
    done = _run(
        repo_root,
        tmp_path,
        "train.py",
        "fit",
        *config,
        "--model.lr=1e30",
        "--model.optimizer=sgd",
        "--model.warmup_epochs=0",
    )
    assert done.returncode == 1
    assert (
        "training loss is nan" in done.stderr.lower()
        or "training loss is inf" in done.stderr.lower()
    )
    assert "lower the learning rate" in done.stderr


def test_print_config_works_on_every_shipped_config(repo_root, capsys, monkeypatch):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py"])  # not pytest's arguments

    for config in sorted((repo_root / "configs").glob("*.yaml")):
        with pytest.raises(SystemExit) as stop:
            train.main(["fit", "--config", str(config), "--print_config"])
        printed = capsys.readouterr().out
        assert stop.value.code in (0, None), config.name
        assert "class_path: lightning_inv.data.training." in printed, config.name
        assert "callbacks.InvarianceEvaluation" in printed, config.name


def test_the_command_a_sweep_agent_runs_parses_to_the_swept_values(repo_root, capsys, monkeypatch):
    """The sweep's command, with ``${args}`` made by W&B's own function from each value, parses
    into the typed augmentation (a range that stayed the string "[0.8, 1.2]", a flag before the
    subcommand, or a key the data module does not have would fail here)."""
    import itertools

    import yaml
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    import train

    sweep = yaml.safe_load((repo_root / "configs/sweeps/augmentation.yaml").read_text())
    names = list(sweep["parameters"])
    grid = list(itertools.product(*(sweep["parameters"][n]["values"] for n in names)))
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.chdir(repo_root)
    for values in (grid[0], grid[-1], grid[len(grid) // 2]):
        args = create_sweep_command_args(
            {"args": {n: {"value": v} for n, v in zip(names, values, strict=True)}}
        )
        command = []
        for part in sweep["command"]:
            if part == "${args}":
                command += args["args"]
            elif part not in ("${env}", "${interpreter}", "${program}"):
                command.append(part)
        with pytest.raises(SystemExit) as stop:
            train.main([*command, "--print_config"])
        assert stop.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        augmentation = printed["data"]["init_args"]["augmentation"]
        assert augmentation["translate"] == values[0]
        assert augmentation["scale"] == list(values[1])
        assert printed["trainer"]["default_root_dir"].endswith("/$WANDB_RUN_ID")


def test_an_unset_variable_in_the_run_folder_is_a_clear_error(
    repo_root, tmp_path, capsys, monkeypatch
):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    code = train.main(
        [
            "fit",
            "--config",
            str(repo_root / SMOKE),
            f"--trainer.default_root_dir={tmp_path}/$WANDB_RUN_ID",
        ]
    )
    assert code == 2 and "WANDB_RUN_ID" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_typo_in_the_config_names_the_key(repo_root, tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py"])

    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / SMOKE).read_text().replace("max_epochs:", "max_epoch:"))
    with pytest.raises(SystemExit) as stop:
        train.main(["fit", "--config", str(bad)])
    assert stop.value.code != 0 and "max_epoch" in capsys.readouterr().err


def test_augmentation_repeats_per_seed_and_varies_per_epoch():
    digits = CentredDigits("val", canvas=32, digit_size=16)
    transform = build_transform(Augmentation(translate=0.25, scale=(0.7, 1.3)), 32)
    first, again = (
        AugmentedDataset(digits, transform, seed=0),
        AugmentedDataset(digits, transform, seed=0),
    )
    n = len(digits)
    assert torch.equal(first[3]["image"], again[3]["image"])  # same (seed, epoch, index)
    assert not torch.equal(first[3]["image"], first[n + 3]["image"])  # next epoch: new draw
    assert first[n + 3]["label"] == digits[3]["label"]
    assert not torch.equal(
        first[3]["image"], AugmentedDataset(digits, transform, seed=1)[3]["image"]
    )
    assert not torch.equal(first[3]["image"], digits[3]["image"])  # it does move the digit
    assert build_transform(Augmentation(), 32) is None  # all off: the baseline


def test_epoch_seeded_sampler_shards_disjointly_and_encodes_the_epoch():
    data = list(range(10))
    shards = [
        EpochSeededSampler(data, num_replicas=2, rank=r, shuffle=True, seed=0) for r in (0, 1)
    ]
    for shard in shards:
        shard.set_epoch(3)
    indices = [list(s) for s in shards]
    assert all(30 <= i < 40 for part in indices for i in part)
    assert sorted(indices[0] + indices[1]) == list(range(30, 40))


def test_invalid_augmentation_is_refused():
    with pytest.raises(ValueError, match="translate"):
        build_transform(Augmentation(translate=1.5), 32)
    with pytest.raises(ConfigError, match=r"--data\.augmentation\.scale"):
        DigitsDataModule(augmentation=Augmentation(scale=(1.2, 0.8)))


@pytest.mark.slow
def test_invariance_callback_gives_the_same_numbers_on_two_processes(tmp_path, make_tiny):
    def validate(devices: int) -> dict[str, float]:
        model = make_tiny(32)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy="ddp_spawn" if devices > 1 else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=1,
            default_root_dir=tmp_path,
            callbacks=[
                InvarianceEvaluation(
                    num_images=7, scales=(0.5,), max_shift=2, batch_size=3, lie=("translate_x",)
                ),
                InvarianceFigures(),
            ],
        )
        trainer.validate(
            model, DigitsDataModule(canvas=32, digit_size=16, batch_size=8), verbose=False
        )
        return {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("invariance/")
        }

    single, double = validate(1), validate(2)
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2  # drawn once (rank 0), no deadlock
    assert "invariance/translate_black/p_top1_change" in single and len(single) == len(double)
    assert single["invariance/lie_black_s0.5/lie_softmax_translate_x"] > 0
    for key, value in single.items():
        assert double[key] == pytest.approx(value, abs=1e-6), key


def test_imagefolder_module_counts_classes_augments_and_skips_unreadable(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cats", "dogs"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + 4 * i, 36), (60 * i, 100, 30)).save(folder / f"{i}.png")
    (tmp_path / "train/cats/broken.png").write_bytes(b"not an image")
    module = ImageFolderDataModule(
        tmp_path,
        image_size=32,
        batch_size=8,
        augmentation=Augmentation(random_resized_crop=(0.5, 1.0), hflip=0.5),
    )
    assert module.num_classes == 2
    with pytest.warns(UserWarning, match="broken.png"):
        batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (6, 3, 32, 32) and batch["skipped"] == ["cats/broken.png"]
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert next(iter(module.val_dataloader()))["image"].shape == (6, 3, 32, 32)


def test_random_states_survive_a_weights_only_checkpoint_round_trip(tmp_path):
    import random

    import numpy as np

    from callbacks import RandomStateCheckpoint

    saved = RandomStateCheckpoint().state_dict()
    torch.save({"rng": saved}, tmp_path / "state.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restored = RandomStateCheckpoint()
    restored.load_state_dict(torch.load(tmp_path / "state.ckpt", weights_only=True)["rng"])
    restored.on_train_start(None, None)  # type: ignore[arg-type]
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_training_loaders_leave_the_global_random_state_alone():
    """A new iterator of a training data module's loader must not draw from torch's global
    generator (a DataLoader without its own ``generator`` does, for its workers' base seed):
    Lightning creates one before a resumed run restores that state and one after each later
    epoch starts, so the draws after a resume would differ from the uninterrupted run's."""
    module = DigitsDataModule(canvas=32, digit_size=16, batch_size=8, max_train_images=16)
    module.prepare_data()
    module.setup("fit")
    before = torch.get_rng_state()
    for loader in (module.train_dataloader(), module.val_dataloader()):
        iter(loader), iter(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_cifar10_without_its_files_says_where_and_what_to_do(tmp_path):
    from lightning_inv.data.training import CIFAR10DataModule

    module = CIFAR10DataModule(root=tmp_path / "cifar", download=False)
    with pytest.raises(RuntimeError, match=r"CIFAR-10 is not under .*set data\.root"):
        module.prepare_data()


def _train(repo_root, cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run(
        [sys.executable, str(repo_root / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_train_keeps_one_run_per_folder_and_moves_every_path_with_it(repo_root, tmp_path):
    config = [
        "fit",
        "--config",
        str(repo_root / "configs/digits_smoke.yaml"),
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'mine'}",
    ]
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
    [
        ("--model.lr=-1", "--model.lr must be >= 1e-12"),
        ("--data.batch_size=0", "--data.batch_size must be >= 1"),
    ],
)
def test_train_range_errors_name_the_flag(flag, message, repo_root, tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.setattr(sys, "argv", ["train.py"])  # not pytest's arguments
    code = train.main(
        [
            "fit",
            "--config",
            str(repo_root / "configs/digits_smoke.yaml"),
            flag,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_sigterm_during_training_saves_last_ckpt_and_exits_non_zero(repo_root, tmp_path, stop_when):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            str(repo_root / "train.py"),
            "fit",
            "--config",
            str(repo_root / "configs/digits_smoke.yaml"),
            "--trainer.max_epochs=50",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={run}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stop_when(process, run / "invariance_history.json") == 128 + signal.SIGTERM
    assert "stopped: saved" in process.communicate()[1]
    checkpoint = torch.load(
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] >= 3  # at least the first epoch's steps, then the stop


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--data.init_args.augmentation.translate=1.5"],
            "--data.augmentation.translate is a fraction of the side in [0, 1), got 1.5",
        ),
        (["--trainer.default_root_dir={blocked}/run"], "cannot write to run folder"),
        (["--trainer.logger.init_args.save_dir={blocked}/wandb"], "cannot write to run folder"),
    ],
)
def test_train_settings_are_one_line_errors(
    flags, message, repo_root, tmp_path, monkeypatch, last_error
):
    """Before: a 109-line chain of parser errors with the message buried inside (augmentation
    out of range), a NotADirectoryError traceback (a run or W&B folder that cannot be made)."""
    import train

    blocked = tmp_path / "a file"
    blocked.write_text("x")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = train.main(
        [
            "fit",
            "--config",
            str(repo_root / "configs/digits_smoke.yaml"),
            f"--trainer.default_root_dir={tmp_path / 'ok'}",
            "--overwrite=true",
            *[f.format(blocked=blocked) for f in flags],
        ]
    )
    assert code == 2
    assert message in last_error()
