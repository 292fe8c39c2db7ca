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
``lightning_inv.measure.MEASURES``) and whether its views form an ordered sweep (``ordered``:
consecutive pairs, Fig. 1-2 curves, nonshiftability).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_inv.protocols.fill import check_fill, compose, compose_many, fill_unknown
from lightning_inv.protocols.placement import Region, place_views

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


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _check_scale(scale: float) -> None:
    if not 0 < scale <= 1:
        raise ValueError(f"object scale must be in (0, 1], got {scale}")


SWEEP_MEASURES = (
    "accuracy", "top5_accuracy", "true_class_probability", "p_top1_change", "any_top1_change",
    "mac", "mad", "jaggedness_mean", "jagged_fraction", "consistency",
)  # fmt: skip
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
    axis_label: ClassVar[str] = "view"

    def __post_init__(self) -> None:
        if self.canvas < 8:
            raise ValueError(f"canvas must be at least 8 px, got {self.canvas}")

    @property
    @abstractmethod
    def num_views(self) -> int:
        """T, the number of views per image."""

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
class _Filled(Protocol):
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


@dataclass
class Translate(_Filled):
    """The image resized to ``round(scale * canvas)`` px and pasted at positions that step by
    ``step`` px along ``direction`` from ``-max_shift`` to ``+max_shift`` around the centre
    (paper Fig. 1-2), or around the centre of ``region``."""

    scale: float = 0.75
    max_shift: int | None = None
    step: int = 1
    direction: Direction = "vertical"
    region: Region | None = None
    sweep: ClassVar[bool] = True
    name: ClassVar[str] = "translate"
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "centred_accuracy")
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scale(self.scale)
        _check_direction(self.direction)
        dy, dx = DIRECTIONS[self.direction]
        corner = self.corner
        room = [
            min(c, self.canvas - self.side - c) for c, d in zip(corner, (dy, dx), strict=True) if d
        ]
        free = min(room)
        if self.max_shift is None:  # 16 px at 224 (the default sweep), scaled to the canvas
            self.max_shift = max(1, min(round(self.canvas * 16 / 224), free))
        if self.step < 1 or self.max_shift < 1:
            raise ValueError("step and max_shift must be >= 1 px")
        if self.max_shift > free:
            raise ValueError(
                f"view range larger than the canvas: an object of {self.side} px in a "
                f"{self.canvas} px canvas moves at most {free} px from its start "
                f"{self.corner}, asked {self.max_shift}; lower max_shift or scale"
            )

    @property
    def corner(self) -> tuple[int, int]:
        """Top-left corner (px) of the object at shift 0: centred on the canvas or the region."""
        if self.region is None:
            centre = (self.canvas - self.side) // 2
            return centre, centre
        row, col = self.region.centre(self.canvas)
        return round(row - self.side / 2), round(col - self.side / 2)

    @property
    def side(self) -> int:
        return round(self.scale * self.canvas)

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1, self.step))

    @property
    def num_views(self) -> int:
        return len(self.positions)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        return self._sweep(resize(images, self.side), self.corner, self.direction, self.positions)


