"""The paper's figures, drawn from evaluation results (matplotlib, no display needed).

Each ``plot_*`` function takes plain data (the shapes ``InvarianceEvaluator`` keeps) and returns
a ``matplotlib.figure.Figure``; ``save`` writes it as PNG and closes it. Figure numbers refer to
Azulay & Weiss (2019).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from lightning_inv.protocols.views import Protocol

Rows = Sequence[Mapping[str, Any]]  # per-image rows: {"image", "label", "p_true": [T], "top1": [T]}


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (PNG, 120 dpi) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def probability_matrix(rows: Rows) -> np.ndarray:
    """Per-image rows -> probability of the true class [N, T]."""
    return np.asarray([row["p_true"] for row in rows], dtype=np.float64).reshape(len(rows), -1)


def most_jagged(rows: Rows, count: int = 3) -> list[int]:
    """Indices of the ``count`` rows whose true-class probability moves most between views."""
    p = probability_matrix(rows)
    if p.shape[1] < 2:
        return list(range(min(count, len(rows))))
    total_change = np.abs(np.diff(p, axis=1)).sum(axis=1)
    return [int(i) for i in np.argsort(-total_change, kind="stable")[:count]]


def view_strip(
    protocol: Protocol, image: torch.Tensor, index: int, count: int = 4
) -> list[tuple[float, np.ndarray]]:
    """``count`` evenly spaced views of one image [3, H, W] in [0, 1] -> [(position, HxWx3 array)]."""
    views = protocol(image[None], torch.tensor([index]))[0]  # [T, 3, S, S]
    picks = np.linspace(0, len(views) - 1, count).round().astype(int)
    return [
        (protocol.positions[t], views[t].permute(1, 2, 0).clamp(0, 1).cpu().numpy()) for t in picks
    ]


def plot_probability_vs_shift(
    rows_by_model: Mapping[str, Rows],
    positions: Sequence[float],
    xlabel: str,
    picks: Sequence[int],
    strips: Sequence[Sequence[tuple[float, np.ndarray]]] | None = None,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Fig. 1: probability of the true class against the transformation, one column per image.

    Args:
        rows_by_model: per-image rows of each model (same images, same order).
        positions: the protocol's x values (e.g. shift in pixels), length T.
        xlabel: axis label with units.
        picks: row indices of the images to show.
        strips: for each pick, a few ``(position, view)`` pairs drawn above its curve.
        titles: one per pick (image name and label).
    """
    columns = max(len(picks), 1)
    has_strip = strips is not None
    figure, axes = plt.subplots(
        2 if has_strip else 1,
        columns,
        figsize=(4.2 * columns, 5.2 if has_strip else 3.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 2]} if has_strip else None,
    )
    for column, pick in enumerate(picks):
        curve_axis = axes[-1, column]
        for model, rows in rows_by_model.items():
            curve_axis.plot(positions, rows[pick]["p_true"], marker=".", label=model)
        curve_axis.set_ylim(-0.02, 1.02)
        curve_axis.set_xlabel(xlabel)
        curve_axis.set_ylabel("P(true class)")
        curve_axis.grid(alpha=0.3)
        if has_strip:
            strip_axis = axes[0, column]
            frames = strips[column]
            strip_axis.imshow(np.concatenate([frame for _, frame in frames], axis=1))
            width = frames[0][1].shape[1]
            strip_axis.set_xticks([width * (i + 0.5) for i in range(len(frames))])
            strip_axis.set_xticklabels([f"{p:g}" for p, _ in frames])
            strip_axis.set_yticks([])
            for position, _ in frames:
                curve_axis.axvline(position, color="0.8", lw=0.8, zorder=0)
        (axes[0, column]).set_title(titles[column] if titles else f"image {pick}", fontsize=9)
    axes[-1, 0].legend(fontsize=8, loc="lower left")
    figure.suptitle("Probability of the true class under small transformations (paper Fig. 1)")
    figure.tight_layout()
    return figure


def plot_probability_heatmaps(
    rows_by_model: Mapping[str, Rows], positions: Sequence[float], xlabel: str
) -> Figure:
    """Fig. 2A: P(true class) per image (rows, sorted by their sum) and view (columns), per model."""
    models = list(rows_by_model)
    figure, axes = plt.subplots(
        1, len(models), figsize=(3.6 * len(models) + 1, 4.2), squeeze=False, sharey=True
    )
    image = None
    for axis, model in zip(axes[0], models, strict=True):
        p = probability_matrix(rows_by_model[model])
        p = p[np.argsort(-p.sum(axis=1), kind="stable")]
        extent = (positions[0], positions[-1], len(p) - 0.5, -0.5)
        image = axis.imshow(
            p, aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=extent, interpolation="nearest"
        )
        axis.set_title(model, fontsize=9)
        axis.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("image (sorted by mean probability)")
    if image is not None:
        figure.colorbar(image, ax=axes[0].tolist(), label="P(true class)")
    figure.suptitle("True-class probability across views (paper Fig. 2A)")
    return figure


