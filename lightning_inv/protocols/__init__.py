"""The batched transformation engine: protocols (views of an image), fill modes, inpainting."""

from lightning_inv.protocols.fill import FILL_MODES, compose
from lightning_inv.protocols.inpaint import binomial_kernel, inpaint
from lightning_inv.protocols.placement import Region, place
from lightning_inv.protocols.views import (
    PROTOCOLS,
    Circular,
    Crop,
    Embed,
    PairShift,
    Protocol,
    RandomLocation,
    Scale,
    Translate,
    TranslationSequence,
    WorstOfK,
    check_images,
    create_protocol,
    resize,
    resize_cover,
)

__all__ = [
    "FILL_MODES",
    "PROTOCOLS",
    "Circular",
    "Crop",
    "Embed",
    "PairShift",
    "Protocol",
    "RandomLocation",
    "Region",
    "Scale",
    "Translate",
    "TranslationSequence",
    "WorstOfK",
    "binomial_kernel",
    "check_images",
    "compose",
    "create_protocol",
    "inpaint",
    "place",
    "resize",
    "resize_cover",
]
