"""Run the paper's invariance experiments on pretrained models and checkpoints.

With no arguments: the offline EfficientNet-Lite0 on the 27 offline photos (20 of them ImageNet
validation photos with ImageNet's labels) through the presets table1, fig2, fig6 and fig10, with
95% bootstrap intervals over images (and paired differences when --models names several).
Writes results.json, per_image.csv, per_image_measures.csv, config.yaml and figures under
--output, and prints a table.

Every flag can live in a YAML file: `--print_config > e.yaml` writes the current settings, and
`--config e.yaml` runs them again (flags after it override it).

Examples:
    python evaluate.py
    python evaluate.py --experiment table1 --data imagenet_val --models tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2
    python evaluate.py --experiment paper --models resnet50 resnet50:blurpool --data imagefolder --data-root ~/imagenette2/val
    python evaluate.py --models runs/train/digits_baseline/checkpoints/last.ckpt --data digits
    python evaluate.py --protocols translate_mean crop --direction horizontal --max-shift 8
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from jsonargparse import (
    ActionConfigFile,
    ActionYesNo,
    ArgumentParser,
    DefaultHelpFormatter,
    Namespace,
)
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import Dataset, Subset

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.cli.checks import (
    check_config_file,
    check_head,
    check_output,
    check_runtime,
    data_labels,
    is_checkpoint,
    resolve_model,
)
from lightning_inv.data.datamodules import EVAL_DATASETS, EvalDataModule, build_eval_dataset
from lightning_inv.data.images import (
    EXIF_ORIENTATION,
    LABEL_MODES,
    MAX_IMAGE_PIXELS,
    LabelMappingError,
    imagefolder_items,
)
from lightning_inv.data.samples import imagenet_description
from lightning_inv.files import (
    MANIFEST,
    RunFolderError,
    RunLock,
    data_manifest,
    manifest_changes,
    read_json,
    write_atomically,
    write_csv,
    write_json,
)
from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.measuring.evaluator import Interrupted, InvarianceEvaluator
from lightning_inv.measuring.nonshiftability import PROBE_KINDS
from lightning_inv.measuring.statistics import RESAMPLES, paired_difference
from lightning_inv.models.backbones import OFFLINE_WEIGHTS, BackboneError, checkpoint_placement
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.models.subsampling import measure_subsampling
from lightning_inv.protocols import FILL_MODES, Protocol, create_protocol
from lightning_inv.protocols.presets import (
    DEFAULT_EXPERIMENTS,
    PAPER,
    PRESETS,
    PresetContext,
    beside_published,
    build_experiments,
    table1_contrast,
)
from lightning_inv.reporting.figures import ModelRun, write_figures
from lightning_inv.reporting.loggers import (
    LOGGER_CHOICES,
    create_logger,
    log_evaluation,
    log_evaluation_to_wandb,
    per_image_summary,
)
from lightning_inv.reporting.progress import ImagesPerSecondBar
from lightning_inv.reporting.run_folder import (
    default_run_folder,
    load_model_results,
    overwrite_refusal,
    save_model_results,
)

OUTPUT_ENV = "LIGHTNING_INV_EVAL_OUTPUT"  # shares the default run folder with DDP workers

PROTOCOL_CHOICES = (
    "translate_inpaint", "translate_mean", "translate_black", "translate_edge", "crop", "scale_inpaint",
    "scale_mean", "embed", "random_location", "pair_shift", "circular", "sequence", "worst_of_k",
)  # fmt: skip
MOVING = ("translate", "crop", "embed", "sequence")  # protocols that take --direction
SUMMARY_COLUMNS = ("accuracy", "p_top1_change", "mac", "jagged_fraction", "consistency")
COMPARED = ("accuracy", "p_top1_change", "mac", "consistency")


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (types, defaults) with the examples above kept as written."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these flags")
    add = parser.add_argument
    add(
        "--models",
        nargs="+",
        default=["tf_efficientnet_lite0"],
        help="timm names (with a pretrained tag: resnet50.tv_in1k), NAME:MODIFIER (avgpool, "
        "blurpool[N], blurpool_all[N], aps, aps_circular, rics[M]; joined by +), or checkpoint "
        f"files of train.py (offline ImageNet weights: {', '.join(OFFLINE_WEIGHTS)})",
    )
    add(
        "--pretrained",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="ImageNet weights for timm names (offline for tf_efficientnet_lite0/1/2)",
    )
    add("--num-classes", type=int | None, default=None, help="classifier size for timm names")
    add(
        "--image-size",
        type=int | None,
        default=None,
        help="canvas side in px (default: the model's native resolution, or a checkpoint's)",
    )
    add(
        "--data",
        choices=EVAL_DATASETS,
        default="sample",
        help="sample: the 27 offline photos (7 shipped photos + 20 ImageNet validation photos); "
        "imagenet_val: those 20; imagefolder: --data-root; digits: held-out digits cropped tight, "
        "placed by the protocols",
    )
    add("--data-root", type=Path | None, default=None, help="root of <root>/<synset>/<images>")
    add(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help="skip (and name) images with more pixels than this, unread: decompression bombs",
    )
    add(
        "--exif-orientation",
        choices=EXIF_ORIENTATION,
        default="ignore",
        help="ignore: measure photos as stored, as torchvision, timm and the reference scripts "
        "load them; apply: rotate them as their EXIF orientation tag says (phone photos)",
    )
    add("--num-images", type=int | None, default=None, help="seeded random subset of the data")
    add(
        "--labels",
        choices=LABEL_MODES,
        default="auto",
        help="imagefolder labels: imagenet (synset folders -> the 1000 ImageNet classes), folders "
        "(sorted folder order, for a model trained on these folders) or auto (imagenet when every "
        "folder is a synset, folders when none is; a mix is refused)",
    )
    add(
        "--experiment",
        nargs="+",
        choices=[*PRESETS, PAPER],
        default=None,
        metavar="NAME",
        help=f"paper presets with the authors' parameters: {', '.join(PRESETS)}, or '{PAPER}' for "
        f"all (default: {' '.join(DEFAULT_EXPERIMENTS)} when no --protocols are given)",
    )
    add(
        "--protocols",
        nargs="+",
        choices=PROTOCOL_CHOICES,
        default=[],
        metavar="PROTOCOL",
        help=f"protocols with the parameters below, besides the presets: {', '.join(PROTOCOL_CHOICES)}",
    )
    add(
        "--scales",
        type=float,
        nargs="+",
        default=[0.3, 0.5, 0.7],
        help="object scales of --protocols random_location",
    )
    add(
        "--location-fill",
        choices=FILL_MODES,
        default=None,
        help="background of random_location and fig6 (default: black for digits, else inpaint)",
    )
    add(
        "--max-shift",
        type=int | None,
        default=None,
        help="translate: shifts -N..N px (default: 16 px at 224, scaled to the canvas)",
    )
    add(
        "--direction",
        choices=("vertical", "horizontal", "diagonal"),
        default=None,
        help="direction of translate, crop, embed and sequence in --protocols (default: each "
        "protocol's own; presets keep their authors' direction)",
    )
    add(
        "--object-scale",
        type=float | None,
        default=None,
        help="object side / canvas for translate and fig2 (default: a checkpoint's training "
        "placement, else 0.75)",
    )
    add(
        "--nonshiftability",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="record nonshiftability (fig10, or every ordered protocol without presets)",
    )
    add(
        "--probe",
        choices=PROBE_KINDS,
        default="activity",
        help="what fig10 counts: activity (the output of every nonlinearity, the paper's "
        "'activities') or conv (raw convolution outputs, before norm and activation)",
    )
    add(
        "--resamples",
        type=int,
        default=RESAMPLES,
        help="bootstrap resamples for the 95% intervals",
    )
    add(
        "--compare",
        nargs=2,
        default=None,
        metavar="MODEL",
        help="paired differences for this pair only (default: every pair of --models)",
    )
    add("--seed", type=int, default=0)
    add("--batch-size", type=int, default=4, help="images per step (each makes T views)")
    add("--chunk-size", type=int, default=64, help="views per forward pass")
    add(
        "--num-workers",
        type=int,
        default=0,
        help="image-decoding worker processes (0: in the main process; use several on a GPU)",
    )
    add("--accelerator", default="auto")
    add("--devices", default="auto")
    add("--precision", type=str | None, default=None,
        help="Lightning precision: 32 (default), bf16-mixed or 16-mixed (autocast)")  # fmt: skip
    add("--channels-last", action=ActionYesNo(no_prefix="no-"), default=False,
        help="channels_last weights and inputs (faster on GPUs; same numbers up to rounding)")  # fmt: skip
    add("--compile", action=ActionYesNo(no_prefix="no-"), default=False,
        help="torch.compile each model (pays off on GPUs over many images)")  # fmt: skip
    add("--output", type=Path | None, default=None, help="default: runs/evaluate-<time>")
    add(
        "--logger",
        choices=LOGGER_CHOICES,
        default="csv",
        help="where the numbers go besides results.json: csv (metrics.csv), wandb (offline when "
        "not logged in; `wandb sync` uploads later) or none",
    )
    add(
        "--figures",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="draw the paper's figures as PNG under OUTPUT/figures",
    )
    add(
        "--resume",
        type=Path | None,
        default=None,
        help="continue the interrupted run in this folder with its own config.yaml: finished "
        "models are kept, the model in progress restarts from its last saved batch",
    )
    add(
        "--save-every",
        type=int,
        default=25,
        help="save the measures of the model in progress every N batches (for --resume)",
    )
    add("--overwrite", action=ActionYesNo(no_prefix="no-"), default=False,
        help="allow writing into an existing --output")  # fmt: skip
    return parser


LIST_FLAGS = ("models", "experiment", "protocols", "scales", "compare")
RESUME_CAN_CHANGE = ("num_workers", "devices", "accelerator", "save_every", "batch_size",
                     "chunk_size")  # fmt: skip  # how, not what: the numbers stay the same
NOT_CONFIG = ("config", "__default_config__", "output", "resume", "overwrite", *RESUME_CAN_CHANGE)


def config_files(argv: list[str]) -> list[Path]:
    """The ``--config`` files named in ``argv``."""
    found = []
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            found.append(Path(argv[i + 1]))
        elif token.startswith("--config="):
            found.append(Path(token.split("=", 1)[1]))
    return found


def check_config_values(path: Path) -> str | None:
    """A config file safe to parse (``check_config_file``) whose list flags are lists."""
    if problem := check_config_file(path):
        return problem
    import yaml

    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(content, dict):
        return f"--config {path} must hold flags as 'key: value' lines"
    for key in LIST_FLAGS:
        value = content.get(key)
        if value is not None and not isinstance(value, list):
            return f"--config {path}: {key} must be a list ({key}: [{value}]), got one value"
    return None


def check_args(args: Namespace) -> str | None:
    """The first problem with the flags, as a message that names the flag, else None."""
    if not 0 <= args.seed < 2**32:
        return f"--seed must be in [0, 2^32), got {args.seed}"
    if args.max_image_pixels < 1:
        return f"--max-image-pixels must be at least 1, got {args.max_image_pixels}"
    if args.num_workers < 0:
        return f"--num-workers must be >= 0, got {args.num_workers}"
    positive = {"--batch-size": args.batch_size, "--chunk-size": args.chunk_size,
                "--resamples": args.resamples, "--num-images": args.num_images or 1,
                "--image-size": args.image_size or 8}  # fmt: skip
    for flag, value in positive.items():
        if value < 1:
            return f"{flag} must be at least 1, got {value}"
    if args.image_size is not None and not 8 <= args.image_size <= 2048:
        return f"--image-size must be in [8, 2048] px, got {args.image_size}"
    if args.data == "imagefolder" and args.data_root is None:
        return "--data imagefolder needs --data-root DIR"
    if args.compare and any(m not in args.models for m in args.compare):
        return f"--compare names models that are not in --models: {args.compare}"
    return None


def load_classifier(spec: str, args: Namespace) -> tuple[InvarianceClassifier, float | None]:
    """A model from a name, ``name:modify`` or a checkpoint path, and the object scale that a
    ``train.py`` checkpoint trained at (None otherwise)."""
    overrides: dict[str, Any] = {"channels_last": args.channels_last, "compile": args.compile}
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    if spec.endswith((".ckpt", ".pt", ".pth")) or Path(spec).is_file():
        placement = checkpoint_placement(spec)
        if placement is not None and args.image_size is None:
            overrides["image_size"] = placement[0]
        return InvarianceClassifier.from_checkpoint(spec, **overrides), (
            placement[1] if placement else None
        )
    name, _, modify = spec.partition(":")
    kwargs: dict[str, Any] = {"pretrained": args.pretrained, "modify": modify or None, **overrides}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return InvarianceClassifier(name, **kwargs), None


def location_fill(args: Namespace) -> str:
    return args.location_fill or ("black" if args.data == "digits" else "inpaint")


def custom_protocols(
    args: Namespace, canvas: int, mean: tuple[float, ...], object_scale: float
) -> list[Protocol]:
    """The ``--protocols`` with the flags' parameters (``translate_mean`` -> fill ``mean``)."""
    protocols: list[Protocol] = []
    common: dict[str, Any] = {"canvas": canvas, "seed": args.seed}
    for key in args.protocols:
        name, _, fill = (
            key.rpartition("_") if key.startswith(("translate_", "scale_")) else (key, "", "")
        )
        kwargs = dict(common)
        if args.direction is not None and name in MOVING:
            kwargs["direction"] = args.direction
        if fill:
            kwargs.update(fill=fill, mean=mean)
        if name == "translate":
            kwargs.update(scale=object_scale, max_shift=args.max_shift)
        if name in ("embed", "worst_of_k"):
            kwargs["mean"] = mean
        if name == "random_location":
            protocols += [
                create_protocol(name, scale=s, fill=location_fill(args), mean=mean, **common)
                for s in args.scales
            ]
        else:
            protocols.append(create_protocol(name, **kwargs))
    return protocols


