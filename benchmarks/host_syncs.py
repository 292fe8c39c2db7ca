"""Where the measuring loop makes the host wait for the device: a per-batch list of places.

    python benchmarks/host_syncs.py [--model tf_efficientnet_lite0] [--image-size 64]
        [--experiment table1 fig2 fig6 fig10] [--batches 3] [--batch-size 4] [--device cpu|cuda]

Measures ``--batches`` batches of random images (and random ImageNet-sized photos for the
protocols that cut from the photo) through the presets, the Fig. 10 probe on, exactly as
``evaluate.py``'s ``InvarianceEvaluator.test_step`` does, and prints for each batch every place
(``file:line`` and kind) where a run on a GPU waits for the device, with counts.

- On the CPU (default), the accelerator path runs on CPU tensors and
  ``lightning_inv.measuring.host_reads.HostReads`` finds the reads of device values,
  data-dependent sizes and synchronous uploads (see its docstring for what it cannot see).
- With ``--device cuda``, the real waits: ``torch.cuda.set_sync_debug_mode("warn")`` makes CUDA
  report every synchronising call, and their Python places are counted.

The first batch checks the images' value range (one wait, on purpose, as torchmetrics'
``validate_args``); every later batch should show none. Exit status 1 when a later batch has one.

Then, per protocol, the torch calls that making its views costs on the accelerator path: a fixed
number per batch plus a number per image (from batches of ``--batch-size`` and twice that). On a
GPU each call is at least one kernel launch, some microseconds of host time, so calls per image
bound how fast the host can feed the device (the inpainting's passes are one CUDA graph there:
its calls count once per capture, not per batch).
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from lightning_inv.device_path import accelerator_path
from lightning_inv.measuring.evaluator import InvarianceEvaluator
from lightning_inv.measuring.host_reads import waits_per_batch
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.protocols.presets import PresetContext, build_experiments

DEFAULT_EXPERIMENTS = ["table1", "fig2", "fig6", "fig10"]


def random_batches(count: int, size: int, canvas: int, device: str) -> list[dict]:
    """``count`` batches of ``size`` random images [size, 3, canvas, canvas] and 375 x 500 photos."""
    batches = []
    for position in range(count):
        generator = torch.Generator().manual_seed(position)
        batches.append(
            {
                "image": torch.rand(size, 3, canvas, canvas, generator=generator).to(device),
                "label": torch.randint(0, 10, (size,), generator=generator).to(device),
                "index": torch.arange(size) + position * size,
                "original": [
                    torch.rand(3, 375, 500, generator=generator).to(device) for _ in range(size)
                ],
            }
        )
    return batches


def build_evaluator(
    model: str, canvas: int, experiments: list[str], chunk_size: int, device: str
) -> InvarianceEvaluator:
    """``evaluate.py``'s evaluator for ``model`` (random weights, 10 classes) at ``canvas`` px
    over the presets ``experiments``, the Fig. 10 probe and per-view records on, on ``device``."""
    classifier = InvarianceClassifier(model, pretrained=False, num_classes=10, image_size=canvas)
    mean = tuple(classifier.data_config["mean"])
    protocols, probed = build_experiments(experiments, PresetContext(canvas, mean))
    evaluator = InvarianceEvaluator(
        classifier, protocols, chunk_size, probe=True, probe_keys=probed, keep_per_image=True
    )
    return evaluator.to(device)


def cuda_waits(evaluator: InvarianceEvaluator, batches: list[dict]) -> list[Counter]:
    """The synchronising calls CUDA reports for each batch, counted by the innermost place in
    lightning_inv that made them (else the innermost Python frame)."""
    package = Path(__file__).resolve().parents[1] / "lightning_inv"
    places: Counter = Counter()

    def note(message: Warning | str, *args: object) -> None:
        if "synchroniz" not in str(message):
            return
        frames = traceback.extract_stack()[:-1]
        ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(package)]
        frame = (ours or frames)[-1]
        where = Path(frame.filename).resolve()
        name = where.relative_to(package.parent) if where.is_relative_to(package) else where
        places[(f"{name}:{frame.lineno}", "cuda sync")] += 1

    found = []
    evaluator.on_test_start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = note  # type: ignore[assignment]
            for position, batch in enumerate(batches):
                places.clear()
                torch.cuda.set_sync_debug_mode("warn")
                evaluator.test_step(batch, position)
                torch.cuda.set_sync_debug_mode(0)
                found.append(Counter(places))
    finally:
        torch.cuda.set_sync_debug_mode(0)
        evaluator.on_test_end()
    return found


class CallCount(TorchFunctionMode):
    """Counts torch calls (each at least one kernel launch on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return func(*args, **(kwargs or {}))


def view_calls(protocols: list, size: int, canvas: int) -> list[tuple[str, int, float]]:
    """Per protocol: (key, calls per batch of ``size`` images, calls per extra image)."""
    rows = []
    for protocol in protocols:
        if protocol.differential:
            continue
        counts = []
        for count in (size, 2 * size):
            batch = random_batches(1, count, canvas, "cpu")[0]
            originals = batch["original"] if protocol.uses_original else None
            with accelerator_path():
                protocol(batch["image"], batch["index"], originals, False)  # constants made
                with CallCount() as counter:
                    protocol(batch["image"], batch["index"], originals, False)
            counts.append(counter.calls)
        rows.append((protocol.key, counts[0], (counts[1] - counts[0]) / size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=64, help="canvas (px)")
    parser.add_argument("--experiment", nargs="+", default=DEFAULT_EXPERIMENTS)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    evaluator = build_evaluator(
        args.model, args.image_size, args.experiment, args.chunk_size, args.device
    )
    protocols = evaluator.protocols
    batches = random_batches(args.batches, args.batch_size, args.image_size, args.device)
    if args.device == "cuda":
        found = cuda_waits(evaluator, batches)
        how = "CUDA's sync debug mode"
    else:
        found = waits_per_batch(evaluator, batches)
        how = "HostReads on the accelerator path, on the CPU"
    print(f"{args.model} at {args.image_size} px, {len(protocols)} protocols, {how}:")
    for position, places in enumerate(found):
        total = sum(places.values())
        print(f"batch {position}: {total} wait(s)")
        for (place, kind), count in sorted(places.items()):
            print(f"    {count:5d}  {kind:28s} {place}")
    print(f"torch calls to make the views (accelerator path), batches of {args.batch_size}:")
    for key, calls, per_image in view_calls(protocols, args.batch_size, args.image_size):
        print(f"    {key:36s} {calls:6d} per batch, {per_image:5.1f} per image")
    return 1 if any(sum(places.values()) for places in found[1:]) else 0


if __name__ == "__main__":
    sys.exit(main())
