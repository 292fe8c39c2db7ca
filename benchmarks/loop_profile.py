"""Where the measuring loop's time goes, per protocol and stage, from torch's profiler.

    python benchmarks/loop_profile.py [--model tf_efficientnet_lite0] [--image-size 224]
        [--experiment table1 fig2 fig6 fig10] [--batches 3] [--batch-size 4] [--chunk-size 64]
        [--device cpu|cuda] [--bf16] [--channels-last] [--trace trace.json]

Measures one warm-up batch of random images (and 375 x 500 photos), then profiles ``--batches``
more through ``InvarianceEvaluator.test_step``, as ``evaluate.py`` runs it. The engine marks its
work with profiler ranges (``inv/<protocol>/views``, ``/forward``, ``/derivatives``,
``/measures``); this prints, per protocol, the milliseconds per batch of each stage: host time,
and on a GPU the device time of the kernels each stage launched. The last lines compare the
stages with the loop's wall time: the share of the forward passes (what a perfect engine would
be: 1.0), of making the views, of the measures, and what falls outside every range (probe
bookkeeping, the loop itself). On a GPU it also counts the host-device synchronisations
(``cudaStreamSynchronize``, ``cudaDeviceSynchronize``) per batch. ``--trace`` writes a Chrome
trace (chrome://tracing, Perfetto).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import nullcontext

import torch
from host_syncs import DEFAULT_EXPERIMENTS, build_evaluator, random_batches
from torch.profiler import ProfilerActivity, profile

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.measuring.engine import PROFILE_PREFIX

STAGES = ("views", "forward", "derivatives", "measures")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224, help="canvas (px)")
    parser.add_argument("--experiment", nargs="+", default=DEFAULT_EXPERIMENTS)
    parser.add_argument("--batches", type=int, default=3, help="profiled, after one warm-up")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--trace", help="write a Chrome trace here")
    args = parser.parse_args(argv)
    keep_freed_memory()
    evaluator = build_evaluator(
        args.model, args.image_size, args.experiment, args.chunk_size, args.device
    )
    if args.channels_last:
        evaluator.classifier.to(memory_format=torch.channels_last)
    batches = random_batches(args.batches + 1, args.batch_size, args.image_size, args.device)
    cuda = args.device == "cuda"
    autocast = torch.autocast(args.device, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    finish = torch.cuda.synchronize if cuda else (lambda: None)
    evaluator.on_test_start()
    with autocast:
        evaluator.test_step(batches[0], 0)  # warm-up: range check, graphs, kernel choice
        finish()
        with profile(activities=activities) as profiler:
            start = time.perf_counter()
            for position, batch in enumerate(batches[1:], start=1):
                evaluator.test_step(batch, position)
            finish()
            wall = (time.perf_counter() - start) / args.batches
    evaluator.on_test_end()
    host: dict[tuple[str, str], float] = defaultdict(float)
    device: dict[tuple[str, str], float] = defaultdict(float)
    syncs = 0
    for event in profiler.key_averages():
        if event.key in SYNCS:
            syncs += event.count
        if not event.key.startswith(PROFILE_PREFIX):
            continue
        key, _, stage = event.key[len(PROFILE_PREFIX) :].rpartition("/")
        host[(key, stage)] += event.cpu_time_total / 1e3 / args.batches  # us -> ms per batch
        device[(key, stage)] += event.device_time_total / 1e3 / args.batches
    shown = device if cuda else host
    where = "device" if cuda else "host"
    print(
        f"{args.model} at {args.image_size} px on {args.device}, {args.batch_size} images per "
        f"batch, {args.chunk_size} views per forward: ms per batch ({where} time"
        + (", host time in brackets)" if cuda else ")")
    )
    print(f"    {'protocol':34s}" + "".join(f"{s:>18s}" for s in STAGES))
    for key in dict.fromkeys(k for k, _ in host):
        cells = []
        for stage in STAGES:
            if (key, stage) not in host:
                cells.append(f"{'-':>18s}")
            elif cuda:
                cells.append(f"{device[(key, stage)]:>9.1f} [{host[(key, stage)]:>6.1f}]")
            else:
                cells.append(f"{host[(key, stage)]:>18.1f}")
        print(f"    {key:34s}" + "".join(cells))
    totals = {stage: sum(v for (_, s), v in shown.items() if s == stage) for stage in STAGES}
    ranged = sum(totals.values())
    wall_ms = wall * 1e3
    print(f"loop: {wall_ms:.1f} ms per batch (wall); shares of it:")
    for stage in STAGES:
        print(f"    {stage:12s} {totals[stage] / wall_ms:6.3f}")
    print(
        f"    {'outside':12s} {max(0.0, wall_ms - ranged) / wall_ms:6.3f}  (the ranges' {where} time)"
    )
    if cuda:
        print(f"host-device synchronisations: {syncs / args.batches:.1f} per batch")
    if args.trace:
        profiler.export_chrome_trace(args.trace)
        print(f"trace: {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
