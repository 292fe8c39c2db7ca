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

from lightning_inv.protocols.inpaint import inpaint
from lightning_inv.protocols.placement import place

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
) -> Tensor:
    """Place ``objects`` [N, 3, h, w] (RGB in [0, 1]) at integer ``offsets`` [N, 2] on a canvas and
    fill the rest; returns [N, 3, canvas, canvas] in [0, 1]."""
    check_fill(fill)
    views, known = place(objects, offsets, canvas, mode="clamp" if fill == "edge" else "zeros")
    if fill == "edge":  # the placement already repeated the edge pixels
        return views
    return fill_unknown(views, known, fill, mean)


def fill_unknown(
    views: Tensor, known: Tensor, fill: str, mean: Sequence[float] = (0.485, 0.456, 0.406)
) -> Tensor:
    """Fill the pixels of ``views`` [N, 3, H, W] (zeros there) where ``known`` [N, 1, H, W] is
    False: ``mean`` colour, ``black`` (left as zeros) or ``inpaint``. ``edge`` needs the placement
    (``compose``) and is refused here."""
    check_fill(fill)
    if fill == "mean":
        colour = torch.tensor(mean, dtype=views.dtype, device=views.device).view(1, 3, 1, 1)
        return torch.where(known, views, colour)
    if fill == "inpaint" and not bool(known.all()):
        return inpaint(views * 255.0, known) / 255.0
    if fill == "edge":
        raise ValueError("the edge fill is made by the placement: use compose(..., fill='edge')")
    return views
