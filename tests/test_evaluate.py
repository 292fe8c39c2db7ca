"""evaluate.py as a user runs it: a subprocess on a small model and a few real photos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_inv.data.datamodules import build_eval_dataset
from lightning_inv.measuring import metrics as M
from lightning_inv.measuring.engine import view_logits
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


def test_several_nodes_need_one_output_folder():
    """Each node would otherwise pick its own default folder (a timestamp): refused, naming
    --output; a resumed run names its folder already."""
    from lightning_inv.cli.evaluate_config import EvaluateConfig, check_config

    assert "--output" in check_config(EvaluateConfig(num_nodes=2))
    assert check_config(EvaluateConfig(num_nodes=2, output=Path("shared/run"))) is None
    assert "at least 1" in check_config(EvaluateConfig(num_nodes=0))
