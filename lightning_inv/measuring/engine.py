"""Run a protocol through a model: each distinct view is made once and goes through the model once.

``view_logits`` is the hot path of evaluation: views are generated in a batch on the model's
device, flattened to [B*T, 3, H, W] and pushed through the model in chunks of ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lightning_inv.measuring.nonshiftability import FeatureSums
from lightning_inv.protocols import Protocol

Classifier = Callable[[Tensor], Tensor]
LayerResponses = dict[str, tuple[Tensor, Tensor]]  # layer -> (sums [B, T, K], peaks [B, T, K])


@torch.no_grad()
def view_logits(
    model: Classifier,
    protocol: Protocol,
    images: Tensor,
    indices: Tensor | None = None,
    chunk_size: int = 256,
    probe: FeatureSums | None = None,
    originals: Sequence[Tensor] | None = None,
    validate_args: bool = True,
) -> tuple[Tensor, LayerResponses]:
    """Logits of every view of every image.

    Args:
        model: maps images [n, 3, H, W] in [0, 1] to logits [n, C] (e.g. ``InvarianceClassifier``).
        protocol: makes the views.
        images: [B, 3, H, W] in [0, 1], on the model's device.
        indices: data set indices [B] that seed the random protocols.
        chunk_size: views per forward pass (bounds memory).
        probe: optional ``FeatureSums`` registered on the model; its records are returned per layer.
        originals: the original photos (B tensors [3, h, w] in [0, 1]) for the protocols that cut
            from the photo (``protocol.uses_original``).
        validate_args: check the images' value range (see ``Protocol.__call__``).

    Returns:
        ``(logits [B, T, C] float32, {layer: (sums [B, T, K], spatial maxima [B, T, K])})`` (the
        dict is empty without a probe).
    """
    views = protocol(images, indices, originals if protocol.uses_original else None, validate_args)
    b, t = views.shape[:2]
    flat = views.flatten(0, 1)
    if probe is not None:
        probe.pop()
        was_recording, probe.recording = probe.recording, True
    try:
        logits = torch.cat(
            [model(flat[start : start + chunk_size]) for start in range(0, len(flat), chunk_size)]
        )
    finally:
        if probe is not None:
            probe.recording = was_recording
    responses: LayerResponses = {}
    if probe is not None:
        sums, peaks = probe.pop()
        responses = {
            name: (s.view(b, t, -1), peaks[name].view(b, t, -1)) for name, s in sums.items()
        }
    return logits.view(b, t, -1).float(), responses
