"""Run the paper's invariance experiments on pretrained models and checkpoints.

With no arguments: the three offline EfficientNet-Lite models on the shipped sample photos, with
translate (inpaint and mean fill), crop, scale, random location at three object scales, pair shift
and nonshiftability. Writes results.json and a per-image CSV under --output and prints a table.

Examples:
    python evaluate.py
    python evaluate.py --models resnet50 resnet50:blurpool --pretrained --data imagefolder --data-root ~/imagenette/val
    python evaluate.py --models runs/train/last.ckpt --data digits --protocols translate_mean random_location
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_inv.backbones import OFFLINE_WEIGHTS, BackboneError
from lightning_inv.data.datamodules import EVAL_DATASETS, EvalDataModule, build_eval_dataset
from lightning_inv.data.images import imagefolder_items
from lightning_inv.data.samples import imagenet_description
from lightning_inv.evaluation import InvarianceEvaluator
from lightning_inv.figures import ModelRun, write_figures
from lightning_inv.loggers import LOGGER_CHOICES, create_logger, log_evaluation, per_image_summary
from lightning_inv.module import InvarianceClassifier
from lightning_inv.outputs import default_run_folder, overwrite_refusal
from lightning_inv.progress import ImagesPerSecondBar
from lightning_inv.protocols import Protocol, create_protocol
from lightning_inv.subsampling import measure_subsampling

OUTPUT_ENV = "LIGHTNING_INV_EVAL_OUTPUT"  # shares the default run folder with DDP workers

DEFAULT_PROTOCOLS = (
    "translate_inpaint",
    "translate_mean",
    "crop",
    "scale_inpaint",
    "random_location",
    "pair_shift",
)
PROTOCOL_CHOICES = (
    "translate_inpaint", "translate_mean", "translate_black", "translate_edge", "crop", "scale_inpaint",
    "scale_mean", "random_location", "pair_shift", "circular", "sequence", "worst_of_k",
)  # fmt: skip
SUMMARY_COLUMNS = ("accuracy", "p_top1_change", "mac", "mad", "jagged_fraction", "consistency")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(OFFLINE_WEIGHTS),
        help="timm names, NAME:avgpool / NAME:blurpool, or checkpoint files of train.py",
    )
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ImageNet weights for timm names (offline for tf_efficientnet_lite0/1/2)",
    )
    parser.add_argument(
        "--num-classes", type=int, default=None, help="classifier size for timm names"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="canvas side in px (default: the model's native resolution)",
    )
    parser.add_argument(
        "--data",
        choices=EVAL_DATASETS,
        default="sample",
        help="sample: the shipped photos; imagefolder: --data-root; digits: held-out digits cropped "
        "tight, placed by the protocols (--object-scale 0.5 is the training placement)",
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help="root of <root>/<synset>/<images>"
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="seeded random subset of the data"
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=PROTOCOL_CHOICES,
        default=list(DEFAULT_PROTOCOLS),
        metavar="PROTOCOL",
        help=f"any of: {', '.join(PROTOCOL_CHOICES)} (default: {' '.join(DEFAULT_PROTOCOLS)})",
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[0.3, 0.5, 0.7],
        help="object scales of random_location",
    )
    parser.add_argument(
        "--location-fill",
        choices=("inpaint", "mean", "black", "edge"),
        default="inpaint",
        help="background of random_location (black suits digits)",
    )
    parser.add_argument("--max-shift", type=int, default=16, help="translate: shifts -N..N px")
    parser.add_argument(
        "--direction", choices=("vertical", "horizontal", "diagonal"), default="vertical"
    )
    parser.add_argument(
        "--object-scale", type=float, default=0.75, help="translate: object side / canvas"
    )
    parser.add_argument(
        "--nonshiftability",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record per-layer feature sums for nonshiftability",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images per step (each makes T views)"
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="views per forward pass")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--precision", default=None, help="e.g. 16-mixed, bf16-mixed")
    parser.add_argument("--output", type=Path, default=None, help="default: runs/evaluate-<time>")
    parser.add_argument(
        "--logger",
        choices=LOGGER_CHOICES,
        default="csv",
        help="where the numbers go besides results.json: csv (metrics.csv), wandb (offline when "
        "not logged in; `wandb sync` uploads later) or none",
    )
    parser.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the paper's figures as PNG under OUTPUT/figures",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="allow writing into an existing --output"
    )
    return parser.parse_args(argv)


def load_classifier(spec: str, args: argparse.Namespace) -> InvarianceClassifier:
    """A model from a name, ``name:modify`` or a checkpoint path."""
    overrides = {} if args.image_size is None else {"image_size": args.image_size}
    if spec.endswith((".ckpt", ".pt", ".pth")) or Path(spec).is_file():
        return InvarianceClassifier.from_checkpoint(spec, **overrides)
    name, _, modify = spec.partition(":")
    kwargs: dict[str, Any] = {"pretrained": args.pretrained, "modify": modify or None, **overrides}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return InvarianceClassifier(name, **kwargs)


def build_protocols(
    keys: list[str], canvas: int, mean: tuple[float, ...], args: argparse.Namespace
) -> list[Protocol]:
    protocols: list[Protocol] = []
    common = {"canvas": canvas, "seed": args.seed}
    for key in keys:
        name, _, fill = (
            key.rpartition("_") if key.startswith(("translate_", "scale_")) else (key, "", "")
        )
        if name == "translate":
            protocols.append(
                create_protocol(
                    name,
                    fill=fill,
                    mean=mean,
                    scale=args.object_scale,
                    max_shift=args.max_shift,
                    direction=args.direction,
                    **common,
                )
            )
        elif name == "scale":
            protocols.append(create_protocol(name, fill=fill, mean=mean, **common))
        elif key == "random_location":
            protocols += [
                create_protocol(key, scale=s, fill=args.location_fill, mean=mean, **common)
                for s in args.scales
            ]
        elif key == "worst_of_k":
            protocols.append(create_protocol(key, mean=mean, **common))
        else:
            protocols.append(create_protocol(key, **common))
    return protocols


def write_per_image_csv(path: Path, model: str, evaluator: InvarianceEvaluator) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(
                ["image", "label", "model", "protocol", "view", "position", "p_true", "top1"]
            )
        for protocol in evaluator.protocols:
            for row in evaluator.per_image[protocol.key]:
                for view, (p_true, top1) in enumerate(zip(row["p_true"], row["top1"], strict=True)):
                    writer.writerow(
                        [
                            row["image"],
                            row["label"],
                            model,
                            protocol.key,
                            view,
                            protocol.positions[view],
                            f"{p_true:.6f}",
                            top1,
                        ]
                    )


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    header = f"{'model':28s} {'protocol':32s} " + " ".join(f"{c:>15s}" for c in SUMMARY_COLUMNS)
    print(header)
    print("-" * len(header))
    for model, protocols in results.items():
        for key, row in protocols.items():
            if not isinstance(row, dict) or "accuracy" not in row:
                continue
            cells = " ".join(
                f"{row[c]:15.3f}" if c in row else f"{'-':>15s}" for c in SUMMARY_COLUMNS
            )
            print(f"{model:28s} {key:32s} {cells}")


def label_namer(args: argparse.Namespace) -> Callable[[int], str]:
    """Class index -> a name for figure titles: ImageNet names, folder names or digits."""
    if args.data == "digits":
        return str
    if args.data == "imagefolder":
        _, classes = imagefolder_items(args.data_root)
        if len(classes) != 1000:  # folders not named by ImageNet synsets: labels are folder order
            return classes.__getitem__
    return imagenet_description


def resolve_output(args: argparse.Namespace) -> Path:
    """The run folder; DDP worker processes (which re-run this script) reuse rank 0's choice."""
    if args.output is not None:
        return args.output
    if OUTPUT_ENV not in os.environ:
        os.environ[OUTPUT_ENV] = str(default_run_folder("evaluate"))
    return Path(os.environ[OUTPUT_ENV])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = resolve_output(args)
    is_main = rank_zero_only.rank == 0
    refusal = overwrite_refusal(output, args.overwrite) if is_main else None
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if args.data == "imagefolder" and args.data_root is None:
        print("error: --data imagefolder needs --data-root DIR", file=sys.stderr)
        return 2
    pl.seed_everything(args.seed, verbose=False)
    csv_path = output / "per_image.csv"
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
        csv_path.unlink(missing_ok=True)
    runs: list[ModelRun] = []
    per_image_rows: list[list[Any]] = []
    results: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": {},
        "subsampling": {},
    }
    for spec in args.models:
        try:
            classifier = load_classifier(spec, args)
            config = classifier.data_config
            dataset = build_eval_dataset(
                args.data,
                classifier.image_size,
                args.data_root,
                config.get("crop_pct", 0.875),
                config.get("interpolation", "bicubic"),
                args.num_images,
                args.seed,
            )
            protocols = build_protocols(
                args.protocols, classifier.image_size, tuple(config["mean"]), args
            )
            views_per_image = sum(p.num_views for p in protocols)
        except (BackboneError, ValueError, FileNotFoundError) as err:
            print(f"error: {spec}: {err}", file=sys.stderr)
            return 2
        subsampling = measure_subsampling(classifier.model, classifier.image_size)
        results["subsampling"][spec] = {
            "factor": subsampling.factor,
            "invariant_fraction": subsampling.invariant_fraction,
            "layers": [list(layer) for layer in subsampling.layers],
        }
        if is_main:
            print(f"[{spec}] {subsampling.describe()}")
        evaluator = InvarianceEvaluator(
            classifier,
            protocols,
            chunk_size=args.chunk_size,
            probe=args.nonshiftability,
            keep_per_image=True,
        )
        trainer = pl.Trainer(
            accelerator=args.accelerator,
            devices=args.devices,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[ImagesPerSecondBar(views_per_image)],
        )
        if is_main:
            print(
                f"[{spec}] {len(dataset)} images x {views_per_image} views, "
                f"canvas {classifier.image_size}px"
            )
        trainer.test(evaluator, datamodule=EvalDataModule(dataset, args.batch_size), verbose=False)
        if trainer.global_rank != 0:
            continue
        results["models"][spec] = evaluator.results
        write_per_image_csv(csv_path, spec, evaluator)
        (output / "results.json").write_text(json.dumps(results, indent=2))  # after every model
        per_image_rows += per_image_summary(spec, evaluator.per_image)
        if args.figures:
            runs.append(ModelRun.from_evaluator(spec, evaluator, dataset))
        del evaluator, classifier
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not is_main:
        return 0
    print()
    print_table(results["models"])
    figures = {}
    if runs:
        try:
            figures = write_figures(runs, output / "figures", label_namer(args))
        except Exception as err:  # results.json and the CSV are written; report, don't lose them
            print(f"warning: drawing the figures failed: {err!r}", file=sys.stderr)
    print(f"\nresults: {output / 'results.json'}\nper-image: {csv_path}")
    if figures:
        print(f"figures: {output / 'figures'} ({len(figures)} PNG)")
    try:
        logger = create_logger(args.logger, output, output.name, results["config"])
    except Exception as err:  # the files above are written; a logger must not fail the run
        print(f"warning: could not start the {args.logger} logger: {err}", file=sys.stderr)
        logger = None
    log_evaluation(logger, results["models"], per_image_rows, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
