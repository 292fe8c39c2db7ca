"""Run a protocol through a model: each distinct view is made once and goes through the model once
(a differential protocol: the model and its forward-mode derivatives at the view).

``view_logits`` is the hot path of evaluation: views are generated in a batch on the model's
device, flattened to [B*T, 3, H, W] and pushed through the model in chunks of ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.profiler import record_function

from lightning_inv.measuring.lie import Linearized, logit_derivatives
from lightning_inv.measuring.lie_layers import LayerAttribution
from lightning_inv.measuring.nonshiftability import FeatureSums
from lightning_inv.protocols import Protocol

Classifier = Callable[[Tensor], Tensor]
# torch.profiler ranges: "<prefix><protocol key>/views", ".../forward", ".../derivatives",
# ".../measures" (benchmarks/profile_loop.py sums them per protocol and stage).
PROFILE_PREFIX = "inv/"
# layer -> (sums [B, T, K], peaks [B, T, K]) of a probed sweep, or per-image contributions [B]
# of a differential protocol's layers.
LayerResponses = dict[str, tuple[Tensor, Tensor] | Tensor]


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
    linearized: Linearized | None = None,
    attribution: LayerAttribution | None = None,
) -> tuple[Tensor, LayerResponses]:
    """Logits of every view of every image (for a differential protocol: the rows of
    ``derivative_rows``).

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
        linearized: the model differential protocols differentiate (``Linearized(model)`` is
            made here when None: a copy per call, so pass one).
        attribution: per-layer contributions for a differential protocol (its responses).

    Returns:
        ``(logits [B, T, C] float32, {layer: (sums [B, T, K], spatial maxima [B, T, K])})`` (the
        dict is empty without a probe).
    """
    with record_function(f"{PROFILE_PREFIX}{protocol.key}/views"):
        photos = originals if protocol.uses_original else None
        views = protocol(images, indices, photos, validate_args)
    if protocol.differential:
        with record_function(f"{PROFILE_PREFIX}{protocol.key}/derivatives"):
            return derivative_rows(
                linearized if linearized is not None else Linearized(model),  # type: ignore[arg-type]
                protocol,
                views[:, 0],
                chunk_size,
                attribution,
            )
    b, t = views.shape[:2]
    flat = views.flatten(0, 1)
    if probe is not None:
        probe.pop()
        was_recording, probe.recording = probe.recording, True
    try:
        with record_function(f"{PROFILE_PREFIX}{protocol.key}/forward"):
            logits = torch.cat(
                [
                    model(flat[start : start + chunk_size])
                    for start in range(0, len(flat), chunk_size)
                ]
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


def derivative_rows(
    linearized: Classifier,
    protocol: Protocol,
    images: Tensor,
    chunk_size: int = 64,
    attribution: LayerAttribution | None = None,
) -> tuple[Tensor, LayerResponses]:
    """The rows of a differential protocol at ``images`` [B, 3, H, W]: ``([B, 1 + K, C]``
    logits then their derivatives along the protocol's K generators, ``{layer: [B]}`` per-layer
    contributions with an ``attribution``)."""
    logits, derivatives = logit_derivatives(
        linearized,
        images,
        protocol.generators,  # type: ignore[attr-defined]
        chunk_size,
        protocol.boundary,  # type: ignore[attr-defined]
    )
    responses: LayerResponses = {}
    if attribution is not None:
        responses = dict(attribution(images))
    return torch.cat([logits[:, None], derivatives], 1), responses
