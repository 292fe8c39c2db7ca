"""How much a backbone subsamples, measured from the model itself (paper Sec. 3.1).

A network whose feature maps are subsampled by a total factor ``s`` is only guaranteed to be
invariant to translations by multiples of ``s`` pixels, i.e. to a fraction ``1 / s**2`` of all
2-D translations (the paper: ``s`` is about 45 for VGG16, 60 for InceptionResNetV2).
The factor is read off the spatial sizes of the layer outputs in one forward pass (forward
hooks on every leaf module), so it holds for any architecture, surgery included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Subsampling:
    """Cumulative strides of a backbone for an input of ``input_size`` pixels.

    Attributes:
        input_size: side of the square probe input, in pixels.
        layers: ``(module name, cumulative stride)`` where the stride first reaches a new value,
            in forward order. The stride is ``input_size / output side`` (pixels per feature cell).
        factor: the final subsampling factor ``s`` (the largest cumulative stride of any 4-D output).
    """

    input_size: int
    layers: tuple[tuple[str, float], ...]
    factor: float

    @property
    def invariant_fraction(self) -> float:
        """Fraction ``1 / s**2`` of 2-D translations under which exact invariance is guaranteed."""
        return 1.0 / self.factor**2

    def describe(self) -> str:
        """One line, e.g. ``subsampling factor 32 -> exact invariance for 1/1024 of translations``."""
        factor = f"{self.factor:g}"
        return (
            f"subsampling factor {factor} -> exact invariance guaranteed "
            f"for 1/{self.factor**2:g} = {self.invariant_fraction:.2e} of 2-D translations"
        )


def _output_sides(model: nn.Module, input_size: int) -> list[tuple[str, int]]:
    """(leaf module name, output side) of every 4-D leaf output, in forward order."""
    sides: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # leaves only: a block's output side equals its last leaf's

        def record(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                sides.append((name, output.shape[-1]))

        handles.append(module.register_forward_hook(record))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    try:
        # timm models: stop at the last feature map (a head may hold 1x1 convs after pooling).
        features = getattr(model, "forward_features", model)
        features(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return sides


@torch.no_grad()
def measure_subsampling(model: nn.Module, input_size: int = 224, extra: int = 256) -> Subsampling:
    """Measure the cumulative strides of ``model`` from two forward passes.

    The stride after a layer is ``extra / (side at input_size + extra - side at input_size)``:
    how many input pixels one more feature cell costs. Unlike ``input / output side`` this is
    the shift period of the layer, unaffected by borders and "valid" padding.

    Args:
        model: a backbone (timm models are probed through ``forward_features``); put in eval
            mode for the probe and restored afterwards.
        input_size: side of the first probe input in pixels (the model's native size).
        extra: pixels added for the second pass; a multiple of every stride (256 covers
            power-of-two strides up to 256).

    Returns:
        a ``Subsampling`` with the per-layer cumulative strides and the final factor.
    """
    if input_size < 8 or extra < 1:
        raise ValueError(f"need input_size >= 8 and extra >= 1 pixels, got {input_size}, {extra}")
    was_training = model.training
    model.eval()
    try:
        small = _output_sides(model, input_size)
        large = _output_sides(model, input_size + extra)
    finally:
        model.train(was_training)
    if not small or len(small) != len(large):
        raise ValueError(
            "the model produced no 4-D feature maps (or a varying number): cannot measure"
        )
    layers: list[tuple[str, float]] = []
    for (name, side), (_, side_large) in zip(small, large, strict=True):
        if side_large == side:
            continue  # a global pool (constant 1x1): not a stride
        stride = round(extra / (side_large - side), 3)
        if not layers or stride > layers[-1][1]:
            layers.append((name, stride))
    if not layers:
        raise ValueError(
            "the model has no spatial feature maps (only global pools): cannot measure"
        )
    return Subsampling(input_size, tuple(layers), layers[-1][1])
