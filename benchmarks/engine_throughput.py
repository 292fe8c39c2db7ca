"""Engine throughput against the model's bare forward pass, measured in one run.

    python benchmarks/engine_throughput.py [--model tf_efficientnet_lite0] [--device cpu|cuda]
        [--precision 32|bf16|fp16] [--channels-last] [--compile] [--repeats 5] [--memory]
        [--glibc-defaults]

For every protocol of the paper presets (the default evaluation's table1, fig2, fig6, fig10 and
fig9, zhang2019, aps2021, imagenet_p) at the model's canvas, plus the three historical keys
(translate_inpaint, crop, random_location at object scale 0.5):

- ``<key>_ratio_to_bare``: time of the bare forward pass over the very views the protocol makes
  (same count, same chunks of ``--batch-size``) divided by the time of the engine (view
  generation + forward). 1.0 = view generation is free.
- ``<key>_views_fraction_of_forward``: the time of making the views alone (median of
  ``--repeats``) divided by the bare forward of those views: what the ratio above should be
  without noise is about 1 / (1 + this).
- ``inpaint_fraction_of_forward`` (translate at object scale 0.75) and
  ``inpaint_fraction_of_forward_random_location_s0.3``: the extra time of making the views with
  the inpainted background instead of the mean colour, divided by the forward of those views.

The Lie derivative protocol (``lie``, four transformations) is a cost, not a throughput:
``lie_cost_in_forwards`` is the time of the engine (forward mode on the frozen-batch-norm copy,
vectorised over the transformations) divided by the bare forward of as many views (one per transformation and
image): 1.0 = as cheap as pushing each tangent through the model as a view.
``lie_layers_cost_in_forwards``: the per-layer split along one transformation, in forward passes
of the same images (one forward-mode pass per layer, so about the number of layers times the
per-transformation cost).

Each ratio is the median over ``--repeats`` rounds of (bare time / engine time) with the two
timed back to back in every round, after one warm-up, all in this one run: a slow moment of the
machine hits both sides of a round, so ratios compare like with like. What is left is noise, and
``bare_vs_bare_ratio_min`` / ``_max`` measure it: the same paired median of the bare forward
against itself, three times (1.0 +- the noise of this machine; a protocol's ratio means
something only where it leaves that band). The random photos are
ImageNet-sized (375 x 500). With --memory,
the peak RSS of a metric run over N = 100 and N = 1,000 images (tiny model, fresh process each)
shows that memory does not grow with N. Like evaluate.py and train.py, the benchmark first raises
glibc's malloc thresholds (``lightning_inv.allocator``: about 3x the bare forward's views/s on
the CI machine); ``--glibc-defaults`` measures without that.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.measuring.engine import view_logits
from lightning_inv.measuring.lie import Linearized
from lightning_inv.measuring.lie_layers import LayerAttribution, attribution_points
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.protocols import Crop, LieDerivative, RandomLocation, Translate
from lightning_inv.protocols.presets import PresetContext, build_experiments

PRESETS = ("table1", "fig2", "fig6", "fig9", "zhang2019", "aps2021", "imagenet_p")


def _seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def _median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    return statistics.median(_seconds(fn, sync) for _ in range(repeats))


def paired_seconds(
    first: Callable[[], object],
    second: Callable[[], object],
    repeats: int,
    sync: Callable[[], None],
) -> tuple[float, float, float]:
    """(median first s, median second s, median of first / second over back-to-back rounds)."""
    first(), second()  # warm-up
    sync()
    rounds = [(_seconds(first, sync), _seconds(second, sync)) for _ in range(repeats)]
    return (
        statistics.median(a for a, _ in rounds),
        statistics.median(b for _, b in rounds),
        statistics.median(a / b for a, b in rounds),
    )


def _protocols(canvas: int, mean: tuple[float, ...]) -> dict:
    context = PresetContext(canvas=canvas, mean=mean)
    protocols, _ = build_experiments(PRESETS, context)
    table = {p.key: p for p in protocols}
    table["translate_inpaint"] = Translate(canvas=canvas, fill="inpaint", mean=mean)
    table["crop"] = Crop(canvas=canvas)
    table["random_location"] = RandomLocation(canvas=canvas, scale=0.5, fill="inpaint", mean=mean)
    return table


def throughput(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = InvarianceClassifier(args.model, pretrained=False, image_size=args.image_size)
    model = model.to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if args.compile else model
    size = model.image_size
    mean = tuple(model.data_config["mean"])
    dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    results: dict[str, float] = {}

    def run_forward(views: torch.Tensor) -> None:
        for start in range(0, len(views), args.batch_size):
            forward(views[start : start + args.batch_size])

    with torch.no_grad(), autocast:
        ready = torch.rand(args.batch_size, 3, size, size, device=device)
        bare = _median_time(lambda: forward(ready), args.repeats, sync)
        results["bare_forward_views_per_s"] = args.batch_size / bare
        noise = [
            paired_seconds(lambda: forward(ready), lambda: forward(ready), args.repeats, sync)[2]
            for _ in range(3)
        ]
        results["bare_vs_bare_ratio_min"], results["bare_vs_bare_ratio_max"] = (
            min(noise),
            max(noise),
        )
        for key, protocol in _protocols(size, mean).items():
            count = math.ceil(args.batch_size / protocol.num_views)  # >= one full chunk
            images = torch.rand(count, 3, size, size, device=device)
            photos = [torch.rand(3, 375, 500, device=device) for _ in range(count)]
            indices = torch.arange(count)
            views = protocol(images, indices, photos if protocol.uses_original else None)
            flat = views.flatten(0, 1).contiguous()
            bare_time, engine_time, ratio = paired_seconds(
                lambda f=flat: run_forward(f),
                lambda p=protocol, b=images, i=indices, o=photos: view_logits(
                    forward, p, b, i, args.batch_size, originals=o
                ),
                args.repeats,
                sync,
            )
            results[f"{key}_views_per_s"] = len(flat) / engine_time
            results[f"{key}_ratio_to_bare"] = ratio
            making = _median_time(
                lambda p=protocol, b=images, i=indices, o=photos: p(
                    b, i, o if p.uses_original else None
                ),
                args.repeats,
                sync,
            )
            results[f"{key}_views_fraction_of_forward"] = making / bare_time
        for name, protocol in {
            "inpaint_fraction_of_forward": Translate(canvas=size, fill="inpaint", mean=mean),
            "inpaint_fraction_of_forward_random_location_s0.3": RandomLocation(
                canvas=size, scale=0.3, fill="inpaint", mean=mean
            ),
        }.items():
            count = math.ceil(args.batch_size / protocol.num_views)  # >= one full chunk
            images = torch.rand(count, 3, size, size, device=device)
            indices = torch.arange(count)
            plain = type(protocol)(**{**vars(protocol), "fill": "mean"})
            inpainted, filled, _ = paired_seconds(
                lambda p=protocol, b=images, i=indices: p(b, i),
                lambda p=plain, b=images, i=indices: p(b, i),
                args.repeats,
                sync,
            )
            flat = protocol(images, indices).flatten(0, 1).contiguous()
            forward_time = _median_time(lambda f=flat: run_forward(f), args.repeats, sync)
            results[name] = max(0.0, inpainted - filled) / forward_time
        results.update(lie_costs(model, args.batch_size, args.repeats, sync, device))
    return results


def lie_costs(
    model: InvarianceClassifier, batch: int, repeats: int, sync: Callable[[], None], device
) -> dict[str, float]:
    """The Lie derivative protocol's cost in bare forward passes of as many views, and the
    per-layer split's cost in forward passes of the same images."""
    size = model.image_size
    protocol = LieDerivative(canvas=size)
    linearized = Linearized(model)
    count = max(1, batch // len(protocol.generators))
    images = torch.rand(count, 3, size, size, device=device)
    flat = images.repeat(len(protocol.generators), 1, 1, 1)  # one view per transformation
    _, _, cost = paired_seconds(
        lambda: view_logits(model, protocol, images, chunk_size=batch, linearized=linearized),
        lambda: model(flat),
        repeats,
        sync,
    )
    out = {"lie_cost_in_forwards": cost}
    few = images[:2]
    points = attribution_points(linearized.backbone, size)
    attribution = LayerAttribution(linearized, linearized.backbone, points, "translate_x")
    _, _, split = paired_seconds(lambda: attribution(few), lambda: model(few), 1, sync)
    out["lie_layers_cost_in_forwards"] = split
    out["lie_layers"] = float(len(points))
    return out


MEMORY_CHILD = """
import resource, torch
from lightning_inv.allocator import keep_freed_memory
from lightning_inv.measuring.engine import view_logits
if {keep}:
    keep_freed_memory()
from lightning_inv.measuring.core import ProtocolMeasures
from lightning_inv.protocols import Translate
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
protocol = Translate(canvas=32, scale=0.5, max_shift=4, fill="inpaint")
measure = ProtocolMeasures(protocol, keep_views=True)
for start in range(0, {n}, 50):
    images = torch.rand(50, 3, 16, 16)
    indices = torch.arange(start, start + 50)
    logits, _ = view_logits(model, protocol, images, indices)
    measure.update(logits, torch.randint(0, 10, (50,)), indices)
measure.compute()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory(keep: bool) -> dict[str, float]:
    out = {}
    for n in (100, 1000):
        child = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD.format(n=n, keep=keep)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[f"peak_rss_mib_n{n}"] = int(child.stdout.strip().splitlines()[-1]) / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, help="canvas (px; default: the model's)")
    parser.add_argument("--batch-size", type=int, default=32, help="views per forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", choices=("32", "bf16", "fp16"), default="32", help="autocast dtype"
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last model")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--repeats", type=int, default=5, help="timings per number (median)")
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak RSS for N=100 and N=1000"
    )
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's malloc thresholds alone (evaluate.py and train.py raise them)",
    )
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    if not args.glibc_defaults:
        keep_freed_memory()
    results = {
        "model": args.model,
        "device": args.device,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "allocator": "glibc defaults" if args.glibc_defaults else "keep_freed_memory",
    }
    if args.memory:  # first, in fresh child processes, before this one loads a model
        results.update(memory(keep=not args.glibc_defaults))
    results.update(throughput(args))
    if args.device == "cpu":  # the CPU inpainting's compiled loop (band_kernel) ran: its threads
        import numba

        results["numba_threading_layer"] = numba.threading_layer()
    results["this_process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2
    )
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