def plan_protocols(
    args: Namespace, canvas: int, mean: tuple[float, ...], object_scale: float
) -> tuple[list[Protocol], set[str] | None]:
    """Presets + custom protocols for one model's canvas, and the keys to probe (None: every
    ordered protocol)."""
    experiments = args.experiment
    if experiments is None:
        experiments = [] if args.protocols else list(DEFAULT_EXPERIMENTS)
    context = PresetContext(canvas, tuple(mean), args.seed, location_fill(args), object_scale)
    protocols, probed = build_experiments(experiments, context)
    protocols += custom_protocols(args, canvas, mean, object_scale)
    keys = [p.key for p in protocols]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two protocols share a result key: {sorted(keys)}")
    return protocols, (probed if experiments else None)


def write_per_image_csv(
    path: Path, runs: list[tuple[str, dict[str, ProtocolResult]]], namer: Callable[[int], str]
) -> None:
    """One row per image, view, protocol and model: true-class probability and top-1."""

    def rows() -> Iterator[list[Any]]:
        for model, results in runs:
            for key, result in results.items():
                if result.p_true is None or result.top1 is None:
                    continue
                positions = result.protocol.positions
                for i, index in enumerate(result.indices):
                    for view, position in enumerate(positions):
                        yield [namer(int(index)), int(result.labels[i]), model, key, view, position,
                               f"{result.p_true[i, view]:.6f}", int(result.top1[i, view])]  # fmt: skip

    header = ["image", "label", "model", "protocol", "view", "position", "p_true", "top1"]
    write_csv(path, header, rows())


