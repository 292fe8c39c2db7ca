"""Engine throughput against the model's bare forward pass, measured in one run.

    python benchmarks/engine_throughput.py [--model tf_efficientnet_lite0] [--batch-size 32]
        [--device cpu|cuda] [--repeats 3] [--memory]

Reports views/s for: the bare forward on ready tensors (the limit), and the engine (view
generation + forward) for translate with inpainting, crop and random_location; the inpainting's
cost relative to the forward of the same views; with --memory, the peak RSS of a metric run over
N = 100 and N = 1,000 images (tiny model, fresh process each) to show it does not grow with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from lightning_inv.engine import view_logits
from lightning_inv.module import InvarianceClassifier
from lightning_inv.protocols import Crop, RandomLocation, Translate, inpaint


def _time(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = InvarianceClassifier(args.model, pretrained=False).to(device).eval()
    size = model.image_size
    mean = model.data_config["mean"]
    images = torch.rand(args.images, 3, size, size, device=device)
    indices = torch.arange(args.images)
    protocols = {
        "translate_inpaint": Translate(
            canvas=size, max_shift=args.images_views // 2, fill="inpaint", mean=mean
        ),
        "crop": Crop(canvas=size, margin=args.images_views - 1, steps=args.images_views),
        "random_location": RandomLocation(canvas=size, scale=0.5, fill="inpaint", mean=mean),
    }
    results = {}
    ready = torch.rand(args.batch_size, 3, size, size, device=device)
    with torch.no_grad(), torch.autocast(device.type, enabled=args.amp):
        bare = _time(lambda: model(ready), args.repeats, sync)
        results["bare_forward_views_per_s"] = args.batch_size / bare
        for name, protocol in protocols.items():
            batch = (
                images
                if protocol.num_views > 1
                else torch.rand(args.batch_size, 3, size, size, device=device)
            )
            idx = indices if protocol.num_views > 1 else torch.arange(args.batch_size)
            seconds = _time(
                lambda p=protocol, b=batch, i=idx: view_logits(model, p, b, i, args.batch_size),
                args.repeats,
                sync,
            )
            views = len(batch) * protocol.num_views
            results[f"{name}_views_per_s"] = views / seconds
            results[f"{name}_ratio_to_bare"] = (
                results[f"{name}_views_per_s"] / results["bare_forward_views_per_s"]
            )
        views = protocols["translate_inpaint"](images[:1], indices[:1])[0][: args.batch_size]
        known = torch.zeros(len(views), 1, size, size, dtype=torch.bool, device=device)
        side = protocols["translate_inpaint"].side
        known[
            ...,
            (size - side) // 2 : (size - side) // 2 + side,
            (size - side) // 2 : (size - side) // 2 + side,
        ] = True
        cost = _time(lambda: inpaint(views * 255, known), args.repeats, sync)
        forward = _time(lambda: model(views), args.repeats, sync)
        results["inpaint_fraction_of_forward"] = cost / forward
    return results


MEMORY_CHILD = """
import resource, torch
from lightning_inv.engine import view_logits
from lightning_inv.evaluation import metrics_for
from lightning_inv.protocols import Translate
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
protocol = Translate(canvas=32, scale=0.5, max_shift=4, fill="inpaint")
measures = metrics_for(protocol)
for start in range(0, {n}, 50):
    images = torch.rand(50, 3, 16, 16)
    logits, _ = view_logits(model, protocol, images, torch.arange(start, start + 50))
    labels = torch.randint(0, 10, (50,))
    for metric in measures.values():
        metric.update(logits, labels)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory() -> dict[str, float]:
    out = {}
    for n in (100, 1000):
        child = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD.format(n=n)],
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
    parser.add_argument("--batch-size", type=int, default=32, help="views per forward pass")
    parser.add_argument("--images", type=int, default=2, help="images per protocol call")
    parser.add_argument(
        "--images-views", type=int, default=16, help="views per image (translate, crop)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak RSS for N=100 and N=1000"
    )
    args = parser.parse_args()
    results = {"model": args.model, "device": args.device, "threads": torch.get_num_threads()}
    if args.memory:  # first, in fresh child processes, before this one loads a model
        results.update(memory())
    results.update(throughput(args))
    results["this_process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
