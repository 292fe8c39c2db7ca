"""The one drawing module: every figure of the package (matplotlib, no display needed).

Each ``plot_*`` function takes plain data (per-image arrays, result rows, box geometry) and
returns a ``matplotlib.figure.Figure`` (made without pyplot); ``save`` writes it as PNG. Figure numbers
refer to Azulay & Weiss (2019). ``lightning_inv.reporting.figures`` decides which apply to an evaluation;
the training callback (``callbacks.InvarianceFigures``) and the bias command call them too.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from lightning_inv.files import write_atomically
from lightning_inv.protocols import Protocol

Rows = np.ndarray | Sequence[Mapping[str, Any]]  # P(true class) [N, T], or rows with "p_true"


def subplots(*grid: int, figsize: tuple[float, float], **options: Any) -> tuple[Figure, Any]:
    """A figure and its axes without pyplot: no global figure registry, no GUI backend (files
    render with Agg on their own), so nothing is kept alive after ``save``."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **options)


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (PNG, 120 dpi, atomically)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return write_atomically(Path(path), buffer.getvalue())


def probability_matrix(rows: Rows) -> np.ndarray:
    """P(true class) [N, T] (as given, or from per-image rows with ``"p_true"``) as float64."""
    if isinstance(rows, np.ndarray):
        return rows.astype(np.float64).reshape(len(rows), -1)
    return np.asarray([row["p_true"] for row in rows], dtype=np.float64).reshape(len(rows), -1)


def most_jagged(rows: Rows, count: int = 3) -> list[int]:
    """Indices of the ``count`` rows whose true-class probability moves most between views."""
    p = probability_matrix(rows)
    if p.shape[1] < 2:
        return list(range(min(count, len(rows))))
    total_change = np.abs(np.diff(p, axis=1)).sum(axis=1)
    return [int(i) for i in np.argsort(-total_change, kind="stable")[:count]]


