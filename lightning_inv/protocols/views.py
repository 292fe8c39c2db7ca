"""Protocols: each turns a batch of images into T views per image (DESIGN.md section 2).

A protocol is called as ``protocol(images, indices)`` with images float [B, 3, H, W] in [0, 1]
(on any device) and the data set indices [B] of those images; it returns views
[B, T, 3, canvas, canvas] on the same device. Random choices are drawn from a generator seeded by
(seed, index), so a sample's views are identical every call, every epoch and on every rank.
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

from lightning_inv.protocols.fill import check_fill, compose
from lightning_inv.protocols.inpaint import inpaint
from lightning_inv.protocols.placement import place

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
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"images must be RGB in [0, 1] before normalisation; got values in "
            f"[{images.min().item():.3g}, {images.max().item():.3g}]"
        )


def resize(images: Tensor, side: int | tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize of [B, 3, H, W] to ``side`` (px), clamped to [0, 1]."""
    size = (side, side) if isinstance(side, int) else side
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(
        images, size=size, mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def sample_generator(seed: int, index: int) -> np.random.Generator:
    """The generator for one sample: the same (seed, index) always draws the same numbers."""
    return np.random.default_rng([int(seed), int(index)])


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _check_scale(scale: float) -> None:
    if not 0 < scale <= 1:
        raise ValueError(f"object scale must be in (0, 1], got {scale}")


@dataclass
class Protocol(ABC):
    """Base class. ``kind`` says which measures apply: ``sequence`` (ordered views: consecutive
    pairs), ``pair`` (two views), ``single`` (one view: accuracy) or ``grid`` (worst-of-k)."""

    canvas: int = 224
    seed: int = 0
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "sequence"
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
    def key(self) -> str:
        """Name of this protocol variant in results (e.g. ``translate_inpaint``)."""
        return self.name

    @abstractmethod
    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, T, 3, canvas, canvas]; inputs already checked."""

    def __call__(self, images: Tensor, indices: Tensor | Sequence[int] | None = None) -> Tensor:
        check_images(images)
        if indices is None:
            indices = torch.arange(len(images))
        indices = torch.as_tensor(indices).view(-1)
        if len(indices) != len(images):
            raise ValueError(f"{len(indices)} indices for {len(images)} images")
        return self.make_views(images, indices)


@dataclass
class _Filled(Protocol):
    """A protocol whose views leave part of the canvas to a fill mode."""

    fill: str = "inpaint"
    mean: tuple[float, float, float] = IMAGENET_MEAN

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fill(self.fill)

    @property
    def key(self) -> str:
        return f"{self.name}_{self.fill}"

    def _compose(self, objects: Tensor, offsets: Tensor) -> Tensor:
        return compose(objects, offsets, self.canvas, self.fill, self.mean)


@dataclass
class Translate(_Filled):
    """The image resized to ``round(scale * canvas)`` px and pasted at positions that step by
    ``step`` px along ``direction`` from ``-max_shift`` to ``+max_shift`` around the centre
    (paper Fig. 1-2)."""

    scale: float = 0.75
    max_shift: int = 16
    step: int = 1
    direction: Direction = "vertical"
    name: ClassVar[str] = "translate"
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scale(self.scale)
        _check_direction(self.direction)
        if self.step < 1 or self.max_shift < 1:
            raise ValueError("step and max_shift must be >= 1 px")
        free = (self.canvas - self.side) // 2
        if self.max_shift > free:
            raise ValueError(
                f"view range larger than the canvas: an object of {self.side} px in a "
                f"{self.canvas} px canvas moves at most {free} px from the centre, asked "
                f"{self.max_shift}; lower max_shift or scale"
            )

    @property
    def side(self) -> int:
        return round(self.scale * self.canvas)

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1, self.step))

    @property
    def num_views(self) -> int:
        return len(self.positions)

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        objects = resize(images, self.side)
        centre = (self.canvas - self.side) // 2
        dy, dx = DIRECTIONS[self.direction]
        shifts = torch.tensor(self.positions, device=images.device)
        offsets = torch.stack([centre + dy * shifts, centre + dx * shifts], dim=1)  # [T, 2]
        b, t = len(images), len(shifts)
        repeated = objects[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, *objects.shape[1:])
        views = self._compose(repeated, offsets.repeat(b, 1))
        return views.view(b, t, 3, self.canvas, self.canvas)


@dataclass
class Crop(Protocol):
    """Windows of ``canvas`` px from the image resized to ``canvas + margin``, at offsets
    0..steps-1 px along ``direction`` (paper appendix "crop" protocol; no fill needed)."""

    margin: int = 10
    steps: int = 9
    direction: Direction = "diagonal"
    name: ClassVar[str] = "crop"
    axis_label: ClassVar[str] = "crop offset (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_direction(self.direction)
        if not 2 <= self.steps <= self.margin + 1:
            raise ValueError(
                f"view range larger than the canvas: {self.steps} crop offsets need margin >= "
                f"{self.steps - 1} px, got margin {self.margin}"
            )

    @property
    def num_views(self) -> int:
        return self.steps

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        larger = resize(images, self.canvas + self.margin)
        dy, dx = DIRECTIONS[self.direction]
        steps = torch.arange(self.steps, device=images.device)
        offsets = -torch.stack([dy * steps, dx * steps], dim=1)
        b, t = len(images), self.steps
        repeated = larger[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, *larger.shape[1:])
        views, _ = place(repeated, offsets.repeat(b, 1), self.canvas)
        return views.view(b, t, 3, self.canvas, self.canvas)


@dataclass
class Scale(_Filled):
    """The object pasted at the canvas centre with its side growing by 1 px per view, from
    ``round(min_scale * canvas)`` to ``round(max_scale * canvas)`` (paper Fig. 1 middle, Fig. 9)."""

    min_scale: float = 0.55
    max_scale: float = 0.7
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

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        views = []
        for side in self.positions:  # one batched resize per size: T small ops
            top = (self.canvas - side) // 2
            offsets = torch.tensor([[top, top]], device=images.device).expand(len(images), 2)
            views.append(self._compose(resize(images, side), offsets))
        return torch.stack(views, dim=1)


@dataclass
class RandomLocation(_Filled):
    """One view: the image resized to ``scale * canvas`` at a uniformly random (seeded) position
    (paper Sec. 5, Fig. 6)."""

    scale: float = 0.5
    name: ClassVar[str] = "random_location"
    kind: ClassVar[str] = "single"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scale(self.scale)

    @property
    def key(self) -> str:
        return f"{self.name}_{self.fill}_s{self.scale:g}"

    @property
    def side(self) -> int:
        return max(1, round(self.scale * self.canvas))

    @property
    def num_views(self) -> int:
        return 1

    def offsets(self, indices: Tensor) -> Tensor:
        """Top-left corner [B, 2] of each image, drawn uniformly where the object fits."""
        free = self.canvas - self.side
        drawn = [
            sample_generator(self.seed, i).integers(0, free + 1, size=2) for i in indices.tolist()
        ]
        return torch.tensor(np.array(drawn), dtype=torch.long).view(-1, 2)

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        offsets = self.offsets(indices).to(images.device)
        return self._compose(resize(images, self.side), offsets)[:, None]


@dataclass
class PairShift(Protocol):
    """Two ``canvas`` windows of the image resized to ``round(canvas * 256 / 224)`` at random
    offsets in [0, max_offset)^2 each (Zhang 2019 "consistency"); ``max_offset`` defaults to the
    margin (32 px at 224)."""

    max_offset: int | None = None
    name: ClassVar[str] = "pair_shift"
    kind: ClassVar[str] = "pair"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_offset is None:
            self.max_offset = max(1, self.base - self.canvas)
        if self.max_offset < 1 or self.max_offset > self.base - self.canvas + 1:
            raise ValueError(
                f"max_offset must be in [1, {self.base - self.canvas + 1}] for canvas {self.canvas}"
            )

    @property
    def base(self) -> int:
        return round(self.canvas * 256 / 224)

    @property
    def num_views(self) -> int:
        return 2

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        larger = resize(images, self.base)
        drawn = [
            sample_generator(self.seed, i).integers(0, self.max_offset, size=(2, 2))
            for i in indices.tolist()
        ]
        offsets = -torch.tensor(np.array(drawn), dtype=torch.long, device=images.device).view(-1, 2)
        repeated = larger.repeat_interleave(2, dim=0)
        views, _ = place(repeated, offsets, self.canvas)
        return views.view(len(images), 2, 3, self.canvas, self.canvas)


@dataclass
class Circular(Protocol):
    """The image and its circular shift (``torch.roll``) by random (dy, dx) in
    [-max_shift, max_shift) (Chaman & Dokmanic 2021)."""

    max_shift: int = 32
    name: ClassVar[str] = "circular"
    kind: ClassVar[str] = "pair"

    @property
    def num_views(self) -> int:
        return 2

    def shifts(self, indices: Tensor) -> Tensor:
        """(dy, dx) [B, 2] of each image's rolled view."""
        drawn = [
            sample_generator(self.seed, i).integers(-self.max_shift, self.max_shift, size=2)
            for i in indices.tolist()
        ]
        return torch.tensor(np.array(drawn), dtype=torch.long).view(-1, 2)

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        base = resize(images, self.canvas)
        rolled, _ = place(base, self.shifts(indices), self.canvas, mode="wrap")
        return torch.stack([base, rolled], dim=1)


