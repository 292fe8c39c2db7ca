"""The bare forward pass's views/s against the number of views per pass (evaluate.py's
``--chunk-size``), to choose the default for a device.

    python benchmarks/forward_chunks.py [--model tf_efficientnet_lite0] [--image-size 224]
        [--chunks 8 16 32 64 128] [--seconds 3] [--rounds 2] [--device cpu|cuda] [--bf16]

Each chunk size runs for ``--seconds`` after one warm-up pass, in ``--rounds`` rounds (the
rounds show the machine's noise). On a CPU the rate falls once a pass's activations leave the
cache; on a GPU it rises until the device is full.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.models.classifier import InvarianceClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()
    keep_freed_memory()
    model = InvarianceClassifier(args.model, pretrained=False, image_size=args.image_size)
    model = model.to(args.device).eval()
    finish = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    print(f"{args.model} at {args.image_size} px on {args.device}: views/s per views per pass")
    with torch.no_grad(), autocast:
        for round_ in range(args.rounds):
            rates = []
            for chunk in args.chunks:
                views = torch.rand(chunk, 3, args.image_size, args.image_size, device=args.device)
                model(views)
                finish()
                start, passes = time.perf_counter(), 0
                while time.perf_counter() - start < args.seconds:
                    model(views)
                    passes += 1
                finish()
                rates.append(chunk * passes / (time.perf_counter() - start))
            print(
                f"round {round_}: "
                + ", ".join(f"{c}: {r:.0f}" for c, r in zip(args.chunks, rates, strict=True))
            )


if __name__ == "__main__":
    main()
