"""Checks made before any model is loaded: nothing computed is lost to a bad argument.

The command-line tools check a ``--config`` file before it is parsed, the label mapping of the
data and the head size of each model (``ModelSpec``), the output folder's writability and the
Trainer's settings, then start measuring. Every message names the problem and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_inv.data.images import class_folders, resolve_labels
from lightning_inv.models.specs import ModelSpec

PRECISIONS = (
    "64",
    "32",
    "16",
    "bf16",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "32-true",
    "64-true",
    "transformer-engine",
)


@dataclass(frozen=True)
class DataLabels:
    """What the labels of a data set index: ``imagenet`` (1000 classes), ``folders`` (folder
    order) or ``digits`` (10), and how many classes that is."""

    mode: str
    num_classes: int
    source: str


def data_labels(data: str, root: Path | None = None, labels: str = "auto") -> DataLabels:
    """The label mapping ``evaluate.py`` will use for ``--data`` (decided now, never guessed)."""
    if data in ("sample", "imagenet_val"):
        return DataLabels("imagenet", 1000, f"--data {data} (ImageNet-1k labels)")
    if data == "digits":
        return DataLabels("digits", 10, "--data digits (10 digit classes)")
    assert root is not None
    names = [f.name for f in class_folders(Path(root))]
    mode, _ = resolve_labels(names, labels)
    if mode == "imagenet":
        return DataLabels("imagenet", 1000, f"{root} (synset folders -> ImageNet-1k labels)")
    return DataLabels("folders", len(names), f"{root} ({len(names)} class folders, sorted order)")


def check_head(model: ModelSpec, labels: DataLabels) -> str | None:
    """Why ``model``'s classifier cannot be scored against these labels, or None."""
    if model.num_classes == labels.num_classes:
        return None
    hint = {
        "imagenet": "evaluate a 1000-class ImageNet model on these images, or pass data labelled "
        "for this head (--data digits, --data imagefolder --labels folders)",
        "digits": "evaluate a 10-class digits checkpoint (train.py with DigitsDataModule)",
        "folders": "evaluate a model trained on these folders (--num-classes for a timm name), "
        "or, if they are ImageNet classes, name them by synset (n01440764, ...) and pass "
        "--labels imagenet",
    }[labels.mode]
    return (
        f"{model.spec} has a {model.num_classes}-class head but {labels.source} has "
        f"{labels.num_classes} classes: its numbers would be scored against the wrong classes. "
        f"{hint}"
    )


def check_output(folder: Path) -> str | None:
    """Create ``folder`` and write a probe file in it; the problem as a message, or None."""
    if folder.exists() and not folder.is_dir():
        return f"--output {folder} is a file, not a folder; pass a folder path"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        return f"cannot write to --output {folder} ({err.strerror or err}); pass a writable folder"
    return None


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
MAX_CONFIG_BYTES = 1 << 20  # a config of flags is a few KB
MAX_CONFIG_VALUES = 100_000  # values after YAML aliases are expanded


def check_config_file(path: str | Path) -> str | None:
    """Why a ``--config`` YAML file cannot be read safely, or None: missing, over 1 MB, not
    UTF-8, not YAML, or aliases that expand to more than 100,000 values (nine levels of anchors
    expand to billions: a parser that follows them hangs and fills the memory)."""
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            return f"--config {path} is {size:,} bytes; a config of flags is a few KB (limit 1 MB)"
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return f"--config {path}: no such file"
    except UnicodeDecodeError as err:
        return f"--config {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
    except OSError as err:
        return f"--config {path} cannot be read ({err.strerror or err})"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        return f"--config {path} is not valid YAML: {str(err).splitlines()[0]}"
    values = _expanded_values(root)
    if values is None or values > MAX_CONFIG_VALUES:
        return (
            f"--config {path}: its YAML aliases expand to more than {MAX_CONFIG_VALUES:,} values "
            "(or refer to themselves); write the values out instead of repeating anchors"
        )
    return None


def _expanded_values(root: object) -> int | None:
    """How many values a composed YAML node expands to (aliases counted every time they are
    used, each node sized once); None for a node that contains itself."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: object) -> int | None:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            return None
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            inner = size(child)
            if inner is None:
                return None
            total += inner
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return 0 if root is None else size(root)


def check_devices(devices: object) -> str | None:
    """``--devices``: ``auto``, a count, -1 (all) or device indices (``0,1`` or a list)."""
    text = str(devices).strip()
    if isinstance(devices, list | tuple):
        parts = [str(d) for d in devices]
    elif text == "auto" or text == "-1":
        return None
    else:
        parts = [p.strip() for p in text.strip("[]").split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts) or (len(parts) == 1 and int(parts[0]) < 1):
        return (
            f"--devices {devices!r} is not auto, a count of devices (1, 2, ...), -1 (all) or "
            "device indices (0,1)"
        )
    return None


def check_runtime(accelerator: str, precision: str | None, devices: object = "auto") -> str | None:
    """Trainer settings that would fail after the first model is loaded."""
    if str(accelerator) not in ACCELERATORS:
        return f"--accelerator {accelerator} is not one of {', '.join(ACCELERATORS)}"
    if problem := check_devices(devices):
        return problem
    if precision is not None and str(precision) not in PRECISIONS:
        return f"--precision {precision} is not one of {', '.join(PRECISIONS)}"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return f"--accelerator {accelerator}: this machine has no CUDA GPU; use --accelerator cpu"
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return "--accelerator mps: MPS is not available here; use --accelerator cpu"
    return None
