"""Protocols measured view by view, not on pairs: a random location per image (AW Sec. 5) and
Engstrom et al.'s worst case over a grid of translations and rotations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_inv.protocols.base import (
    SINGLE_MEASURES,
    FilledProtocol,
    check_scale,
    resize,
    sample_generator,
)
from lightning_inv.protocols.fill import fill_unknown
from lightning_inv.protocols.placement import Region


@dataclass
class RandomLocation(FilledProtocol):
    """One view: the image resized to ``scale * canvas`` at a uniformly random (seeded) position
    (paper Sec. 5, Fig. 6), anywhere or inside ``region``."""

    scale: float = 0.5
    region: Region | None = None
    name: ClassVar[str] = "random_location"
    measures: ClassVar[tuple[str, ...]] = SINGLE_MEASURES
    ordered: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scale(self.scale)
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


@dataclass
class WorstOfK(FilledProtocol):
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
