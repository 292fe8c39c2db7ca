"""Which code path a tensor's work takes: the CPU path or the accelerator path.

Some steps have two implementations with the same numbers (docs/design.md, "Devices"): on the CPU
the views are pasted in place and the inpainting runs as one compiled loop (``band_kernel``);
on an accelerator every step keeps fixed shapes, reads no device value on the host and queues
its host-to-device copies (CUDA graphs, pinned memory). ``accelerated`` decides; inside
``accelerator_path()`` CPU tensors take the accelerator path too, so that the path's logic, its
numbers and its host reads (``lightning_inv.measuring.host_reads``) are tested on a machine
without a GPU. What needs the device itself (capturing a CUDA graph, pinning memory) still runs
only on it.

>>> import torch
>>> accelerated(torch.zeros(1))
False
>>> with accelerator_path():
...     accelerated(torch.zeros(1))
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

_forced = False
_constant_caches: list[Any] = []
F = TypeVar("F", bound=Callable[..., Any])


def accelerated(where: Tensor | torch.device | str) -> bool:
    """Whether work on ``where`` (a tensor or a device) takes the accelerator path: any device
    but the CPU, or the CPU inside ``accelerator_path()``."""
    device = where.device if isinstance(where, Tensor) else torch.device(where)
    return device.type != "cpu" or _forced


@contextmanager
def accelerator_path() -> Iterator[None]:
    """Run CPU tensors through the accelerator path (for tests and ``benchmarks/host_syncs.py``)."""
    global _forced
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous


def device_constants(function: F) -> F:
    """Cache ``function``'s tensors per arguments (a ``device`` among them): made and copied to
    the device once, never per call. ``clear_device_constants`` forgets them all (so that
    ``HostReads`` sees them made on the device it watches)."""
    cached = functools.lru_cache(maxsize=8)(function)
    _constant_caches.append(cached)
    return cached  # type: ignore[return-value]


def clear_device_constants() -> None:
    for cached in _constant_caches:
        cached.cache_clear()
