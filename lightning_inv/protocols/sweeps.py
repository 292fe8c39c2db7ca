"""Sweeps: protocols whose views form an ordered sequence (a shift, a crop offset or a size per
view), measured on consecutive pairs (docs/design.md, "Protocols")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from lightning_inv.protocols.base import (
    DIRECTIONS,
    SWEEP_MEASURES,
    Direction,
    FilledProtocol,
    Protocol,
    centre_crop_corner,
    check_direction,
    check_scale,
    random_resized_crop_box,
    resize,
    resize_cover,
    resize_shorter,
    sample_generator,
)
from lightning_inv.protocols.fill import compose_many
from lightning_inv.protocols.placement import Region, place_views

DEFAULT_OBJECT_SCALE = 0.75  # object side / canvas of the translate sweeps (AW state none)


@dataclass
class Translate(FilledProtocol):
    """The image resized to ``round(scale * canvas)`` px and pasted at positions that step by
    ``step`` px along ``direction`` from ``-max_shift`` to ``+max_shift`` around the centre
    (paper Fig. 1-2), or around the centre of ``region``."""

    scale: float = DEFAULT_OBJECT_SCALE
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
        check_scale(self.scale)
        check_direction(self.direction)
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
        check_direction(self.direction)
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
class Scale(FilledProtocol):
    """The object pasted at the canvas centre with its side growing by 1 px per view, from
    ``round(min_scale * canvas)`` to ``round(max_scale * canvas)`` (paper Fig. 1 middle, Fig. 9)."""

    min_scale: float = 0.55
    max_scale: float = 0.7
    sweep: ClassVar[bool] = True
    name: ClassVar[str] = "scale"
    axis_label: ClassVar[str] = "object side (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scale(self.min_scale)
        check_scale(self.max_scale)
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
class Embed(FilledProtocol):
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
        check_direction(self.direction)
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
class ShiftSequence(Protocol):
    """Frames 0..2 * max_shift, frame i translated by i - max_shift px: the layout of ImageNet-P's
    translation sequences, measured with its flip rate and top-5 distance."""

    max_shift: int = 20
    sweep: ClassVar[bool] = True
    measures: ClassVar[tuple[str, ...]] = (*SWEEP_MEASURES, "flip_rate", "top5_distance")
    uses_original: ClassVar[bool] = True
    axis_label: ClassVar[str] = "shift (px)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_shift < 1:
            raise ValueError(f"max_shift must be >= 1 px, got {self.max_shift}")

    @property
    def positions(self) -> list[float]:
        return list(range(-self.max_shift, self.max_shift + 1))

    @property
    def num_views(self) -> int:
        return 2 * self.max_shift + 1


@dataclass
class TranslationSequence(ShiftSequence):
    """ImageNet-P style translation sequence: ``2 * max_shift + 1`` frames, each shifted 1 px
    further along ``direction``, cut from the photo resized to cover ``canvas + 2 * max_shift``."""

    direction: Direction = "horizontal"
    name: ClassVar[str] = "sequence"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_direction(self.direction)

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
class ImageNetPTranslate(ShiftSequence):
    """ImageNet-P "translate" frames as hendrycks/robustness makes them (``make_imagenet_p.py``):
    the photo with its shorter side resized to ``base`` (256 at 224; torchvision's
    ``Resize(256)``), frame i = ``CenterCrop(canvas)`` of that picture translated horizontally
    by i - ``max_shift`` px with zero (black) fill, i = 0..2 * max_shift: 41 frames. Where the
    picture's margin beside the crop is narrower than the shift (a square photo: 16 px at 256),
    a black strip enters the frame. The published frames were stored as H.264 video; that
    compression is not reproduced."""

    name: ClassVar[str] = "imagenet_p_translate"

    @property
    def base(self) -> int:
        return round(self.canvas * 256 / 224)

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
