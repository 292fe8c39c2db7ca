"""Nonshiftability (paper Sec. 3, Fig. 10) from per-view global sums of feature maps.

For each image and channel (feature map) k of a layer, S_t is the global sum of the map for view
t and P_t its maximum spatial response. A channel is counted when its largest spatial response
over the views, max_t P_t, exceeds ``threshold`` (0.1) times the largest such response of any
channel of the layer for that image: the paper's "feature maps where the maximum response was
above a threshold", made relative so that one value fits layers of any scale. For a counted
channel, the number of steps t with |S_{t+1} - S_t| > ``relative_change`` (0.2) x |mean_t S_t| is
its nonshiftability; a layer's value for one image is the mean over its counted channels (a
shiftable layer scores 0). Channels with negative sums are kept (|mean| is used); channels whose
spatial response is never positive are not counted, and ``counted_fraction`` reports how many were.
``FeatureSums`` records S_t and P_t with forward hooks (docs/design.md, "Nonshiftability").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchmetrics import Metric


def nonshiftability_counts(
    sums: Tensor,
    peaks: Tensor | None = None,
    threshold: float = 0.1,
    relative_change: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """sums [N, T, K] (and spatial maxima ``peaks`` [N, T, K], default: the sums) ->
    (jumps per channel [N, K], counted mask [N, K])."""
    if sums.dim() != 3 or sums.shape[1] < 2:
        raise ValueError(f"sums must be [N, T, K] with T >= 2 views; got {tuple(sums.shape)}")
    sums = sums.double()
    peak = (sums if peaks is None else peaks.double()).amax(dim=1)  # [N, K]
    strongest = peak.amax(dim=1, keepdim=True).clamp(min=0)
    counted = (peak > threshold * strongest) & (peak > 0)
    mean = sums.mean(dim=1).abs()
    jumps = (sums[:, 1:] - sums[:, :-1]).abs() > relative_change * mean[:, None]
    return jumps.sum(dim=1) * counted, counted


def nonshiftability_per_image(
    sums: Tensor,
    peaks: Tensor | None = None,
    threshold: float = 0.1,
    relative_change: float = 0.2,
) -> Tensor:
    """[N]: mean number of >20% jumps per counted channel of one layer, per image."""
    changes, counted = nonshiftability_counts(sums, peaks, threshold, relative_change)
    return changes.sum(-1).double() / counted.sum(-1).clamp(min=1)


class Nonshiftability(Metric):
    """``update(sums [N, T, K], peaks=None)`` for one layer; ``compute()`` returns ``{"count":
    mean over images of the per-image value (jumps per counted channel), "rate": count / (T - 1),
    "counted_fraction": fraction of channels counted}``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, threshold: float = 0.1, relative_change: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.relative_change = relative_change
        for state in ("total", "images", "pairs", "counted", "channels"):
            self.add_state(state, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sums: Tensor, peaks: Tensor | None = None) -> None:
        per_image = nonshiftability_per_image(sums, peaks, self.threshold, self.relative_change)
        _, counted = nonshiftability_counts(sums, peaks, self.threshold, self.relative_change)
        self.total = self.total + per_image.sum()
        self.images = self.images + len(per_image)
        self.pairs = self.pairs + len(per_image) * (sums.shape[1] - 1)
        self.counted = self.counted + counted.sum().double()
        self.channels = self.channels + counted.numel()

    def compute(self) -> dict[str, Tensor]:
        return {
            "count": (self.total / self.images.clamp(min=1)).float(),
            "rate": (self.total / self.pairs.clamp(min=1)).float(),
            "counted_fraction": (self.counted / self.channels.clamp(min=1)).float(),
        }


def probe_layers(model: nn.Module) -> list[str]:
    """Default layers to probe: timm's ``feature_info`` stages (stem to last stage) plus the
    final feature layer when the model has one (``conv_head``), in depth order."""
    names = []
    info = getattr(model, "feature_info", None)
    if info is not None:
        entries = info.get_dicts() if hasattr(info, "get_dicts") else info
        names = [entry["module"] for entry in entries if entry.get("module")]
    modules = dict(model.named_modules())
    for last in ("bn2", "conv_head", "features"):
        if last in modules and last not in names:
            names.append(last)
            break
    if not names:
        names = [
            name
            for name, child in model.named_children()
            if any(isinstance(m, nn.Conv2d) for m in child.modules())
        ]
    return names


def conv_layers(model: nn.Module) -> list[str]:
    """Every ``nn.Conv2d`` of ``model`` in registration (= depth) order: the paper's Fig. 10 puts
    a layer at depth "number of trainable convolutional layers preceding it"."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


class FeatureSums:
    """Forward hooks that record, for each call, the per-channel global sum and spatial maximum
    of chosen layers.

    Use as ``with FeatureSums(model, layers) as probe: model(x); sums, peaks = probe.pop()`` where
    ``sums[layer]`` and ``peaks[layer]`` are [B, K] (B the images of all calls since the last
    ``pop``, in order). Calls made while ``recording`` is False leave no record (an evaluator
    that probes some protocols turns it on only for those: records nobody pops would pile up).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        modules = dict(model.named_modules())
        self.layers = list(layers) if layers is not None else probe_layers(model)
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            raise ValueError(
                f"unknown layers {unknown}; pick from model.named_modules(), e.g. {probe_layers(model)}"
            )
        self._modules = [modules[name] for name in self.layers]
        self._records: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.recording = True

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: object, output: Tensor) -> None:
            if self.recording and isinstance(output, Tensor) and output.dim() == 4:
                flat = output.detach().float().flatten(2)
                self._records[name].append((flat.sum(-1), flat.amax(-1)))

        return record

    def __enter__(self) -> FeatureSums:
        self._handles = [
            m.register_forward_hook(self._hook(n))
            for n, m in zip(self.layers, self._modules, strict=True)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pop(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Recorded ``(sums, peaks)`` since the last ``pop``: ``{layer: [B, K]}`` each."""
        sums = {n: torch.cat([s for s, _ in parts]) for n, parts in self._records.items() if parts}
        peaks = {n: torch.cat([p for _, p in parts]) for n, parts in self._records.items() if parts}
        self._records = {name: [] for name in self.layers}
        return sums, peaks


@contextmanager
def feature_sums(model: nn.Module, layers: Sequence[str] | None = None) -> Iterator[FeatureSums]:
    """Context manager form of ``FeatureSums``."""
    with FeatureSums(model, layers) as probe:
        yield probe


__all__ = [
    "FeatureSums",
    "Nonshiftability",
    "conv_layers",
    "feature_sums",
    "nonshiftability_counts",
    "nonshiftability_per_image",
    "probe_layers",
]