@dataclass
class Crop(Protocol):
    """Windows of ``canvas`` px at offsets 0..steps-1 px along ``direction`` from one larger
    picture of ``canvas + margin`` px cut from the original photo (paper appendix "crop"
    protocol; the authors' Table 1 "Crop"; no fill needed).

    ``area=None``: the photo's shorter side resized to ``canvas + margin``, centre crop.
    ``area=s``: a crop of ``s`` x the photo's area at a seeded random place and aspect ratio
    (torchvision's ``RandomResizedCrop(canvas + margin, scale=(s, s))``), resized to a square.
    """

    margin: int = 10
    steps: int = 9
    direction: Direction = "diagonal"
    area: float | None = None
    name: ClassVar[str] = "crop"
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "accuracy_first_views")
    uses_original: ClassVar[bool] = True
    axis_label: ClassVar[str] = "crop offset (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_direction(self.direction)
        if self.area is not None and not 0 < self.area <= 1:
            raise ValueError(f"crop area must be in (0, 1] of the photo, got {self.area}")
        if not 2 <= self.steps <= self.margin + 1:
            raise ValueError(
                f"view range larger than the canvas: {self.steps} crop offsets need margin >= "
                f"{self.steps - 1} px, got margin {self.margin}"
            )

    @property
    def num_views(self) -> int:
        return self.steps

    @property
    def default_key(self) -> str:
        return self.name if self.area is None else f"{self.name}_a{self.area:g}"

    def larger_pictures(self, indices: Tensor, originals: list[Tensor]) -> list[Tensor]:
        """B pictures [3, canvas + margin, canvas + margin]: what the windows are cut from."""
        side = self.canvas + self.margin
        if self.area is None:
            return [resize_cover(photo, side) for photo in originals]
        pictures = []
        for index, photo in zip(indices.tolist(), originals, strict=True):
            top, left, h, w = random_resized_crop_box(
                photo.shape[-2], photo.shape[-1], self.area, sample_generator(self.seed, index)
            )
            pictures.append(resize(photo[None, :, top : top + h, left : left + w], side)[0])
        return pictures

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        larger = self.larger_pictures(indices, originals)
        dy, dx = DIRECTIONS[self.direction]
        steps = torch.arange(self.steps)  # CPU, as place_views() wants
        offsets = -torch.stack([dy * steps, dx * steps], dim=1)
        b, t = len(images), self.steps
        source = torch.arange(b).repeat_interleave(t)
        views = place_views(larger, offsets.repeat(b, 1), self.canvas, source=source)
        return views.view(b, t, 3, self.canvas, self.canvas)


@dataclass
class Scale(_Filled):
    """The object pasted at the canvas centre with its side growing by 1 px per view, from
    ``round(min_scale * canvas)`` to ``round(max_scale * canvas)`` (paper Fig. 1 middle, Fig. 9)."""

    min_scale: float = 0.55
    max_scale: float = 0.7
    sweep: ClassVar[bool] = True
    name: ClassVar[str] = "scale"
    axis_label: ClassVar[str] = "object side (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scale(self.min_scale)
        _check_scale(self.max_scale)
        if self.min_side >= self.max_side:
            raise ValueError(f"min_scale {self.min_scale} must be below max_scale {self.max_scale}")

    @property
    def min_side(self) -> int:
        return round(self.min_scale * self.canvas)

    @property
    def max_side(self) -> int:
        return round(self.max_scale * self.canvas)

    @property
    def positions(self) -> list[float]:
        return list(range(self.min_side, self.max_side + 1))

    @property
    def num_views(self) -> int:
        return len(self.positions)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        parts = []
        for side in self.positions:  # one batched resize per size, one fill for all sizes
            top = (self.canvas - side) // 2
            parts.append((resize(images, side), torch.tensor([[top, top]]).expand(len(images), 2)))
        return compose_many(parts, self.canvas, self.fill, self.mean)


@dataclass
class Embed(_Filled):
    """The authors' Table 1 "Black" protocol: the whole original photo resized to a square of
    ``int(canvas / zoom_out)`` px and pasted at diagonal (or ``direction``) offsets
    ``-max_shift..max_shift`` around ``int((canvas - side - 1) / 2)``, the rest filled with the
    data set's mean colour (zeros after normalisation). ``zoom_out`` > 1 is the paper's size s;
    ``max_shift`` defaults to the authors' 4 px, or the largest shift that fits a small canvas."""

    zoom_out: float = 1.3
    max_shift: int | None = None
    direction: Direction = "diagonal"
    fill: str = "mean"
    name: ClassVar[str] = "embed"
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "accuracy_first_views")
    uses_original: ClassVar[bool] = True
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_direction(self.direction)
        if self.zoom_out < 1:
            raise ValueError(
                f"zoom_out must be >= 1 (the photo smaller than the canvas), got {self.zoom_out}"
            )
        if self.max_shift is None:  # the authors' 4 px, or the largest that fits the canvas
            self.max_shift = max(1, min(4, self.centre, self.canvas - self.side - self.centre))
        if self.max_shift < 1:
            raise ValueError(f"max_shift must be >= 1 px, got {self.max_shift}")
        if (
            self.centre - self.max_shift < 0
            or self.centre + self.max_shift + self.side > self.canvas
        ):
            raise ValueError(
                f"view range larger than the canvas: a {self.side} px photo moved "
                f"+-{self.max_shift} px does not fit a {self.canvas} px canvas; lower max_shift "
                "or raise zoom_out"
            )

    @property
    def default_key(self) -> str:
        return f"{self.name}_{self.fill}_s{self.zoom_out:g}"

    @property
    def side(self) -> int:
        return int(self.canvas / self.zoom_out)

    @property
    def centre(self) -> int:
        return int((self.canvas - self.side - 1) / 2)

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1))

    @property
    def num_views(self) -> int:
        return 2 * self.max_shift + 1

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        objects = torch.stack([resize(photo[None], self.side)[0] for photo in originals])
        return self._sweep(objects, (self.centre, self.centre), self.direction, self.positions)


