"""Fill modes for the part of a view that the image does not cover (docs/design.md, "Fill").

- ``mean``: the data set's mean colour, i.e. zeros after normalisation (what the authors' "black"
  protocol really used).
- ``black``: RGB 0 before normalisation.
- ``edge``: the nearest pixel of the image (replicate padding).
- ``inpaint``: the paper's iterated normalised convolution (``inpaint.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_inv.device_path import accelerated
from lightning_inv.protocols.inpaint import fill_pasted, inpaint, inpaint_boxes
from lightning_inv.protocols.placement import paste, place_views
from lightning_inv.protocols.transfer import to_device

FILL_MODES = ("mean", "black", "edge", "inpaint")


def check_fill(fill: str) -> None:
    if fill not in FILL_MODES:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILL_MODES)}")


def compose(
    objects: Tensor,
    offsets: Tensor,
    canvas: int,
    fill: str,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    source: Tensor | None = None,
) -> Tensor:
    """Place ``objects`` [M, 3, h, w] (RGB in [0, 1]) at integer ``offsets`` [N, 2] on a canvas and
    fill the rest; returns [N, 3, canvas, canvas] in [0, 1]. ``source`` [N]: the object of each
    view (default: view i shows object i). Keep ``offsets`` on the CPU: the placement and the
    inpainting plan their work from them without waiting for the device."""
    check_fill(fill)
    if _pastes(objects, fill):
        return compose_many([(objects, offsets)], canvas, fill, mean, [source])[:, 0]
    mode = "clamp" if fill == "edge" else "zeros"
    views = place_views(objects, offsets, canvas, mode=mode, source=source)
    if fill == "edge":  # the placement already repeated the edge pixels
        return views
    return fill_unknown(views, None, fill, mean, boxes=known_boxes(objects, offsets, canvas))


def compose_many(
    parts: Sequence[tuple[Tensor, Tensor]],
    canvas: int,
    fill: str,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    sources: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """``compose`` for T (objects, offsets) pairs that each make one view of the same N images
    (e.g. the object at another size per pair), with one fill call over all of them (one
    inpainting instead of T): [N, T, 3, canvas, canvas], view (i, t) from pair t, the same
    numbers as T ``compose`` calls. ``sources``: the ``source`` of each pair (default: none)."""
    sources = list(sources) if sources is not None else [None] * len(parts)
    counts = {len(offsets) for _, offsets in parts}
    if len(counts) != 1:
        raise ValueError(f"every part must make one view per image; got view counts {counts}")
    if fill == "edge":
        return torch.stack(
            [
                compose(objects, offsets, canvas, fill, mean, source)
                for (objects, offsets), source in zip(parts, sources, strict=True)
            ],
            dim=1,
        )
    count, steps, channels = counts.pop(), len(parts), parts[0][0].shape[1]
    boxes = torch.stack([known_boxes(o, c, canvas) for o, c in parts], dim=1).view(-1, 4)
    if _pastes(parts[0][0], fill):
        # Straight into one buffer: no zero fill, no mask, no copy of the rectangles. The
        # inpainting wants a spare last view; the other fills paint the strips around each object.
        inpainting = fill == "inpaint"
        frames = parts[0][0].new_empty(count * steps + inpainting, channels, canvas, canvas)
        grid = frames[: count * steps].view(count, steps, channels, canvas, canvas)
        background = None if inpainting else _background(fill, mean, frames)
        for step, ((objects, offsets), source) in enumerate(zip(parts, sources, strict=True)):
            paste(objects, offsets, grid[:, step], source, background)
        if inpainting:
            fill_pasted(frames, boxes)
        return grid
    placed = torch.stack(
        [
            place_views(objects, offsets, canvas, source=source)
            for (objects, offsets), source in zip(parts, sources, strict=True)
        ],
        dim=1,
    )
    filled = fill_unknown(placed.flatten(0, 1), None, fill, mean, boxes=boxes)
    return filled.view(count, steps, channels, canvas, canvas)


def _pastes(objects: Tensor, fill: str) -> bool:
    """Whether the views are pasted straight into their buffer with the fill (CPU; the
    inpainting in place needs float32/float64: ``fill_pasted``)."""
    if accelerated(objects) or fill == "edge":
        return False
    return fill != "inpaint" or objects.dtype in (torch.float32, torch.float64)


def _background(fill: str, mean: Sequence[float], like: Tensor) -> Tensor:
    """The colour [C, 1, 1] around the objects for the ``mean`` and ``black`` fills."""
    colour = torch.tensor(mean if fill == "mean" else (0.0,) * like.shape[1], dtype=like.dtype)
    return to_device(colour, like.device).view(-1, 1, 1)


def known_boxes(objects: Tensor, offsets: Tensor, canvas: int) -> Tensor:
    """The canvas rectangle [N, 4] (top, left, bottom, right; inclusive; CPU) that an object of
    the size of ``objects`` placed at each of ``offsets`` [N, 2] covers. Raises ``ValueError``
    for an object entirely off the canvas."""
    height, width = objects.shape[-2:]
    corner = offsets.to("cpu", torch.long)
    top_left = corner.clamp(min=0)
    bottom_right = (corner + torch.tensor([height, width])).clamp(max=canvas) - 1
    if bool((top_left > bottom_right).any()):
        raise ValueError(
            f"an object of {height} x {width} px placed at {corner.tolist()} misses the "
            f"{canvas} px canvas entirely; nothing to inpaint from"
        )
    return torch.cat([top_left, bottom_right], dim=1)


def box_mask(boxes: Tensor, height: int, width: int, device: torch.device) -> Tensor:
    """bool [N, 1, height, width]: True inside each of ``boxes`` [N, 4] (top, left, bottom,
    right; inclusive)."""
    boxes = to_device(boxes, device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= boxes[:, 0:1]) & (rows <= boxes[:, 2:3])
    inside_cols = (cols >= boxes[:, 1:2]) & (cols <= boxes[:, 3:4])
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


def fill_unknown(
    views: Tensor,
    known: Tensor | None,
    fill: str,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    boxes: Tensor | None = None,
) -> Tensor:
    """Fill the pixels of ``views`` [N, 3, H, W] (zeros there) where ``known`` [N, 1, H, W] is
    False: ``mean`` colour, ``black`` (left as zeros) or ``inpaint``. ``edge`` needs the placement
    (``compose``) and is refused here. ``boxes`` [N, 4] (CPU): ``known`` is exactly these
    rectangles, which lets the inpainting work on bands (``inpaint_boxes``, same numbers);
    ``known`` may then be None."""
    check_fill(fill)
    if fill == "edge":
        raise ValueError("the edge fill is made by the placement: use compose(..., fill='edge')")
    if fill == "inpaint" and boxes is not None:
        return inpaint_boxes(views, boxes)  # linear: the unit (0-1 or 0-255) does not matter
    if fill == "black":
        return views
    if known is None:
        if boxes is None:
            raise ValueError("fill_unknown needs the known mask or the boxes")
        known = box_mask(boxes, *views.shape[-2:], views.device)
    if fill == "mean":
        colour = torch.tensor(mean, dtype=views.dtype, device=views.device).view(1, 3, 1, 1)
        return torch.where(known, views, colour)
    if not bool(known.all()):
        return inpaint(views, known)
    return views
