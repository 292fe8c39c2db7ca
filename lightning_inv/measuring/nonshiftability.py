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
``FeatureSums`` records S_t and P_t with forward hooks at the ``ProbePoint``s that
``probe_points`` finds: by default the activities (outputs of the nonlinearities), as the paper
counts "the global sum of activities" (docs/design.md, "Nonshiftability").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_inv.models.layers import is_activation


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
    """Every ``nn.Conv2d`` of ``model`` in registration order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


PROBE_KINDS = ("activity", "conv")


@dataclass(frozen=True)
class ProbePoint:
    """One recorded feature map: the output of ``module``'s ``call``-th call in a forward pass.

    ``name``: its key in results (the module's name, ``@k`` appended for the k-th call of a
    module that runs several times per pass); ``depth``: the number of convolutions (``nn.Conv2d``)
    run before it in the forward pass (AW Fig. 10's depth, "number of trainable convolutional
    layers preceding the layer"); ``channels_last``: the map is [B, H, W, C] (timm's ``Mlp``
    with linear layers, as in ConvNeXt blocks)."""

    name: str
    module: str
    call: int
    depth: int
    channels_last: bool = False


def probe_points(
    model: nn.Module, input_size: int | tuple[int, int], kind: str = "activity"
) -> list[ProbePoint]:
    """The feature maps Fig. 10 counts, in forward order, found by one forward pass of a blank
    [1, 3, H, W] input (docs/design.md, "Nonshiftability").

    ``kind="activity"`` (the paper's "activities"): the output of every nonlinearity (activation
    modules, including the ``act`` of timm's fused norm-act layers: after a convolution's norm
    and activation, and after a residual sum where the block activates it). A convolution
    followed by no nonlinearity (the linear projection of an inverted residual block, a ResNet
    shortcut, a DenseNet layer's output before concatenation) has no activity of its own and is
    left out; its output reaches the next activity, and it still counts in the depth.
    ``kind="conv"``: the raw output of every convolution (before its norm and activation).
    Maps of 1 x 1 (squeeze-excitation gates, VGG's classifier convolutions) are not spatial and
    are left out of both."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    parents = {
        f"{name}.{child_name}" if name else child_name: module
        for name, module in model.named_modules()
        for child_name, _ in module.named_children()
    }
    seen: list[tuple[str, bool, Tensor]] = []  # (module, is conv, output) in call order
    wanted = nn.Conv2d if kind == "conv" else None

    def hook(name: str, is_conv: bool):
        def record(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, Tensor):
                seen.append((name, is_conv, output.detach()))

        return record

    handles = []
    for name, module in model.named_modules():
        is_conv = isinstance(module, nn.Conv2d)
        if is_conv or (wanted is None and is_activation(module)):
            handles.append(module.register_forward_hook(hook(name, is_conv)))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device=device, dtype=dtype or torch.float32))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    points: list[ProbePoint] = []
    convs, calls = 0, Counter()
    for name, is_conv, output in seen:
        call = calls[name]
        calls[name] += 1
        probed = is_conv if kind == "conv" else not is_conv
        if probed and output.dim() == 4:
            channels_last = in_linear_mlp(parents.get(name))
            spatial = output.shape[1:3] if channels_last else output.shape[2:]
            if max(spatial) > 1:
                label = name if call == 0 else f"{name}@{call}"
                points.append(ProbePoint(label, name, call, convs, channels_last))
        convs += is_conv
    repeated = {point.module for point in points if calls[point.module] > 1}
    return [
        replace(point, name=f"{point.module}@{point.call}")
        if point.module in repeated and point.call == 0
        else point
        for point in points
    ]


def in_linear_mlp(parent: nn.Module | None) -> bool:
    """The module sits in a timm ``Mlp`` made of linear layers, applied channels last."""
    return type(parent).__name__ == "Mlp" and isinstance(getattr(parent, "fc1", None), nn.Linear)


class FeatureSums:
    """Forward hooks that record, for each forward pass, the per-channel global sum and spatial
    maximum of chosen feature maps.

    Use as ``with FeatureSums(model, points) as probe: model(x); sums, peaks = probe.pop()`` where
    ``sums[name]`` and ``peaks[name]`` are [B, K] (B the images of all passes since the last
    ``pop``, in order). ``points``: ``ProbePoint``s (``probe_points``), or module names (the
    module's first output of each pass). Calls made while ``recording`` is False leave no
    record (an evaluator that probes some protocols turns it on only for those: records nobody
    pops would pile up).
    """

    def __init__(self, model: nn.Module, points: Sequence[ProbePoint | str] | None = None) -> None:
        modules = dict(model.named_modules())
        chosen = list(points) if points is not None else probe_layers(model)
        self.points = [
            p if isinstance(p, ProbePoint) else ProbePoint(p, p, 0, depth)
            for depth, p in enumerate(chosen)
        ]
        unknown = [p.module for p in self.points if p.module not in modules]
        if unknown:
            raise ValueError(
                f"unknown layers {unknown}; pick from model.named_modules(), e.g. {probe_layers(model)}"
            )
        self.layers = [p.name for p in self.points]
        self.depths = {p.name: p.depth for p in self.points}
        self._model = model
        self._by_call: dict[str, dict[int, ProbePoint]] = {}
        for point in self.points:
            self._by_call.setdefault(point.module, {})[point.call] = point
        self._calls: Counter[str] = Counter()
        self._records: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.recording = True

    def _hook(self, module_name: str):
        def record(module: nn.Module, inputs: object, output: Tensor) -> None:
            call = self._calls[module_name]
            self._calls[module_name] += 1
            point = self._by_call[module_name].get(call)
            if point is None or not self.recording or not isinstance(output, Tensor):
                return
            if output.dim() != 4:
                return
            feature = output.detach().float()
            if point.channels_last:
                feature = feature.permute(0, 3, 1, 2)
            flat = feature.flatten(2)
            self._records[point.name].append((flat.sum(-1), flat.amax(-1)))

        return record

    def _new_pass(self, module: nn.Module, inputs: object) -> None:
        self._calls.clear()

    def __enter__(self) -> FeatureSums:
        modules = dict(self._model.named_modules())
        self._handles = [self._model.register_forward_pre_hook(self._new_pass)]
        self._handles += [
            modules[name].register_forward_hook(self._hook(name)) for name in self._by_call
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pop(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Recorded ``(sums, peaks)`` since the last ``pop``: ``{name: [B, K]}`` each."""
        sums = {n: torch.cat([s for s, _ in parts]) for n, parts in self._records.items() if parts}
        peaks = {n: torch.cat([p for _, p in parts]) for n, parts in self._records.items() if parts}
        self._records = {name: [] for name in self.layers}
        return sums, peaks


@contextmanager
def feature_sums(
    model: nn.Module, points: Sequence[ProbePoint | str] | None = None
) -> Iterator[FeatureSums]:
    """Context manager form of ``FeatureSums``."""
    with FeatureSums(model, points) as probe:
        yield probe


__all__ = [
    "PROBE_KINDS",
    "FeatureSums",
    "Nonshiftability",
    "ProbePoint",
    "conv_layers",
    "feature_sums",
    "nonshiftability_counts",
    "nonshiftability_per_image",
    "probe_layers",
    "probe_points",
]
