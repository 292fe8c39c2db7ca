"""Pair protocols: views drawn in pairs that are compared with each other (Zhang 2019's
consistency, Chaman & Dokmanic 2021's circular consistency)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_inv.protocols.base import (
    PAIR_MEASURES,
    Protocol,
    drawn_pairs,
    resize,
    resize_cover,
    sample_generator,
)
from lightning_inv.protocols.placement import place_views


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
        return drawn_pairs(self.num_pairs)

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
        return drawn_pairs(1)

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
