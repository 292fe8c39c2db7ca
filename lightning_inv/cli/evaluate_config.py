"""evaluate.py's settings: one typed config object, its flags, its checks, and resuming it.

``EvaluateConfig`` holds every setting with its one default; ``build_parser`` makes the flags
from it (jsonargparse: flags or ``--config`` YAML); ``check_config`` finds the first bad value;
``resume_config`` reloads an interrupted run's own config.yaml and checks it against the
settings the run started with.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from jsonargparse import (
    ActionConfigFile,
    ActionYesNo,
    ArgumentParser,
    Namespace,
)

from lightning_inv.cli.checks import check_config_file
from lightning_inv.cli.help import HelpFormatter
from lightning_inv.data.datamodules import EVAL_DATASETS
from lightning_inv.data.images import EXIF_ORIENTATION, LABEL_MODES, MAX_IMAGE_PIXELS
from lightning_inv.files import read_json
from lightning_inv.measuring.nonshiftability import PROBE_KINDS
from lightning_inv.measuring.statistics import RESAMPLES
from lightning_inv.models.backbones import OFFLINE_WEIGHTS
from lightning_inv.protocols import FILL_MODES
from lightning_inv.protocols.presets import DEFAULT_EXPERIMENTS, PAPER, PRESETS
from lightning_inv.protocols.sweeps import DEFAULT_OBJECT_SCALE
from lightning_inv.reporting.loggers import LOGGER_CHOICES

PROTOCOL_CHOICES = (
    "translate_inpaint",
    "translate_mean",
    "translate_black",
    "translate_edge",
    "crop",
    "scale_inpaint",
    "scale_mean",
    "embed",
    "random_location",
    "pair_shift",
    "circular",
    "sequence",
    "imagenet_p_translate",
    "worst_of_k",
    "lie",
)
# Default (images per step, views per forward pass, decoding processes) on each kind of device.
# The CPU's views per pass: CPU_CHUNK_AT_224 at 224 px, in inverse proportion to the canvas side
# (small passes keep the activations in the cache; docs/speed.md "Views per forward pass").
CPU_SIZES = (4, None, 0)
CPU_CHUNK_AT_224 = 16
GPU_SIZES = (64, 512, 8)
LIST_FLAGS = ("models", "experiment", "protocols", "scales", "compare")
# Flags that change how a run computes, not what (the numbers stay the same): --resume takes them.
RESUME_CAN_CHANGE = (
    "num_workers",
    "devices",
    "num_nodes",
    "accelerator",
    "save_every",
    "batch_size",
    "chunk_size",
)
NOT_SETTINGS = ("config", "__default_config__", "output", "resume", "overwrite", *RESUME_CAN_CHANGE)


@dataclass
class EvaluateConfig:
    """Every setting of ``evaluate.py`` (one field per flag; the defaults live here)."""

    models: list[str] = field(default_factory=lambda: ["tf_efficientnet_lite0"])
    pretrained: bool = True
    num_classes: int | None = None
    image_size: int | None = None
    data: str = "sample"
    data_root: Path | None = None
    max_image_pixels: int = MAX_IMAGE_PIXELS
    exif_orientation: str = "ignore"
    num_images: int | None = None
    labels: str = "auto"
    experiment: list[str] | None = None
    protocols: list[str] = field(default_factory=list)
    scales: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    location_fill: str | None = None
    max_shift: int | None = None
    direction: str | None = None
    object_scale: float | None = None
    nonshiftability: bool = True
    probe: str = "activity"
    resamples: int = RESAMPLES
    compare: list[str] | None = None
    seed: int = 0
    batch_size: int | None = None
    chunk_size: int | None = None
    num_workers: int | None = None
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str | None = None
    channels_last: bool = False
    compile: bool = False
    output: Path | None = None
    logger: str = "csv"
    figures: bool = True
    resume: Path | None = None
    save_every: int = 25
    overwrite: bool = False

    @property
    def experiments(self) -> list[str]:
        """The presets to run: ``--experiment``, else the defaults unless ``--protocols``."""
        if self.experiment is not None:
            return list(self.experiment)
        return [] if self.protocols else list(DEFAULT_EXPERIMENTS)

    def on_gpu(self) -> bool:
        """Whether the run goes to a GPU (``--accelerator``, or auto with CUDA present)."""
        if self.accelerator in ("gpu", "cuda"):
            return True
        return self.accelerator == "auto" and torch.cuda.is_available()

    def loop_sizes(self, canvas: int = 224) -> tuple[int, int, int]:
        """(images per step, views per forward pass, decoding processes) for views of
        ``canvas`` px: the flags, else ``CPU_SIZES`` or ``GPU_SIZES`` (a GPU takes large batches
        and needs its images decoded by several processes to stay busy; the numbers do not
        depend on them)."""
        batch, chunk, workers = GPU_SIZES if self.on_gpu() else CPU_SIZES
        if self.on_gpu():
            workers = min(workers, os.cpu_count() or 1)
        else:
            chunk = min(256, max(4, round(CPU_CHUNK_AT_224 * 224 / canvas)))
        return (
            self.batch_size or batch,
            self.chunk_size or chunk,
            workers if self.num_workers is None else self.num_workers,
        )

    @property
    def fill_of_locations(self) -> str:
        """Background of random locations: ``--location-fill``, else black for digits."""
        return self.location_fill or ("black" if self.data == "digits" else "inpaint")

    def settings(self) -> dict[str, Any]:
        """The settings as JSON (results.json ``config``)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


