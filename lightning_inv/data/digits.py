"""scikit-learn's handwritten digits (1,797 real 8x8 scans) centred on a larger canvas.

Every training digit sits at the same place and size: an extreme photographer's bias
(docs/design.md, "Data"). Test views move and rescale them with the transformation engine.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

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
