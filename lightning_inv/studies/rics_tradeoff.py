"""Crop selection's trade-off: consistency against accuracy as the margin grows.

Shifman & Weiss (ECCV 2024) claim that crop selection (RICS) reaches "any desired level of
consistency". Our rule (``lightning_inv.models.crop_selection``; docs/design.md, "Crop selection") is
our own reading of their mechanism: their paper's text and code were not reachable here. This
command measures what our rule trades: for the plain model and each margin m, on the
realistic-shift protocol (``crop``: 9 windows one diagonal pixel apart, cut from the photo
resized to canvas + 10 px), per image and with 95% bootstrap intervals over images:

- ``guaranteed``: the fraction of one-pixel pairs for which ``guarantee_holds`` predicts the same
  crop (the score's maximum over both frames' candidate centres is unique and inside both);
- ``same_crop``: the fraction of pairs whose two frames did select the same scene pixels (the
  top-1 can change only in the other pairs);
- ``p_top1_change``, ``any_top1_change`` (Shifman & Weiss's worst case: some one-pixel pair of
  the image changes its top-1), ``consistency`` and ``accuracy``.

    python -m lightning_inv.studies.rics_tradeoff --model tf_efficientnet_lite0 --margins 4 8 16 24 32

writes ``results.json``, ``tradeoff.csv`` and ``rics_tradeoff.png`` (consistency against
accuracy, one point per margin) under ``--output``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lightning_inv.data.datamodules import EVAL_DATASETS, build_eval_dataset
from lightning_inv.files import write_csv, write_json
from lightning_inv.measuring.core import MEASURES
from lightning_inv.measuring.statistics import RESAMPLES, bootstrap_interval, paired_difference
from lightning_inv.models.classifier import InvarianceClassifier
from lightning_inv.models.crop_selection import CropSelection, guarantee_holds
from lightning_inv.protocols import Crop
from lightning_inv.reporting.run_folder import default_run_folder

MEASURED = ("accuracy", "p_top1_change", "any_top1_change", "consistency")
PLAIN = 0  # margin 0: the model without crop selection


def pair_agreement(selector: CropSelection, pictures: torch.Tensor, canvas: int, steps: int):
    """For the ``steps`` diagonal windows of each picture [B, 3, canvas + margin, ...] (model
    input scale): per image the fraction of consecutive pairs (k, k + 1) whose crop choice is
    guaranteed (``guarantee_holds`` on the scene of both frames) and whose frames did choose the
    same scene pixels -> (guaranteed [B], same [B])."""
    margin, _ = selector.settings(canvas, canvas)
    guaranteed, same = [], []
    offsets = [
        selector.offsets(pictures[..., k : k + canvas, k : k + canvas]) for k in range(steps)
    ]
    for k in range(steps - 1):
        scene = pictures[..., k : k + canvas + 1, k : k + canvas + 1]
        guaranteed.append(guarantee_holds(selector.scores(scene, 1, canvas), margin, 1))
        same.append((offsets[k] == offsets[k + 1] + 1).all(dim=1))
    return torch.stack(guaranteed, 1).float().mean(1), torch.stack(same, 1).float().mean(1)


@torch.no_grad()
def measure_margins(
    model_name: str,
    margins: list[int],
    data: str = "sample",
    data_root: Path | None = None,
    num_images: int | None = None,
    batch_size: int = 4,
    pretrained: bool = True,
    seed: int = 0,
) -> tuple[dict[int, dict[str, np.ndarray]], int]:
    """Per-image values ``{margin: {measure: [N]}}`` (margin 0: the plain model) and the canvas."""
    torch.manual_seed(seed)
    plain = InvarianceClassifier(model_name, pretrained=pretrained).eval()
    selecting = InvarianceClassifier(model_name, pretrained=False, modify="rics").eval()
    selecting.model.load_state_dict(plain.model.state_dict())
    canvas = plain.image_size
    for margin in margins:  # refuse a margin that does not fit before any work
        CropSelection(margin).settings(canvas, canvas)
    protocol = Crop(canvas=canvas, seed=seed, margin=10, steps=9, direction="diagonal")
    config = plain.data_config
    dataset = build_eval_dataset(
        data,
        canvas,
        data_root,
        config.get("crop_pct", 0.875),
        config.get("interpolation", "bicubic"),
        num_images,
        seed,
        keep_original=True,
        crop_mode=config.get("crop_mode"),
    )
    values: dict[int, dict[str, list]] = {m: {} for m in [PLAIN, *margins]}
    items = [dataset[i] for i in range(len(dataset))]
    items = [item for item in items if item.get("image") is not None]
    for start in tqdm(range(0, len(items), batch_size), desc="rics margins", unit="batch"):
        batch = items[start : start + batch_size]
        indices = torch.tensor([item["index"] for item in batch])
        labels = torch.tensor([item["label"] for item in batch])
        originals = [item["original"] for item in batch]
        views = protocol(torch.stack([item["image"] for item in batch]), indices, originals)
        pictures = plain.normalize(torch.stack(protocol.larger_pictures(indices, originals)))
        flat = views.flatten(0, 1)
        for margin in [PLAIN, *margins]:
            model = plain
            if margin != PLAIN:
                selecting.model.crop_selection.margin = margin
                model = selecting
            logits = model(flat).view(len(batch), protocol.num_views, -1)
            row = values[margin]
            for name in MEASURED:
                value = MEASURES[name].per_image(logits, labels, protocol)
                row.setdefault(name, []).append(value.double().numpy())
            if margin != PLAIN:
                guaranteed, same = pair_agreement(
                    selecting.model.crop_selection, pictures, canvas, protocol.num_views
                )
                row.setdefault("guaranteed", []).append(guaranteed.double().numpy())
                row.setdefault("same_crop", []).append(same.double().numpy())
    return {m: {k: np.concatenate(v) for k, v in row.items()} for m, row in values.items()}, canvas


def summarize(
    values: dict[int, dict[str, np.ndarray]], resamples: int = RESAMPLES, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per margin: each measure's mean and 95% interval, and the paired difference of
    accuracy and P(top-1 change) against the plain model on the same images."""
    rows = []
    plain = values[PLAIN]
    for margin, measures in values.items():
        row: dict[str, Any] = {"margin": margin, "num_images": len(plain["accuracy"])}
        for name, per_image in measures.items():
            row[name] = float(per_image.mean())
            row[f"{name}_ci95"] = list(bootstrap_interval(per_image, resamples, seed))
        if margin != PLAIN:
            for name in ("accuracy", "p_top1_change"):
                row[f"{name}_minus_plain"] = paired_difference(
                    measures[name], plain[name], resamples, seed
                )
        rows.append(row)
    return rows


