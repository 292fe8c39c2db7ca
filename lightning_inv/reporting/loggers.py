"""Experiment loggers: W&B that falls back to offline mode, and result logging for evaluate.py.

W&B is online only when the machine is logged in (``WANDB_API_KEY`` or a ``~/.netrc`` entry for
the W&B host) or ``WANDB_MODE`` says so; otherwise runs are written offline under the run folder
and ``wandb sync <folder>`` uploads them later. Logging never loses results: callers write their
files first, and ``log_evaluation`` turns a W&B failure into a warning.
"""

from __future__ import annotations

import math
import netrc
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

LOGGER_CHOICES = ("csv", "wandb", "none")


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (environment or netrc), without contacting the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline() -> bool:
    """Offline unless ``WANDB_MODE`` asks otherwise or the machine is logged in."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    return not wandb_logged_in()


EPOCH_METRICS = "invariance"  # the callback's prefix: per-epoch curves against the epoch


class AutoWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with ``offline=None`` meaning: offline when not logged in,
    a ``job_type`` on every run (``train`` unless told: ``evaluate``, ``study``) and the
    per-epoch invariance measures (``invariance*/...``) stepped on ``epoch`` with their
    minimum, maximum and last value in the run's summary.

    Usable from LightningCLI configs (``trainer.logger.class_path:
    lightning_inv.reporting.loggers.AutoWandbLogger``).
    """

    def __init__(
        self,
        *args: Any,
        offline: bool | None = None,
        project: str = "lightning-inv",
        save_dir: str | None = None,
        job_type: str = "train",
        **kwargs: Any,
    ) -> None:
        """``save_dir=None``: ``train.py`` puts the run in its run folder (elsewhere: ".")."""
        if offline is None:
            offline = wandb_offline()
        # Absolute: a shared wandb-core service resolves relative paths from its own folder.
        save_dir = str(Path(save_dir or ".").expanduser().resolve())
        super().__init__(
            *args,
            offline=offline,
            project=project,
            save_dir=save_dir,
            job_type=job_type,
            **kwargs,
        )
        self._epoch_metrics_defined = False

    @property
    def experiment(self) -> Any:
        run = super().experiment
        if not self._epoch_metrics_defined and callable(getattr(run, "define_metric", None)):
            run.define_metric("epoch")
            run.define_metric(f"{EPOCH_METRICS}*", step_metric="epoch", summary="min,max,last")
            self._epoch_metrics_defined = True
        return run


def finish_wandb() -> None:
    """Close the active W&B run, if any, so its files (``run-*.wandb``) are complete on disk.

    Lightning's ``WandbLogger`` leaves closing to an exit hook, which may not get to flush when
    the process ends; entry points call this at their end.
    """
    import wandb

    if wandb.run is not None:
        wandb.finish()


def close_logger(logger: Logger) -> None:
    """Save and finalise ``logger``; for W&B also close its run so its files are complete."""
    logger.save()
    logger.finalize("success")
    if isinstance(logger, WandbLogger):
        finish_wandb()


def create_logger(
    kind: str, save_dir: Path, name: str, config: Mapping[str, Any], job_type: str = "evaluate"
) -> Logger | None:
    """``csv`` -> ``CSVLogger`` writing ``save_dir/csv/metrics.csv``; ``wandb`` -> ``AutoWandbLogger``
    with the run's config and ``job_type``; ``none`` -> None."""
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(save_dir), name="", version="csv")
    if kind == "wandb":
        logger = AutoWandbLogger(save_dir=str(save_dir), name=name, job_type=job_type)
        logger.log_hyperparams(dict(config))
        return logger
    raise ValueError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGER_CHOICES)}")


