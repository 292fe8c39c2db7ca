"""The measuring core: per protocol, the per-image value of every measure it declares.

``evaluate.py`` (through ``InvarianceEvaluator``) and the training callback
(``callbacks.InvarianceEvaluation``) both measure with ``ProtocolMeasures`` and ``measure_batch``,
so a protocol gets the same measures under the same result keys everywhere
(docs/design.md, "Data flow"). Every measure is a mean over images of a per-image value, which
gives exact DDP results (the per-image values of all ranks are gathered) and bootstrap intervals
over images (``lightning_inv.measuring.statistics``).

>>> import torch
>>> from lightning_inv.protocols import Translate
>>> protocol = Translate(canvas=32, scale=0.5, max_shift=2)
>>> measures = ProtocolMeasures(protocol)
>>> logits = torch.zeros(2, protocol.num_views, 10); logits[..., 3] = 1.0
>>> measures.update(logits, torch.tensor([3, 4]), torch.tensor([0, 1]))
>>> result = ProtocolResult.from_states(protocol, measures.compute())
>>> result.summary()["accuracy"], result.summary()["p_top1_change"]
(0.5, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.profiler import record_function
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_inv.measuring.engine import PROFILE_PREFIX, LayerResponses, view_logits
from lightning_inv.measuring.lie import Linearized
from lightning_inv.measuring.lie_layers import LayerAttribution
from lightning_inv.measuring.measures import MEASURES, true_class_probability_per_view
from lightning_inv.measuring.nonshiftability import FeatureSums, nonshiftability_per_image
from lightning_inv.measuring.statistics import RESAMPLES, bootstrap_interval
from lightning_inv.protocols import Protocol
from lightning_inv.protocols.transfer import to_device


def _state(name: str) -> str:
    return f"value_{name}"


CONSOLIDATE_EVERY = 16  # updates between joins of the list states (see ``_consolidate``)


class ProtocolMeasures(Metric):
    """Per-image values of the measures that ``protocol.measures`` declares, plus (optionally)
    the per-view true-class probability and top-1, and per-layer nonshiftability.

    ``update(logits [N, T, C], target [N], indices [N], responses=None)``; ``compute()`` returns
    the concatenated states (gathered over processes), which ``ProtocolResult.from_states``
    sorts by data set index. States are lists of per-image tensors: memory grows by a few bytes
    per image and measure (8 per view with ``keep_views``), never with the views' pixels.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        protocol: Protocol,
        keep_views: bool = False,
        layers: Sequence[str] = (),
        threshold: float = 0.1,
        relative_change: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        unknown = [m for m in protocol.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"{type(protocol).__name__} declares unknown measures {unknown}")
        if layers and not (protocol.ordered or protocol.differential):
            raise ValueError(f"nonshiftability needs ordered views; {protocol.key} has none")
        self.protocol = protocol
        self.keep_views = keep_views
        self.layers = list(layers)
        self.threshold = threshold
        self.relative_change = relative_change
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("label", default=[], dist_reduce_fx="cat")
        for name in protocol.measures:
            self.add_state(_state(name), default=[], dist_reduce_fx="cat")
        if keep_views:
            self.add_state("p_true", default=[], dist_reduce_fx="cat")
            self.add_state("top1", default=[], dist_reduce_fx="cat")
        for position in range(len(self.layers)):
            self.add_state(f"shift_{position}", default=[], dist_reduce_fx="cat")

    def update(
        self,
        logits: Tensor,
        target: Tensor,
        indices: Tensor,
        responses: LayerResponses | None = None,
    ) -> None:
        if logits.shape[1] != self.protocol.num_rows:
            raise ValueError(
                f"{self.protocol.key} makes {self.protocol.num_rows} rows of logits per image "
                f"({self.protocol.num_views} views); got {logits.shape[1]}"
            )
        views = logits[:, : self.protocol.num_views]
        indices = torch.as_tensor(indices, device=logits.device).view(-1)
        self.index.append(indices.long())
        self.label.append(target.long())
        for name in self.protocol.measures:
            measure = MEASURES[name]
            value = measure.per_image(
                logits if measure.differential else views, target, self.protocol
            )
            getattr(self, _state(name)).append(value.double())
        if self.keep_views:
            self.p_true.append(true_class_probability_per_view(views, target))
            self.top1.append(views.argmax(-1).int())
        for position, layer in enumerate(self.layers):
            if responses is None or layer not in responses:
                raise ValueError(
                    f"no feature record for layer {layer!r}: pass the probe's responses"
                )
            record = responses[layer]
            if isinstance(record, Tensor):  # a differential protocol's per-image contributions
                value = record.double()
            else:
                sums, peaks = record
                value = nonshiftability_per_image(sums, peaks, self.threshold, self.relative_change)
            getattr(self, f"shift_{position}").append(value)
        self._consolidate()

    def _consolidate(self) -> None:
        """Every ``CONSOLIDATE_EVERY`` updates, join each list state into one tensor. Thousands
        of small tensors kept for the whole run, allocated between the large short-lived views of
        each batch, fragment the heap: resident memory then grew by ~30 KB per image in a loop of
        64 px random-location views; joined states keep it flat. The values are unchanged
        (``compute`` concatenates anyway)."""
        if len(self.index) < CONSOLIDATE_EVERY:
            return
        for name in self._defaults:
            state = getattr(self, name)
            if isinstance(state, list) and len(state) > 1:
                setattr(self, name, [torch.cat(state)])

    def compute(self) -> dict[str, Tensor]:
        names = ["index", "label", *map(_state, self.protocol.measures)]
        names += ["p_true", "top1"] if self.keep_views else []
        names += [f"shift_{i}" for i in range(len(self.layers))]
        out = {}
        for name in names:
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                out[name] = torch.empty(0)
            else:
                out[name] = dim_zero_cat(state)
        return out


