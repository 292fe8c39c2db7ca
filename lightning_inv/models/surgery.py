"""Architectural surgery that makes subsampling respect the sampling theorem (docs/design.md, "Backbones").

- ``avgpool``: Azulay & Weiss (2019), Sec. 3: every 2x2 max pool of VGG16 becomes a 6x6 average
  pool, stride 2, padding 2. Generalised here to any max pool with stride > 1: the window grows by
  2 px on each side (kernel k+4, padding p+2), which is exactly 6x6/pad 2 for k=2 and keeps the
  output shape for every k.
- ``blurpool``: Zhang (2019), "Making convolutional networks shift-invariant again", placed as
  his released models (antialiased-cnns, ``pool_only=True``) and timm's ``resnetblur*`` do: the
  stem convolution (the network's first strided op, when it is a convolution) keeps its stride;
  MaxPool(k, s) -> MaxPool(k, 1) + BlurPool(s); a later strided conv followed by its norm and
  activation -> the same conv with stride 1, its norm and activation, then BlurPool(s); a strided
  1x1 conv (a pointwise projection, which commutes with the blur) -> BlurPool(s) then the conv
  with stride 1. Filter size 4 (the package's default, its released ``lpf4`` weights), or
  ``blurpoolN`` for N in 2..7; ``blurpool_all`` / ``blurpool_allN`` blur the stem too (Zhang's
  ``pool_only=False``). The blur is ``timm.layers.BlurPool2d`` padded as Zhang pads it
  (reflect, (N - 1) // 2 before and N // 2 after: for even N timm pads one pixel more before).
- ``aps``: Chaman & Dokmanic (2021), "Truly shift-invariant convolutional neural networks", as
  their ``aps_models/resnet.py`` builds it: every stride-2 op becomes its stride-1 version
  followed by adaptive polyphase sampling (``PolyphaseDown``: per sample, the polyphase
  component with the largest l2 norm, the same for all channels), placed after the op's norm and
  activation, so the phase is chosen on the activation (the stem: after conv1's BN + ReLU). In a
  residual block whose shortcut subsamples too, the main path subsamples where its strided op
  was (BasicBlock: after conv1's BN + ReLU, conv2 then runs on the subsampled map) and the
  shortcut is subsampled with the phase the main path chose. With every phase forced to 0 the
  network computes what the original computes (fixed-padding convolutions).
- ``aps_circular``: ``aps`` with every convolution, pool and blur padded circularly; with global
  average pooling the network is then exactly invariant to circular shifts of its input.
- ``rics`` / ``ricsM``: not surgery but input selection (after Shifman & Weiss 2024,
  ``crop_selection.py``; M the margin in px, default 16 px at 224): the model sees the crop
  whose centre maximises a fixed band-passed score, so any classifier, CNN or ViT, gives the
  same output for shifts that keep that maximum inside the candidate range.
- Surgeries combine with ``+`` in order, e.g. ``blurpool+aps`` (blur at stride 1, then APS).

Pretrained weights are kept: only strides, padding, pooling modules and wrappers change.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from timm.layers import BlurPool2d
from torch import Tensor, nn

from lightning_inv.models.crop_selection import add_crop_selection
from lightning_inv.models.layers import is_norm_or_activation

SURGERIES = ("avgpool", "blurpool", "blurpool_all", "aps", "aps_circular", "rics")
BLUR_FILTER = 4  # antialiased-cnns' default filter size (its released lpf4 weights)
_SURGERY_PATTERN = re.compile(r"(avgpool|blurpool_all|blurpool|aps_circular|aps|rics)(\d*)")
_NUMBERED = {"blurpool": (2, 7), "blurpool_all": (2, 7), "rics": (1, 512)}


def parse_surgery(part: str) -> tuple[str, int | None]:
    """One surgery of a ``+``-joined ``modify`` -> (kind, number): ``blurpool3`` -> ("blurpool",
    3) (the filter size), ``rics8`` -> ("rics", 8) (the margin in px), ``aps`` -> ("aps", None).
    Raises ``ValueError`` naming the choices."""
    match = _SURGERY_PATTERN.fullmatch(part)
    kind, digits = (match.group(1), match.group(2)) if match else (None, "")
    if kind is None or (digits and kind not in _NUMBERED):
        raise ValueError(
            f"unknown modifier {part!r}; choose one of {', '.join(SURGERIES)} (blurpool and "
            "blurpool_all take a filter size 2..7, e.g. blurpool3; rics a margin in px, e.g. rics8)"
        )
    number = int(digits) if digits else None
    if number is not None:
        low, high = _NUMBERED[kind]
        if not low <= number <= high:
            raise ValueError(f"{part!r}: the number after {kind} must be in {low}..{high}")
    return kind, number


_STRIDED_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurPool2d)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[-1])


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


class ZhangBlurPool(BlurPool2d):
    """timm's ``BlurPool2d`` (its binomial filter and strided depthwise convolution) padded as
    antialiased-cnns pads: (N - 1) // 2 before and N // 2 after each axis (timm pads an even
    filter symmetrically: one pixel more before and one more output row and column). Reflect
    padding, or replicate on a map too small to reflect (2 x 2 maps of small inputs, where
    Zhang's layer would fail)."""

    def __init__(self, filt_size: int = BLUR_FILTER, stride: int = 2) -> None:
        super().__init__(channels=None, filt_size=filt_size, stride=stride)
        before, after = (filt_size - 1) // 2, math.ceil((filt_size - 1) / 2)
        self.padding = [before, after, before, after]  # F.pad order: left, right, top, bottom

    def forward(self, x: Tensor) -> Tensor:
        mode = self.pad_mode
        if mode == "reflect" and min(x.shape[-2:]) <= max(self.padding):
            mode = "replicate"
        x = F.pad(x, self.padding, mode=mode)
        weight = self.filt.expand(x.shape[1], 1, self.filt_size, self.filt_size)
        return F.conv2d(x, weight.to(x.dtype), stride=self.stride, groups=x.shape[1])


def _blur(stride: int, filt_size: int = BLUR_FILTER) -> BlurPool2d:
    return ZhangBlurPool(filt_size, stride)


def _stem_conv(model: nn.Module) -> nn.Module | None:
    """The first strided op of ``model`` (registration order) when it is a convolution: the stem
    convolution that Zhang's released models keep strided."""
    for module in model.modules():
        if isinstance(module, _STRIDED_TYPES) and max(_pair(module.stride)) > 1:
            return module if isinstance(module, nn.Conv2d) else None
    return None


def _insert_after_activation(
    parent: nn.Module, children: list[tuple[str, nn.Module]], index: int, module: nn.Module
) -> None:
    """Put ``module`` after the norm / activation modules that follow ``children[index]`` (a
    conv) among its siblings in ``parent``, or right after the conv when none follows."""
    anchor_index = index
    while anchor_index + 1 < len(children) and is_norm_or_activation(children[anchor_index + 1][1]):
        anchor_index += 1
    anchor_name, anchor = children[anchor_index]
    setattr(parent, anchor_name, nn.Sequential(anchor, module))


def _blur_strided_ops(model: nn.Module, filt_size: int = BLUR_FILTER, stem: bool = False) -> int:
    """Apply Zhang's surgery in place (``stem``: blur the stem convolution too); returns the
    number of strided ops changed."""
    kept = None if stem else _stem_conv(model)
    changed = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for index, (child_name, child) in enumerate(children):
            if child is kept or not _is_strided(child) or isinstance(child, BlurPool2d):
                continue
            if isinstance(child, nn.AvgPool2d):  # already a box blur: left as it is
                continue
            stride = max(_pair(child.stride))
            blur = _blur(stride, filt_size)
            if isinstance(child, nn.MaxPool2d):
                child.stride = 1
                setattr(parent, child_name, nn.Sequential(child, blur))
            elif max(_pair(child.kernel_size)) == 1:  # a projection commutes with the blur
                child.stride = (1, 1)
                setattr(parent, child_name, nn.Sequential(blur, child))
            else:
                child.stride = (1, 1)
                _insert_after_activation(parent, children, index, blur)
            changed += 1
    return changed


class PhaseMemory:
    """The polyphase component a leading ``PolyphaseDown`` chose for each sample of the batch in
    flight, for the ``PolyphaseDown``s that follow it (a residual block's shortcut)."""

    def __init__(self) -> None:
        self.choice: Tensor | None = None


def polyphase_components(x: Tensor) -> Tensor:
    """[B, C, H, W] (H, W even) -> [B, 4, C, H/2, W/2], in the order of Chaman & Dokmanic's
    ``permute_polyphase``: (rows, cols) offsets (0, 0), (1, 0), (0, 1), (1, 1)."""
    return torch.stack([x[..., i::2, j::2] for j in (0, 1) for i in (0, 1)], dim=1)


class PolyphaseDown(nn.Module):
    """Adaptive polyphase sampling with stride 2 (Chaman & Dokmanic 2021): [B, C, H, W] ->
    [B, C, ceil(H/2), ceil(W/2)], keeping for each sample the component x[:, :, i::2, j::2]
    with the largest l2 norm over channels and positions (the first on ties, in their order).
    An odd side is first padded by one row / column circularly (their ``aps_pad``). A circular
    shift of the input permutes the components, so the choice follows the shift: the output is a
    circular shift of the unshifted output.

    ``memory``: a leader (``follow=False``) stores its choice there; a follower takes the
    leader's choice instead of its own (the shortcut of a strided residual block, their
    ``polyphase_indices``). ``phase``: force one component (0..3) for every sample (tests: the
    APS network then computes what the original computes)."""

    def __init__(
        self, memory: PhaseMemory | None = None, follow: bool = False, phase: int | None = None
    ) -> None:
        super().__init__()
        if follow and memory is None:
            raise ValueError("a following PolyphaseDown needs the leader's memory")
        self.memory, self.follow, self.phase = memory, follow, phase

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="circular")
        components = polyphase_components(x)
        if self.follow:
            choice = self.memory.choice  # type: ignore[union-attr]
            if choice is None or len(choice) != len(x):
                raise RuntimeError("the shortcut's PolyphaseDown ran before its block's leader")
        elif self.phase is not None:
            choice = torch.full((len(x),), self.phase, dtype=torch.long, device=x.device)
        else:
            choice = components.flatten(2).norm(dim=2).argmax(dim=1)  # [B]
        if self.memory is not None and not self.follow:
            self.memory.choice = choice
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