@dataclass
class RandomLocation(_Filled):
    """One view: the image resized to ``scale * canvas`` at a uniformly random (seeded) position
    (paper Sec. 5, Fig. 6), anywhere or inside ``region``."""

    scale: float = 0.5
    region: Region | None = None
    name: ClassVar[str] = "random_location"
    measures: ClassVar[tuple[str, ...]] = SINGLE_MEASURES
    ordered: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scale(self.scale)
        if self.region is not None:
            self.region.corner_range(self.canvas, self.side)  # raises when the object cannot fit

    @property
    def default_key(self) -> str:
        return f"{self.name}_{self.fill}_s{self.scale:g}"

    @property
    def side(self) -> int:
        return max(1, round(self.scale * self.canvas))

    @property
    def num_views(self) -> int:
        return 1

    def offsets(self, indices: Tensor) -> Tensor:
        """Top-left corner [B, 2] of each image, drawn uniformly where the object fits (in the
        region, if any)."""
        if self.region is None:
            free = self.canvas - self.side
            drawn = [
                sample_generator(self.seed, i).integers(0, free + 1, size=2)
                for i in indices.tolist()
            ]
        else:
            (top, bottom), (left, right) = self.region.corner_range(self.canvas, self.side)
            drawn = [
                sample_generator(self.seed, i).integers([top, left], [bottom + 1, right + 1])
                for i in indices.tolist()
            ]
        return torch.tensor(np.array(drawn), dtype=torch.long).view(-1, 2)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        offsets = self.offsets(indices)
        return self._compose(resize(images, self.side), offsets)[:, None]


def _drawn_pairs(count: int) -> list[tuple[int, int]]:
    """Views (2k, 2k + 1), k < count: the pairs of a protocol that draws ``count`` pairs."""
    return [(2 * k, 2 * k + 1) for k in range(count)]


@dataclass
class PairShift(Protocol):
    """``pairs`` pairs of ``canvas`` windows of the photo (torchvision's ``Resize(base)`` +
    ``CenterCrop(base)``, base = ``round(canvas * 256 / 224)``), each window at its own random
    offset in [0, max_offset)^2 (Zhang 2019 "consistency", antialiased-cnns ``validate_shift``:
    5 pairs per image, ``--epochs-shift 5``). Views are [a_0, b_0, a_1, b_1, ...]; consistency
    compares a_k with b_k. ``max_offset`` defaults to the margin (32 px at 224)."""

    max_offset: int | None = None
    num_pairs: int = 1
    name: ClassVar[str] = "pair_shift"
    measures: ClassVar[tuple[str, ...]] = PAIR_MEASURES
    ordered: ClassVar[bool] = False
    uses_original: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_offset is None:
            self.max_offset = max(1, self.base - self.canvas)
        if self.max_offset < 1 or self.max_offset > self.base - self.canvas + 1:
            raise ValueError(
                f"max_offset must be in [1, {self.base - self.canvas + 1}] for canvas {self.canvas}"
            )
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {self.num_pairs}")

    @property
    def base(self) -> int:
        return round(self.canvas * 256 / 224)

    @property
    def num_views(self) -> int:
        return 2 * self.num_pairs

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return _drawn_pairs(self.num_pairs)

    def window_offsets(self, indices: Tensor) -> Tensor:
        """Top-left corner (row, col) [B, T, 2] of every window in the base picture."""
        drawn = [
            sample_generator(self.seed, i).integers(0, self.max_offset, size=(self.num_pairs, 2, 2))
            for i in indices.tolist()
        ]
        return torch.tensor(np.array(drawn), dtype=torch.long).view(len(indices), -1, 2)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        larger = [resize_cover(photo, self.base) for photo in originals]  # placed unstacked
        offsets = -self.window_offsets(indices).view(-1, 2)
        t = self.num_views
        source = torch.arange(len(images)).repeat_interleave(t)
        views = place_views(larger, offsets, self.canvas, source=source)
        return views.view(len(images), t, 3, self.canvas, self.canvas)