def write_outputs(rows: list[dict[str, Any]], output: Path, config: dict[str, Any]) -> list[Path]:
    """results.json, tradeoff.csv and the figure; returns their paths."""
    from lightning_inv.reporting import plots, study_plots

    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "results.json", {"config": config, "margins": rows})
    columns = ["guaranteed", "same_crop", *MEASURED]
    header = ["margin", *(c for name in columns for c in (name, f"{name}_low", f"{name}_high"))]
    lines = []
    for row in rows:
        cells: list[Any] = [row["margin"]]
        for name in columns:
            low, high = row.get(f"{name}_ci95", ["", ""])
            cells += [f"{row[name]:.6g}" if name in row else "", low, high]
        lines.append(cells)
    write_csv(output / "tradeoff.csv", header, lines)
    figure = study_plots.plot_rics_tradeoff(rows, config["model"])
    return [
        output / "results.json",
        output / "tradeoff.csv",
        plots.save(figure, output / "rics_tradeoff.png"),
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'margin':>7s} " + " ".join(f"{c:>22s}" for c in ("guaranteed", "same_crop", *MEASURED))
    )
    for row in rows:
        cells = []
        for name in ("guaranteed", "same_crop", *MEASURED):
            if name not in row:
                cells.append(f"{'-':>22s}")
                continue
            low, high = row[f"{name}_ci95"]
            cells.append(f"{row[name]:.3f} [{low:.2f},{high:.2f}]".rjust(22))
        label = "plain" if row["margin"] == PLAIN else str(row["margin"])
        print(f"{label:>7s} " + " ".join(cells))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_inv.studies.rics_tradeoff",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="a timm name")
    parser.add_argument(
        "--margins",
        type=int,
        nargs="+",
        default=[4, 8, 16, 24, 32],
        help="crop-selection margins in px of the model's input",
    )
    parser.add_argument("--data", choices=EVAL_DATASETS, default="sample")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="default: runs/rics-<time>")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(m < 1 for m in args.margins):
        print(
            "error: --margins must be >= 1 px (the plain model is measured anyway)", file=sys.stderr
        )
        return 2
    try:
        values, canvas = measure_margins(
            args.model,
            sorted(set(args.margins)),
            args.data,
            args.data_root,
            args.num_images,
            args.batch_size,
            args.pretrained,
            args.seed,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = summarize(values, args.resamples, args.seed)
    print_table(rows)
    output = args.output or default_run_folder("rics")
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    paths = write_outputs(rows, output, {**config, "canvas": canvas})
    print("\n" + "\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