def frames(
    protocol: Protocol, views: torch.Tensor, count: int = 4
) -> list[tuple[float, np.ndarray]]:
    """``count`` evenly spaced views [T, 3, S, S] of one image -> [(position, SxSx3 array)]."""
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
    figure, axes = subplots(
        2 if has_strip else 1,
        columns,
        figsize=(4.2 * columns, 5.2 if has_strip else 3.2),
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 2]} if has_strip else None,
    )
    for column, pick in enumerate(picks):
        curve_axis = axes[-1, column]
        for model, rows in rows_by_model.items():
            curve_axis.plot(positions, probability_matrix(rows)[pick], marker=".", label=model)
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
    figure, axes = subplots(
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
    figure, axes = subplots(
        1, len(measures), figsize=(1.2 + 1.3 * len(protocols) * len(measures), 3.8), squeeze=False
    )
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(protocols))
    for axis, (measure, label) in zip(axes[0], measures, strict=True):
        for m, model in enumerate(models):
            rows = [results_by_model[model].get(key, {}) for key in protocols]
            values = np.array([row.get(measure, np.nan) for row in rows], dtype=float)
            axis.bar(
                x + (m - (len(models) - 1) / 2) * width,
                values,
                width,
                label=model,
                yerr=error_bars(values, [row.get(f"{measure}_ci95") for row in rows]),
                capsize=2,
            )
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
    figure, axes = subplots(
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


def error_bars(
    values: np.ndarray, intervals: Sequence[Sequence[float] | None]
) -> np.ndarray | None:
    """[2, n] distances below/above each value from its 95% interval (None if none has one)."""
    if all(i is None for i in intervals):
        return None
    low = np.array([i[0] if i is not None else v for i, v in zip(intervals, values, strict=True)])
    high = np.array([i[1] if i is not None else v for i, v in zip(intervals, values, strict=True)])
    return np.clip(np.stack([values - low, high - values]), 0, None)


def plot_accuracy_vs_scale(
    accuracy_by_model: Mapping[str, Mapping[float, float]],
    fill: str = "inpaint",
    intervals_by_model: Mapping[str, Mapping[float, Sequence[float]]] | None = None,
) -> Figure:
    """Fig. 6: top-1 accuracy against object scale (object side / canvas) at random locations,
    with 95% intervals over images when given."""
    figure, axis = subplots(figsize=(5, 3.6))
    for model, by_scale in accuracy_by_model.items():
        scales = sorted(by_scale)
        values = np.array([by_scale[s] for s in scales])
        ci = (intervals_by_model or {}).get(model, {})
        axis.errorbar(
            scales,
            values,
            yerr=error_bars(values, [ci.get(s) for s in scales]),
            marker="o",
            capsize=3,
            label=model,
        )
    axis.set_xlabel("object scale (object side / canvas side)")
    axis.set_ylabel("top-1 accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Accuracy at random locations, {fill} background (paper Fig. 6)", fontsize=10)
    figure.tight_layout()
    return figure


def plot_offset_curves(
    curves_by_model: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
    positions: Sequence[float],
    axis_label: str,
    title: str,
) -> Figure:
    """Mean over images of per-view measures against the view's offset, one panel per measure,
    one line per model with a 95% band (antialiased-cnns' diagonal plot: P(true class) and
    accuracy per diagonal offset).

    Args:
        curves_by_model: ``{model: {measure label: (mean [T], low [T], high [T])}}``.
        positions: the offset of each view (px).
    """
    labels = list(dict.fromkeys(k for curves in curves_by_model.values() for k in curves))
    figure, axes = subplots(1, len(labels), figsize=(4.6 * len(labels), 3.4), squeeze=False)
    for axis, label in zip(axes[0], labels, strict=True):
        for model, curves in curves_by_model.items():
            if label not in curves:
                continue
            mean, low, high = curves[label]
            (line,) = axis.plot(positions, mean, marker=".", ms=3, label=model)
            axis.fill_between(positions, low, high, color=line.get_color(), alpha=0.15, lw=0)
        axis.set_xlabel(axis_label)
        axis.set_ylabel(label)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_nonshiftability(
    per_image_by_model: Mapping[str, Mapping[str, np.ndarray]],
    protocol: str,
    lines: int = 8,
    depths_by_model: Mapping[str, Mapping[str, int]] | None = None,
) -> Figure:
    """Fig. 10: nonshiftability against depth, one panel per model: thin lines for single
    images (the paper draws one per image), the mean over images in bold.

    Args:
        per_image_by_model: ``{model: {layer: per-image counts [N]}}``, layers in forward order.
        protocol: the sweep's key, for the title.
        lines: how many single images to draw.
        depths_by_model: ``{model: {layer: convolutions before it}}`` (the x-axis); without it
            the layer's position.
    """
    models = list(per_image_by_model)
    figure, axes = subplots(
        1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False, sharey=True
    )
    for axis, model in zip(axes[0], models, strict=True):
        layers = per_image_by_model[model]
        counts = np.stack([np.asarray(v, dtype=float) for v in layers.values()], axis=1)  # [N, L]
        known = (depths_by_model or {}).get(model, {})
        depth = np.array([known.get(name, i + 1) for i, name in enumerate(layers)], dtype=float)
        for row in counts[:lines]:
            axis.plot(depth, row, color="0.6", lw=0.7, alpha=0.8)
        axis.plot(depth, counts.mean(0), color="C3", lw=2, label=f"mean of {len(counts)} images")
        axis.set_title(model, fontsize=9)
        axis.set_xlabel("depth (convolutions before the layer)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel("jumps > 20% per feature map")
    figure.suptitle(f"Nonshiftability against depth, {protocol} (paper Fig. 10)", fontsize=10)
    figure.tight_layout()
    return figure


KIND_COLOURS = {
    "convolution": "C0",
    "strided convolution": "C9",
    "nonlinearity": "C3",
    "subsampling": "C2",
    "normalisation": "C7",
    "linear": "C4",
    "other": "C5",
    "outside modules": "k",
}


def plot_lie_layers(
    rows: Mapping[str, tuple[Mapping[str, Any], Mapping[str, np.ndarray], Mapping[str, int]]],
    generator: str,
    sweep: str,
) -> Figure:
    """Where invariance is lost, continuously and discretely: per model, each layer's mean
    contribution to the Lie derivative against depth (log scale, coloured by what the layer
    does; Gruver et al. 2023, Fig. 4), beside Fig. 10's nonshiftability of the same images.

    Args:
        rows: ``{model: (Lie result row with "lie_layers", "lie_layers_depth",
            "lie_layers_kind", "lie_layers_ci95"; nonshiftability {layer: [N]}; its depths)}``.
        generator: the transformation of the Lie derivative (for the axis label).
        sweep: the discrete sweep's key (for the title).
    """
    models = list(rows)
    figure, axes = subplots(
        len(models), 2, figsize=(10.5, 3.4 * len(models)), squeeze=False, sharex="row"
    )
    for (left, right), model in zip(axes, models, strict=True):
        row, shifts, shift_depths = rows[model]
        values, depths, kinds = row["lie_layers"], row["lie_layers_depth"], row["lie_layers_kind"]
        intervals = row.get("lie_layers_ci95", {})
        floor = max(values.values(), default=0.0) * 1e-9  # below: zero up to float rounding
        zero = [n for n, v in values.items() if v <= floor]
        for kind in dict.fromkeys(kinds.values()):
            names = [n for n in values if kinds.get(n) == kind and n not in zero]
            if not names:
                continue
            x = np.array([depths[n] for n in names], dtype=float)
            y = np.array([values[n] for n in names], dtype=float)
            if intervals:
                low = y - np.maximum([intervals[n][0] for n in names], y * 1e-3)
                high = np.array([intervals[n][1] for n in names]) - y
                left.errorbar(x, y, yerr=[low, high], fmt="none", ecolor="0.75", lw=0.6)
            left.scatter(x, y, s=14, color=KIND_COLOURS.get(kind, "C5"), label=kind, zorder=3)
        if any(v > floor for v in values.values()):
            left.set_yscale("log")
        left.set_ylabel(f"|J c_l|^2, {generator}")
        note = f"; {len(zero)} layers contribute 0 (not drawn)" if zero else ""
        left.set_title(
            f"{model}: each layer's contribution to the Lie derivative{note}", fontsize=8
        )
        left.legend(fontsize=6, loc="lower left")
        if shifts:
            counts = np.stack([np.asarray(v, dtype=float) for v in shifts.values()], axis=1)
            x = np.array([shift_depths.get(n, i) for i, n in enumerate(shifts)], dtype=float)
            right.plot(x, counts.mean(0), color="C3", lw=2, marker="o", ms=3)
            right.set_ylabel("jumps > 20% per feature map")
            right.set_title(f"{model}: nonshiftability on {sweep} (Fig. 10)", fontsize=9)
        else:
            right.set_axis_off()
        for axis in (left, right):
            axis.set_xlabel("depth (convolutions before the layer)")
            axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_table1(
    rows_by_model: Mapping[str, Mapping[float, Mapping[str, Any]]],
    measures: Sequence[tuple[str, str]] = (
        ("p_top1_change", "P(top-1 change)"),
        ("mac", "mean absolute change"),
        ("accuracy", "accuracy"),
    ),
) -> Figure:
    """The authors' Table 1 plot (``CheckTranslationInvariance.pdf``): each measure against the
    size s (s <= 1: crop of area s; s > 1: the photo at 1/s of the canvas on black), one line
    per model, 95% intervals over images.

    Args:
        rows_by_model: ``{model: {s: result row with the measures and their "_ci95"}}``.
    """
    figure, axes = subplots(len(measures), 1, figsize=(5.4, 2.4 * len(measures)), sharex=True)
    axes = np.atleast_1d(axes)
    for axis, (measure, label) in zip(axes, measures, strict=True):
        for model, by_size in rows_by_model.items():
            sizes = sorted(by_size)
            values = np.array([by_size[s].get(measure, np.nan) for s in sizes], dtype=float)
            axis.errorbar(
                sizes,
                values,
                yerr=error_bars(values, [by_size[s].get(f"{measure}_ci95") for s in sizes]),
                marker="o",
                ms=4,
                capsize=3,
                label=model,
            )
        axis.axvline(1.0, color="0.8", lw=0.8, zorder=0)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("size s (<= 1: crop of area s; > 1: photo at 1/s of the canvas, black)")
    axes[0].legend(fontsize=7)
    axes[0].set_title(
        "Table 1 protocols: one-pixel diagonal shifts (Azulay & Weiss, JMLR)", fontsize=10
    )
    figure.tight_layout()
    return figure