def write_measures_csv(
    path: Path, runs: list[tuple[str, dict[str, ProtocolResult]]], namer: Callable[[int], str]
) -> None:
    """One row per image, protocol and model with every per-image measure (what the intervals
    resample)."""

    def rows() -> Iterator[list[Any]]:
        for model, results in runs:
            for key, result in results.items():
                for measure, values in result.values.items():
                    for i, index in enumerate(result.indices):
                        yield [namer(int(index)), int(result.labels[i]), model, key, measure,
                               f"{values[i]:.6g}"]  # fmt: skip

    write_csv(path, ["image", "label", "model", "protocol", "measure", "value"], rows())


def compare_models(
    per_image: dict[str, dict[str, ProtocolResult]],
    pairs: list[tuple[str, str]],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """``{"A - B": {protocol: {measure: {"difference", "ci95"}}}}`` on the images both measured."""
    out: dict[str, Any] = {}
    for first, second in pairs:
        rows: dict[str, Any] = {}
        for key, a in per_image[first].items():
            b = per_image[second].get(key)
            if b is None or list(a.indices) != list(b.indices) or not a.num_images:
                continue
            rows[key] = {
                m: paired_difference(a.values[m], b.values[m], resamples, seed)
                for m in a.values
                if m in b.values
            }
        out[f"{first} - {second}"] = rows
    return out


def cell(row: dict[str, Any], measure: str) -> str:
    if measure not in row:
        return "-"
    interval = row.get(f"{measure}_ci95")
    return f"{row[measure]:.3f}" + (f" [{interval[0]:.2f},{interval[1]:.2f}]" if interval else "")


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Rows: protocol key, then model; cells: value [95% interval]."""
    width = max([len(m) for m in results] + [5])
    keys = list(dict.fromkeys(k for rows in results.values() for k in rows))
    header = f"{'protocol':30s} {'model':{width}s} " + " ".join(
        f"{c:>22s}" for c in SUMMARY_COLUMNS
    )
    print(header)
    print("-" * len(header))
    for key in keys:
        for model, rows in results.items():
            row = rows.get(key, {})
            if "accuracy" in row:
                print(
                    f"{key:30s} {model:{width}s} "
                    + " ".join(f"{cell(row, c):>22s}" for c in SUMMARY_COLUMNS)
                )


def print_comparisons(comparisons: dict[str, Any]) -> None:
    """Paired differences whose interval excludes 0, per pair of models."""
    for pair, rows in comparisons.items():
        lines = [
            f"  {key:30s} {m:15s} {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            for key, measures in rows.items()
            for m, d in measures.items()
            if m in COMPARED and (d["ci95"][0] > 0 or d["ci95"][1] < 0)
        ]
        print(f"\n{pair}: {len(lines)} differences with a 95% interval that excludes 0"
              + (" (accuracy, P(top-1 change), MAC, consistency)" if lines else ""))  # fmt: skip
        for line in lines:
            print(line)


def print_published(published: dict[str, Any]) -> None:
    """The published Table 1 beside our Crop and Black means, per model that has a row."""
    for spec, row in published.items():
        print(f"\ntable1, {spec} beside the published {row['paper_name']} ({row['weights']}; "
              "sizes combined as the mean over each protocol's sizes):")  # fmt: skip
        for protocol in ("crop", "black"):
            for measure, cell in row.get(protocol, {}).items():
                low, high = cell["ci95"]
                verdict = "inside" if cell["inside"] else "OUTSIDE"
                print(f"  {protocol:5s} {measure:14s} published {cell['published']:.3f}  ours "
                      f"{cell['ours']:.3f} [{low:.3f}, {high:.3f}]  {verdict} our interval")  # fmt: skip


def label_namer(args: Namespace) -> Callable[[int], str]:
    """Class index -> a name for figure titles: ImageNet names, folder names or digits."""
    if args.data == "digits":
        return str
    if args.data == "imagefolder":
        _, classes = imagefolder_items(args.data_root)
        if len(classes) != 1000:  # folders not named by ImageNet synsets: labels are folder order
            return classes.__getitem__
    return imagenet_description


def image_namer(dataset: torch.utils.data.Dataset) -> Callable[[int], str]:
    """Data set index -> the image's name (relative path or sample name) without reading it."""
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        base = base.dataset
    items = getattr(base, "items", None)
    return (lambda i: items[i].name) if items is not None else str


def resolve_output(args: Namespace) -> Path:
    """The run folder; DDP worker processes (which re-run this script) reuse rank 0's choice."""
    if args.output is not None:
        return args.output
    if OUTPUT_ENV not in os.environ:
        os.environ[OUTPUT_ENV] = str(default_run_folder("evaluate"))
    return Path(os.environ[OUTPUT_ENV])


def run_config(
    spec: str, args: Namespace, canvas: int, object_scale: float, protocols: list[Protocol]
) -> dict[str, Any]:
    """What one model's W&B run records as its config (model, modifier, checkpoint, data and
    protocol parameters)."""
    is_checkpoint = spec.endswith((".ckpt", ".pt", ".pth")) or Path(spec).is_file()
    name, _, modify = ("", "", "") if is_checkpoint else spec.partition(":")
    return {
        "model": spec, "architecture": name or None, "modifier": modify or None,
        "checkpoint": spec if is_checkpoint else None, "pretrained": args.pretrained,
        "data": args.data, "data_root": str(args.data_root) if args.data_root else None,
        "num_images": args.num_images, "canvas": canvas, "object_scale": object_scale,
        "experiments": args.experiment, "seed": args.seed, "resamples": args.resamples,
        "protocols": {p.key: p.describe() for p in protocols},
    }  # fmt: skip


def remaining_subset(dataset: Dataset, done: set[int]) -> Dataset:
    """``dataset`` without the items whose data set index is in ``done`` (indices kept)."""
    if not done:
        return dataset
    keep = [pos for pos, index in enumerate(dataset_indices(dataset)) if index not in done]
    return Subset(dataset, keep)


def dataset_indices(dataset: Dataset) -> list[int]:
    """The data set index (the ``"index"`` a sample reports) of every position, unread."""
    if isinstance(dataset, Subset):
        inner = dataset_indices(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return list(range(len(dataset)))  # type: ignore[arg-type]


class StopRequests:
    """SIGINT / SIGTERM handlers that ask the evaluator to stop at the next batch boundary (a
    second signal stops at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum
        print(f"\nsignal {signum}: stopping after this batch (again to stop now)", file=sys.stderr)

    def __enter__(self) -> StopRequests:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __call__(self) -> int | None:
        return self.signum


@dataclass
class Measured:
    """One model's measurement, or an error message."""

    evaluator: InvarianceEvaluator
    dataset: Dataset
    trainer: pl.Trainer
    config: dict[str, Any]
    subsampling: Any
    weights: str | None


def weights_name(spec: str, args: Namespace, classifier: InvarianceClassifier) -> str | None:
    """timm's name of the pretrained weights (``architecture.tag``, e.g. ``resnet50.tv_in1k``)
    of an unmodified pretrained model; None for checkpoints, modified or random models (no
    published number applies to them)."""
    if not args.pretrained or is_checkpoint(spec) or ":" in spec:
        return None
    cfg = getattr(classifier.model, "pretrained_cfg", None) or {}
    if not cfg.get("architecture"):
        return None
    return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]


def build_model(
    spec: str, args: Namespace
) -> tuple[InvarianceClassifier, list[Protocol], set[str] | None, Dataset, float]:
    """The classifier, its protocols (and keys to probe), its data set and object scale. Seeded
    per model: random weights (``--no-pretrained``) do not depend on the models before it, so a
    resumed run rebuilds the same model."""
    pl.seed_everything(args.seed, verbose=False)
    classifier, trained_scale = load_classifier(spec, args)
    config = classifier.data_config
    object_scale = args.object_scale or trained_scale or 0.75
    protocols, probed = plan_protocols(
        args, classifier.image_size, tuple(config["mean"]), object_scale
    )
    dataset = build_eval_dataset(
        args.data, classifier.image_size, args.data_root, config.get("crop_pct", 0.875),
        config.get("interpolation", "bicubic"), args.num_images, args.seed,
        keep_original=any(p.uses_original for p in protocols),
        crop_mode=config.get("crop_mode"), labels=args.labels,
        max_pixels=args.max_image_pixels, exif_orientation=args.exif_orientation,
    )  # fmt: skip
    return classifier, protocols, probed, dataset, object_scale


def measure_model(
    spec: str, args: Namespace, is_main: bool, partial: Path, stop: StopRequests
) -> Measured | str:
    """Build one model, its data and protocols, and measure it (continuing from ``partial`` when
    an interrupted run saved states there); an error message on bad input. Raises
    ``Interrupted`` when a signal stops it."""
    try:
        classifier, protocols, probed, dataset, object_scale = build_model(spec, args)
    except (BackboneError, ValueError, FileNotFoundError) as err:
        return f"{spec}: {err}"
    canvas = classifier.image_size
    subsampling = measure_subsampling(classifier.model, canvas)
    evaluator = InvarianceEvaluator(
        classifier, protocols, chunk_size=args.chunk_size, probe=args.nonshiftability,
        probe_kind=args.probe,
        probe_keys=probed, keep_per_image=True, resamples=args.resamples, seed=args.seed,
        partial_path=partial, save_every=args.save_every, stop_signal=stop,
    )  # fmt: skip
    done = evaluator.load_partial(partial, restore=is_main)
    remaining = remaining_subset(dataset, done)
    if is_main:
        print(f"[{spec}] {subsampling.describe()}")
        resumed = f", {len(done)} already measured (resumed)" if done else ""
        print(
            f"[{spec}] {len(dataset)} images{resumed}, canvas {canvas} px, object scale {object_scale:g}"
        )
        for protocol in protocols:
            print(f"    {protocol.describe()}")
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, precision=args.precision, logger=False,
        enable_checkpointing=False, enable_model_summary=False,
        callbacks=[ImagesPerSecondBar(sum(p.num_views for p in protocols))],
    )  # fmt: skip
    try:
        trainer.test(
            evaluator,
            datamodule=EvalDataModule(remaining, args.batch_size, args.num_workers),
            verbose=False,
        )
    except SIGTERMException as stopped:  # Lightning's own stop, after a whole batch
        evaluator.save_partial()
        raise Interrupted(signal.SIGTERM) from stopped
    config = run_config(spec, args, canvas, object_scale, protocols)
    return Measured(
        evaluator, dataset, trainer, config, subsampling, weights_name(spec, args, classifier)
    )


