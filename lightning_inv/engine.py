"""Run a protocol through a model: each distinct view is made once and goes through the model once.

``view_logits`` is the hot path of evaluation: views are generated in a batch on the model's
device, flattened to [B*T, 3, H, W] and pushed through the model in chunks of ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_inv.metrics.nonshiftability import FeatureSums
from lightning_inv.protocols.views import Protocol

Classifier = Callable[[Tensor], Tensor]


@torch.no_grad()
def view_logits(
    model: Classifier,
    protocol: Protocol,
    images: Tensor,
    indices: Tensor | None = None,
    chunk_size: int = 256,
    probe: FeatureSums | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits of every view of every image.

    Args:
        model: maps images [n, 3, H, W] in [0, 1] to logits [n, C] (e.g. ``InvarianceClassifier``).
        protocol: makes the views.
        images: [B, 3, H, W] in [0, 1], on the model's device.
        indices: data set indices [B] that seed the random protocols.
        chunk_size: views per forward pass (bounds memory).
        probe: optional ``FeatureSums`` registered on the model; its sums are returned per layer.

    Returns:
        ``(logits [B, T, C], sums {layer: [B, T, K]})`` (``sums`` empty without a probe).
    """
    views = protocol(images, indices)  # [B, T, 3, S, S]
    b, t = views.shape[:2]
    flat = views.flatten(0, 1)
    if probe is not None:
        probe.pop()
    logits = torch.cat(
        [model(flat[start : start + chunk_size]) for start in range(0, len(flat), chunk_size)]
    )
    sums = {}
    if probe is not None:
        sums = {name: s.view(b, t, -1) for name, s in probe.pop().items()}
    return logits.view(b, t, -1).float(), sums
