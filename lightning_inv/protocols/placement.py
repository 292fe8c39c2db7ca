"""Exact integer placement of images on a canvas: the core of translate, crop, scale and friends.

Pixels move by integer offsets, so a shift of 1 px moves content by exactly 1 px (no
resampling): on CPU one slice copy per view, elsewhere one gather with separable integer indices
for the whole batch. Negative offsets crop; ``wrap`` gives circular shifts; ``clamp`` repeats the
edge pixels (the ``edge`` fill).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_inv.device_path import accelerated
from lightning_inv.protocols.transfer import to_device

Images = Tensor | Sequence[Tensor]  # [M, C, h, w], or M tensors [C, h, w] of one size


def place(
    images: Images,
    offsets: Tensor,
    canvas: int,
    mode: str = "zeros",
    source: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Put images on a ``canvas`` x ``canvas`` frame with their top-left corner at ``offsets``.

    Args:
        images: [M, C, h, w], or a sequence of M images [C, h, w] of one size (pictures made one
            by one need not be stacked first).
        offsets: int [N, 2], (top, left) in px of each view's image on the canvas (may be
            negative). Keep them on the CPU for CPU images: the copies are planned from them.
        canvas: side of the output (px).
        mode: ``"zeros"`` (outside pixels are 0), ``"clamp"`` (nearest edge pixel) or ``"wrap"``
            (circular: ``torch.roll``).
        source: int [N], the image of each view (default: view i shows image i, M = N); lets a
            sweep place one image many times without copying it first.

    Returns:
        ``(views [N, C, canvas, canvas], known bool [N, 1, canvas, canvas])``; ``known`` is False
        where no image pixel landed (always True for ``wrap``). ``place_views`` gives the views
        alone.

    ``zeros`` on CPU copies each view's rectangle (a slice per view, memcpy speed) and zeroes
    only what it does not cover; the other modes and devices gather every canvas pixel by index
    in one call (one kernel on a GPU).
    """
    views, known = _place(images, offsets, canvas, mode, source, with_known=True)
    return views, known


def place_views(
    images: Images,
    offsets: Tensor,
    canvas: int,
    mode: str = "zeros",
    source: Tensor | None = None,
) -> Tensor:
    """The views of ``place`` [N, C, canvas, canvas], without the mask of known pixels."""
    return _place(images, offsets, canvas, mode, source, with_known=False)[0]


def _place(
    images: Images,
    offsets: Tensor,
    canvas: int,
    mode: str,
    source: Tensor | None,
    with_known: bool,
) -> tuple[Tensor, Tensor | None]:
    """``place``; the mask is made only when asked for or needed (zeros by gather)."""
    if mode not in ("zeros", "clamp", "wrap"):
        raise ValueError(f"unknown placement mode {mode!r}; use 'zeros', 'clamp' or 'wrap'")
    if not len(images):
        raise ValueError("place needs at least one image")
    first = images[0]
    if not isinstance(images, Tensor) and len({tuple(image.shape) for image in images}) != 1:
        raise ValueError("the images to place must have one size; stack them or place each")
    if source is None:
        if len(images) != len(offsets):
            raise ValueError(f"{len(offsets)} offsets for {len(images)} images: pass source=")
        source = torch.arange(len(offsets))
    device = first.device
    rows, cols, row_ok, col_ok = _source_lines(offsets, canvas, *first.shape[-2:], mode)
    paste_slices = mode == "zeros" and not accelerated(device)
    gather_zeros = mode == "zeros" and not paste_slices  # the gather zeroes by the mask
    known = _known(row_ok, col_ok, device) if with_known or gather_zeros else None
    if paste_slices:
        out = first.new_empty(len(offsets), first.shape[0], canvas, canvas)
        return paste(images, offsets, out, source, background=first.new_zeros(())), known
    if not isinstance(images, Tensor):
        images = torch.stack(list(images))
    rows, cols = to_device(rows, device), to_device(cols, device)
    zeroed = known if gather_zeros else None
    return _gather(images, rows, cols, to_device(source, device), zeroed), known


def _known(row_ok: Tensor, col_ok: Tensor, device: torch.device) -> Tensor:
    """bool [N, 1, canvas, canvas] from the rows and columns [N, canvas] where pixels landed."""
    row_ok, col_ok = to_device(row_ok, device), to_device(col_ok, device)
    return (row_ok[:, :, None] & col_ok[:, None, :])[:, None]


def _source_lines(
    offsets: Tensor, canvas: int, height: int, width: int, mode: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source row and column [N, canvas] of every canvas row and column (wrapped or clamped into
    the image) and whether an image pixel lands there [N, canvas] (bool)."""
    grid = torch.arange(canvas, device=offsets.device)
    rows = grid[None, :] - offsets[:, :1].long()
    cols = grid[None, :] - offsets[:, 1:].long()
    if mode == "wrap":
        ok = torch.ones_like(rows, dtype=torch.bool)
        return rows % height, cols % width, ok, ok
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    return rows.clamp(0, height - 1), cols.clamp(0, width - 1), row_ok, col_ok


def _gather(
    images: Tensor, rows: Tensor, cols: Tensor, source: Tensor, known: Tensor | None
) -> Tensor:
    """Every canvas pixel gathered by index in one call: [N, C, canvas, canvas], zeroed where
    ``known`` is False (if given)."""
    views = images[source[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [N, S, S, C]
    views = views.permute(0, 3, 1, 2)
    if known is not None:
        views = views * known
    return views.contiguous()


def paste(
    images: Images,
    offsets: Tensor,
    out: Tensor,
    source: Tensor | None = None,
    background: Tensor | None = None,
) -> Tensor:
    """Copy the visible part of each view's image into ``out`` [N, C, canvas, canvas] with its
    top-left corner at ``offsets`` [N, 2] (CPU), one slice per view. ``source`` [N]: the image of
    each view (default: view i shows image i). ``background``: a value or colour [C, 1, 1] for
    the rest of each view (its strips around the image are filled, nothing is written twice);
    None leaves the rest of ``out`` as it is. Returns ``out``."""
    canvas = out.shape[-1]
    source = torch.arange(len(offsets)) if source is None else source
    for view, ((top, left), index) in enumerate(
        zip(offsets.long().tolist(), source.tolist(), strict=True)
    ):
        image = images[index]
        height, width = image.shape[-2:]
        first_row, last_row = max(top, 0), min(top + height, canvas)
        first_col, last_col = max(left, 0), min(left + width, canvas)
        if first_row >= last_row or first_col >= last_col:  # nothing of the image lands
            if background is not None:
                out[view] = background
            continue
        out[view, :, first_row:last_row, first_col:last_col] = image[
            :, first_row - top : last_row - top, first_col - left : last_col - left
        ]
        if background is not None:
            for strip in (
                out[view, :, :first_row],
                out[view, :, last_row:],
                out[view, :, first_row:last_row, :first_col],
                out[view, :, first_row:last_row, last_col:],
            ):
                if strip.numel():
                    strip.copy_(background.expand_as(strip))
    return out


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
