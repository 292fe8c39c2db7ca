"""Architectural surgery that makes subsampling respect the sampling theorem (docs/design.md, "Backbones").

- ``avgpool``: Azulay & Weiss (2019), Sec. 3: every 2x2 max pool of VGG16 becomes a 6x6 average
  pool, stride 2, padding 2. Generalised here to any max pool with stride > 1: the window grows by
  2 px on each side (kernel k+4, padding p+2), which is exactly 6x6/pad 2 for k=2 and keeps the
  output shape for every k.
- ``blurpool``: Zhang (2019), "Making convolutional networks shift-invariant again":
  MaxPool(k, s) -> MaxPool(k, 1) + BlurPool(s); a strided conv followed by its norm and activation
  -> the same conv with stride 1, its norm and activation, then BlurPool(s); a strided 1x1 conv
  (a pointwise projection, which commutes with the blur) -> BlurPool(s) then the conv with stride 1.
  The blur is ``timm.layers.BlurPool2d``.
- ``aps``: Chaman & Dokmanic (2021), "Truly shift-invariant convolutional neural networks":
  every stride-2 op becomes its stride-1 version followed by adaptive polyphase sampling
  (``PolyphaseDown``: per sample, the polyphase component with the largest l2 norm, the same for
  all channels). A residual block whose main path and shortcut both subsample (timm's ResNet
  blocks with a ``downsample``) runs at stride 1 as a whole and is followed by one
  ``PolyphaseDown``, so both branches keep the same phase and their sum stays aligned.
- ``aps_circular``: ``aps`` with every convolution, pool and blur padded circularly; with global
  average pooling the network is then exactly invariant to circular shifts of its input.
- ``rics``: not surgery but input selection (Shifman & Weiss 2024, ``crop_selection.py``): the
  model sees the crop whose centre maximises a fixed low-passed score, so any classifier, CNN or
  ViT, gives the same output for shifts that keep that maximum inside the candidate range.
- Surgeries combine with ``+`` in order, e.g. ``blurpool+aps`` (blur at stride 1, then APS).

Pretrained weights are kept: only strides, padding, pooling modules and wrappers change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import BlurPool2d
from torch import Tensor, nn

from lightning_inv.crop_selection import add_crop_selection

SURGERIES = ("avgpool", "blurpool", "aps", "aps_circular", "rics")
_STRIDED_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurPool2d)

# Modules that may sit between a strided conv and the point where its output has passed the
# norm and the nonlinearity; the blur goes after the last of them.
_NORM_ACT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.Identity,
    nn.Dropout,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[-1])


def _is_norm_or_act(module: nn.Module) -> bool:
    if isinstance(module, _NORM_ACT_TYPES):
        return True
    # timm's fused BatchNormAct2d / GroupNormAct and its activation layers live in timm.layers.
    name = type(module).__name__.lower()
    return any(tag in name for tag in ("norm", "act", "drop", "relu", "swish", "silu", "gelu"))


def _replace_maxpools_with_avgpools(model: nn.Module) -> int:
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d) and max(_pair(child.stride)) > 1:
                kernel, padding = _pair(child.kernel_size), _pair(child.padding)
                avg = nn.AvgPool2d(
                    kernel_size=(kernel[0] + 4, kernel[1] + 4),
                    stride=child.stride,
                    padding=(padding[0] + 2, padding[1] + 2),
                    ceil_mode=child.ceil_mode,
                    count_include_pad=False,
                )
                setattr(parent, child_name, avg)
                replaced += 1
    return replaced


def _blur(stride: int) -> BlurPool2d:
    return BlurPool2d(channels=None, filt_size=3, stride=stride)


def _blur_strided_ops(model: nn.Module) -> int:
    """Apply Zhang's surgery in place; returns the number of strided ops changed."""
    changed = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for index, (child_name, child) in enumerate(children):
            if isinstance(child, nn.MaxPool2d) and max(_pair(child.stride)) > 1:
                stride = max(_pair(child.stride))
                child.stride = 1
                setattr(parent, child_name, nn.Sequential(child, _blur(stride)))
                changed += 1
            elif isinstance(child, nn.Conv2d) and max(_pair(child.stride)) > 1:
                stride = max(_pair(child.stride))
                child.stride = (1, 1)
                if max(_pair(child.kernel_size)) == 1:
                    setattr(parent, child_name, nn.Sequential(_blur(stride), child))
                    changed += 1
                    continue
                # Blur after the norm / activation that follow the conv among its siblings.
                anchor_index = index
                while anchor_index + 1 < len(children) and _is_norm_or_act(
                    children[anchor_index + 1][1]
                ):
                    anchor_index += 1
                anchor_name, anchor = children[anchor_index]
                if anchor_index == index:  # nothing follows inside this container
                    setattr(parent, child_name, nn.Sequential(child, _blur(stride)))
                else:
                    setattr(parent, anchor_name, nn.Sequential(anchor, _blur(stride)))
                changed += 1
    return changed