@dataclass
class Sequence_(Protocol):
    """ImageNet-P style translation sequence: ``2 * max_shift + 1`` frames, each shifted 1 px
    further along ``direction``, cut from the image resized to ``canvas + 2 * max_shift``."""

    max_shift: int = 20
    direction: Direction = "horizontal"
    name: ClassVar[str] = "sequence"
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

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
        larger = resize(images, self.canvas + 2 * self.max_shift)
        dy, dx = DIRECTIONS[self.direction]
        moved = torch.tensor(self.positions, device=images.device, dtype=torch.long)
        # Content moved by s px is the centred window moved by -s; place() takes minus its corner.
        m = self.max_shift
        offsets = -torch.stack([m - dy * moved, m - dx * moved], dim=1)
        b, t = len(images), self.num_views
        repeated = larger[:, None].expand(-1, t, -1, -1, -1).reshape(b * t, *larger.shape[1:])
        views, _ = place(repeated, offsets.repeat(b, 1), self.canvas)
        return views.view(b, t, 3, self.canvas, self.canvas)


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
    kind: ClassVar[str] = "grid"
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

    def make_views(self, images: Tensor, indices: Tensor) -> Tensor:
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
        if self.fill in ("mean", "black", "inpaint"):
            ones = torch.ones_like(source[:, :1])
            known = (
                F.grid_sample(ones, grid, mode="nearest", padding_mode="zeros", align_corners=False)
                > 0.5
            )
            if self.fill == "inpaint":
                views = inpaint(views * 255.0, known) / 255.0
            elif self.fill == "mean":
                colour = torch.tensor(self.mean, dtype=views.dtype, device=views.device).view(
                    1, 3, 1, 1
                )
                views = torch.where(known, views, colour)
        return views.clamp(0, 1).view(b, t, 3, c, c)


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls
    for cls in (Translate, Crop, Scale, RandomLocation, PairShift, Circular, Sequence_, WorstOfK)
}


def create_protocol(name: str, **kwargs: object) -> Protocol:
    """Create a protocol by name (``translate``, ``crop``, ``scale``, ``random_location``,
    ``pair_shift``, ``circular``, ``sequence``, ``worst_of_k``) with its parameters."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    try:
        return PROTOCOLS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters for protocol {name!r}: {err}") from err
