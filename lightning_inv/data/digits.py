"""scikit-learn's handwritten digits (1,797 real 8x8 scans) centred on a larger canvas.

Every training digit sits at the same place and size: an extreme photographer's bias
(docs/design.md, "Data"). Test views move and rescale them with the transformation engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from lightning_inv.protocols.placement import Region

Split = Literal["train", "val", "test"]
SPLIT_FRACTIONS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
NUM_DIGIT_CLASSES = 10


def digit_split_indices(split: Split, seed: int = 0) -> np.ndarray:
    """Indices into ``load_digits()`` for a split; a fixed permutation, so splits never overlap."""
    total = len(load_digits().target)
    order = np.random.default_rng(seed).permutation(total)
    start, stop = SPLIT_FRACTIONS[split]
    return order[int(start * total) : int(stop * total)]


class CentredDigits(Dataset):
    """Digits upsampled to ``digit_size`` px and centred on a ``canvas`` x ``canvas`` black frame.

    Items are ``{"image": [3, canvas, canvas] float in [0, 1], "label", "index", "name"}``.
    """

    def __init__(
        self, split: Split = "train", canvas: int = 64, digit_size: int = 32, seed: int = 0
    ) -> None:
        if not 0 < digit_size <= canvas:
            raise ValueError(f"digit_size must be in (0, canvas={canvas}], got {digit_size}")
        data = load_digits()
        self.indices = digit_split_indices(split, seed)
        scans = torch.from_numpy(data.images[self.indices]).float()[:, None] / 16.0
        digits = F.interpolate(
            scans, size=(digit_size, digit_size), mode="bilinear", align_corners=False
        ).clamp(0, 1)
        top = (canvas - digit_size) // 2
        frames = torch.zeros(len(scans), 1, canvas, canvas)
        frames[:, :, top : top + digit_size, top : top + digit_size] = digits
        self.images = frames.expand(-1, 3, -1, -1).contiguous()
        self.labels = torch.from_numpy(data.target[self.indices]).long()
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index],
            "label": int(self.labels[index]),
            "index": index,
            "name": f"digits-{self.split}-{int(self.indices[index])}",
        }


@dataclass(frozen=True)
class Placement:
    """Where training digits go: object scale (digit side / canvas) drawn uniformly in
    ``scales`` and the top-left corner uniformly where the digit lies inside ``region``.
    ``Placement(scales=(0.3, 0.5), region=Region(rows=(0, 0.5)))``: small digits in the top half."""

    scales: tuple[float, float] = (0.5, 0.5)
    region: Region = field(default_factory=Region)

    def __post_init__(self) -> None:
        if not 0 < self.scales[0] <= self.scales[1] <= 1:
            raise ValueError(f"placement scales must be 0 < low <= high <= 1, got {self.scales}")


class PlacedDigits(Dataset):
    """Tight digits [3, d, d] from ``base`` placed on a black ``canvas`` frame by ``placement``,
    seeded by ``(seed, key)``: keys ``k >= len(base)`` (``EpochSeededSampler``) address item
    ``k % len(base)`` and give every epoch its own placements, the same in every run."""

    def __init__(self, base: Dataset, canvas: int, placement: Placement, seed: int = 0) -> None:
        self.base, self.canvas, self.placement, self.seed = base, canvas, placement, seed
        for scale in placement.scales:  # both ends must fit the region
            placement.region.corner_range(canvas, max(1, round(scale * canvas)))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def box(self, key: int) -> tuple[int, int, int]:
        """(top, left, side) in px of the digit of sample ``key``."""
        rng = np.random.default_rng([self.seed, int(key), 7])
        low, high = self.placement.scales
        side = max(1, round(rng.uniform(low, high) * self.canvas))
        (top, bottom), (left, right) = self.placement.region.corner_range(self.canvas, side)
        return int(rng.integers(top, bottom + 1)), int(rng.integers(left, right + 1)), side

    def __getitem__(self, key: int) -> dict[str, Any]:
        item = dict(self.base[key])
        top, left, side = self.box(key)
        digit = F.interpolate(
            item["image"][None],
            size=(side, side),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0].clamp(0, 1)
        frame = torch.zeros(digit.shape[0], self.canvas, self.canvas)
        frame[:, top : top + side, left : left + side] = digit
        item["image"] = frame
        return item
