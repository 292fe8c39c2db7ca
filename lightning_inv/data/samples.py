"""Real photos that ship inside installed packages, with ImageNet-1k labels.

Two sets make the offline default data of ``evaluate.py`` (docs/design.md, "Data"):

* ``SAMPLE_PHOTOS``: 7 photos of scikit-image, scikit-learn and matplotlib, each with the label a
  person gives it, checked against the offline EfficientNet-Lite models (see docs/results.md); where
  ImageNet has no exact class (a dahlia, a Falcon 9 rocket) the closest class a person would pick.
* ``imagenet_val_photos()``: the 20 ImageNet validation photos in the wheel of ``foolbox`` (MIT
  licence), ``foolbox/data/imagenet_NN_LABEL.jpg`` with LABEL the ImageNet-1k index: ImageNet's
  own labels. They are read from the installed files; foolbox itself is never imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
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


FOOLBOX_IMAGENET = re.compile(r"^foolbox/data/imagenet_(\d+)_(\d+)\.jpg$")


def imagenet_val_photos() -> list[tuple[str, Path, int]]:
    """The 20 ImageNet validation photos of the installed ``foolbox`` distribution, as
    ``(name, path, ImageNet-1k index)`` sorted by their number; an error names the fix when
    the package is missing."""
    try:
        distribution = importlib.metadata.distribution("foolbox")
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            "the ImageNet validation photos come from the foolbox wheel: pip install foolbox"
        ) from err
    photos = []
    for file in distribution.files or []:
        match = FOOLBOX_IMAGENET.match(str(file).replace(os.sep, "/"))
        if match:
            number, label = int(match.group(1)), int(match.group(2))
            photos.append(
                (f"imagenet_val_{number:02d}", Path(distribution.locate_file(file)), label)
            )
    if not photos:
        raise FileNotFoundError(
            f"no imagenet_*.jpg in the installed foolbox {distribution.version}"
        )
    return sorted(photos)
