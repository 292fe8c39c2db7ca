"""Paired comparisons on the same images: between models, between a preset's protocol groups,
rank correlations between measures, and against published values (docs/design.md, "Intervals", "The published Table 1")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_inv.measuring.core import ProtocolResult
from lightning_inv.measuring.statistics import (
    RESAMPLES,
    bootstrap_interval,
    paired_difference,
    rank_correlation,
)
from lightning_inv.protocols.presets import Contrast, Correlation, Preset


def compare_models(
    per_image: Mapping[str, Mapping[str, ProtocolResult]],
    pairs: Sequence[tuple[str, str]],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"A - B": {protocol: {measure: {"difference", "ci95"}}}}``: the paired difference of
    every measure on the images both models measured (protocols whose images differ are left
    out)."""
    out: dict[str, Any] = {}
    for first, second in pairs:
        rows: dict[str, Any] = {}
        for key, a in per_image[first].items():
            b = per_image[second].get(key)
            if b is None or list(a.indices) != list(b.indices) or not a.num_images:
                continue
            rows[key] = {
                m: paired_difference(a.values[m], b.values[m], resamples, seed)
                for m in a.values
                if m in b.values
            }
        out[f"{first} - {second}"] = rows
    return out


def group_contrast(
    contrast: Contrast,
    results: Mapping[str, ProtocolResult],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """One model's ``contrast``: per measure, the mean of each group (per image over the group's
    protocols, then over images) with its interval, and their paired difference
    (``{first}_minus_{second}``) with its interval. Empty when a group was not measured."""
    first = [results[k] for k in contrast.first_keys if k in results]
    second = [results[k] for k in contrast.second_keys if k in results]
    if not first or not second:
        return {}
    out: dict[str, Any] = {}
    for measure in contrast.measures:
        per_first = np.mean([r.values[measure] for r in first], axis=0)
        per_second = np.mean([r.values[measure] for r in second], axis=0)
        paired = paired_difference(per_first, per_second, resamples, seed)
        out[measure] = {
            contrast.first: float(per_first.mean()),
            contrast.second: float(per_second.mean()),
            f"{contrast.first}_ci95": list(bootstrap_interval(per_first, resamples, seed)),
            f"{contrast.second}_ci95": list(bootstrap_interval(per_second, resamples, seed)),
            f"{contrast.first}_minus_{contrast.second}": paired["difference"],
            "ci95": paired["ci95"],
        }
    return out


def correlate(
    correlations: Sequence[Correlation],
    results: Mapping[str, ProtocolResult],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """One model's rank correlations over images (``rank_correlation``), each named
    ``first_key/first_measure ~ second_key/second_measure``; those whose protocols or images
    differ are left out."""
    out: dict[str, Any] = {}
    for c in correlations:
        first, second = results.get(c.first_key), results.get(c.second_key)
        if first is None or second is None or not first.num_images:
            continue
        if list(first.indices) != list(second.indices):
            continue
        if c.first_measure not in first.values or c.second_measure not in second.values:
            continue
        out[c.name] = rank_correlation(
            first.values[c.first_measure], second.values[c.second_measure], resamples, seed
        )
    return out


def beside_published(
    preset: Preset, measured: Mapping[str, Any], weights: str | None
) -> dict[str, Any] | None:
    """The preset's published values for ``weights`` (timm's ``architecture.tag``) beside our
    group means (``group_contrast``): per group and measure ``{"published", "ours", "ci95",
    "inside"}`` (``inside``: the published value lies in our 95% interval). None when nothing
    was published for these weights."""
    table = preset.published_values()
    row = table["models"].get(weights or "") if table else None
    if row is None or not measured:
        return None
    out: dict[str, Any] = {
        "weights": weights,
        "paper_name": row["paper_name"],
        "source": table["source"],
        "combination": table["combination"],
    }
    groups = (preset.contrast.first, preset.contrast.second) if preset.contrast else ()
    for group in groups:
        for measure, value in row.get(group, {}).items():
            if measure not in measured:
                continue
            ours, interval = measured[measure][group], measured[measure][f"{group}_ci95"]
            out.setdefault(group, {})[measure] = {
                "published": value,
                "ours": ours,
                "ci95": interval,
                "inside": bool(interval[0] <= value <= interval[1]),
            }
    return out


def preset_summaries(
    presets: Sequence[Preset],
    per_image: Mapping[str, Mapping[str, ProtocolResult]],
    weights: Mapping[str, str | None],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """For every preset with a contrast: ``<preset>_<contrast>`` (per model) and, where values
    were published for a model's weights, ``<preset>_published`` (per model); for every preset
    with correlations: ``<preset>_correlation`` (per model, per correlation)."""
    out: dict[str, Any] = {}
    for preset in presets:
        correlations = {
            model: row
            for model, rows in per_image.items()
            if (row := correlate(preset.correlations, rows, resamples, seed))
        }
        if correlations:
            out[f"{preset.name}_correlation"] = correlations
        if preset.contrast is None:
            continue
        contrasts = {
            model: group_contrast(preset.contrast, rows, resamples, seed)
            for model, rows in per_image.items()
        }
        if any(contrasts.values()):
            out[f"{preset.name}_{preset.contrast.name}"] = contrasts
        published = {
            model: row
            for model, measured in contrasts.items()
            if (row := beside_published(preset, measured, weights.get(model))) is not None
        }
        if published:
            out[f"{preset.name}_published"] = published
    return out