class PadEnd(nn.Module):
    """Circular padding of ``amount`` px after the last row and column (before a 2x2 pool run
    at stride 1, so that its output keeps the input's size and every phase has a full window)."""

    def __init__(self, amount: int) -> None:
        super().__init__()
        self.amount = amount

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.amount, 0, self.amount), mode="circular")


def _is_strided(module: nn.Module) -> bool:
    return isinstance(module, _STRIDED_TYPES) and max(_pair(module.stride)) > 1


def _strided_children(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, op) of every strided op inside ``module``, in registration order."""
    found = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if _is_strided(child):
                if max(_pair(child.stride)) != 2:
                    raise ValueError(
                        f"aps supports stride 2 only; {name} has stride {child.stride}"
                    )
                found.append((parent, name, child))
    return found


def _aps_one(parent: nn.Module, name: str, op: nn.Module, down: PolyphaseDown) -> None:
    """``op`` at stride 1 followed by ``down``: a conv's after its norm and activation (the
    phase is chosen on the activation, as in Chaman & Dokmanic's blocks and stem), a pool's and
    a 1x1 projection's right after it."""
    op.stride = (1, 1) if isinstance(op, nn.Conv2d) else 1
    children = list(parent.named_children())
    index = [n for n, _ in children].index(name)
    if isinstance(op, nn.Conv2d) and max(_pair(op.kernel_size)) > 1:
        _insert_after_activation(parent, children, index, down)
        return
    shrink = 0
    if isinstance(op, nn.MaxPool2d | nn.AvgPool2d):  # a 2x2 pool at stride 1 loses a row
        shrink = max(_pair(op.kernel_size)) - 1 - 2 * max(_pair(op.padding))
    if shrink > 0:  # their circular_pad([0, 1, 0, 1]) before MaxPool2d(2, stride=1)
        setattr(parent, name, nn.Sequential(PadEnd(shrink), op, down))
    else:
        setattr(parent, name, nn.Sequential(op, down))


