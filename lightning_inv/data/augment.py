"""Training augmentation with albumentations, set from a config, and repeatable.

Every sample's randomness comes from ``(seed, epoch, index)`` alone: ``EpochSeededSampler`` hands
the dataset ``epoch * N + index`` and ``AugmentedDataset`` seeds its albumentations pipeline with
it. So a run repeats exactly, with any number of workers, and a run resumed from a checkpoint at an
epoch boundary sees the same images as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


@dataclass
class Augmentation:
    """Strength of each training augmentation (all off by default: the baseline).

    Attributes:
        translate: largest shift as a fraction of the image side, in each direction (``A.Affine``).
        scale: range of the zoom factor (``A.Affine``); ``(1, 1)`` is off.
        rotate: largest rotation in degrees (``A.Affine``).
        random_resized_crop: area fraction range of ``A.RandomResizedCrop`` (``None`` is off).
        hflip: probability of a horizontal flip (leave 0 for digits).
        fill: value of the uncovered border after an affine move, in [0, 255] units of uint8 images
            and [0, 1] of float images.
    """

    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    random_resized_crop: tuple[float, float] | None = None
    hflip: float = 0.0
    fill: float = 0.0

    def problem(self, prefix: str = "augmentation") -> str | None:
        """The first setting out of its range, as a message naming ``{prefix}.{setting}``, or
        None. Checked when a data module takes the augmentation (not while a command line is
        parsed, where an exception becomes a page of nested parser errors)."""
        if not 0 <= self.translate < 1:
            return f"{prefix}.translate is a fraction of the side in [0, 1), got {self.translate}"
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            return (
                f"{prefix}.scale must be an increasing positive range [low, high], got {self.scale}"
            )
        if not 0 <= self.hflip <= 1:
            return f"{prefix}.hflip is a probability in [0, 1], got {self.hflip}"
        if self.rotate < 0:
            return f"{prefix}.rotate is the largest rotation in degrees, >= 0, got {self.rotate}"
        crop = self.random_resized_crop
        if crop is not None and not (len(crop) == 2 and 0 < crop[0] <= crop[1] <= 1):
            return f"{prefix}.random_resized_crop is an area range in (0, 1], got {crop}"
        return None

    @property
    def affine(self) -> bool:
        return self.translate > 0 or self.scale != (1.0, 1.0) or self.rotate > 0


def build_transform(augmentation: Augmentation | None, size: int) -> A.Compose | None:
    """The albumentations pipeline for images of ``size`` px (``None`` when nothing is on);
    ``ValueError`` for a setting out of its range."""
    if augmentation is None:
        return None
    if problem := augmentation.problem():
        raise ValueError(problem)
    steps: list[A.BasicTransform] = []
    if augmentation.random_resized_crop is not None:
        steps.append(A.RandomResizedCrop((size, size), scale=augmentation.random_resized_crop))
    if augmentation.affine:
        steps.append(
            A.Affine(
                translate_percent=(-augmentation.translate, augmentation.translate),
                scale=augmentation.scale,
                rotate=(-augmentation.rotate, augmentation.rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=augmentation.fill,
                p=1.0,
            )
        )
    if augmentation.hflip > 0:
        steps.append(A.HorizontalFlip(p=augmentation.hflip))
    return A.Compose(steps, seed=0) if steps else None


class EpochSeededSampler(DistributedSampler):
    """A ``DistributedSampler`` (so Lightning calls ``set_epoch`` and leaves it in place under
    DDP) that yields ``epoch * len(dataset) + index``: the index plus the epoch that seeds it."""

    def __iter__(self):
        offset = self.epoch * len(self.dataset)  # type: ignore[arg-type]
        return (offset + int(i) for i in super().__iter__())


class AugmentedDataset(Dataset):
    """Wraps a dataset of ``{"image": [3, H, W] in [0, 1], ...}`` and augments its images.

    Indices ``k >= len(base)`` (from ``EpochSeededSampler``) address item ``k % len(base)`` and
    seed the transform with ``(seed, k)``, so augmentation differs per epoch but never per run.
    """

    def __init__(
        self, base: Dataset, transform: Callable[..., dict[str, Any]] | None, seed: int = 0
    ):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> dict[str, Any]:
        item = dict(self.base[key % len(self)])
        if self.transform is not None and item.get("image") is not None:
            image = (
                item["image"].permute(1, 2, 0).numpy().astype(np.float32)
            )  # HWC for albumentations
            self.transform.set_random_seed(
                int(np.random.SeedSequence([self.seed, key]).generate_state(1)[0])
            )
            out = self.transform(image=image)["image"]
            item["image"] = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).clamp(0, 1)
        return item
