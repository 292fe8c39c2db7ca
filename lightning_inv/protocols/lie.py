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

from torch import Tensor

from lightning_inv.protocols.base import Protocol, resize
from lightning_inv.protocols.tangents import GENERATORS, check_boundary, check_generator

LIE_MEASURE_KINDS = ("softmax", "logp")


def lie_measure(kind: str, generator: str) -> str:
    """The result key of one Lie derivative measure: ``lie_softmax_translate_x``."""
    return f"lie_{kind}_{generator}"


@dataclass
class LieDerivative(Protocol):
    """One view per image, the image (resized to the canvas if it differs); measures: the squared norm of d softmax / dt
    (``lie_softmax_*``) and (d log p_y / dt)^2 (``lie_logp_*``) for each generator, per image,
    and the accuracy of the view."""

    generators: tuple[str, ...] = field(default_factory=lambda: tuple(GENERATORS))
    attribute: str = "translate_x"
    boundary: str = "reflect"
    name: ClassVar[str] = "lie"
    ordered: ClassVar[bool] = False
    differential: ClassVar[bool] = True
    axis_label: ClassVar[str] = "transformation"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.generators = tuple(self.generators)
        if not self.generators:
            raise ValueError("a Lie derivative protocol needs at least one transformation")
        for name in (*self.generators, self.attribute):
            check_generator(name)
        check_boundary(self.boundary)
        if len(set(self.generators)) != len(self.generators):
            raise ValueError(f"transformations repeat: {self.generators}")

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
        return resize(images, self.canvas)[:, None]