def preflight(args: Namespace) -> str | None:
    """Every model resolved and its head checked against the data's labels, before any work."""
    try:
        labels = data_labels(args.data, args.data_root, args.labels)
        models = [resolve_model(spec, args.num_classes) for spec in args.models]
    except (BackboneError, LabelMappingError, FileNotFoundError, ValueError) as err:
        return str(err)
    for model in models:
        if problem := check_head(model, labels):
            return problem
    return None


def resume_args(parser: ArgumentParser, args: Namespace) -> Namespace | str:
    """The arguments of the interrupted run in ``args.resume``: its own config.yaml, checked
    against the config the run started with (results.json). Flags given beside ``--resume``
    are applied when they change how the run computes, not what (``RESUME_CAN_CHANGE``), and
    refused otherwise."""
    folder = Path(args.resume)
    config = folder / "config.yaml"
    if not config.is_file():
        return f"--resume {folder}: no config.yaml there (not an evaluate.py run folder)"
    if problem := check_config_values(config):
        return f"--resume {folder}: {problem}"
    defaults = parser.get_defaults()
    given = {
        key: value
        for key, value in vars(args).items()
        if key not in ("resume", "config", "__default_config__") and value != defaults.get(key)
    }
    refused = [key for key in given if key not in RESUME_CAN_CHANGE]
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        return (
            f"--resume {folder} continues the run with its own config.yaml; {flags} would change "
            "what it measures: drop them, or start a new run with --output"
        )
    previous: dict[str, Any] = {}
    if (folder / "results.json").is_file():
        previous = read_json(folder / "results.json")
    if previous.get("complete"):
        return f"--resume {folder}: that run is complete; nothing to resume"
    resumed = parser.parse_args(["--config", str(config)])
    if "config" in previous:
        edited = config_differences(previous["config"], run_settings(resumed))
        if edited:
            return (
                f"--resume {folder}: config.yaml was edited after the run started ({edited}); "
                "restore it, or start a new run with the new settings"
            )
    for key, value in given.items():
        setattr(resumed, key, value)
        print(f"resume: applying --{key.replace('_', '-')} {value}", file=sys.stderr)
    resumed.output, resumed.resume, resumed.overwrite = folder, folder, True
    return resumed