@dataclass
class ProtocolResult:
    """Per-image values of one protocol in data set order (after ``ProtocolMeasures.compute``).

    ``values[measure]`` and ``nonshiftability[layer]`` are [N]; ``p_true`` and ``top1`` are
    [N, T] when views were kept; ``depths[layer]``: the number of convolutions before each
    probed layer (Fig. 10's x-axis). A differential protocol's per-layer contributions to its
    Lie derivative are ``lie_layers[layer]`` [N] instead, with ``kinds[layer]`` (convolution,
    nonlinearity, ...).
    """

    protocol: Protocol
    indices: np.ndarray
    labels: np.ndarray
    values: dict[str, np.ndarray]
    p_true: np.ndarray | None = None
    top1: np.ndarray | None = None
    nonshiftability: dict[str, np.ndarray] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)
    lie_layers: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_states(
        cls,
        protocol: Protocol,
        states: dict[str, Tensor],
        layers: Sequence[str] = (),
        depths: dict[str, int] | None = None,
        kinds: dict[str, str] | None = None,
    ) -> ProtocolResult:
        # torchmetrics squeezes one-element outputs to 0-d: restore [N] and [N, T].
        indices = states["index"].cpu().long().numpy().reshape(-1)
        order = np.argsort(indices, kind="stable")

        width = {"p_true": protocol.num_views, "top1": protocol.num_views}

        def column(name: str) -> np.ndarray:
            return states[name].cpu().numpy().reshape(len(indices))[order]

        def views(name: str) -> np.ndarray:
            return states[name].cpu().numpy().reshape(len(indices), width[name])[order]

        per_layer = {
            layer: column(f"shift_{i}").astype(np.float64) for i, layer in enumerate(layers)
        }
        return cls(
            protocol=protocol,
            indices=indices[order],
            labels=column("label").astype(np.int64),
            values={m: column(_state(m)).astype(np.float64) for m in protocol.measures},
            p_true=views("p_true").astype(np.float32) if "p_true" in states else None,
            top1=views("top1").astype(np.int32) if "top1" in states else None,
            nonshiftability={} if protocol.differential else per_layer,
            depths={layer: int((depths or {}).get(layer, i)) for i, layer in enumerate(layers)},
            lie_layers=per_layer if protocol.differential else {},
            kinds={layer: (kinds or {}).get(layer, "other") for layer in layers}
            if protocol.differential
            else {},
        )

    @property
    def num_images(self) -> int:
        return len(self.indices)

    def summary(
        self, intervals: bool = False, resamples: int = RESAMPLES, seed: int = 0
    ) -> dict[str, Any]:
        """``{measure: mean, measure_ci95: [low, high], ..., nonshiftability: {layer: mean}}``."""
        row: dict[str, Any] = {}
        if not self.num_images:
            return row
        for name, values in self.values.items():
            row[name] = float(values.mean())
            if intervals:
                row[f"{name}_ci95"] = list(bootstrap_interval(values, resamples, seed))
        if self.nonshiftability:
            steps = self.protocol.num_views - 1
            row["nonshiftability"] = {k: float(v.mean()) for k, v in self.nonshiftability.items()}
            row["nonshiftability_depth"] = dict(self.depths)
            row["nonshiftability_rate"] = {
                k: float(v.mean()) / steps for k, v in self.nonshiftability.items()
            }
            if intervals:
                row["nonshiftability_ci95"] = {
                    k: list(bootstrap_interval(v, resamples, seed))
                    for k, v in self.nonshiftability.items()
                }
        if self.lie_layers:
            row["lie_layers_generator"] = getattr(self.protocol, "attribute", None)
            row["lie_layers"] = {k: float(v.mean()) for k, v in self.lie_layers.items()}
            row["lie_layers_depth"] = dict(self.depths)
            row["lie_layers_kind"] = dict(self.kinds)
            if intervals:
                row["lie_layers_ci95"] = {
                    k: list(bootstrap_interval(v, resamples, seed))
                    for k, v in self.lie_layers.items()
                }
        return row


@torch.no_grad()
def measure_batch(
    model: Callable[[Tensor], Tensor],
    protocols: Sequence[Protocol],
    measures: Sequence[ProtocolMeasures],
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    originals: Sequence[Tensor] | None = None,
    chunk_size: int = 256,
    probe: FeatureSums | None = None,
    validate_args: bool = True,
    linearized: Linearized | None = None,
    attributions: Mapping[str, LayerAttribution] | None = None,
) -> dict[str, LayerResponses]:
    """Push one batch through every protocol and update its measures; returns the probe's
    feature records per protocol key (empty where the protocol has no probed layers).
    ``validate_args``: check the images' value range (the first batch is enough).
    ``linearized``: the model differential protocols differentiate; ``attributions``: per
    differential protocol key, its per-layer attribution."""
    responses: dict[str, LayerResponses] = {}
    device_indices = to_device(torch.as_tensor(indices), labels.device)
    for protocol, measure in zip(protocols, measures, strict=True):
        use_probe = probe if measure.layers and not protocol.differential else None
        logits, recorded = view_logits(
            model,
            protocol,
            images,
            indices,
            chunk_size,
            use_probe,
            originals,
            validate_args,
            linearized,
            (attributions or {}).get(protocol.key),
        )
        with record_function(f"{PROFILE_PREFIX}{protocol.key}/measures"):
            measure.update(logits, labels, device_indices, recorded)
        responses[protocol.key] = recorded
    return responses
