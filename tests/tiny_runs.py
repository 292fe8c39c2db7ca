"""evaluate.py flags for fast real runs in the tests (resnet10t with random weights, 32 px),
shared by the test files that run evaluate.py (imported as ``from tiny_runs import ...``)."""

from __future__ import annotations

from pathlib import Path

SYNSETS = ("n01440764", "n01443537")
_FAST = [
    "--models",
    "resnet10t",
    "--no-pretrained",
    "--image-size",
    "32",
    "--accelerator",
    "cpu",
    "--devices",
    "1",
    "--logger",
    "none",
    "--no-figures",
]
# On an ImageNet-style folder (add folder_data(root)): one protocol, a save every batch.
TINY_FOLDER = [
    *_FAST,
    "--resamples",
    "50",
    "--protocols",
    "translate_black",
    "--no-nonshiftability",
    "--batch-size",
    "2",
    "--save-every",
    "1",
]
# On the held-out digits, a 10-class head.
TINY_DIGITS = [*_FAST, "--num-classes", "10", "--data", "digits"]


def folder_data(root: Path) -> list[str]:
    """The flags that point evaluate.py at an image folder."""
    return ["--data", "imagefolder", "--data-root", str(root)]