@dataclass
class Circular(Protocol):
    """Two circular shifts (``torch.roll``) of the image, each by its own random (dy, dx) in
    [-max_shift, max_shift), compared with each other (Chaman & Dokmanic 2021, their
    ``validate``: both copies rolled)."""

    max_shift: int = 32
    name: ClassVar[str] = "circular"
    measures: ClassVar[tuple[str, ...]] = PAIR_MEASURES
    ordered: ClassVar[bool] = False

    @property
    def num_views(self) -> int:
        return 2

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return _drawn_pairs(1)

    def shifts(self, indices: Tensor) -> Tensor:
        """(dy, dx) [B, 2, 2] of each image's two rolled views."""
        drawn = [
            sample_generator(self.seed, i).integers(-self.max_shift, self.max_shift, size=(2, 2))
            for i in indices.tolist()
        ]
        return torch.tensor(np.array(drawn), dtype=torch.long).view(-1, 2, 2)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        base = resize(images, self.canvas)
        source = torch.arange(len(images)).repeat_interleave(2)
        rolled = place_views(base, self.shifts(indices).view(-1, 2), self.canvas, "wrap", source)
        return rolled.view(len(images), 2, 3, self.canvas, self.canvas)


@dataclass
class TranslationSequence(Protocol):
    """ImageNet-P style translation sequence: ``2 * max_shift + 1`` frames, each shifted 1 px
    further along ``direction``, cut from the photo resized to cover ``canvas + 2 * max_shift``."""

    max_shift: int = 20
    direction: Direction = "horizontal"
    sweep: ClassVar[bool] = True
    name: ClassVar[str] = "sequence"
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "flip_rate", "top5_distance")
    uses_original: ClassVar[bool] = True
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_direction(self.direction)
        if self.max_shift < 1:
            raise ValueError(f"max_shift must be >= 1 px, got {self.max_shift}")

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1))

    @property
    def num_views(self) -> int:
        return 2 * self.max_shift + 1

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        side = self.canvas + 2 * self.max_shift
        larger = [resize_cover(photo, side) for photo in originals]  # placed unstacked
        dy, dx = DIRECTIONS[self.direction]
        moved = torch.tensor(self.positions, dtype=torch.long)  # CPU, as place_views() wants
        # Content moved by s px is the centred window moved by -s; place_views() takes minus its corner.
        m = self.max_shift
        offsets = -torch.stack([m - dy * moved, m - dx * moved], dim=1)
        b, t = len(images), self.num_views
        source = torch.arange(b).repeat_interleave(t)
        views = place_views(larger, offsets.repeat(b, 1), self.canvas, source=source)
        return views.view(b, t, 3, self.canvas, self.canvas)