def _aps_strided_ops(model: nn.Module) -> int:
    """APS surgery in place, as Chaman & Dokmanic's ``aps_models/resnet.py`` builds it; returns
    the number of subsampling points changed.

    In a residual block whose shortcut subsamples too (a ``downsample``), the main path's
    strided op runs at stride 1 and the phase is chosen on its activation (BasicBlock: after
    conv1's BN + ReLU, so conv2 runs on the subsampled map; Bottleneck: after conv2's), and the
    shortcut is subsampled with that same phase. Every other strided op (the stem conv, the max
    pool, EfficientNet's strided depthwise convs) chooses its own phase after its activation."""
    changed = 0
    done: set[int] = set()
    for block in list(model.modules()):
        downsample = getattr(block, "downsample", None)
        if not isinstance(downsample, nn.Module):
            continue
        shortcut = _strided_children(downsample)
        inside = {id(m) for m in downsample.modules()}
        main = [(p, n, op) for p, n, op in _strided_children(block) if id(op) not in inside]
        if not shortcut or len(main) != 1:
            if shortcut:
                raise ValueError(
                    f"aps: a block with a strided shortcut needs one strided op in its main "
                    f"path, {type(block).__name__} has {len(main)}"
                )
            continue
        memory = PhaseMemory()
        parent, name, op = main[0]
        _aps_one(parent, name, op, PolyphaseDown(memory))
        for parent, name, op in shortcut:
            _aps_one(parent, name, op, PolyphaseDown(memory, follow=True))
        done.update(id(op) for _, _, op in main + shortcut)
        changed += 1
    for parent, name, op in _strided_children(model):
        if id(op) not in done:
            _aps_one(parent, name, op, PolyphaseDown())
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
    ``blurpool[N]``, ``blurpool_all[N]``, ``aps``, ``aps_circular``, ``rics[M]``, e.g.
    ``blurpool+aps``) and return it.

    Raises ``ValueError`` for an unknown surgery, or when the model has nothing to modify.
    """
    for part in modify.split("+"):
        _apply_one(model, part)
    return model


def _apply_one(model: nn.Module, part: str) -> None:
    modify, number = parse_surgery(part)
    if modify == "avgpool":
        changed = _replace_maxpools_with_avgpools(model)
        if changed == 0:
            raise ValueError(
                f"modify='avgpool' found no strided max pool in {type(model).__name__}; "
                "it applies to VGG-style models. Use modify='blurpool' for strided convolutions."
            )
    elif modify in ("blurpool", "blurpool_all"):
        changed = _blur_strided_ops(model, number or BLUR_FILTER, stem=modify == "blurpool_all")
        if changed == 0:
            raise ValueError(
                f"modify={part!r} found no strided op to blur in {type(model).__name__}"
            )
    elif modify == "rics":  # not an architecture change: the model sees a selected crop
        add_crop_selection(model, margin=number)
    elif modify in ("aps", "aps_circular"):
        if _aps_strided_ops(model) == 0:
            raise ValueError(f"modify={modify!r} found no strided op in {type(model).__name__}")
        if modify == "aps_circular":  # after: the stride-1 pools keep their own padding
            _make_circular(model)


def strided_ops(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv or pooling module of ``model`` with a stride > 1, by qualified name."""
    pooling = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurPool2d)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, pooling) and max(_pair(module.stride)) > 1:
            found.append((name, module))
    return found
