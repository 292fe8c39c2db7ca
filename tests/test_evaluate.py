"""evaluate.py as a user runs it: a subprocess on a small model and a few real photos."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from lightning_inv import metrics as M
from lightning_inv.data.datamodules import build_eval_dataset
from lightning_inv.engine import view_logits
from lightning_inv.module import InvarianceClassifier
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