def plot_sensitivity_bars(
    results_by_model: Mapping[str, Mapping[str, Mapping[str, Any]]],
    measures: Sequence[tuple[str, str]] = (
        ("p_top1_change", "P(top-1 change), consecutive views"),
        ("jagged_fraction", "fraction of jagged images"),
    ),
) -> Figure:
    """Fig. 2B: bars per protocol (groups) and model (colours) for each measure (panels)."""
    models = list(results_by_model)
    protocols = sorted(
        {
            key
            for rows in results_by_model.values()
            for key, row in rows.items()
            if isinstance(row, Mapping) and any(m in row for m, _ in measures)
        }
    )
    figure, axes = plt.subplots(
        1, len(measures), figsize=(1.2 + 1.3 * len(protocols) * len(measures), 3.8), squeeze=False
    )
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(protocols))
    for axis, (measure, label) in zip(axes[0], measures, strict=True):
        for m, model in enumerate(models):
            values = [
                results_by_model[model].get(key, {}).get(measure, np.nan) for key in protocols
            ]
            axis.bar(x + (m - (len(models) - 1) / 2) * width, values, width, label=model)
        axis.set_xticks(x)
        axis.set_xticklabels(protocols, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle("Sensitivity to one-pixel steps, per model (paper Fig. 2B)")
    figure.tight_layout()
    return figure


def plot_feature_sums(
    sums_by_model: Mapping[str, Mapping[str, tuple[Sequence[float], torch.Tensor]]],
    xlabels: Mapping[str, str],
    image: int = 0,
    channels: int = 3,
) -> Figure:
    """Fig. 4: global sums of last-layer feature maps against translation / scale.

    Args:
        sums_by_model: ``{model: {protocol key: (x values [T], sums [N, T, K])}}`` of one layer
            (the last); x values are per model (a scale sweep depends on the canvas).
        xlabels: axis label per protocol key (the columns, in order).
        image: which image to show.
        channels: the most active channels drawn, each divided by its mean over views.
    """
    models = list(sums_by_model)
    keys = list(xlabels)
    figure, axes = plt.subplots(
        len(models), len(keys), figsize=(4.2 * len(keys), 2.8 * len(models)), squeeze=False
    )
    for r, model in enumerate(models):
        for c, key in enumerate(keys):
            axis = axes[r, c]
            if key not in sums_by_model[model] or len(sums_by_model[model][key][1]) <= image:
                axis.set_axis_off()
                continue
            positions, sums = sums_by_model[model][key]
            curve = sums[image].double()  # [T, K]
            top = curve.mean(0).argsort(descending=True)[:channels]
            for k in top.tolist():
                values = curve[:, k] / curve[:, k].mean().clamp(min=1e-12)
                axis.plot(positions, values.numpy(), label=f"channel {k}")
            axis.set_title(f"{model}: {key}", fontsize=9)
            axis.set_xlabel(xlabels[key])
            axis.set_ylabel("feature sum / its mean")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.suptitle("Global sum of last-layer feature maps (paper Fig. 4): flat = shiftable")
    figure.tight_layout()
    return figure


def plot_accuracy_vs_scale(
    accuracy_by_model: Mapping[str, Mapping[float, float]], fill: str = "inpaint"
) -> Figure:
    """Fig. 6: top-1 accuracy against object scale (object side / canvas) at random locations."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for model, by_scale in accuracy_by_model.items():
        scales = sorted(by_scale)
        axis.plot(scales, [by_scale[s] for s in scales], marker="o", label=model)
    axis.set_xlabel("object scale (object side / canvas side)")
    axis.set_ylabel("top-1 accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Accuracy at random locations, {fill} background (paper Fig. 6)", fontsize=10)
    figure.tight_layout()
    return figure


def plot_nonshiftability(
    rates_by_model: Mapping[str, Mapping[str, float]], protocol: str
) -> Figure:
    """Fig. 10: nonshiftability per layer (rate of >20% jumps between consecutive views) by depth."""
    figure, axis = plt.subplots(figsize=(6, 3.8))
    deepest: list[str] = []
    for model, rates in rates_by_model.items():
        layers = list(rates)
        deepest = layers if len(layers) > len(deepest) else deepest
        axis.plot(range(len(layers)), [rates[layer] for layer in layers], marker="o", label=model)
    axis.set_xticks(range(len(deepest)))
    axis.set_xticklabels(deepest, rotation=40, ha="right", fontsize=7)
    axis.set_xlabel("layer (input -> output)")
    axis.set_ylabel("nonshiftability (jumps per step)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Nonshiftability against depth, {protocol} (paper Fig. 10)", fontsize=10)
    figure.tight_layout()
    return figure
