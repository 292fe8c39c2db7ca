"""What a measurement costs in time and memory, for results.json's ``timing`` (docs/speed.md).

``RunTiming`` is a Lightning callback on ``Trainer.test``: it notes when the first batch reaches
the model (``ready_s``, seconds since the process started: imports, the model, the data set,
Lightning and the data loader's first batch), how long that first batch took (``first_batch_s``:
one-off work such as compiling the CPU inpainting loop or choosing cuDNN kernels), the rate of
the batches after it (``images_per_s`` and ``views_per_s``, every process's images), and the
peak memory of this process (``peak_host_mib``: resident set; ``peak_device_mib``: the CUDA
caching allocator's peak, on a GPU).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux: ``/proc``; None elsewhere)."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def peak_host_mib() -> float:
    """Peak resident memory of this process (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class RunTiming(Callback):
    """Times one ``Trainer.test`` (see the module docstring); ``summary()`` after it.

    ``views_per_image``: the protocols' views per image (their sum), to turn images into views.
    """

    def __init__(self, views_per_image: int) -> None:
        self.views_per_image = views_per_image
        self.ready_s: float | None = None
        self._first_start = self._first_end = self._last_end = 0.0
        self._images_after_first = 0
        self.first_batch_s: float | None = None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.ready_s is None:
            self.ready_s = seconds_since_process_start()
            self._first_start = time.perf_counter()

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.first_batch_s is None:
            _finish(pl_module.device)  # once: the first batch's kernels done, not only queued
            self._first_end = time.perf_counter()
            self.first_batch_s = self._first_end - self._first_start
        else:  # no wait for the device per batch: the rate is taken at the end
            self._images_after_first += len(batch["image"]) * trainer.world_size

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Before the evaluator computes its results: the end of measuring."""
        _finish(pl_module.device)
        self._last_end = time.perf_counter()

    def summary(self, device: torch.device) -> dict[str, float | None]:
        measured = self._last_end - self._first_end
        timed = measured > 0 and self._images_after_first > 0  # one batch: no rate after it
        rate = self._images_after_first / measured if timed else None
        peak_device = (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        )
        return {
            "ready_s": _round(self.ready_s),
            "first_batch_s": _round(self.first_batch_s),
            "images_per_s": _round(rate),
            "views_per_s": _round(rate * self.views_per_image if rate else None),
            "views_per_image": self.views_per_image,
            "peak_host_mib": _round(peak_host_mib()),
            "peak_device_mib": _round(peak_device),
        }


def describe_timing(timing: dict[str, Any]) -> str:
    """One line of a ``summary`` (with ``device``), for the console."""
    parts = [f"on {timing['device']}"]
    if timing.get("ready_s") is not None:
        parts.append(f"first batch {timing['ready_s']:.1f} s after start")
    if timing.get("images_per_s") is not None:
        parts.append(
            f"then {timing['images_per_s']:.2f} images/s ({timing['views_per_s']:.0f} views/s)"
        )
    peak = f"peak memory {timing['peak_host_mib'] / 1024:.1f} GiB"
    if timing.get("peak_device_mib") is not None:
        peak += f" host, {timing['peak_device_mib'] / 1024:.1f} GiB device"
    return ", ".join([*parts, peak])


def device_name(device: torch.device) -> str:
    """``cpu (N threads)`` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def _finish(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