def run_settings(args: Namespace) -> dict[str, Any]:
    """The settings that decide a run's numbers (results.json ``config``), JSON-ready."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "config"}


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    """``"key: old -> new, ..."`` for the settings that decide the numbers and differ."""
    keys = [k for k in {**before, **now} if k not in NOT_CONFIG]
    return ", ".join(
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in keys
        if before.get(key) != now.get(key)
    )


def model_file(output: Path, position: int) -> Path:
    return output / "per_image" / f"model{position}.npz"


def finished_model(
    spec: str, position: int, args: Namespace, output: Path, previous: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, ProtocolResult], ModelRun | None] | None:
    """A model that an interrupted run had finished: its rows, per-image results and figure data."""
    path = model_file(output, position)
    if spec not in previous.get("models", {}) or not path.is_file():
        return None
    _, protocols, _, dataset, _ = build_model(spec, args)
    per_image, curves = load_model_results(path, protocols)
    rows = previous["models"][spec]
    run = ModelRun(spec, rows, per_image, protocols, dataset, curves) if args.figures else None
    return rows, per_image, run


def record_model(
    spec: str,
    position: int,
    measured: Measured,
    output: Path,
    results: dict[str, Any],
) -> str | None:
    """Put a measured model into ``results`` and on disk (``results.json`` rewritten, its
    per-image results saved for ``--resume``, its in-progress states removed); a problem with
    its data as a message."""
    evaluator = measured.evaluator
    if evaluator.skipped and not evaluator.per_image[evaluator.protocols[0].key].num_images:
        name, reason = evaluator.skipped[0]
        return (
            f"{spec}: all {len(evaluator.skipped)} images were unreadable (first: {name}: {reason})"
        )
    subsampling = measured.subsampling
    results["subsampling"][spec] = {
        "factor": subsampling.factor,
        "invariant_fraction": subsampling.invariant_fraction,
        "layers": [list(layer) for layer in subsampling.layers],
    }
    results["models"][spec] = evaluator.results
    results["weights"][spec] = measured.weights
    results["skipped"][spec] = [{"image": n, "reason": r} for n, r in evaluator.skipped]
    save_model_results(model_file(output, position), evaluator.per_image, evaluator.curves)
    write_json(output / "results.json", results)  # after every model
    for stale in (output / "partial").glob(f"model{position}.rank*.pt"):
        stale.unlink()
    return None


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for path in config_files(argv):  # before jsonargparse reads it: a hostile file fails fast
        if problem := check_config_values(path):
            print(f"error: {problem}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    try:
        if args.resume is not None:
            args = resume_args(parser, args)
            if isinstance(args, str):
                print(f"error: {args}", file=sys.stderr)
                return 2
    except RunFolderError as err:
        print(f"error: --resume: {err}", file=sys.stderr)
        return 2
    problem = check_args(args) or check_runtime(args.accelerator, args.precision, args.devices)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    is_main = rank_zero_only.rank == 0
    output = resolve_output(args)
    problem = preflight(args)  # models and labels first: the output may sit in the data root
    if is_main and not problem:
        problem = check_output(output) or (
            None if args.resume else overwrite_refusal(output, args.overwrite)
        )
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        if args.output is None and is_main and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # the fresh default folder: leave nothing behind
        return 2
    try:
        with RunLock(output) if is_main else nullcontext():
            return run(parser, args, output, is_main)
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run_manifest(args: Namespace) -> dict[str, Any]:
    """What the run measures: its images in order (``data_manifest``), read without decoding."""
    dataset = build_eval_dataset(args.data, 32, args.data_root, num_images=args.num_images,
                                 seed=args.seed, labels=args.labels)  # fmt: skip
    return data_manifest(dataset)


def start_files(parser: ArgumentParser, args: Namespace, output: Path) -> dict[str, Any]:
    """Before the first model: what the run is (config.yaml, manifest.json) and results.json
    saying nothing is complete, so a run killed at any moment can be resumed; or, resuming,
    the checks that the data are what the run measured. Returns the earlier results."""
    manifest = run_manifest(args)
    previous = read_json(output / "results.json") if (output / "results.json").is_file() else {}
    if args.resume is not None and (output / MANIFEST).is_file():
        if change := manifest_changes(read_json(output / MANIFEST), manifest):
            raise DataChanged(
                f"--resume {output}: {change}; restore the data, or start a new run on it"
            )
        return previous
    if args.resume is None:
        write_atomically(output / "config.yaml", parser.dump(args))
    write_json(output / MANIFEST, manifest)
    if not previous:
        write_json(output / "results.json", {"complete": False, "config": run_settings(args),
                                             "models": {}, "missing": list(args.models)})  # fmt: skip
    return previous


class DataChanged(ValueError):
    """The data of a run changed before it was resumed."""


def run(parser: ArgumentParser, args: Namespace, output: Path, is_main: bool) -> int:
    """Measure every model of ``args`` into ``output`` (continuing an interrupted run), then
    write the outputs; results.json says ``complete: true`` only once every file is written."""
    pl.seed_everything(args.seed, verbose=False)
    previous: dict[str, Any] = {}
    if is_main:
        try:
            previous = start_files(parser, args, output)
        except DataChanged as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    results: dict[str, Any] = {
        "complete": False,
        "config": run_settings(args),
        "models": {},
        "subsampling": dict(previous.get("subsampling", {})),
        "weights": dict(previous.get("weights", {})),
        "skipped": dict(previous.get("skipped", {})),
    }
    runs: list[ModelRun] = []
    per_image: dict[str, dict[str, ProtocolResult]] = {}
    configs: dict[str, dict[str, Any]] = {}
    namer = None
    with StopRequests() as stop:
        for position, spec in enumerate(args.models):
            kept = finished_model(spec, position, args, output, previous) if args.resume else None
            if kept is not None:
                results["models"][spec], per_image[spec], run = kept
                runs += [run] if run is not None else []
                print(f"[{spec}] finished before the interruption: kept")
                continue
            try:
                measured = measure_model(
                    spec, args, is_main, output / "partial" / f"model{position}", stop
                )
            except Interrupted as stopped:
                if is_main:
                    results["missing"] = args.models[position:]
                    write_json(output / "results.json", results)
                    print(f"\ninterrupted during {spec}: results.json says complete: false; "
                          f"continue with: python evaluate.py --resume {output}", file=sys.stderr)  # fmt: skip
                return 128 + stopped.signum
            if isinstance(measured, str):
                print(f"error: {measured}", file=sys.stderr)
                return 2
            if measured.trainer.global_rank != 0:
                continue
            results["missing"] = args.models[position + 1 :]
            if problem := record_model(spec, position, measured, output, results):
                print(f"error: {problem}", file=sys.stderr)
                return 1
            configs[spec], namer = measured.config, image_namer(measured.dataset)
            per_image[spec] = measured.evaluator.per_image
            if args.figures:
                runs.append(ModelRun.from_evaluator(spec, measured.evaluator, measured.dataset))
            del measured
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if not is_main:
        return 0
    results.pop("missing", None)
    pairs = [tuple(args.compare)] if args.compare else list(combinations(args.models, 2))
    results["comparisons"] = compare_models(per_image, pairs, args.resamples, args.seed)  # type: ignore[arg-type]
    contrasts = {
        spec: table1_contrast(rows, resamples=args.resamples, seed=args.seed)
        for spec, rows in per_image.items()
    }
    if any(contrasts.values()):
        results["table1_black_minus_crop"] = contrasts
        published = {
            spec: row
            for spec, contrast in contrasts.items()
            if (row := beside_published(contrast, results["weights"].get(spec))) is not None
        }
        if published:
            results["table1_published"] = published
    write_json(output / "results.json", results)  # every number, still complete: false
    if namer is None:
        namer = image_namer(build_eval_dataset(args.data, 32, args.data_root, num_images=args.num_images,
                                               seed=args.seed, labels=args.labels))  # fmt: skip
    if problem := write_outputs(args, output, results, per_image, runs, configs, namer):
        print(f"error: {problem}; results.json says complete: false, and python evaluate.py "
              f"--resume {output} writes the missing outputs", file=sys.stderr)  # fmt: skip
        return 1
    results["complete"] = True
    write_json(output / "results.json", results)  # last: every other file is written
    return 0


def write_outputs(
    args: Namespace,
    output: Path,
    results: dict[str, Any],
    per_image: dict[str, dict[str, ProtocolResult]],
    runs: list[ModelRun],
    configs: dict[str, dict[str, Any]],
    namer: Callable[[int], str],
) -> str | None:
    """CSVs, skipped.csv, the table, figures and loggers (before results.json says complete);
    the first output that could not be written, as a message, or None."""
    write_per_image_csv(output / "per_image.csv", list(per_image.items()), namer)
    write_measures_csv(output / "per_image_measures.csv", list(per_image.items()), namer)
    skipped = [
        [model, s["image"], s["reason"]] for model, rows in results["skipped"].items() for s in rows
    ]
    (output / "skipped.txt").unlink(missing_ok=True)  # the tab-separated form of older runs
    if skipped:
        write_csv(output / "skipped.csv", ["model", "image", "reason"], skipped)
        print(
            f"skipped {len(skipped)} unreadable images (names and reasons in skipped.csv)",
            file=sys.stderr,
        )
    print()
    print_table(results["models"])
    print_comparisons(results["comparisons"])
    for spec, contrast in results.get("table1_black_minus_crop", {}).items():
        if "p_top1_change" in contrast:
            c = contrast["p_top1_change"]
            print(f"\ntable1, {spec}: P(top-1 change) Black {c['black']:.3f} - Crop {c['crop']:.3f} "
                  f"= {c['black_minus_crop']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]")  # fmt: skip
    print_published(results.get("table1_published", {}))
    figures = {}
    if runs:
        try:
            figures = write_figures(runs, output / "figures", label_namer(args))
        except Exception as err:  # the numbers are written; the figures are not
            return f"the figures could not be drawn ({type(err).__name__}: {err})"
    print(f"\nresults: {output / 'results.json'}\nper-image: {output / 'per_image.csv'}")
    if figures:
        print(f"figures: {output / 'figures'} ({len(figures)} PNG)")
    rows = [r for spec, res in per_image.items() for r in per_image_summary(spec, res, namer)]
    if args.logger == "wandb":  # a group, one run per model
        log_evaluation_to_wandb(output, output.name, results["models"], configs, rows, figures)
    elif args.logger == "csv":
        log_evaluation(
            create_logger("csv", output, output.name, {}), results["models"], rows, figures
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
