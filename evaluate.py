"""Run the paper's invariance experiments on pretrained models and checkpoints.

With no arguments: the offline EfficientNet-Lite0 on the 27 offline photos (20 of them ImageNet
validation photos with ImageNet's labels) through the presets table1, fig2, fig6 and fig10, with
95% bootstrap intervals over images (and paired differences when --models names several).
Writes results.json, per_image.csv, per_image_measures.csv, config.yaml, manifest.json and
figures under --output, and prints a table.

Every flag can live in a YAML file: `--print_config > e.yaml` writes the current settings, and
`--config e.yaml` runs them again (flags after it override it).

Examples:
    python evaluate.py
    python evaluate.py --experiment table1 --data imagenet_val --models tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2
    python evaluate.py --experiment paper --models resnet50 resnet50:blurpool --data imagefolder --data-root ~/imagenette2/val
    python evaluate.py --models runs/train/digits_baseline/checkpoints/last.ckpt --data digits
    python evaluate.py --protocols translate_mean crop --direction horizontal --max-shift 8
    python evaluate.py --resume runs/evaluate-20261126-101500
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path

from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.cli.checks import check_head, check_output, check_runtime, data_labels
from lightning_inv.cli.evaluate_config import (
    EvaluateConfig,
    build_parser,
    check_config,
    check_config_values,
    config_files,
    dump,
    from_namespace,
    resume_config,
)
from lightning_inv.cli.evaluation import evaluate
from lightning_inv.data.images import LabelMappingError
from lightning_inv.files import RunFolderError
from lightning_inv.models.backbones import BackboneError
from lightning_inv.models.specs import ModelSpec, parse_model
from lightning_inv.reporting.run_folder import RunLock, default_run_folder, overwrite_refusal

OUTPUT_ENV = "LIGHTNING_INV_EVAL_OUTPUT"  # shares the default run folder with DDP workers


def resolve_output(config: EvaluateConfig) -> Path:
    """The run folder; DDP worker processes (which re-run this script) reuse rank 0's choice."""
    if config.output is not None:
        return config.output
    if OUTPUT_ENV not in os.environ:
        os.environ[OUTPUT_ENV] = str(default_run_folder("evaluate"))
    return Path(os.environ[OUTPUT_ENV])


def launched_as_rank_zero() -> bool:
    """Whether this process will be global rank 0, from what launched it (torchrun's RANK,
    SLURM's SLURM_PROCID, or NODE_RANK and LOCAL_RANK): before Lightning sets its ranks, a
    process started by hand on a second node looks like rank 0 to ``rank_zero_only``."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ:
            return int(os.environ[name]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def resolve_models(config: EvaluateConfig) -> list[ModelSpec] | str:
    """Every model parsed once (a checkpoint read once) and its head checked against the data's
    labels, before any work; a message on the first problem."""
    try:
        labels = data_labels(config.data, config.data_root, config.labels)
        models = [parse_model(spec, config.num_classes) for spec in config.models]
    except (BackboneError, LabelMappingError, FileNotFoundError, ValueError) as err:
        return str(err)
    for model in models:
        if problem := check_head(model, labels):
            return problem
    return models


def error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser(__doc__)
    argv = list(sys.argv[1:] if argv is None else argv)
    for path in config_files(argv):  # before jsonargparse reads it: a hostile file fails fast
        if problem := check_config_values(path):
            return error(problem)
    given = parser.parse_args(argv)
    try:
        config = resume_config(parser, given) if given.resume else from_namespace(given)
    except RunFolderError as err:
        return error(f"--resume: {err}")
    if isinstance(config, str):
        return error(config)
    if problem := check_config(config) or check_runtime(
        config.accelerator, config.precision, config.devices
    ):
        return error(problem)
    is_main = rank_zero_only.rank == 0 and launched_as_rank_zero()
    output = resolve_output(config)
    models = resolve_models(config)  # first: the output may sit in the data root
    problem = models if isinstance(models, str) else None
    if is_main and not problem:
        problem = check_output(output) or (
            None if config.resume else overwrite_refusal(output, config.overwrite)
        )
    if problem:
        if config.output is None and is_main and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # the fresh default folder: leave nothing behind
        return error(problem)
    try:
        with RunLock(output) if is_main else nullcontext():
            return evaluate(config, models, output, is_main, lambda: dump(parser, config))
    except RunFolderError as err:
        return error(str(err), 1)


if __name__ == "__main__":
    sys.exit(main())
