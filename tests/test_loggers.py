"""Loggers: offline W&B when not logged in, result keys grouped by protocol, failures are warnings."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from pytorch_lightning.loggers import CSVLogger

from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.protocols import Translate
from lightning_inv.reporting import loggers


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_wandb_is_offline_unless_logged_in(clean_env, monkeypatch):
    assert loggers.wandb_offline()
    (clean_env / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (clean_env / ".netrc").chmod(0o600)
    assert not loggers.wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert loggers.wandb_offline()
    monkeypatch.delenv("WANDB_MODE")
    (clean_env / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not loggers.wandb_offline()


def test_flat_results_start_with_the_protocol():
    results = {
        "lite0": {
            "translate_mean": {
                "accuracy": 0.5,
                "num_images": 7,
                "nonshiftability": {"blocks.0": 0.1},
            }
        }
    }
    assert loggers.flat_results(results) == {
        "translate_mean/accuracy/lite0": 0.5,
        "translate_mean/num_images/lite0": 7.0,
        "translate_mean/nonshiftability/blocks.0/lite0": 0.1,
    }


def _result(label: int, p_true: list[float], top1: list[int]) -> ProtocolResult:
    protocol = Translate(canvas=16, scale=0.5, max_shift=1, fill="black")
    return ProtocolResult(
        protocol,
        np.array([0]),
        np.array([label]),
        {},
        np.array([p_true], dtype=np.float32),
        np.array([top1], dtype=np.int32),
    )


def test_per_image_summary_counts_changes_and_accuracy():
    rows = loggers.per_image_summary("m", {"t": _result(2, [0.2, 0.6], [2, 3])}, {0: "a"}.get)
    assert rows == [["a", 2, "m", "t", pytest.approx(0.4), pytest.approx(0.2), 1, 0.5]]


def test_csv_logger_writes_the_numbers(tmp_path):
    logger = loggers.create_logger("csv", tmp_path, "run", {})
    loggers.log_evaluation(logger, {"m": {"crop": {"accuracy": 0.25}}}, [], {})
    (row,) = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert float(row["crop/accuracy/m"]) == 0.25


def test_a_failing_logger_is_a_warning_not_a_crash(tmp_path):
    class Broken(CSVLogger):
        def log_metrics(self, metrics, step=None):
            raise ConnectionError("server unreachable")

    with pytest.warns(UserWarning, match="server unreachable"):
        loggers.log_evaluation(Broken(str(tmp_path)), {"m": {"crop": {"accuracy": 1.0}}}, [], {})


def test_unknown_logger_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="csv, wandb, none"):
        loggers.create_logger("tensorboard", tmp_path, "run", {})


@pytest.mark.slow
def test_wandb_offline_run_holds_numbers_table_and_figures(clean_env, tmp_path):
    from PIL import Image

    figure = tmp_path / "fig.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(figure)
    logger = loggers.create_logger("wandb", tmp_path, "test-run", {"seed": 0})
    rows = loggers.per_image_summary("m", {"crop": _result(1, [0.5, 0.7], [1, 1])}, {0: "a"}.get)
    loggers.log_evaluation(logger, {"m": {"crop": {"accuracy": 0.25}}}, rows, {"fig1": figure})
    (run,) = tmp_path.glob("wandb/offline-run-*")  # offline: no credentials in the clean env
    assert list(run.glob("run-*.wandb"))  # what `wandb sync` uploads
    media = {p.parent.name for p in run.glob("files/media/**/*") if p.is_file()}
    assert {"table", "figures"} <= media


@pytest.mark.slow
def test_an_evaluation_is_a_wandb_group_with_one_run_per_model(clean_env, tmp_path):
    """W&B's own runs table compares models: one offline run per model, all in one group, each
    with its measures as summary keys ``PROTOCOL/MEASURE`` (no model name inside the keys)."""
    results = {
        "lite0": {"crop": {"accuracy": 0.5, "accuracy_ci95": [0.4, 0.6]}},
        "lite0:blurpool": {"crop": {"accuracy": 0.25}},
    }
    configs = {model: {"model": model} for model in results}
    loggers.log_evaluation_to_wandb(tmp_path, "evaluate-group", results, configs, [], {})
    runs = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    # The records W&B syncs later; two runs may start in the same second, so find each by name.
    second, first = sorted(
        (path.read_bytes() for path in runs), key=lambda b: b"lite0:blurpool" in b, reverse=True
    )
    assert b"evaluate-group" in first and b"evaluate-group" in second
    assert b"lite0:blurpool" in second and b"lite0:blurpool" not in first
    assert b"crop/accuracy" in first and b"crop/accuracy_ci95_low" in first
    assert b"crop/accuracy/lite0" not in first


def test_an_evaluated_artifact_is_used_by_its_evaluation_run(monkeypatch, tmp_path):
    """Lineage: the run of a model that came from a W&B artifact uses that artifact (and only
    that run); catches the artifact name dropped on the way from the model spec."""
    used: dict[str, list[str]] = {}

    class Run:
        def __init__(self, name: str) -> None:
            self.name, self.summary = name, {}

        def use_artifact(self, artifact: str) -> None:
            used.setdefault(self.name, []).append(artifact)

    class FakeLogger:
        def __init__(self, name: str, **_: object) -> None:
            self.experiment = Run(name)

        def log_metrics(self, metrics: dict) -> None: ...

        def log_table(self, *args: object, **kwargs: object) -> None: ...

    monkeypatch.setattr(loggers, "AutoWandbLogger", FakeLogger)
    monkeypatch.setattr(loggers, "close_logger", lambda logger: None)
    results = {"trained": {"crop": {"accuracy": 0.5}}, "lite0": {"crop": {"accuracy": 0.25}}}
    configs = {"trained": {"artifact": "me/p/model-abc:v0"}, "lite0": {"artifact": None}}
    loggers.log_evaluation_to_wandb(tmp_path, "group", results, configs, [], {})
    assert used == {"trained": ["me/p/model-abc:v0"]}