YES_NO = {"action": "yes/no"}  # each flag gets its own ActionYesNo (--x / --no-x)
FLAGS: dict[str, dict[str, Any]] = {
    "models": {
        "nargs": "+",
        "help": "timm names (with a pretrained tag: resnet50.tv_in1k), "
        "NAME:MODIFIER (avgpool, blurpool[N], blurpool_all[N], aps, aps_circular, rics[M]; "
        "joined by +), or checkpoint files of train.py (offline ImageNet weights: "
        f"{', '.join(OFFLINE_WEIGHTS)})",
    },
    "pretrained": {
        **YES_NO,
        "help": "ImageNet weights for timm names (offline for tf_efficientnet_lite0/1/2)",
    },
    "num_classes": {"type": int | None, "help": "classifier size for timm names"},
    "image_size": {
        "type": int | None,
        "help": "canvas side in px (default: the model's native resolution, or a checkpoint's)",
    },
    "data": {
        "choices": EVAL_DATASETS,
        "help": "sample: the 27 offline photos (7 shipped photos + "
        "20 ImageNet validation photos); imagenet_val: those 20; imagefolder: --data-root; "
        "digits: held-out digits cropped tight, placed by the protocols",
    },
    "data_root": {"type": Path | None, "help": "root of <root>/<synset>/<images>"},
    "max_image_pixels": {
        "type": int,
        "help": "skip (and name) images with more pixels than this, unread: decompression bombs",
    },
    "exif_orientation": {
        "choices": EXIF_ORIENTATION,
        "help": "ignore: measure photos as stored, "
        "as torchvision, timm and the reference scripts load them; apply: rotate "
        "them as their EXIF orientation tag says (phone photos)",
    },
    "num_images": {"type": int | None, "help": "seeded random subset of the data"},
    "labels": {
        "choices": LABEL_MODES,
        "help": "imagefolder labels: imagenet (synset folders -> "
        "the 1000 ImageNet classes), folders (sorted folder order, for a model trained on "
        "these folders) or auto (imagenet when every folder is a synset, folders when none "
        "is; a mix is refused)",
    },
    "experiment": {
        "nargs": "+",
        "choices": [*PRESETS, PAPER],
        "metavar": "NAME",
        "help": f"paper presets with the authors' parameters: {', '.join(PRESETS)}, "
        f"or '{PAPER}' for all (default: {' '.join(DEFAULT_EXPERIMENTS)} when no "
        "--protocols are given)",
    },
    "protocols": {
        "nargs": "+",
        "choices": PROTOCOL_CHOICES,
        "metavar": "PROTOCOL",
        "help": "protocols with the parameters below, besides the presets: "
        f"{', '.join(PROTOCOL_CHOICES)}",
    },
    "scales": {"type": float, "nargs": "+", "help": "object scales of --protocols random_location"},
    "location_fill": {
        "choices": FILL_MODES,
        "help": "background of random_location and fig6 (default: black for digits, else inpaint)",
    },
    "max_shift": {
        "type": int | None,
        "help": "translate: shifts -N..N px (default: 16 px at 224, scaled to the canvas)",
    },
    "direction": {
        "choices": ("vertical", "horizontal", "diagonal"),
        "help": "direction of "
        "translate, crop, embed and sequence in --protocols (default: each protocol's "
        "own; presets keep their authors' direction)",
    },
    "object_scale": {
        "type": float | None,
        "help": "object side / canvas for translate and fig2 "
        f"(default: a checkpoint's training placement, else {DEFAULT_OBJECT_SCALE})",
    },
    "nonshiftability": {
        **YES_NO,
        "help": "record nonshiftability (fig10, or every ordered protocol without presets)",
    },
    "probe": {
        "choices": PROBE_KINDS,
        "help": "what fig10 counts: activity (the output of every "
        "nonlinearity, the paper's 'activities') or conv (raw convolution outputs, before "
        "norm and activation)",
    },
    "resamples": {"type": int, "help": "bootstrap resamples for the 95% intervals"},
    "compare": {
        "nargs": 2,
        "metavar": "MODEL",
        "help": "paired differences for this pair only (default: every pair of --models)",
    },
    "seed": {"type": int, "help": "seeds the views of every protocol (per image)"},
    "batch_size": {
        "type": int | None,
        "help": f"images per step, each makes T views (default: {CPU_SIZES[0]} on the CPU, "
        f"{GPU_SIZES[0]} on a GPU)",
    },
    "chunk_size": {
        "type": int | None,
        "help": f"views per forward pass (default on the CPU: {CPU_CHUNK_AT_224} at 224 px, more "
        f"for smaller views, 56 at 64 px; on a GPU: {GPU_SIZES[1]})",
    },
    "num_workers": {
        "type": int | None,
        "help": f"image-decoding worker processes; 0: in the main process (default: "
        f"{CPU_SIZES[2]} on the CPU, {GPU_SIZES[2]} on a GPU, at most one per CPU core)",
    },
    "accelerator": {"help": "auto, cpu, gpu, cuda or mps"},
    "devices": {"help": "auto, a number of devices (DDP), -1 (all) or indices (0,1)"},
    "num_nodes": {
        "type": int,
        "help": "machines, each with --devices (DDP through Lightning's cluster environments: "
        "torchrun, SLURM, or MASTER_ADDR, MASTER_PORT and NODE_RANK); needs --output on a "
        "folder every node can reach",
    },
    "precision": {
        "type": str | None,
        "help": "Lightning precision: 32 (default), bf16-mixed or 16-mixed (autocast)",
    },
    "channels_last": {
        **YES_NO,
        "help": "channels_last weights and inputs (faster on GPUs; same numbers up to rounding)",
    },
    "compile": {**YES_NO, "help": "torch.compile each model (pays off on GPUs over many images)"},
    "output": {"type": Path | None, "help": "default: runs/evaluate-<time>"},
    "logger": {
        "choices": LOGGER_CHOICES,
        "help": "where the numbers go besides results.json: csv "
        "(metrics.csv), wandb (offline when not logged in; `wandb sync` uploads later) or "
        "none",
    },
    "figures": {**YES_NO, "help": "draw the paper's figures as PNG under OUTPUT/figures"},
    "resume": {
        "type": Path | None,
        "help": "continue the interrupted run in this folder with its "
        "own config.yaml: finished models are kept, the model in progress restarts from "
        "its last saved batch",
    },
    "save_every": {
        "type": int,
        "help": "save the measures of the model in progress every N batches (for --resume)",
    },
    "overwrite": {**YES_NO, "help": "allow writing into an existing --output"},
}


