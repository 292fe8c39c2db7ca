"""The figures of the studies: the photographer's bias (Fig. 5), typicality, and crop
selection's trade-off; drawn with the helpers of ``lightning_inv.reporting.plots``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lightning_inv.reporting.plots import error_bars, subplots

if TYPE_CHECKING:
    from lightning_inv.studies.bias.analysis import BoxGeometry, CategoryBias


def plot_rics_tradeoff(rows: Sequence[Mapping[str, Any]], model: str) -> Figure:
    """Crop selection's trade-off (``lightning_inv.studies.rics_tradeoff``): consistency against
    accuracy on one-pixel realistic shifts, one point per margin with 95% intervals on both
    axes (the plain model marked), and the guarantee and P(top-1 change) against the margin."""
    figure, (left, right) = subplots(1, 2, figsize=(10, 3.8))
    for row in rows:
        plain = row["margin"] == 0
        x, y = row["accuracy"], row["consistency"]
        xerr = error_bars(np.array([x]), [row.get("accuracy_ci95")])
        yerr = error_bars(np.array([y]), [row.get("consistency_ci95")])
        left.errorbar(
            [x],
            [y],
            xerr=xerr,
            yerr=yerr,
            marker="s" if plain else "o",
            capsize=3,
            color="0.3" if plain else "C0",
        )
        left.annotate(
            "no selection" if plain else f"m = {row['margin']}",
            (x, y),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=7,
        )
    left.set_xlabel("top-1 accuracy (crop protocol)")
    left.set_ylabel("consistency (one-pixel diagonal pairs)")
    left.grid(alpha=0.3)
    selected = [row for row in rows if row["margin"] != 0]
    margins = np.array([row["margin"] for row in selected], dtype=float)
    for name, label in (
        ("guaranteed", "pairs guaranteed the same crop"),
        ("same_crop", "pairs that chose the same crop"),
        ("p_top1_change", "P(top-1 change)"),
    ):
        values = np.array([row[name] for row in selected])
        right.errorbar(
            margins,
            values,
            yerr=error_bars(values, [r.get(f"{name}_ci95") for r in selected]),
            marker="o",
            ms=4,
            capsize=3,
            label=label,
        )
    plain = next((row for row in rows if row["margin"] == 0), None)
    if plain is not None:
        right.axhline(
            plain["p_top1_change"],
            color="0.5",
            ls="--",
            lw=1,
            label="P(top-1 change), no selection",
        )
    right.set_xlabel("margin m (px cut from each side)")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    figure.suptitle(
        f"Crop selection trade-off, {model} (after Shifman & Weiss 2024; our rule)", fontsize=10
    )
    figure.tight_layout()
    return figure


def plot_fig5_category(geometry: BoxGeometry, synset: str, title: str = "") -> Figure:
    """Fig. 5 (photographer's bias): scatter of normalised box centres in the image frame, and histograms of normalised sizes."""
    figure, (centres, sizes) = subplots(1, 2, figsize=(9, 4))
    centres.add_patch(Rectangle((0, 0), 1, 1, fill=False, color="0.5"))
    centres.scatter(geometry.cx, geometry.cy, s=6, alpha=0.5)
    centres.set_xlim(-0.02, 1.02)
    centres.set_ylim(1.02, -0.02)  # image coordinates: y down
    centres.set_aspect("equal")
    centres.set_xlabel("box centre x / image width")
    centres.set_ylabel("box centre y / image height")
    centres.set_title(f"{synset}: {len(geometry.cx)} box centres", fontsize=10)
    bins = np.linspace(0, 1, 21)
    sizes.hist(geometry.width, bins=bins, alpha=0.6, label="width / image width")
    sizes.hist(geometry.height, bins=bins, alpha=0.6, label="height / image height")
    sizes.axhline(len(geometry.width) / 20, color="k", ls="--", lw=1, label="uniform (null)")
    sizes.set_xlabel("normalised box side")
    sizes.set_ylabel("boxes")
    sizes.legend(fontsize=8)
    sizes.set_title("box sizes", fontsize=10)
    figure.suptitle(title or f"Photographer's bias in {synset} (paper Fig. 5)")
    figure.tight_layout()
    return figure


def plot_fig5_pvalues(categories: Sequence[CategoryBias], alpha: float) -> Figure:
    """Fig. 5 over categories: histograms of log10 KS p-values over categories, for location and size, with ``alpha``."""
    figure, axis = subplots(figsize=(6, 3.8))
    floor = 1e-300  # p-values that underflow to 0 are drawn at the floor
    for label, values in (
        ("location (min of x, y)", [c.location_pvalue() for c in categories]),
        ("size (min of width, height)", [c.size_pvalue() for c in categories]),
    ):
        finite = np.asarray([v for v in values if np.isfinite(v)])
        if len(finite):
            axis.hist(np.log10(np.maximum(finite, floor)), bins=30, alpha=0.6, label=label)
    axis.axvline(np.log10(alpha), color="k", ls="--", lw=1, label=f"p = {alpha:g}")
    axis.set_xlabel("log10 KS p-value (uniform null)")
    axis.set_ylabel("categories")
    axis.legend(fontsize=8)
    axis.set_title(f"Uniformity tests over {len(categories)} categories", fontsize=10)
    figure.tight_layout()
    return figure


def plot_typicality(
    summary: Mapping[str, Any],
    measures: Sequence[str] = ("location accuracy", "P(top-1 change)"),
) -> Figure:
    """The typicality study (``lightning_inv.studies.typicality.summarise``): one column per training
    configuration, one row per measure, one line per test set over epochs (mean over seeds,
    band: lowest to highest seed)."""
    configs = list(summary)
    figure, axes = subplots(
        len(measures),
        len(configs),
        figsize=(3.6 * len(configs), 2.8 * len(measures)),
        squeeze=False,
        sharey="row",
    )
    styles = {"seen": "-", "unseen": "--"}
    for col, config in enumerate(configs):
        for row, measure in enumerate(measures):
            ax = axes[row][col]
            for name, per_set in summary[config].items():
                curves = np.array(list(per_set[measure]["curves"].values()), dtype=float)
                epochs = np.arange(1, curves.shape[1] + 1)
                line = ax.plot(epochs, curves.mean(axis=0), styles.get(name, ":"), label=name)[0]
                ax.fill_between(
                    epochs,
                    curves.min(axis=0),
                    curves.max(axis=0),
                    color=line.get_color(),
                    alpha=0.15,
                )
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_title(f"trained: {config}" if row == 0 else "")
            ax.set_xlabel("epoch" if row == len(measures) - 1 else "")
            ax.set_ylabel(measure if col == 0 else "")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    return figure
