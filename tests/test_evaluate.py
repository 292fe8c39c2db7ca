"""evaluate.py as a user runs it: a subprocess on a small model and a few real photos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_inv.data.datamodules import build_eval_dataset
from lightning_inv.measuring import metrics as M
from lightning_inv.measuring.engine import view_logits
from lightning_inv.measuring.nonshiftability import probe_points
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.protocols import Translate


def _run(repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(repo_root / "evaluate.py"), *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_results_json_matches_metrics_computed_directly(repo_root, tmp_path):
    out = tmp_path / "run"
    done = _run(
        repo_root,
        "--models",
        "tf_efficientnet_lite0",
        "--num-images",
        "3",
        "--protocols",
        "translate_mean",
        "--max-shift",
        "4",
        "--no-nonshiftability",
        "--output",
        str(out),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "translate_mean" in done.stdout and "results.json" in done.stdout
    row = json.loads((out / "results.json").read_text())["models"]["tf_efficientnet_lite0"][
        "translate_mean"
    ]
    assert row["num_images"] == 3 and row["num_views"] == 9 and row["skipped_images"] == 0
    assert "subsampling factor 32" in done.stdout
    saved = json.loads((out / "results.json").read_text())
    assert saved["subsampling"]["tf_efficientnet_lite0"]["factor"] == 32
    assert {p.name for p in (out / "figures").iterdir()} == {
        "fig1_probability_translate_mean.png",
        "fig2a_heatmap_translate_mean.png",
        "fig2b_sensitivity.png",
    }
    assert (
        "translate_mean/accuracy/tf_efficientnet_lite0" in (out / "csv" / "metrics.csv").read_text()
    )
    # The same numbers, computed directly with the library.
    classifier = InvarianceClassifier("tf_efficientnet_lite0").eval()
    data = build_eval_dataset("sample", 224, num_images=3)
    images = torch.stack([data[i]["image"] for i in range(3)])
    labels = torch.tensor([data[i]["label"] for i in range(3)])
    protocol = Translate(canvas=224, fill="mean", mean=classifier.data_config["mean"], max_shift=4)
    logits, _ = view_logits(
        classifier, protocol, images, torch.tensor([data[i]["index"] for i in range(3)])
    )
    assert row["accuracy"] == pytest.approx(M.ViewAccuracy()(logits, labels).item(), abs=1e-5)
    assert row["p_top1_change"] == pytest.approx(M.TopOneChange()(logits).item(), abs=1e-5)
    assert row["mad"] == pytest.approx(M.MeanAbsoluteDifference()(logits, labels).item(), abs=1e-5)
    with (out / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 9 and {r["protocol"] for r in rows} == {"translate_mean"}


def test_existing_output_is_never_overwritten(repo_root, tmp_path):
    (tmp_path / "keep.txt").write_text("previous results")
    done = _run(repo_root, "--output", str(tmp_path))
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "previous results"


def test_unknown_model_and_missing_root_are_clear_errors(repo_root, tmp_path):
    done = _run(repo_root, "--models", "resnet_18", "--output", str(tmp_path / "a"))
    assert done.returncode == 2 and "resnet18" in done.stderr
    done = _run(
        repo_root,
        "--data",
        "imagefolder",
        "--data-root",
        str(tmp_path / "missing"),
        "--output",
        str(tmp_path / "b"),
    )
    assert done.returncode == 2 and "data root not found" in done.stderr


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_results(repo_root, tmp_path):
    """DDP through evaluate.py itself: 5 photos on 1 process, on 2 CPU processes (uneven
    shards) and on two "nodes" of one process each (``_two_nodes``)."""
    common = [
        "--models",
        "tf_efficientnet_lite0",
        "--image-size",
        "96",
        "--num-images",
        "5",
        "--protocols",
        "translate_mean",
        "pair_shift",
        "--max-shift",
        "3",
        "--accelerator",
        "cpu",
        "--logger",
        "none",
        "--no-figures",
    ]
    outputs = []
    for devices in ("1", "2"):
        out = tmp_path / f"devices{devices}"
        done = _run(repo_root, *common, "--devices", devices, "--output", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(out)
    assert "Starting with 2 processes" in done.stderr + done.stdout
    nodes = _two_nodes(repo_root, [*common, "--devices", "1"], tmp_path / "nodes")
    one, two, by_nodes = (
        json.loads((o / "results.json").read_text())["models"] for o in (*outputs, nodes)
    )
    _assert_same_results(one, by_nodes)
    assert one["tf_efficientnet_lite0"]["translate_mean"]["num_images"] == 5
    assert one["tf_efficientnet_lite0"]["translate_mean"]["mad"] > 0  # predictions do move
    _assert_same_results(one, two)
    rows = [list(csv.DictReader((o / "per_image.csv").open())) for o in outputs]
    assert [(r["image"], r["protocol"], r["view"], r["top1"]) for r in rows[0]] == [
        (r["image"], r["protocol"], r["view"], r["top1"]) for r in rows[1]
    ]
    for a, b in zip(*rows, strict=True):
        assert float(a["p_true"]) == pytest.approx(float(b["p_true"]), abs=1e-5)


def _two_nodes(repo_root, flags: list[str], out) -> object:
    """``--num-nodes 2``: two processes started by hand as two nodes of one device each
    (MASTER_ADDR/MASTER_PORT/NODE_RANK, Lightning's own cluster environment) on 127.0.0.1,
    writing ``out``. A second node that takes itself for rank 0 (it would make and lock the run
    folder the first node writes) deadlocks them: the timeout fails the test."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    command = [sys.executable, str(repo_root / "evaluate.py"), *flags, "--num-nodes", "2"]
    started = [
        subprocess.Popen(
            [*command, "--output", str(out)],
            cwd=repo_root,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        finished = [p.communicate(timeout=300) for p in started]
    finally:
        for p in started:
            p.kill()
    assert [p.returncode for p in started] == [0, 0], [err[-2000:] for _, err in finished]
    assert json.loads((out / "results.json").read_text())["complete"]
    return out


def _assert_same_results(one: dict, two: dict) -> None:
    """Counts and rates of discrete events agree exactly, intervals included (the bootstrap
    resamples images in data set order); probabilities up to float rounding (a forward pass
    over a different batch composition rounds differently, ~1e-7)."""
    for key, row in one["tf_efficientnet_lite0"].items():
        other = two["tf_efficientnet_lite0"][key]
        assert row.keys() == other.keys()
        assert "p_top1_change_ci95" in row
        for name, value in row.items():
            if name.startswith(("mac", "mad", "true_class_probability")):
                assert other[name] == pytest.approx(value, rel=1e-4), (key, name)
            elif name.startswith("nonshiftability"):  # a jump can sit on the 20% threshold
                for layer, v in value.items():
                    assert other[name][layer] == pytest.approx(v, rel=1e-3, abs=1e-3), (key, layer)
            else:
                assert other[name] == value, (key, name)


def test_a_file_that_is_not_a_checkpoint_and_an_empty_folder_are_clear_errors(repo_root, tmp_path):
    fake = tmp_path / "weights.ckpt"
    fake.write_text("not a checkpoint")
    done = _run(repo_root, "--models", str(fake), "--output", str(tmp_path / "a"))
    assert done.returncode == 2 and "is not a readable PyTorch checkpoint" in done.stderr
    (tmp_path / "empty").mkdir()
    done = _run(
        repo_root,
        "--data",
        "imagefolder",
        "--data-root",
        str(tmp_path / "empty"),
        "--output",
        str(tmp_path / "b"),
    )
    assert done.returncode == 2 and "no class folders" in done.stderr
    assert not (tmp_path / "a" / "results.json").exists()


def test_feature_sum_curves_are_kept_for_a_bounded_number_of_images(tiny_classifier, digits32):
    """Curves cost T x channels floats per image: only the first few images keep them."""

    from lightning_inv.data.datamodules import EvalDataModule
    from lightning_inv.measuring.evaluator import InvarianceEvaluator

    data, classifier = digits32, tiny_classifier
    evaluator = InvarianceEvaluator(
        classifier,
        [Translate(canvas=32, fill="black", max_shift=2)],
        probe=True,
        keep_per_image=True,
        max_curve_images=4,
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(evaluator, datamodule=EvalDataModule(data, batch_size=3), verbose=False)
    assert evaluator.curves["translate_black"].shape[:2] == (4, 5)  # deepest layer, 4 images
    result = evaluator.per_image["translate_black"]
    assert result.num_images == 9 and result.p_true.shape == (9, 5)  # measures see every image
    assert list(result.indices) == sorted(data.indices)  # data set order, not batch order
    assert evaluator.results["translate_black"]["num_images"] == 9


TINY = [
    "--models",
    "resnet10t",
    "resnet10t:blurpool",
    "--no-pretrained",
    "--num-classes",
    "10",
    "--data",
    "digits",
    "--image-size",
    "32",
    "--num-images",
    "6",
    "--accelerator",
    "cpu",
    "--devices",
    "1",
    "--logger",
    "none",
    "--no-figures",
    "--resamples",
    "200",
]


def test_default_experiments_fit_a_small_canvas_with_intervals_and_paired_differences(
    tmp_path, capsys, tiny_classifier
):
    """In process (evaluate.main): the paper presets on a 32 px canvas, where today's fixed
    +-16 px sweep failed ("view range larger than the canvas")."""
    import evaluate

    torch.manual_seed(0)
    assert evaluate.main([*TINY, "--output", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["complete"] is True
    rows = saved["models"]["resnet10t"]
    assert {
        "table1_crop_s0.1",
        "table1_black_s1.9",
        "fig2_translate_inpaint",
        "fig6_random_location_s0.3",
        "fig6_random_location_s1",
    } <= set(rows)
    sweep = rows["fig2_translate_inpaint"]
    assert sweep["num_views"] == 5  # +-2 px: 16 px at 224 scaled to 32 px
    low, high = sweep["p_top1_change_ci95"]
    assert low <= sweep["p_top1_change"] <= high
    model = tiny_classifier.model
    assert list(sweep["nonshiftability"]) == [  # fig10: every activity of resnet10t at 32 px
        p.name for p in probe_points(model, 32)
    ]
    # Deep stem: 3 convs, each activated; layer1.0: conv1, conv2 (no shortcut conv); layer2.0 and
    # layer3.0 add their shortcut conv before act2; layer4's maps are 1 x 1 at 32 px: left out.
    assert list(sweep["nonshiftability_depth"].values()) == [1, 2, 3, 4, 5, 6, 8, 9, 11]
    difference = saved["comparisons"]["resnet10t - resnet10t:blurpool"]["fig2_translate_inpaint"]
    expected = np.mean(_measures(tmp_path, "resnet10t") - _measures(tmp_path, "resnet10t:blurpool"))
    assert difference["accuracy"]["difference"] == pytest.approx(expected, abs=1e-6)
    out = capsys.readouterr().out
    assert "fig2_translate_inpaint: 5 views" in out and "resnet10t - resnet10t:blurpool" in out
    # What the measurement cost (6 images: a first batch of 4, then 2 timed for the rate).
    timing = saved["timing"]["resnet10t"]
    assert timing["views_per_image"] == sum(row["num_views"] for row in rows.values())
    assert (timing["batch_size"], timing["chunk_size"], timing["num_workers"]) == (4, 112, 0)
    assert timing["ready_s"] > 0 and timing["first_batch_s"] > 0 and timing["peak_host_mib"] > 0
    assert timing["views_per_s"] == pytest.approx(
        timing["images_per_s"] * timing["views_per_image"], rel=1e-3
    )
    assert timing["peak_device_mib"] is None and timing["device"].startswith("cpu")
    assert f"then {timing['images_per_s']:.2f} images/s" in out  # the console says it too


def _measures(folder, model, protocol="fig2_translate_inpaint", measure="accuracy"):
    with (folder / "per_image_measures.csv").open() as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if (r["model"], r["protocol"], r["measure"]) == (model, protocol, measure)
        ]
    return np.array([float(r["value"]) for r in rows])


def test_print_config_then_config_gives_the_same_results(tmp_path, capsys):
    import evaluate

    flags = [
        *TINY[:1],
        "resnet10t",
        *TINY[3:],
        "--protocols",
        "translate_black",
        "crop",
        "--direction",
        "horizontal",
        "--seed",
        "3",
    ]
    with pytest.raises(SystemExit):
        evaluate.main([*flags, "--print_config"])
    config = tmp_path / "e.yaml"
    config.write_text(capsys.readouterr().out)
    assert "direction: horizontal" in config.read_text()
    assert evaluate.main([*flags, "--output", str(tmp_path / "flags")]) == 0
    assert evaluate.main(["--config", str(config), "--output", str(tmp_path / "yaml")]) == 0
    first, second = (
        json.loads((tmp_path / d / "results.json").read_text())["models"] for d in ("flags", "yaml")
    )
    assert first == second and set(first["resnet10t"]) == {"translate_black", "crop"}


def test_a_train_checkpoint_is_evaluated_at_its_training_placement(tmp_path, capsys, make_tiny):
    import evaluate

    model = make_tiny(48)
    checkpoint = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.model.state_dict().items()},
            "hyper_parameters": dict(model.hparams),
            "datamodule_hyper_parameters": {"placement_canvas": 48, "placement_object_scale": 0.5},
        },
        checkpoint,
    )
    args = [
        "--models",
        str(checkpoint),
        "--data",
        "digits",
        "--num-images",
        "3",
        "--experiment",
        "fig2",
        "--no-nonshiftability",
        *TINY[-7:],
        "--output",
        str(tmp_path / "out"),
    ]
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "canvas 48 px, object scale 0.5" in out and "scale=0.5" in out


def test_worker_processes_give_the_same_results(tmp_path):
    """Images decoded in two worker processes (originals included) measure exactly as in-process."""
    import evaluate

    flags = [
        *TINY[:1],
        "resnet10t",
        *TINY[3:],
        "--num-images",
        "6",
        "--batch-size",
        "2",
        "--protocols",
        "translate_black",
        "crop",
    ]
    assert evaluate.main([*flags, "--output", str(tmp_path / "w0")]) == 0
    assert evaluate.main([*flags, "--num-workers", "2", "--output", str(tmp_path / "w2")]) == 0
    zero, two = (
        json.loads((tmp_path / d / "results.json").read_text())["models"] for d in ("w0", "w2")
    )
    assert zero == two


def _close(first, second, tolerance=1e-4):
    """Two results.json ``models`` dicts equal, floats to ``tolerance``."""
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(_close(first[k], second[k]) for k in first)
    if isinstance(first, list):
        return len(first) == len(second) and all(map(_close, first, second))
    if isinstance(first, float):
        return abs(first - second) <= tolerance
    return first == second


def test_channels_last_and_rics_run_end_to_end(tmp_path, make_tiny):
    """--channels-last measures what the default layout measures (to float rounding). NAME:rics
    is the same network seeing the selected crop: its P(true class) on every crop view equals
    the plain weights' with crop selection added by hand (catches a modifier parsed but not
    applied, or applied to other weights), and differs from the plain model's."""
    import evaluate
    from lightning_inv.models.crop_selection import add_crop_selection
    from lightning_inv.protocols import create_protocol

    flags = [
        *TINY[:1],
        "resnet10t",
        "resnet10t:rics",
        *TINY[3:],
        "--protocols",
        "translate_inpaint",
        "crop",
    ]
    assert evaluate.main([*flags, "--output", str(tmp_path / "plain")]) == 0
    assert evaluate.main([*flags, "--channels-last", "--output", str(tmp_path / "cl")]) == 0
    plain, last = (
        json.loads((tmp_path / d / "results.json").read_text())["models"] for d in ("plain", "cl")
    )
    assert _close(plain, last)
    rows = list(csv.DictReader((tmp_path / "plain" / "per_image.csv").open()))
    reported = {
        (r["model"], r["image"], int(r["view"])): float(r["p_true"])
        for r in rows
        if r["protocol"] == "crop"
    }
    data = build_eval_dataset("digits", 32, num_images=6, keep_original=True)
    items = [data[i] for i in range(len(data))]
    protocol = create_protocol("crop", canvas=32, seed=0)
    views = protocol(
        torch.stack([i["image"] for i in items]),
        torch.tensor([i["index"] for i in items]),
        None,  # digits have no photo beyond the prepared image
    )
    labels = torch.tensor([i["label"] for i in items])
    model = make_tiny(32)  # the weights evaluate.py builds (seeded 0 for every model)
    add_crop_selection(model.model)
    with torch.no_grad():
        logits = model.eval()(views.flatten(0, 1)).view(*views.shape[:2], -1)
    expected = logits.softmax(-1).gather(-1, labels[:, None, None].expand(-1, 9, 1))[..., 0]
    for n, item in enumerate(items):
        for view in range(9):
            key = (str(item["index"]), view)  # digits are named by their index
            assert reported[("resnet10t:rics", *key)] == pytest.approx(
                float(expected[n, view]), abs=2e-6
            )
    differs = [
        abs(reported[("resnet10t", *k[1:])] - v) > 1e-4
        for k, v in reported.items()
        if k[0] == "resnet10t:rics"
    ]
    assert sum(differs) > len(differs) / 2


@pytest.mark.slow
def test_compile_gives_the_same_numbers(tmp_path):
    """--compile (torch.compile of each backbone, nonshiftability hooks included)."""
    import evaluate

    flags = [
        *TINY[:1],
        "resnet10t",
        *TINY[3:],
        "--num-images",
        "3",
        "--experiment",
        "fig2",
        "fig10",
    ]
    assert evaluate.main([*flags, "--output", str(tmp_path / "eager")]) == 0
    assert evaluate.main([*flags, "--compile", "--output", str(tmp_path / "compiled")]) == 0
    eager, compiled = (
        json.loads((tmp_path / d / "results.json").read_text())["models"]
        for d in ("eager", "compiled")
    )
    assert _close(eager, compiled)


def test_a_wandb_artifact_is_evaluated_as_the_checkpoint_it_holds(tmp_path, monkeypatch, make_tiny):
    """``--models wandb:ENTITY/PROJECT/NAME:VERSION``: the artifact's last.ckpt is downloaded
    (here by a stand-in for W&B's API that copies a checkpoint) and evaluated, and the artifact
    is recorded for lineage. Catches the best checkpoint taken over last.ckpt, a bad name sent
    to the network, and a failed download that is not one clear line."""
    import shutil

    import wandb

    from lightning_inv.models import specs

    model = make_tiny(48)
    state = {
        "state_dict": {f"model.{k}": v for k, v in model.model.state_dict().items()},
        "hyper_parameters": dict(model.hparams),
    }
    source = tmp_path / "logged"
    source.mkdir()
    torch.save(state, source / "last.ckpt")
    torch.save({"not": "a checkpoint"}, source / "epoch=0-step=3.ckpt")
    asked = []

    class Artifact:
        def download(self, root: str) -> str:
            shutil.copytree(source, root, dirs_exist_ok=True)
            return root

    class Api:
        def artifact(self, name: str, type: str) -> Artifact:
            asked.append((name, type))
            if "missing" in name:
                raise ValueError(f"artifact {name} not found")
            return Artifact()

    monkeypatch.setattr(wandb, "Api", Api)
    monkeypatch.setattr(specs, "ARTIFACT_CACHE", tmp_path / "cache")
    spec = specs.parse_model("wandb:me/lightning-inv/model-abc:v0")
    assert (
        spec.artifact == "me/lightning-inv/model-abc:v0"
        and spec.checkpoint.path.name == "last.ckpt"
    )
    assert spec.describe()["artifact"] == "me/lightning-inv/model-abc:v0"
    assert asked == [("me/lightning-inv/model-abc:v0", "model")]
    with pytest.raises(specs.BackboneError, match="ENTITY/PROJECT/NAME:VERSION"):
        specs.parse_model("wandb:model-abc")
    with pytest.raises(specs.BackboneError, match="wandb login"):
        specs.parse_model("wandb:me/lightning-inv/missing:v0")
    assert len(asked) == 2  # the malformed name never reached the API
    # The downloaded file given as a path keeps its lineage; a copy elsewhere has none.
    again = specs.parse_model(str(spec.checkpoint.path))
    assert again.artifact == "me/lightning-inv/model-abc:v0"
    shutil.copy(spec.checkpoint.path, tmp_path / "copy.ckpt")
    assert specs.parse_model(str(tmp_path / "copy.ckpt")).artifact is None


def test_several_nodes_need_one_output_folder():
    """Each node would otherwise pick its own default folder (a timestamp): refused, naming
    --output; a resumed run names its folder already."""
    from lightning_inv.cli.evaluate_config import EvaluateConfig, check_config

    assert "--output" in check_config(EvaluateConfig(num_nodes=2))
    assert check_config(EvaluateConfig(num_nodes=2, output=Path("shared/run"))) is None
    assert "at least 1" in check_config(EvaluateConfig(num_nodes=0))
