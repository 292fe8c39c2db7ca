"""The batched transformation engine: protocols (views of an image, or the tangents of its
transformations), fill modes, inpainting, and the paper's presets."""

from lightning_inv.protocols.base import (
    DIRECTIONS,
    IMAGENET_MEAN,
    FilledProtocol,
    Protocol,
    check_images,
    resize,
    resize_cover,
    resize_shorter,
)
from lightning_inv.protocols.factory import PROTOCOLS, create_protocol
from lightning_inv.protocols.fill import FILL_MODES, compose
from lightning_inv.protocols.inpaint import binomial_kernel, inpaint
from lightning_inv.protocols.lie import LieDerivative
from lightning_inv.protocols.locations import RandomLocation, WorstOfK
from lightning_inv.protocols.pairs import Circular, PairShift
from lightning_inv.protocols.placement import Region, place
from lightning_inv.protocols.sweeps import (
    Crop,
    Embed,
    ImageNetPTranslate,
    Scale,
    Translate,
    TranslationSequence,
)

__all__ = [
    "DIRECTIONS",
    "FILL_MODES",
    "IMAGENET_MEAN",
    "PROTOCOLS",
    "Circular",
    "Crop",
    "Embed",
    "FilledProtocol",
    "ImageNetPTranslate",
    "LieDerivative",
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
    "resize_shorter",
]