def build_parser(description: str = "") -> ArgumentParser:
    """The flags of ``EvaluateConfig``, each with its default and help."""
    parser = ArgumentParser(
        prog="evaluate.py", description=description, formatter_class=HelpFormatter
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these flags")
    defaults = EvaluateConfig()
    for spec in fields(EvaluateConfig):
        options = dict(FLAGS[spec.name])
        if options.get("action") == "yes/no":
            options["action"] = ActionYesNo(no_prefix="no-")
        flag = "--" + spec.name.replace("_", "-")
        parser.add_argument(flag, default=getattr(defaults, spec.name), **options)
    return parser


def from_namespace(namespace: Namespace) -> EvaluateConfig:
    """The parsed flags as the typed config (the one place a Namespace is unpacked)."""
    values = {spec.name: getattr(namespace, spec.name) for spec in fields(EvaluateConfig)}
    values["devices"] = str(values["devices"])
    return EvaluateConfig(**values)


def dump(parser: ArgumentParser, config: EvaluateConfig) -> str:
    """``config`` as the YAML of its flags (config.yaml; ``--config`` reads it back)."""
    return parser.dump(Namespace(**asdict(config)))


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


def check_config(config: EvaluateConfig) -> str | None:
    """The first bad setting, as a message that names the flag, else None."""
    if not 0 <= config.seed < 2**32:
        return f"--seed must be in [0, 2^32), got {config.seed}"
    if config.max_image_pixels < 1:
        return f"--max-image-pixels must be at least 1, got {config.max_image_pixels}"
    if config.num_workers is not None and config.num_workers < 0:
        return f"--num-workers must be >= 0, got {config.num_workers}"
    if config.num_nodes < 1:
        return f"--num-nodes must be at least 1, got {config.num_nodes}"
    if config.num_nodes > 1 and config.output is None and config.resume is None:
        return (
            f"--num-nodes {config.num_nodes} needs --output DIR on a file system every node "
            "reaches (each node would otherwise pick its own default folder)"
        )
    positive = {
        "--batch-size": 1 if config.batch_size is None else config.batch_size,
        "--chunk-size": 1 if config.chunk_size is None else config.chunk_size,
        "--resamples": config.resamples,
        "--num-images": config.num_images or 1,
        "--image-size": config.image_size or 8,
    }
    for flag, value in positive.items():
        if value < 1:
            return f"{flag} must be at least 1, got {value}"
    if config.image_size is not None and not 8 <= config.image_size <= 2048:
        return f"--image-size must be in [8, 2048] px, got {config.image_size}"
    if config.data == "imagefolder" and config.data_root is None:
        return "--data imagefolder needs --data-root DIR"
    if config.compare and any(m not in config.models for m in config.compare):
        return f"--compare names models that are not in --models: {config.compare}"
    return None


def resume_config(parser: ArgumentParser, given: Namespace) -> EvaluateConfig | str:
    """The config of the interrupted run in ``given.resume``: its own config.yaml, checked
    against the settings the run started with (results.json). Flags given beside ``--resume``
    are applied when they change how the run computes, not what (``RESUME_CAN_CHANGE``), and
    refused otherwise; a message says what is wrong. ``RunFolderError`` for a damaged file."""
    folder = Path(given.resume)
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return f"--resume {folder}: no config.yaml there (not an evaluate.py run folder)"
    if problem := check_config_values(config_file):
        return f"--resume {folder}: {problem}"
    defaults = asdict(EvaluateConfig())
    changes = {
        key: value
        for key, value in vars(given).items()
        if key in defaults and key != "resume" and value != defaults[key]
    }
    refused = [key for key in changes if key not in RESUME_CAN_CHANGE]
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        return (
            f"--resume {folder} continues the run with its own config.yaml; {flags} would change "
            "what it measures: drop them, or start a new run with --output"
        )
    previous = read_json(folder / "results.json") if (folder / "results.json").is_file() else {}
    if previous.get("complete"):
        return f"--resume {folder}: that run is complete; nothing to resume"
    config = from_namespace(parser.parse_args(["--config", str(config_file)]))
    if "config" in previous:
        edited = config_differences(previous["config"], config.settings())
        if edited:
            return (
                f"--resume {folder}: config.yaml was edited after the run started ({edited}); "
                "restore it, or start a new run with the new settings"
            )
    for key, value in changes.items():
        setattr(config, key, str(value) if key == "devices" else value)
        print(f"resume: applying --{key.replace('_', '-')} {value}", file=sys.stderr)
    config.output, config.resume, config.overwrite = folder, folder, True
    return config


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    """``"key: old -> new, ..."`` for the settings that decide the numbers and differ."""
    keys = [k for k in {**before, **now} if k not in NOT_SETTINGS]
    return ", ".join(
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in keys
        if before.get(key) != now.get(key)
    )