@dataclass
class ImageNetPTranslate(Protocol):
    """ImageNet-P "translate" frames as hendrycks/robustness makes them (``make_imagenet_p.py``):
    the photo with its shorter side resized to ``base`` (256 at 224; torchvision's
    ``Resize(256)``), frame i = ``CenterCrop(canvas)`` of that picture translated horizontally
    by i - ``max_shift`` px with zero (black) fill, i = 0..2 * max_shift: 41 frames. Where the
    picture's margin beside the crop is narrower than the shift (a square photo: 16 px at 256),
    a black strip enters the frame. The published frames were stored as H.264 video; that
    compression is not reproduced."""

    max_shift: int = 20
    sweep: ClassVar[bool] = True
    name: ClassVar[str] = "imagenet_p_translate"
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "flip_rate", "top5_distance")
    uses_original: ClassVar[bool] = True
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_shift < 1:
            raise ValueError(f"max_shift must be >= 1 px, got {self.max_shift}")

    @property
    def base(self) -> int:
        return round(self.canvas * 256 / 224)

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1))

    @property
    def num_views(self) -> int:
        return 2 * self.max_shift + 1

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        moved = torch.tensor(self.positions, dtype=torch.long)  # CPU, as place_views() wants
        frames = []
        for photo in originals:  # pictures differ in size: one placement per photo
            picture = resize_shorter(photo, self.base)
            top, left = centre_crop_corner(*picture.shape[-2:], self.canvas)
            # Content moved right by s px: the frame shows the picture's columns left - s ...
            corners = torch.stack([torch.full_like(moved, top), left - moved], dim=1)
            source = torch.zeros(len(moved), dtype=torch.long)
            frames.append(place_views(picture[None], -corners, self.canvas, source=source))
        return torch.stack(frames)


@dataclass
class WorstOfK(_Filled):
    """A grid of translations (both axes) x rotations about the centre; an image counts as correct
    only if every view is (Engstrom et al. 2019)."""

    max_translation: int = 8
    translation_steps: int = 3
    max_rotation: float = 15.0
    rotation_steps: int = 3
    fill: str = "black"
    name: ClassVar[str] = "worst_of_k"
    measures: ClassVar[tuple[str, ...]] = (*SINGLE_MEASURES, "worst_of_k_accuracy")
    ordered: ClassVar[bool] = False
    grid: list[tuple[float, float, float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        shifts = np.linspace(-self.max_translation, self.max_translation, self.translation_steps)
        angles = np.linspace(-self.max_rotation, self.max_rotation, self.rotation_steps)
        self.grid = [
            (float(ty), float(tx), float(a)) for ty in shifts for tx in shifts for a in angles
        ]

    @property
    def num_views(self) -> int:
        return len(self.grid)

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        base = resize(images, self.canvas)
        b, t, c = len(images), self.num_views, self.canvas
        thetas = []
        for ty, tx, angle in self.grid:  # output -> input sampling matrices, normalised coordinates
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            thetas.append([[cos, -sin, -2 * tx / c], [sin, cos, -2 * ty / c]])
        theta = torch.tensor(thetas, dtype=images.dtype, device=images.device).repeat(b, 1, 1)
        grid = F.affine_grid(theta, [b * t, 3, c, c], align_corners=False)
        source = base.repeat_interleave(t, dim=0)
        padding = "border" if self.fill == "edge" else "zeros"
        views = F.grid_sample(
            source, grid, mode="bilinear", padding_mode=padding, align_corners=False
        )
        if self.fill != "edge":  # grid_sample's border padding is already the edge fill
            ones = torch.ones_like(source[:, :1])
            known = (
                F.grid_sample(ones, grid, mode="nearest", padding_mode="zeros", align_corners=False)
                > 0.5
            )
            views = fill_unknown(views * known, known, self.fill, self.mean)
        return views.clamp(0, 1).view(b, t, 3, c, c)


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls
    for cls in (
        Translate, Crop, Scale, Embed, RandomLocation, PairShift, Circular, TranslationSequence,
        ImageNetPTranslate, WorstOfK,
    )
}  # fmt: skip


def create_protocol(name: str, **kwargs: object) -> Protocol:
    """Create a protocol by name (``translate``, ``crop``, ``scale``, ``embed``,
    ``random_location``, ``pair_shift``, ``circular``, ``sequence``, ``imagenet_p_translate``,
    ``worst_of_k``) with its parameters."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    try:
        return PROTOCOLS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters for protocol {name!r}: {err}") from err
