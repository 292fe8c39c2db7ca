"""Nonshiftability (paper Sec. 3, Fig. 10) from per-view global sums of feature maps.

For each image and channel k, S_t = sum over positions of the feature map for view t. Only
channels whose maximum over views exceeds ``threshold`` times the largest such maximum of the
layer (for that image) count: the paper's "maximum response above a threshold", made relative so
that one value fits layers of any size. For a counted channel, the count is
the number of t with |S_{t+1} - S_t| > ``relative_change`` * |mean_t S_t|. A shiftable layer
scores 0. ``FeatureSums`` records S_t with forward hooks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchmetrics import Metric


def nonshiftability_counts(
    sums: Tensor, threshold: float = 0.1, relative_change: float = 0.2
) -> tuple[Tensor, Tensor]:
    """sums [N, T, K] -> (changes per channel [N, K], counted mask [N, K])."""
    if sums.dim() != 3 or sums.shape[1] < 2:
        raise ValueError(f"sums must be [N, T, K] with T >= 2 views; got {tuple(sums.shape)}")
    sums = sums.double()
    peak = sums.amax(dim=1)  # [N, K]
    counted = (peak > threshold * peak.amax(dim=1, keepdim=True).clamp(min=0)) & (peak > 0)
    mean = sums.mean(dim=1).abs()
    jumps = (sums[:, 1:] - sums[:, :-1]).abs() > relative_change * mean[:, None]
    return jumps.sum(dim=1) * counted, counted


class Nonshiftability(Metric):
    """``update(sums [N, T, K])`` for one layer; ``compute()`` returns ``{"count": mean number of
    significant jumps per counted channel, "rate": that divided by T - 1}``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, threshold: float = 0.1, relative_change: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.relative_change = relative_change
        for state in ("changes", "channels", "pairs"):
            self.add_state(state, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, sums: Tensor) -> None:
        changes, counted = nonshiftability_counts(sums, self.threshold, self.relative_change)
        self.changes = self.changes + changes.sum().double()
        self.channels = self.channels + counted.sum().double()
        self.pairs = self.pairs + counted.sum().double() * (sums.shape[1] - 1)

    def compute(self) -> dict[str, Tensor]:
        channels = self.channels.clamp(min=1)
        return {
            "count": (self.changes / channels).float(),
            "rate": (self.changes / self.pairs.clamp(min=1)).float(),
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


class FeatureSums:
    """Forward hooks that record, for each call, the per-channel global sum of chosen layers.

    Use as ``with FeatureSums(model, layers) as probe: model(x); sums = probe.pop()`` where
    ``sums[layer]`` is [B, K] (B the images of all calls since the last ``pop``, in order).
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
        self._records: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: object, output: Tensor) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                self._records[name].append(output.detach().float().sum(dim=(-2, -1)))

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

    def pop(self) -> dict[str, Tensor]:
        """Recorded sums since the last ``pop``: ``{layer: [B, K]}``."""
        out = {name: torch.cat(parts) for name, parts in self._records.items() if parts}
        self._records = {name: [] for name in self.layers}
        return out


@contextmanager
def feature_sums(model: nn.Module, layers: Sequence[str] | None = None) -> Iterator[FeatureSums]:
    """Context manager form of ``FeatureSums``."""
    with FeatureSums(model, layers) as probe:
        yield probe
