"""Exact integer placement of images on a canvas: the core of translate, crop, scale and friends.

Pixels are gathered with separable integer indices, so a shift of 1 px moves content by exactly
1 px (no resampling), for a whole batch at once. Negative offsets crop; ``wrap`` gives circular
shifts; ``clamp`` repeats the edge pixels (the ``edge`` fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def place(
    images: Tensor,
    offsets: Tensor,
    canvas: int,
    mode: str = "zeros",
) -> tuple[Tensor, Tensor]:
    """Put each image on a ``canvas`` x ``canvas`` frame with its top-left corner at ``offsets``.

    Args:
        images: [N, C, h, w].
        offsets: int [N, 2], (top, left) in px of each image on the canvas (may be negative).
        canvas: side of the output (px).
        mode: ``"zeros"`` (outside pixels are 0), ``"clamp"`` (nearest edge pixel) or ``"wrap"``
            (circular: ``torch.roll``).

    Returns:
        ``(views [N, C, canvas, canvas], known bool [N, 1, canvas, canvas])``; ``known`` is False
        where no image pixel landed (always True for ``wrap``).
    """
    n, _, h, w = images.shape
    device = images.device
    offsets = offsets.to(device=device, dtype=torch.long)
    grid = torch.arange(canvas, device=device)
    rows = grid[None, :] - offsets[:, :1]  # [N, canvas]: source row of each canvas row
    cols = grid[None, :] - offsets[:, 1:]
    if mode == "wrap":
        rows, cols = rows % h, cols % w
        row_ok = torch.ones_like(rows, dtype=torch.bool)
        col_ok = torch.ones_like(cols, dtype=torch.bool)
    else:
        row_ok = (rows >= 0) & (rows < h)
        col_ok = (cols >= 0) & (cols < w)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(n, device=device)[:, None, None]
    views = images[batch, :, rows[:, :, None], cols[:, None, :]]  # [N, canvas, canvas, C]
    views = views.permute(0, 3, 1, 2)
    known = (row_ok[:, :, None] & col_ok[:, None, :])[:, None]
    if mode == "zeros":
        views = views * known
    elif mode not in ("clamp", "wrap"):
        raise ValueError(f"unknown placement mode {mode!r}; use 'zeros', 'clamp' or 'wrap'")
    return views.contiguous(), known


@dataclass(frozen=True)
class Region:
    """A part of the canvas where an object must lie, as fractions of the canvas side: the
    object's box stays within rows ``rows[0] * canvas .. rows[1] * canvas`` and likewise for
    columns. ``Region()`` is the whole canvas; ``Region(rows=(0, 0.5))`` the top half."""

    rows: tuple[float, float] = (0.0, 1.0)
    cols: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name, (low, high) in (("rows", self.rows), ("cols", self.cols)):
            if not 0 <= low < high <= 1:
                raise ValueError(
                    f"region {name} must be fractions 0 <= low < high <= 1 of the canvas, got "
                    f"{(low, high)}"
                )

    def corner_range(self, canvas: int, side: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Inclusive ranges ``((top_min, top_max), (left_min, left_max))`` of the top-left corner
        of a ``side`` px object inside this region of a ``canvas`` px frame."""
        ranges = []
        for name, (low, high) in (("rows", self.rows), ("cols", self.cols)):
            first, last = math.ceil(low * canvas), math.floor(high * canvas) - side
            if last < first:
                raise ValueError(
                    f"an object of {side} px does not fit region {name}={(low, high)} of a "
                    f"{canvas} px canvas ({math.floor(high * canvas) - first} px): lower the "
                    "object scale or widen the region"
                )
            ranges.append((first, last))
        return ranges[0], ranges[1]

    def centre(self, canvas: int) -> tuple[float, float]:
        """(row, col) of the region's centre in px."""
        return (sum(self.rows) / 2 * canvas, sum(self.cols) / 2 * canvas)