class PolyphaseDown(nn.Module):
    """Adaptive polyphase sampling with stride 2 (Chaman & Dokmanic 2021): [B, C, H, W] ->
    [B, C, ceil(H/2), ceil(W/2)], keeping for each sample the component x[:, :, i::2, j::2]
    with the largest l2 norm over channels and positions. An odd side is first padded by one
    row / column circularly. A circular shift of the input permutes the components, so the
    choice follows the shift: the output is a circular shift of the unshifted output."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="circular")
        components = torch.stack(
            [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)], dim=1
        )  # [B, 4, C, H/2, W/2]
        choice = components.flatten(2).norm(dim=2).argmax(dim=1)  # [B]
        return components[torch.arange(len(x), device=x.device), choice]


class CircularPad(nn.Module):
    """Circular padding of ``padding`` px on every side (for pools, which only pad with -inf or
    zeros)."""

    def __init__(self, padding: tuple[int, int]) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        top, left = self.padding
        return F.pad(x, (left, left, top, top), mode="circular")


def _is_strided(module: nn.Module) -> bool:
    return isinstance(module, _STRIDED_TYPES) and max(_pair(module.stride)) > 1


def _to_stride_one(module: nn.Module) -> None:
    """Every strided op inside ``module`` (itself included) at stride 1; only stride 2 is
    supported (APS with stride 2)."""
    for name, inner in module.named_modules():
        if _is_strided(inner):
            if max(_pair(inner.stride)) != 2:
                raise ValueError(
                    f"aps supports stride 2 only; {name or type(inner).__name__} has stride {inner.stride}"
                )
            inner.stride = (1, 1) if isinstance(inner, nn.Conv2d) else 1


def _aps_strided_ops(model: nn.Module) -> int:
    """APS surgery in place; returns the number of subsampling points changed."""
    changed = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            downsample = getattr(child, "downsample", None)
            whole_block = downsample is not None and any(_is_strided(m) for m in child.modules())
            if whole_block or _is_strided(child):
                _to_stride_one(child)
                setattr(parent, child_name, nn.Sequential(child, PolyphaseDown()))
                changed += 1
    return changed


def _make_circular(model: nn.Module) -> None:
    """Circular padding for every conv, pool and blur of ``model`` (in place)."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if "same" in type(child).__name__.lower():
                raise ValueError(
                    f"aps_circular needs fixed padding; {type(child).__name__} pads dynamically "
                    "(TensorFlow 'same'); use modify='aps' for this model"
                )
            if isinstance(child, nn.Conv2d) and max(_pair(child.padding)) > 0:
                child.padding_mode = "circular"
            elif isinstance(child, nn.MaxPool2d | nn.AvgPool2d) and max(_pair(child.padding)) > 0:
                padding = _pair(child.padding)
                child.padding = 0
                setattr(parent, child_name, nn.Sequential(CircularPad(padding), child))
            elif isinstance(child, BlurPool2d):
                child.pad_mode = "circular"


def apply_surgery(model: nn.Module, modify: str) -> nn.Module:
    """Modify ``model`` in place by each ``+``-separated surgery of ``modify`` (``avgpool``,
    ``blurpool``, ``aps``, ``aps_circular``, e.g. ``blurpool+aps``) and return it.

    Raises ``ValueError`` for an unknown surgery, or when the model has nothing to modify.
    """
    for part in modify.split("+"):
        _apply_one(model, part)
    return model


def _apply_one(model: nn.Module, modify: str) -> None:
    if modify == "avgpool":
        changed = _replace_maxpools_with_avgpools(model)
        if changed == 0:
            raise ValueError(
                f"modify='avgpool' found no strided max pool in {type(model).__name__}; "
                "it applies to VGG-style models. Use modify='blurpool' for strided convolutions."
            )
    elif modify == "blurpool":
        changed = _blur_strided_ops(model)
        if changed == 0:
            raise ValueError(f"modify='blurpool' found no strided op in {type(model).__name__}")
    elif modify == "rics":  # not an architecture change: the model sees a selected crop
        add_crop_selection(model)
    elif modify in ("aps", "aps_circular"):
        if modify == "aps_circular":
            _make_circular(model)
        if _aps_strided_ops(model) == 0:
            raise ValueError(f"modify={modify!r} found no strided op in {type(model).__name__}")
    else:
        raise ValueError(f"unknown modify={modify!r}; choose one of {', '.join(SURGERIES)} or None")


def strided_ops(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv or pooling module of ``model`` with a stride > 1, by qualified name."""
    pooling = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurPool2d)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, pooling) and max(_pair(module.stride)) > 1:
            found.append((name, module))
    return found
