"""Where a network loses invariance, layer by layer: the Lie derivative split into the
contributions of its layers (Gruver et al. 2023, Sec. 5; docs/design.md, "Lie derivatives").

For a network of layers g_l, each with input h_l and output g_l(h_l), the chain rule splits the
end-to-end Lie derivative of the output f along a generator X into one term per layer:

    L_X f(x) = sum_l J_{f <- l} L_X g_l(h_l),   L_X g_l(h) = J_{g_l}(h) X h - X g_l(h),

where L_X g_l is the layer's own failure to commute with the transformation (zero for a circular
convolution of stride 1 or a per-channel affine map, non-zero for a strided layer, a zero-padded
border or a pointwise nonlinearity, which aliases) and J_{f <- l} carries it to the output. Each
contribution c_l = J_{f <- l} L_X g_l is computed exactly, by one forward-mode pass that starts
the tangent at the layer's output (the paper's code estimates |c_l|^2 from 100 random probes of
the softmax instead: E_z[(z . c_l)^2] = |c_l|^2; test_lie.py checks our exact value against that
estimator). The value per image and layer is |J_softmax c_l|^2, the layer's share of the local
equivariance error in the paper's units. The signed contributions add up to the end-to-end
derivative exactly; squared norms do not (cross terms). What no module accounts for (functional
operations between modules that do not commute with the transformation: a position embedding
added outside a module, a slice) is reported as the pseudo-layer ``UNATTRIBUTED``.

Layers are the leaf modules run in the forward pass (modules without children, not identity or
dropout), found by one dry pass (``attribution_points``). Maps are [B, C, H, W], or [B, H, W, C]
for linear layers and norms applied channels last (timm's ``Mlp`` of ConvNeXt blocks); other
layouts (transformer tokens) are refused with a message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_inv.measuring.lie import softmax_derivative
from lightning_inv.measuring.nonshiftability import in_linear_mlp
from lightning_inv.models.layers import NORMS, is_activation
from lightning_inv.protocols.tangents import check_boundary, check_generator, tangent

UNATTRIBUTED = "unattributed"
PASSIVE = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


@dataclass(frozen=True)
class LayerPoint:
    """One layer call of a forward pass: ``module``'s ``call``-th call (``name`` gets ``@k`` for
    modules run several times), ``depth`` convolutions run before it, its ``kind``
    (convolution, nonlinearity, subsampling, normalisation, linear, other) and whether its maps
    are channels last."""

    name: str
    module: str
    call: int
    depth: int
    kind: str
    channels_last: bool = False


def layer_kind(module: nn.Module) -> str:
    """What a layer does, for the figure's colours."""
    if isinstance(module, nn.Conv2d):
        return "convolution" if max(getattr(module, "stride", (1,))) == 1 else "strided convolution"
    if is_activation(module) or isinstance(module, nn.Sigmoid):
        return "nonlinearity"
    name = type(module).__name__.lower()
    if "pool" in name or "polyphase" in name:
        return "subsampling"
    if isinstance(module, NORMS) or "norm" in name:
        return "normalisation"
    if isinstance(module, nn.Linear):
        return "linear"
    return "other"


def _is_leaf(module: nn.Module) -> bool:
    return not any(True for _ in module.children()) and not isinstance(module, PASSIVE)


def _is_spatial(x: object, channels_last: bool) -> bool:
    if not isinstance(x, Tensor) or x.dim() != 4:
        return False
    spatial = x.shape[1:3] if channels_last else x.shape[2:]
    return max(spatial) > 1


def _channels_last(module: nn.Module, parent: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear | nn.LayerNorm) or in_linear_mlp(parent)


