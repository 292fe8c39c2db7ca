"""The paper's "simple inpainting procedure": iterated normalised convolution (docs/design.md, "Inpainting").

Azulay & Weiss filled the frame around an embedded image by repeatedly averaging known pixels with
a 12-tap binomial kernel. Their NumPy loop decided "known" by R+G+B != 0, which re-fills truly black
pixels of the photo; here the mask is explicit. Batched on the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_TAPS = 12
# For an even kernel, scipy.signal.convolve2d(..., mode="same") aligns as: pad 6 before, 5 after.
PAD_BEFORE, PAD_AFTER = KERNEL_TAPS // 2, KERNEL_TAPS // 2 - 1


def binomial_kernel(taps: int = KERNEL_TAPS, dtype: torch.dtype = torch.float32) -> Tensor:
    """1-D binomial kernel [taps]: C(taps-1, k) / 2^(taps-1), summing to 1."""
    n = taps - 1
    return torch.tensor([math.comb(n, k) / 2**n for k in range(taps)], dtype=dtype)


def _blur_separable(x: Tensor, kernel: Tensor) -> Tensor:
    """Zero-padded separable cross-correlation of [..., H, W] along rows, then columns.

    Written as 12 shifted multiply-adds per axis: on CPU this is about 9x faster than
    ``conv2d`` with a 1x12 kernel on one channel, and it gives the same numbers.
    """
    height, width = x.shape[-2:]
    taps = kernel.tolist()
    padded = F.pad(x, (PAD_BEFORE, PAD_AFTER, 0, 0))
    rows = padded[..., :, 0:width] * taps[0]
    for i in range(1, len(taps)):
        rows.add_(padded[..., :, i : i + width], alpha=taps[i])
    padded = F.pad(rows, (0, 0, PAD_BEFORE, PAD_AFTER))
    out = padded[..., 0:height, :] * taps[0]
    for i in range(1, len(taps)):
        out.add_(padded[..., i : i + height, :], alpha=taps[i])
    return out


def inpaint(images: Tensor, known: Tensor, max_passes: int | None = None) -> Tensor:
    """Fill the unknown pixels of ``images`` by iterated normalised convolution.

    Args:
        images: float [B, 3, H, W] in 0-255 (the procedure is linear, so any unit works).
        known: bool [B, 1, H, W], True where the pixel is known; every image needs one.
        max_passes: safety bound; default ``H + W`` (each pass grows the known region by >= 5 px).

    Returns:
        Float [B, 3, H, W], same dtype: known pixels unchanged, every other pixel filled.
    """
    if images.dim() != 4 or known.dim() != 4 or known.shape[1] != 1:
        raise ValueError(
            f"inpaint needs images [B, C, H, W] and known [B, 1, H, W]; got "
            f"{tuple(images.shape)} and {tuple(known.shape)}"
        )
    if known.shape[0] != images.shape[0] or known.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"known {tuple(known.shape)} does not match images {tuple(images.shape)}")
    if not known.flatten(1).any(dim=1).all():
        raise ValueError("inpaint needs at least one known pixel in every image")
    channels, height, width = images.shape[1:]
    compute = torch.float64 if images.dtype == torch.float64 else torch.float32
    kernel = binomial_kernel(dtype=compute).to(images.device)
    mask = known.to(compute)
    out = images.to(compute) * mask
    passes = max_passes if max_passes is not None else height + width
    for _ in range(passes):
        if bool(mask.bool().all()):
            break
        blurred = _blur_separable(torch.cat([out * mask, mask], dim=1), kernel)
        numerator, weight = blurred[:, :channels], blurred[:, channels:]
        estimate = numerator / (weight + (weight == 0).to(compute))
        out = mask * out + (1 - mask) * estimate
        mask = torch.maximum(mask, (weight > 0).to(compute))
    else:
        if not bool(mask.bool().all()):
            raise RuntimeError(f"inpainting did not finish in {passes} passes")
    return out.to(images.dtype)
