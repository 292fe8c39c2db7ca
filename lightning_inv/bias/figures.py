"""Paper Fig. 5 for any annotations: box centres and sizes of one category, p-values of all."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lightning_inv.bias.analysis import BoxGeometry, CategoryBias
from lightning_inv.plots import plt


def plot_category(geometry: BoxGeometry, synset: str, title: str = "") -> Figure:
    """Scatter of normalised box centres in the image frame, and histograms of normalised sizes."""
    figure, (centres, sizes) = plt.subplots(1, 2, figsize=(9, 4))
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


def plot_pvalues(categories: Sequence[CategoryBias], alpha: float) -> Figure:
    """Histograms of log10 KS p-values over categories, for location and size, with ``alpha``."""
    figure, axis = plt.subplots(figsize=(6, 3.8))
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