def model_summary(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """One model's ``{protocol: {measure: value}}`` -> ``{"protocol/measure": value}`` (finite
    numbers; nonshiftability as ``protocol/nonshiftability/<layer>``; intervals as
    ``protocol/measure_ci95_low`` / ``_high``)."""
    flat: dict[str, float] = {}
    for key, row in rows.items():
        for metric, value in row.items():
            if isinstance(value, Mapping):
                for layer, v in value.items():
                    if isinstance(v, int | float):
                        flat[f"{key}/{metric}/{layer}"] = float(v)
            elif isinstance(value, list | tuple) and len(value) == 2 and metric.endswith("_ci95"):
                flat[f"{key}/{metric}_low"], flat[f"{key}/{metric}_high"] = map(float, value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"{key}/{metric}"] = float(value)
    return {k: v for k, v in flat.items() if math.isfinite(v)}


def log_evaluation_to_wandb(
    save_dir: Path,
    group: str,
    results: Mapping[str, Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]],
    per_image_rows: list[list[Any]],
    figures: Mapping[str, Path],
) -> None:
    """An evaluation as a W&B *group* with one run per model: run name = the model spec, config =
    ``configs[model]``, summary = every measure under ``PROTOCOL/MEASURE``, the model's per-image
    table, and the figures. W&B's runs table, bar charts and filters then compare models. A
    failure is a warning (the files are already written)."""
    for model, rows in results.items():
        try:
            logger = AutoWandbLogger(
                save_dir=str(save_dir),
                name=model,
                group=group,
                job_type="evaluate",
                config=dict(configs.get(model, {})),
            )
            if artifact := configs.get(model, {}).get("artifact"):
                try:  # lineage: W&B links this run to the training run that logged the artifact
                    logger.experiment.use_artifact(artifact)
                except Exception as err:  # offline W&B cannot use a remote artifact
                    warnings.warn(
                        f"{model}: lineage to {artifact} not recorded: {err}", stacklevel=2
                    )
            summary = model_summary(rows)
            logger.log_metrics(summary)
            logger.experiment.summary.update(summary)
            mine = [row for row in per_image_rows if row[2] == model]
            logger.log_table("per_image", columns=PER_IMAGE_COLUMNS, data=mine)
            for name, path in figures.items():
                logger.log_image(f"figures/{name}", images=[str(path)])
            close_logger(logger)
        except Exception as err:  # a logging backend must never cost the results (on disk)
            warnings.warn(f"logging {model} to W&B failed: {err}", stacklevel=2)


def log_comparison_to_wandb(
    save_dir: Path, group: str, columns: list[str], rows: list[list[Any]]
) -> None:
    """The evaluation's comparison table (``comparison_table.comparison_rows``) as one more run
    of the group, ``comparison``: a ``wandb.Table`` whose ``flip`` cells are images. A failure is
    a warning (the files are already written)."""
    if not rows:
        return
    try:
        import wandb

        logger = AutoWandbLogger(
            save_dir=str(save_dir), name="comparison", group=group, job_type="evaluate"
        )
        flip = columns.index("flip")
        data = [
            [
                *row[:flip],
                None if row[flip] is None else wandb.Image(row[flip], caption=row[flip + 1]),
                *row[flip + 1 :],
            ]
            for row in rows
        ]
        logger.log_table("comparison", columns=columns, data=data)
        close_logger(logger)
    except Exception as err:  # a logging backend must never cost the results (on disk)
        warnings.warn(f"logging the comparison table to W&B failed: {err}", stacklevel=2)


def flat_results(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{model: {protocol: {metric: value}}}`` -> ``{"protocol/metric/model": value}`` (the CSV
    logger's keys; intervals as ``metric_ci95_low`` / ``_high``, nonshiftability per layer)."""
    return {
        f"{key}/{model}": value
        for model, rows in results.items()
        for key, value in model_summary(rows).items()
    }


def per_image_summary(
    model: str, results: Mapping[str, Any], name_of: Callable[[int], str] = str
) -> list[list[Any]]:
    """Rows ``[image, label, model, protocol, mean/min P(true), top-1 changes, accuracy]`` from
    ``{protocol key: ProtocolResult}`` (protocols whose views were kept)."""
    rows = []
    for key, result in results.items():
        if result.p_true is None or result.top1 is None:
            continue
        for i, index in enumerate(result.indices):
            p, top1 = result.p_true[i].astype(np.float64), result.top1[i]
            rows.append(
                [
                    name_of(int(index)),
                    int(result.labels[i]),
                    model,
                    key,
                    float(p.mean()),
                    float(p.min()),
                    int((top1[1:] != top1[:-1]).sum()),
                    float((top1 == result.labels[i]).mean()),
                ]
            )
    return rows


PER_IMAGE_COLUMNS = [
    "image",
    "label",
    "model",
    "protocol",
    "mean_p_true",
    "min_p_true",
    "top1_changes",
    "accuracy",
]


def log_evaluation(
    logger: Logger | None,
    results: Mapping[str, Mapping[str, Any]],
    per_image_rows: list[list[Any]],
    figures: Mapping[str, Path],
) -> None:
    """Send an evaluation's numbers, per-image table and figures to ``logger``; warn on failure."""
    if logger is None:
        return
    try:
        metrics = {k: v for k, v in flat_results(results).items() if math.isfinite(v)}
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)
            logger.log_table("per_image", columns=PER_IMAGE_COLUMNS, data=per_image_rows)
            for name, path in figures.items():
                logger.log_image(f"figures/{name}", images=[str(path)])
        close_logger(logger)
    except Exception as err:  # a logging backend must never cost the results (already on disk)
        warnings.warn(f"logging to {type(logger).__name__} failed: {err}", stacklevel=2)
