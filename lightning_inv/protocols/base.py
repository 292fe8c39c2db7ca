"""Protocols: each turns a batch of images into T views per image (docs/design.md, "Protocols").

A protocol is called as ``protocol(images, indices, originals)`` with images float [B, 3, H, W]
in [0, 1] (the model's eval preprocessing: resize and centre crop to the canvas), the data set
indices [B] of those images and, optionally, the original photos (a list of B float [3, h, w] in
[0, 1], any sizes). It returns views [B, T, 3, canvas, canvas] on the images' device. Protocols
that cut windows or crops from the photo (``uses_original``) start from the original, as the
authors' script does, so the photo is resampled once; without ``originals`` they take ``images``
as the photo. Random choices are drawn from a generator seeded by (seed, index), so a sample's
views are identical every call, every epoch and on every rank.

Each protocol class declares the measures that apply to it (``measures``, names of
``lightning_inv.measuring.measures.MEASURES``) and whether its views form an ordered sweep (``ordered``:
consecutive pairs, Fig. 1-2 curves, nonshiftability). A ``differential`` protocol
(``lightning_inv.protocols.lie``) has derivatives taken at its view instead of more views.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_inv.protocols.fill import check_fill, compose

Direction = Literal["vertical", "horizontal", "diagonal"]
DIRECTIONS: dict[str, tuple[int, int]] = {
    "vertical": (1, 0),
    "horizontal": (0, 1),
    "diagonal": (1, 1),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def check_images(images: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is float [B, 3, H, W] with values in [0, 1]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB; got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1]; got {images.dtype} (divide by 255)")
    if not images.numel():
        return
    low, high = torch.aminmax(images)  # one pass over the images
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"images must be RGB in [0, 1] before normalisation; got values in "
            f"[{low.item():.3g}, {high.item():.3g}]"
        )


def resize(images: Tensor, side: int | tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize of [B, 3, H, W] to ``side`` (px), clamped to [0, 1]."""
    size = (side, side) if isinstance(side, int) else side
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(
        images, size=size, mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def shorter_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``side`` px, as torchvision's ``Resize(side)``
    computes it: the longer side is ``int(side * long / short)`` (truncated)."""
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


def centre_crop_corner(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``CenterCrop(crop)``: ``int(round((size - crop) / 2))`` per
    axis (Python's round, halves to even)."""
    return round((height - crop) / 2.0), round((width - crop) / 2.0)


def resize_shorter(image: Tensor, side: int) -> Tensor:
    """One photo [3, h, w] with its shorter side resized to ``side`` px (torchvision's
    ``Resize(side)`` geometry; antialiased bilinear)."""
    return resize(image[None], shorter_side_size(*image.shape[-2:], side))[0]


def resize_cover(image: Tensor, side: int) -> Tensor:
    """One photo [3, h, w] -> [3, side, side]: torchvision's ``Resize(side)`` then
    ``CenterCrop(side)`` (the usual eval preprocessing, without the crop fraction)."""
    resized = resize_shorter(image, side)
    top, left = centre_crop_corner(*resized.shape[-2:], side)
    return resized[:, top : top + side, left : left + side]


def random_resized_crop_box(
    height: int, width: int, area: float, generator: np.random.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with ``area`` x the photo's area, as torchvision's
    ``RandomResizedCrop.get_params`` draws it (aspect ratio log-uniform in [3/4, 4/3], 10 tries,
    then the central crop clamped to that ratio range), from a seeded NumPy generator."""
    total = height * width
    low, high = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = total * area
        ratio = math.exp(generator.uniform(low, high))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(generator.integers(0, height - h + 1))
            left = int(generator.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif in_ratio > 4 / 3:
        h, w = height, round(height * (4 / 3))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_generator(seed: int, index: int) -> np.random.Generator:
    """The generator for one sample: the same (seed, index) always draws the same numbers."""
    return np.random.default_rng([int(seed), int(index)])


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def check_scale(scale: float) -> None:
    if not 0 < scale <= 1:
        raise ValueError(f"object scale must be in (0, 1], got {scale}")


SWEEP_MEASURES = (
    "accuracy",
    "top5_accuracy",
    "true_class_probability",
    "p_top1_change",
    "any_top1_change",
    "mac",
    "mad",
    "jaggedness_mean",
    "jagged_fraction",
    "consistency",
)
PAIR_MEASURES = ("accuracy", "top5_accuracy", "p_top1_change", "any_top1_change", "consistency")
SINGLE_MEASURES = ("accuracy", "top5_accuracy")


@dataclass
class Protocol(ABC):
    """Base class. ``label`` renames the protocol's result key (presets use it, e.g.
    ``table1_crop_s0.4``); ``measures`` and ``ordered`` say which measures and figures apply."""

    canvas: int = 224
    seed: int = 0
    label: str | None = None
    name: ClassVar[str] = ""
    measures: ClassVar[tuple[str, ...]] = SWEEP_MEASURES
    ordered: ClassVar[bool] = True
    sweep: ClassVar[bool] = False
    uses_original: ClassVar[bool] = False
    differential: ClassVar[bool] = False
    axis_label: ClassVar[str] = "view"

    def __post_init__(self) -> None:
        if self.canvas < 8:
            raise ValueError(f"canvas must be at least 8 px, got {self.canvas}")

    @property
    @abstractmethod
    def num_views(self) -> int:
        """T, the number of views per image."""

    @property
    def num_rows(self) -> int:
        """Rows of logits per image the engine returns: the T views, or for a differential
        protocol the view's logits and its logit derivatives (``LieDerivative``)."""
        return self.num_views

    @property
    def positions(self) -> list[float]:
        """The x-axis value of each view for plots (shift in px, side in px, ...)."""
        return list(range(self.num_views))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The view pairs (a, b) that the pair measures compare (P(top-1 change), any change,
        and consistency for unordered protocols): consecutive views (t, t + 1) of an ordered
        sweep; none for unordered protocols unless they draw pairs."""
        return [(t, t + 1) for t in range(self.num_views - 1)] if self.ordered else []

    @property
    def key(self) -> str:
        """Name of this protocol variant in results (e.g. ``translate_inpaint``): ``label`` if set."""
        return self.label or self.default_key

    @property
    def default_key(self) -> str:
        return self.name

    def describe(self) -> str:
        """One line with the parameters that decide the views (printed by ``evaluate.py``)."""
        fields = {k: v for k, v in vars(self).items() if k not in ("label", "mean", "grid", "seed")}
        return f"{self.key}: {self.num_views} views, " + ", ".join(
            f"{k}={v}" for k, v in fields.items()
        )

    @abstractmethod
    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        """[B, 3, H, W] (+ the original photos) -> [B, T, 3, canvas, canvas]; inputs checked."""

    def __call__(
        self,
        images: Tensor,
        indices: Tensor | Sequence[int] | None = None,
        originals: Sequence[Tensor] | None = None,
        validate_args: bool = True,
    ) -> Tensor:
        """Views [B, T, 3, canvas, canvas]; ``validate_args=False`` skips the value-range check
        of ``images`` (it reads values, a host-device synchronisation on a GPU), as torchmetrics'
        ``validate_args`` does: callers check the first batch of a data set and trust the rest."""
        if validate_args:
            check_images(images)
        if indices is None:
            indices = torch.arange(len(images))
        indices = torch.as_tensor(indices).view(-1)
        if len(indices) != len(images):
            raise ValueError(f"{len(indices)} indices for {len(images)} images")
        if originals is None:
            photos = list(images)
        else:
            if len(originals) != len(images):
                raise ValueError(f"{len(originals)} original photos for {len(images)} images")
            photos = [o.to(images.device, images.dtype) for o in originals]
        return self.make_views(images, indices, photos)


@dataclass
class FilledProtocol(Protocol):
    """A protocol whose views leave part of the canvas to a fill mode."""

    fill: str = "inpaint"
    mean: tuple[float, float, float] = IMAGENET_MEAN

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fill(self.fill)

    @property
    def default_key(self) -> str:
        return f"{self.name}_{self.fill}"

    def _compose(self, objects: Tensor, offsets: Tensor, source: Tensor | None = None) -> Tensor:
        return compose(objects, offsets, self.canvas, self.fill, self.mean, source)

    def _sweep(
        self, objects: Tensor, corner: tuple[int, int], direction: str, shifts: list[float]
    ) -> Tensor:
        """``objects`` [B, 3, s, s] pasted with their top-left corner at ``corner + shift`` along
        ``direction`` for every shift -> [B, T, 3, canvas, canvas]."""
        dy, dx = DIRECTIONS[direction]
        moved = torch.tensor(shifts)  # CPU: see compose()
        offsets = torch.stack([corner[0] + dy * moved, corner[1] + dx * moved], dim=1)  # [T, 2]
        b, t = len(objects), len(shifts)
        source = torch.arange(b).repeat_interleave(t)  # views j * t .. j * t + t - 1: object j
        views = self._compose(objects, offsets.repeat(b, 1), source)
        return views.view(b, t, 3, self.canvas, self.canvas)


def drawn_pairs(count: int) -> list[tuple[int, int]]:
    """Views (2k, 2k + 1), k < count: the pairs of a protocol that draws ``count`` pairs."""
    return [(2 * k, 2 * k + 1) for k in range(count)]
