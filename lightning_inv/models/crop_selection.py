"""Crop selection: a consistency fix for any classifier, trained or not (``modify="rics"``).

After Shifman & Weiss, "Lost in Translation: Modern Neural Networks Still Struggle With Small
Realistic Image Transformations" (ECCV 2024), Robust Inference by Crop Selection (RICS). The rule
is ours: their paper's text and code were not reachable, so this follows their stated mechanism
and every constant is our choice (docs/design.md, "Crop selection"). The model sees, instead of its input
frame, the square crop of side ``H - 2 * margin`` whose centre maximises a fixed
shift-equivariant score of the frame (the frame's channel sum band-passed by a difference of
Gaussians of ``sigma`` and ``2 * sigma`` px, read only where the kernels lie inside the frame),
resized back to the frame. A band-pass, not a plain low-pass: the brightness of photos mostly
ramps across a few dozen pixels, so a low-passed maximum sits on the edge of the candidate range
and moves with every shift; blobs of a few pixels give maxima inside it.

Why it is consistent: when the camera moves by an integer (dy, dx), every score value at a given
scene point is unchanged. If the best scene point over the candidate centres of both frames lies
inside the candidate range of both, both frames choose that very scene point: the crops hold the
same pixels and the model returns the same output. ``guarantee_holds`` says for which shifts
this is so; the margin trades that range (consistency) against the context cut away (accuracy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_inv.protocols.inpaint import correlate_valid

MARGIN_AT_224 = 16  # px cut from each side at a 224 px canvas (scaled with the canvas)
SIGMA_AT_224 = 2.0  # px of the Gaussian low-pass at a 224 px canvas (scaled likewise)


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """1-D Gaussian [2 * ceil(3 sigma) + 1] summing to 1."""
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    return kernel / kernel.sum()


class CropSelection(nn.Module):
    """Choose and resize the crop; ``forward`` maps frames [B, C, H, W] to model inputs of the
    same shape. ``margin`` / ``sigma`` None: 16 px / 2 px at 224, scaled to the frame."""

    def __init__(self, margin: int | None = None, sigma: float | None = None) -> None:
        super().__init__()
        self.margin = margin
        self.sigma = sigma

    def settings(self, height: int, width: int) -> tuple[int, float]:
        """(margin px, sigma px) for a frame of ``height`` x ``width``."""
        side = min(height, width)
        margin = self.margin if self.margin is not None else round(side * MARGIN_AT_224 / 224)
        sigma = self.sigma if self.sigma is not None else side * SIGMA_AT_224 / 224
        crop = side - 2 * margin
        radius = len(gaussian_kernel(2 * sigma)) // 2
        if margin < 1 or crop - crop // 2 - 1 < radius:  # the kernel must fit beside the centres
            raise ValueError(
                f"crop selection needs margin >= 1 px and a crop wider than the low-pass "
                f"({2 * radius + 1} px); got margin {margin} for a {height} x {width} frame"
            )
        return margin, sigma

    def scores(self, frames: Tensor, extra: int = 0, frame: int | None = None) -> Tensor:
        """Score of each candidate crop [B, 2m + 1 + extra, 2m + 1 + extra] (top-left offsets
        0..2m per axis): the band-passed channel sum at the crop's centre.

        ``extra`` > 0 with ``frame``: ``frames`` is a larger scene that holds every frame of
        side ``frame`` at offsets 0..extra; the result is then the score of every candidate
        centre of all those frames, in scene coordinates (see ``guarantee_holds``).
        """
        height, width = (frame, frame) if frame is not None else frames.shape[-2:]
        margin, sigma = self.settings(height, width)
        fine = gaussian_kernel(sigma, torch.float64).to(frames.device)
        coarse = gaussian_kernel(2 * sigma, torch.float64).to(frames.device)
        radius, trim = len(coarse) // 2, (len(coarse) - len(fine)) // 2
        # Only the window that the candidate centres' kernels reach: crop p is centred on pixel
        # p + crop // 2, so centres start at (H - 2m) // 2 and the window ``radius`` before it.
        count = 2 * margin + 1 + extra
        span = count + 2 * radius
        top = (height - 2 * margin) // 2 - radius
        left = (width - 2 * margin) // 2 - radius
        window = frames.detach()[..., top : top + span, left : left + span]
        if window.shape[-2:] != (span, span):
            raise ValueError(
                f"{tuple(frames.shape[-2:])} px is too small for {count} candidate centres and a "
                f"low-pass of {2 * radius + 1} px; lower the margin or sigma"
            )
        total = window.to(torch.float64).sum(dim=1, keepdim=True)
        coarse_part = correlate_valid(correlate_valid(total, coarse, -1), coarse, -2)
        fine_part = correlate_valid(correlate_valid(total, fine, -1), fine, -2)
        return (fine_part[..., trim : trim + count, trim : trim + count] - coarse_part)[:, 0]

    def offsets(self, frames: Tensor) -> Tensor:
        """Top-left corner [B, 2] (row, col) of each chosen crop: the first argmax."""
        score = self.scores(frames)
        flat = score.flatten(1).argmax(dim=1)
        size = score.shape[-1]
        return torch.stack([flat // size, flat % size], dim=1)

    def forward(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        margin, _ = self.settings(height, width)
        crop_h, crop_w = height - 2 * margin, width - 2 * margin
        corner = self.offsets(frames)
        rows = corner[:, :1] + torch.arange(crop_h, device=frames.device)  # [B, crop_h]
        cols = corner[:, 1:] + torch.arange(crop_w, device=frames.device)
        batch = torch.arange(len(frames), device=frames.device)[:, None, None]
        crops = frames[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        resized = F.interpolate(crops, size=(height, width), mode="bilinear", align_corners=False)
        # The gather leaves channels last; hand the model the memory format it was given.
        format = torch.channels_last if _is_channels_last(frames) else torch.contiguous_format
        return resized.contiguous(memory_format=format)


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) == 1


def _select_crop(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (module.crop_selection(args[0]), *args[1:])


def add_crop_selection(
    model: nn.Module, margin: int | None = None, sigma: float | None = None
) -> nn.Module:
    """Make ``model`` see the selected crop of its input (a forward pre-hook; the weights and
    their state dict keys are unchanged, so any classifier, CNN or ViT, and its checkpoints
    work). Returns ``model``."""
    if hasattr(model, "crop_selection"):
        raise ValueError("the model already selects crops (modify='rics' given twice)")
    model.crop_selection = CropSelection(margin, sigma)
    model.register_forward_pre_hook(_select_crop)
    return model


def guarantee_holds(scene_scores: Tensor, margin: int, max_shift: int) -> Tensor:
    """Whether every frame of a camera sweep chooses the same scene point (the prediction).

    Args:
        scene_scores: [B, 2m + 1 + max_shift, 2m + 1 + max_shift], the score of every candidate
            centre of the frames at offsets (dy, dx) in 0..max_shift, in scene coordinates
            (``CropSelection.scores(scene, max_shift, frame)``).
        margin: m.
        max_shift: the largest offset of the sweep (px, per axis).

    Returns:
        bool [B]: the maximum over the union of the candidate ranges is unique and lies in their
        intersection (offsets max_shift..2m per axis), so every frame of the sweep crops the
        same pixels.
    """
    b = len(scene_scores)
    flat = scene_scores.flatten(1)
    best = flat.max(dim=1, keepdim=True).values
    unique = (flat == best).sum(dim=1) == 1
    index = flat.argmax(dim=1)
    size = scene_scores.shape[-1]
    row, col = index // size, index % size
    inside = (row >= max_shift) & (row <= 2 * margin) & (col >= max_shift) & (col <= 2 * margin)
    return (unique & inside).view(b)