def attribution_points(model: nn.Module, input_size: int | tuple[int, int]) -> list[LayerPoint]:
    """The layer calls whose input is a spatial map, in forward order, from one dry pass of a
    blank [1, 3, H, W] input (a layer whose input is already pooled cannot break invariance:
    its contribution is zero and it is left out)."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    parents = {
        f"{name}.{child}" if name else child: module
        for name, module in model.named_modules()
        for child, _ in module.named_children()
    }
    seen: list[tuple[str, nn.Module, bool]] = []
    tokens: list[str] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: object) -> None:
            first = inputs[0] if inputs else None
            channels_last = _channels_last(module, parents.get(name))
            if isinstance(first, Tensor) and first.dim() == 3 and first.shape[1] > 1:
                tokens.append(name)
            seen.append((name, module, _is_spatial(first, channels_last)))

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if name and _is_leaf(module)
    ]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    floating = parameter is not None and parameter.is_floating_point()
    dtype = parameter.dtype if floating else torch.float32
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    if tokens:
        raise ValueError(
            f"per-layer Lie derivatives need feature maps [B, C, H, W]; {tokens[0]} gets "
            "transformer tokens [B, N, C] (end-to-end Lie derivatives work for any model: drop "
            "the attribution, e.g. --protocols lie)"
        )
    points: list[LayerPoint] = []
    convs, calls = 0, Counter()
    for name, module, spatial in seen:
        call = calls[name]
        calls[name] += 1
        if spatial:
            channels_last = _channels_last(module, parents.get(name))
            label = name if call == 0 else f"{name}@{call}"
            points.append(LayerPoint(label, name, call, convs, layer_kind(module), channels_last))
        convs += isinstance(module, nn.Conv2d)
    repeated = {p.module for p in points if calls[p.module] > 1}
    return [
        LayerPoint(f"{p.module}@0", p.module, 0, p.depth, p.kind, p.channels_last)
        if p.module in repeated and p.call == 0
        else p
        for p in points
    ]


def _map_tangent(
    x: Tensor, generator: str, image: tuple[int, int], channels_last: bool, boundary: str
) -> Tensor:
    if not _is_spatial(x, channels_last):
        return torch.zeros_like(x)
    if channels_last:
        return tangent(x.permute(0, 3, 1, 2), generator, image, boundary).permute(0, 2, 3, 1)
    return tangent(x, generator, image, boundary)


class LayerAttribution:
    """Per-layer contributions to the Lie derivative of ``run`` (images -> logits) along
    ``generator`` (tangents with ``boundary``), for the ``points`` of ``backbone`` (a module
    ``run`` calls once per pass).

    ``attribution(images [B, 3, H, W])`` returns ``{point name: |J_softmax c_l|^2 [B]}`` plus
    ``UNATTRIBUTED``; cost: one pass that computes every layer's own Lie derivative, then one
    forward-mode pass per layer (the contributions are exact, no probes). Use a
    ``linearizable`` copy of the model (no in-place activations).
    """

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        backbone: nn.Module,
        points: list[LayerPoint],
        generator: str,
        boundary: str = "reflect",
        chunk: int = 8,
    ) -> None:
        check_generator(generator)
        check_boundary(boundary)
        self.boundary = boundary
        self.run, self.backbone, self.points, self.generator = run, backbone, points, generator
        self.chunk = chunk
        self.layers = [p.name for p in points] + [UNATTRIBUTED]
        self.depths = {p.name: p.depth for p in points}
        self.depths[UNATTRIBUTED] = max((p.depth for p in points), default=0) + 1
        self.kinds = {p.name: p.kind for p in points} | {UNATTRIBUTED: "outside modules"}
        modules = dict(backbone.named_modules())
        self._modules = {p.module: modules[p.module] for p in points}
        self._by_call = {(p.module, p.call): i for i, p in enumerate(points)}

    def _hooked(self, hook: Callable[[int, nn.Module, tuple, dict, Tensor], Tensor | None]):
        """Register ``hook(point index, module, args, kwargs, output)`` on every point's module
        (calls counted per pass); returns the handles."""
        calls: Counter[str] = Counter()

        def new_pass(module: nn.Module, args: object) -> None:
            calls.clear()

        def wrap(name: str):
            def on_output(module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
                index = self._by_call.get((name, calls[name]))
                calls[name] += 1
                return None if index is None else hook(index, module, args, kwargs, output)

            return on_output

        handles = [self.backbone.register_forward_pre_hook(new_pass)]
        handles += [
            module.register_forward_hook(wrap(name), with_kwargs=True)
            for name, module in self._modules.items()
        ]
        return handles

    def own_derivatives(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits [B, C] and every layer's own Lie derivative L_X g_l(h_l) (its output's shape)."""
        image = tuple(images.shape[-2:])
        own: list[Tensor | None] = [None] * len(self.points)

        def compute(index: int, module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
            point = self.points[index]
            x, rest = args[0], args[1:]
            moved = _map_tangent(x, self.generator, image, point.channels_last, self.boundary)
            _, pushed = torch.func.jvp(lambda h: module.forward(h, *rest, **kwargs), (x,), (moved,))
            own[index] = pushed - _map_tangent(
                output, self.generator, image, point.channels_last, self.boundary
            )
            return None

        handles = self._hooked(compute)
        try:
            with torch.no_grad():
                logits = self.run(images)
        finally:
            for handle in handles:
                handle.remove()
        missing = [self.points[i].name for i, value in enumerate(own) if value is None]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in this forward pass")
        return logits, own  # type: ignore[return-value]

    def contribution(self, images: Tensor, index: int, own: Tensor) -> Tensor:
        """c_l [B, C]: the layer's own Lie derivative carried to the logits, as the derivative
        at e = 0 of the network whose layer l outputs g_l(h_l) + e L_X g_l(h_l) (forward mode
        through ``torch.func.jvp``, which also runs under ``torch.inference_mode``)."""

        def network(step: Tensor) -> Tensor:
            def start(i: int, module: nn.Module, args: tuple, kwargs: dict, output: Tensor):
                return output + step * own if i == index else None

            handles = self._hooked(start)
            try:
                return self.run(images)
            finally:
                for handle in handles:
                    handle.remove()

        zero = torch.zeros((), device=images.device, dtype=own.dtype)
        _, derivative = torch.func.jvp(network, (zero,), (torch.ones_like(zero),))
        return derivative

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """``{layer: |J_softmax c_l|^2 [B]}`` and ``UNATTRIBUTED``, ``chunk`` images at a time
        (every layer's own derivative of a chunk is held at once: ~ the activations of a
        forward pass per image)."""
        parts = [
            self._values(images[s : s + self.chunk]) for s in range(0, len(images), self.chunk)
        ]
        return {name: torch.cat([part[name] for part in parts]) for name in self.layers}

    def _values(self, images: Tensor) -> dict[str, Tensor]:
        logits, own = self.own_derivatives(images)
        _, total = torch.func.jvp(
            self.run, (images,), (tangent(images, self.generator, None, self.boundary),)
        )
        values: dict[str, Tensor] = {}
        remainder = total.double()
        for index, point in enumerate(self.points):
            c = self.contribution(images, index, own[index]).double()
            remainder = remainder - c
            values[point.name] = softmax_derivative(logits, c).pow(2).sum(-1)
        values[UNATTRIBUTED] = softmax_derivative(logits, remainder).pow(2).sum(-1)
        return values

    def signed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(contributions [B, L, C] in logit space, end-to-end derivative [B, C]): the
        decomposition itself, for checks (sum over L = the end-to-end derivative)."""
        _, own = self.own_derivatives(images)
        _, total = torch.func.jvp(
            self.run, (images,), (tangent(images, self.generator, None, self.boundary),)
        )
        parts = [self.contribution(images, i, own[i]) for i in range(len(self.points))]
        return torch.stack(parts, 1), total
