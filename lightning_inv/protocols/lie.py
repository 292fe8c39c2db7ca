"""The differential protocol: Lie derivatives at the image instead of views of it
(Gruver et al. 2023; docs/design.md, "Lie derivatives").

``LieDerivative`` makes one view, the image itself (the model's eval preprocessing), and names
the transformations whose derivatives the measuring core takes there (``generators``). Its
measures are rows of derivatives rather than views: the engine returns for each image the
logits followed by one row of logit derivatives per generator (``num_rows`` = 1 + K), and the
measures flagged ``differential`` read those rows (``lie_softmax_<generator>``,
``lie_logp_<generator>``). ``attribute``: the generator whose derivative is also split into
per-layer contributions when the protocol is probed (``evaluate.py`` presets with ``probe``).
``boundary``: how the image continues past its edges while it moves (``reflect``, the default,
or ``periodic``; ``lightning_inv.protocols.tangents``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from lightning_inv.protocols.base import FilledProtocol, check_scale, resize
from lightning_inv.protocols.placement import Region
from lightning_inv.protocols.tangents import GENERATORS, check_boundary, check_generator

LIE_MEASURE_KINDS = ("softmax", "logp")


def lie_measure(kind: str, generator: str) -> str:
    """The result key of one Lie derivative measure: ``lie_softmax_translate_x``."""
    return f"lie_{kind}_{generator}"


@dataclass
class LieDerivative(FilledProtocol):
    """One view per image; measures: the squared norm of d softmax / dt (``lie_softmax_*``)
    and (d log p_y / dt)^2 (``lie_logp_*``) for each generator, per image, and the accuracy of
    the view. The view is the image resized to the canvas (``scale`` 1, the default), or the
    image at ``scale`` x the canvas centred on the canvas (or on ``region``) with the rest
    filled (``fill``, black by default), as the training callback places digits."""

    generators: tuple[str, ...] = field(default_factory=lambda: tuple(GENERATORS))
    attribute: str = "translate_x"
    boundary: str = "reflect"
    scale: float = 1.0
    region: Region | None = None
    fill: str = "black"
    name: ClassVar[str] = "lie"
    ordered: ClassVar[bool] = False
    differential: ClassVar[bool] = True
    axis_label: ClassVar[str] = "transformation"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scale(self.scale)
        self.generators = tuple(self.generators)
        if not self.generators:
            raise ValueError("a Lie derivative protocol needs at least one transformation")
        for name in (*self.generators, self.attribute):
            check_generator(name)
        check_boundary(self.boundary)
        if len(set(self.generators)) != len(self.generators):
            raise ValueError(f"transformations repeat: {self.generators}")

    @property
    def default_key(self) -> str:
        if self.scale == 1 and self.region is None:
            return self.name
        return f"{self.name}_{self.fill}_s{self.scale:g}"

    @property
    def num_views(self) -> int:
        return 1

    @property
    def num_rows(self) -> int:
        return 1 + len(self.generators)

    @property
    def measures(self) -> tuple[str, ...]:  # type: ignore[override]
        lie = [lie_measure(kind, g) for kind in LIE_MEASURE_KINDS for g in self.generators]
        return ("accuracy", "top5_accuracy", *lie)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return []

    def make_views(self, images: Tensor, indices: Tensor, originals: list[Tensor]) -> Tensor:
        if self.scale == 1 and self.region is None:
            return resize(images, self.canvas)[:, None]
        side = round(self.scale * self.canvas)
        if self.region is None:
            corner = ((self.canvas - side) // 2,) * 2
        else:
            row, col = self.region.centre(self.canvas)
            corner = (round(row - side / 2), round(col - side / 2))
        offsets = torch.tensor([corner] * len(images))  # CPU: see compose()
        return self._compose(resize(images, side), offsets)[:, None]
