"""Protocols by name: ``create_protocol("translate", canvas=224, ...)``, as timm's
``create_model``."""

from __future__ import annotations

from lightning_inv.protocols.base import Protocol
from lightning_inv.protocols.lie import LieDerivative
from lightning_inv.protocols.locations import RandomLocation, WorstOfK
from lightning_inv.protocols.pairs import Circular, PairShift
from lightning_inv.protocols.sweeps import (
    Crop,
    Embed,
    ImageNetPTranslate,
    Scale,
    Translate,
    TranslationSequence,
)

PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls
    for cls in (
        Translate,
        Crop,
        Scale,
        Embed,
        RandomLocation,
        PairShift,
        Circular,
        TranslationSequence,
        ImageNetPTranslate,
        WorstOfK,
        LieDerivative,
    )
}


def create_protocol(name: str, **kwargs: object) -> Protocol:
    """Create a protocol by name (``translate``, ``crop``, ``scale``, ``embed``,
    ``random_location``, ``pair_shift``, ``circular``, ``sequence``, ``imagenet_p_translate``,
    ``worst_of_k``, ``lie``) with its parameters."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    try:
        return PROTOCOLS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad parameters for protocol {name!r}: {err}") from err
