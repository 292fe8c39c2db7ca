"""One table across the models of an evaluation, a row per image and protocol: each model's
count of top-1 changes and its mean and minimum P(true class), and the views where the top-1
flips (the first model's largest flip between neighbouring views, side by side), so a table tool
(W&B's) can compare the models image by image. At most ``TABLE_IMAGES`` images per protocol (those
with the most top-1 changes; W&B keeps 200,000 rows a table) and ``TABLE_FLIPS`` pictures (the
largest flips; each is made again from its photo): the rest is in per_image.csv."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lightning_inv.reporting.figures import ModelRun
from lightning_inv.reporting.report import flips, top1_changes

Namer = Callable[[int], str]
TABLE_IMAGES = 1000
TABLE_FLIPS = 100


def comparison_columns(models: Sequence[str]) -> list[str]:
    per_model = [f"{m} {c}" for m in models for c in ("top1_changes", "mean_p_true", "min_p_true")]
    return ["image", "label", "protocol", *per_model, "flip", "flip_caption"]


def comparison_rows(
    runs: Sequence[ModelRun], namer: Namer, class_namer: Namer
) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)``; ``flip`` is an [H, 2W, 3] uint8 array (or None), for ``wandb.Image``.
    Protocols whose views were not kept, or whose images differ between models, are left out."""
    if not runs:
        return comparison_columns([]), []
    names = [run.name for run in runs]
    rows = []
    for protocol in runs[0].protocols:
        key = protocol.key
        results = [run.per_image.get(key) for run in runs]
        if any(r is None or r.p_true is None or r.top1 is None for r in results):
            continue
        if any(not np.array_equal(r.indices, results[0].indices) for r in results):  # type: ignore[union-attr]
            continue
        found: dict[int, tuple[int, int]] = {}  # row -> (model, view): the first model to flip
        for position, result in enumerate(results):
            for row, view, _ in flips(result):  # type: ignore[arg-type]
                if len(found) < TABLE_FLIPS or row in found:
                    found.setdefault(row, (position, view))
        changes = np.stack([top1_changes(r) for r in results])  # type: ignore[arg-type]
        first = results[0]
        for row in np.argsort(-changes.max(axis=0), kind="stable")[:TABLE_IMAGES].tolist():
            index = int(first.indices[row])  # type: ignore[union-attr]
            cells: list[Any] = [namer(index), class_namer(int(first.labels[row])), key]  # type: ignore[union-attr]
            for position, result in enumerate(results):
                p = result.p_true[row].astype(np.float64)  # type: ignore[union-attr,index]
                cells += [int(changes[position, row]), float(p.mean()), float(p.min())]
            picture, caption = None, ""
            if row in found and protocol.ordered:
                position, view = found[row]
                views = runs[position].views(key, index)[view : view + 2]
                pair = torch.cat(list(views), dim=-1).clamp(0, 1)
                picture = (pair.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                top1 = results[position].top1[row]  # type: ignore[union-attr,index]
                steps = protocol.positions[view], protocol.positions[view + 1]
                caption = (
                    f"{names[position]}: {protocol.axis_label} {steps[0]:g} -> "
                    f"{class_namer(int(top1[view]))}, {steps[1]:g} -> "
                    f"{class_namer(int(top1[view + 1]))}"
                )
            rows.append([*cells, picture, caption])
    return comparison_columns(names), rows
