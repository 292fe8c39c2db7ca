"""Forward time of each fix (``modify``) against the plain model, measured in one run.

    python benchmarks/modifier_cost.py [--model tf_efficientnet_lite0]
        [--modify blurpool aps blurpool+aps rics] [--device cpu|cuda] [--batch-size 32]

Prints, per modifier, its images/s and the median over ``--repeats`` rounds of (its forward time
/ the plain model's) for one batch at the model's canvas, the two timed back to back in each round
after a warm-up (>1: slower). Random weights: the cost of a fix does not depend on them. glibc's
malloc thresholds raised first, as evaluate.py and train.py do (``lightning_inv.allocator``).
"""

from __future__ import annotations

import argparse
import json

import torch
from engine_throughput import paired_seconds  # this folder: run as a script

from lightning_inv.allocator import keep_freed_memory
from lightning_inv.models.classifier import InvarianceClassifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--modify", nargs="+", default=["blurpool", "aps", "blurpool+aps", "rics"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()  # as evaluate.py and train.py run
    torch.manual_seed(0)
    results: dict[str, object] = {"model": args.model, "device": args.device}
    plain = InvarianceClassifier(args.model, pretrained=False).to(args.device).eval()
    size = plain.image_size
    batch = torch.rand(args.batch_size, 3, size, size, device=args.device)
    for modify in args.modify:
        model = InvarianceClassifier(args.model, pretrained=False, modify=modify)
        model = model.to(args.device).eval()
        sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
        with torch.no_grad():
            modified_s, plain_s, ratio = paired_seconds(  # ratio: modified / plain
                lambda m=model: m(batch), lambda: plain(batch), args.repeats, sync
            )
        results["plain_images_per_s"] = round(args.batch_size / plain_s, 2)
        results[modify] = {
            "images_per_s": round(args.batch_size / modified_s, 2),
            "time_ratio_to_plain": round(ratio, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
