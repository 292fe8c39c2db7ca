"""Where a run on a GPU would make the host wait for the device, found on any machine.

A CUDA program runs fast when the host queues kernels ahead of the device and never waits for
it. The host waits (a host-device synchronisation) when it reads a value computed on the device
(``.item()``, ``.tolist()``, ``bool(t)``, ``.cpu()``, a formatted number), when an operation's
output size depends on device values (``nonzero``, ``unique``, a boolean-mask index), and when it
copies pageable host memory to the device without ``non_blocking``. One such wait per batch
stalls the device while the host does the next batch's Python work.

``HostReads`` is a ``TorchFunctionMode`` that finds these places while the code runs on the
CPU: it marks the tensors that would live on the device (the batch: images, labels, data set
indices, as Lightning moves them; the model's parameters; whatever is computed from them or
made with an explicit ``device=`` object) and records, by source line, every read, every
data-dependent size and every synchronous upload. On a CUDA machine
``torch.cuda.set_sync_debug_mode("warn")`` reports the real ones; this finds the same class of
place where no device is at hand (``benchmarks/host_syncs.py``, ``tests/test_host_reads.py``).

Not seen: work below the Python level (a kernel's own host reads) and tensors made on the
device with a ``device="cuda"`` string (the protocols use the images' ``device`` object).

>>> import torch
>>> images = torch.rand(2, 3)
>>> with HostReads(images) as reads:
...     total = float(images.sum())   # a read of a device value
...     planned = torch.arange(3).tolist()   # host values: no wait
>>> [(kind, count) for (_, kind), count in reads.places.items()]
[('read __float__', 1)]
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from lightning_inv.device_path import accelerator_path, clear_device_constants

READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
    | {"__format__", "__array__", "__repr__", "__str__"}
)
DATA_DEPENDENT = frozenset(
    {"nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount"}
)
PACKAGE = Path(__file__).resolve().parents[1]  # lightning_inv/
UPLOAD_HELPER = PACKAGE / "protocols" / "transfer.py"  # pins before copying on CUDA
UPLOADED_PINNED = "to_device"


def _name(func: Any) -> str:
    return getattr(func, "__name__", str(func))


def _tensors(args: tuple, kwargs: dict) -> list[Tensor]:
    leaves, _ = tree_flatten((args, kwargs))
    return [leaf for leaf in leaves if isinstance(leaf, Tensor)]


class HostReads(TorchFunctionMode):
    """Record the places where a GPU run would wait for the device (see the module docstring).

    Args:
        *device_tensors: tensors that would be on the device (the batch).
        modules: modules whose parameters and buffers would be on the device.

    After the ``with`` block, ``places`` counts ``(file:line, kind)`` pairs; ``kind`` is
    ``read <method>``, ``size <op>`` or ``upload`` (a synchronous host-to-device copy).
    """

    def __init__(self, *device_tensors: Tensor, modules: tuple[nn.Module, ...] = ()) -> None:
        super().__init__()
        self._device = WeakIdKeyDictionary()
        self.mark(*device_tensors)
        for module in modules:
            self.mark(*module.parameters(), *module.buffers())
        self.places: Counter[tuple[str, str]] = Counter()

    def mark(self, *tensors: Tensor) -> None:
        """Say that ``tensors`` would be on the device (each batch, as it arrives)."""
        for tensor in tensors:
            self._device[tensor] = True

    def on_device(self, tensor: Tensor) -> bool:
        return tensor in self._device

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        name = _name(func)
        inputs = _tensors(args, kwargs)
        from_device = any(t in self._device for t in inputs)
        if kind := self._wait(name, args, kwargs, inputs, from_device):
            place = self._caller()
            if not (kind == "upload" and place == UPLOADED_PINNED):
                self.places[(place, kind)] += 1
        result = func(*args, **kwargs)
        explicit_device = isinstance(kwargs.get("device"), torch.device) or (
            name in ("to", "cuda") and any(isinstance(a, torch.device) for a in args[1:])
        )
        if explicit_device and not from_device and inputs and result is inputs[0]:
            result = result.clone()  # on a GPU the copy is a new tensor; the host one stays
        if from_device or explicit_device:
            for tensor in _tensors((result,), {}):
                self._device[tensor] = True
            if from_device and (name.endswith("_") or name == "__setitem__") and inputs:
                self._device[inputs[0]] = True  # written in place with device values
        return result

    def _wait(
        self, name: str, args: tuple, kwargs: dict, inputs: list[Tensor], from_device: bool
    ) -> str | None:
        """What kind of wait this call is on a GPU, or None."""
        if name == "to" and inputs and not self.on_device(inputs[0]):
            targets = [a for a in args[1:] if isinstance(a, torch.device)] + [kwargs.get("device")]
            synchronous = not kwargs.get("non_blocking", False)
            return "upload" if isinstance(targets[0], torch.device) and synchronous else None
        if not from_device:
            return None
        if name in READS or (name == "to" and "cpu" in args[1:]):
            return f"read {name}"
        mask_index = name in ("__getitem__", "__setitem__") and any(
            t.dtype == torch.bool for t in inputs[1:]
        )
        sized_by_values = (
            name in DATA_DEPENDENT
            or mask_index
            or (name == "where" and len(args) + len(kwargs) == 1)
            or (name == "repeat_interleave" and "output_size" not in kwargs and len(inputs) > 1)
        )
        return f"size {name}{'[mask]' if mask_index else ''}" if sized_by_values else None

    @staticmethod
    def _caller() -> str:
        """``file:line`` of the innermost frame in lightning_inv (else outside torch)."""
        frame = sys._getframe(2)
        outside_torch = None
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            here = f"{path.name}:{frame.f_lineno}"
            if path == Path(__file__) or "torch" in path.parts:
                frame = frame.f_back
                continue
            if PACKAGE in path.parents and path != UPLOAD_HELPER:
                return f"{path.relative_to(PACKAGE.parent)}:{frame.f_lineno}"
            if path == UPLOAD_HELPER:
                return UPLOADED_PINNED
            outside_torch = outside_torch or here
            frame = frame.f_back
        return outside_torch or "?"


def waits_per_batch(evaluator: Any, batches: Iterable[dict[str, Any]]) -> list[Counter]:
    """The places where each batch would make the host wait, measuring ``batches`` (dicts as
    ``InvarianceEvaluator.test_step`` gets them after Lightning moved them, the ``index`` on the
    host) with ``evaluator`` on the accelerator path, on the CPU. The first batch checks the
    images' value range (one wait, on purpose); every later one should have none."""
    clear_device_constants()  # made again below, where HostReads sees them go to the device
    evaluator.on_test_start()
    found: list[Counter] = []
    try:
        with accelerator_path(), HostReads(modules=(evaluator,)) as reads:
            for position, batch in enumerate(batches):
                on_device = [v for k, v in batch.items() if isinstance(v, Tensor) and k != "index"]
                reads.mark(*on_device, *batch.get("original", ()))
                reads.places.clear()
                evaluator.test_step(batch, position)
                found.append(Counter(reads.places))
    finally:
        evaluator.on_test_end()
    return found
