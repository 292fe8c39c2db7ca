"""lightning-inv: measure, explain and improve how CNNs react to small image transformations.

The public API, loaded on first use (importing the package stays cheap):

>>> from lightning_inv import InvarianceClassifier, Translate, view_logits  # doctest: +SKIP

- protocols: ``Translate``, ``Crop``, ``Scale``, ``Embed``, ``RandomLocation``, ``PairShift``,
  ``Circular``, ``TranslationSequence``, ``ImageNetPTranslate``, ``WorstOfK``,
  ``create_protocol``;
- presets: ``PRESETS``, ``PresetContext``, ``build_experiments``;
- measuring: ``view_logits``, ``ProtocolMeasures``, ``ProtocolResult``, ``measure_batch``,
  ``MEASURES``, ``FeatureSums``, ``probe_points``, ``bootstrap_interval``,
  ``paired_difference``;
- models: ``InvarianceClassifier``, ``create_backbone``, ``apply_surgery``,
  ``measure_subsampling``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "lightning_inv.protocols": (
        "Circular",
        "Crop",
        "Embed",
        "ImageNetPTranslate",
        "PairShift",
        "Protocol",
        "RandomLocation",
        "Region",
        "Scale",
        "Translate",
        "TranslationSequence",
        "WorstOfK",
        "create_protocol",
    ),
    "lightning_inv.protocols.presets": ("PRESETS", "PresetContext", "build_experiments"),
    "lightning_inv.measuring": (
        "MEASURES",
        "FeatureSums",
        "ProtocolMeasures",
        "ProtocolResult",
        "bootstrap_interval",
        "measure_batch",
        "paired_difference",
        "probe_points",
        "view_logits",
    ),
    "lightning_inv.models.classifier": ("InvarianceClassifier",),
    "lightning_inv.models.backbones": ("create_backbone",),
    "lightning_inv.models.surgery": ("apply_surgery",),
    "lightning_inv.models.subsampling": ("measure_subsampling",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lightning_inv' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
