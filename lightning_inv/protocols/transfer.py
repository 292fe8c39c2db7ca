"""Host-to-device copies that do not wait for the device.

A copy from pageable host memory to a CUDA tensor makes the host wait until the device has run
everything queued before it; from pinned (page-locked) memory it is queued like a kernel. The
protocols plan their views on the host (offsets, rectangles, passes) and send the plans over,
so they pin first: no host-device synchronisation per batch (docs/design.md, "Inpainting").
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (on the CPU) on ``device``; a queued copy from pinned memory for CUDA."""
    if torch.device(device).type != "cuda" or tensor.is_cuda:
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
