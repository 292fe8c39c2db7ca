"""The photographer's bias as statistics (paper Sec. 4): where and how large objects are, per class.

Nulls (stated so that a p-value means something):

* location: the box's left edge is uniform over the positions where the box fits, i.e.
  ``u = xmin / (W - w)`` (equivalently ``(cx - w/2) / (W - w)``) is uniform on [0, 1]; likewise
  ``v = ymin / (H - h)``. Boxes that fill the image along an axis have no free position there and
  are left out of that axis' test.
* size: the normalised sides ``w / W`` and ``h / H`` are uniform on (0, 1].

Each is a one-sample Kolmogorov-Smirnov test (SciPy) per category.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lightning_inv.studies.bias.annotations import Box

QUANTITIES = ("x_position", "y_position", "width", "height")


@dataclass(frozen=True)
class BoxGeometry:
    """Normalised geometry of N boxes (arrays of shape [N]); NaN where an axis has no free room."""

    u: np.ndarray  # left edge / free room, in [0, 1]
    v: np.ndarray  # top edge / free room, in [0, 1]
    width: np.ndarray  # w / W in (0, 1]
    height: np.ndarray  # h / H in (0, 1]
    cx: np.ndarray  # centre / W in [0, 1]
    cy: np.ndarray  # centre / H in [0, 1]

    @classmethod
    def of(cls, boxes: Sequence[Box]) -> BoxGeometry:
        a = np.asarray(
            [(b.xmin, b.ymin, b.xmax, b.ymax, b.width, b.height) for b in boxes], dtype=np.float64
        ).reshape(-1, 6)
        xmin, ymin, xmax, ymax, W, H = a.T
        w, h = xmax - xmin, ymax - ymin
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(W - w > 0, xmin / (W - w), np.nan)
            v = np.where(H - h > 0, ymin / (H - h), np.nan)
        return cls(u, v, w / W, h / H, (xmin + xmax) / 2 / W, (ymin + ymax) / 2 / H)

    def samples(self) -> dict[str, np.ndarray]:
        """The values each null is tested on, NaNs dropped."""
        values = {
            "x_position": self.u,
            "y_position": self.v,
            "width": self.width,
            "height": self.height,
        }
        return {k: v[np.isfinite(v)] for k, v in values.items()}


def uniformity_pvalues(geometry: BoxGeometry, min_boxes: int = 5) -> dict[str, float]:
    """KS p-value of each quantity against U[0, 1]; NaN when fewer than ``min_boxes`` values."""
    return {
        name: float(stats.kstest(values, "uniform").pvalue)
        if len(values) >= min_boxes
        else float("nan")
        for name, values in geometry.samples().items()
    }


@dataclass(frozen=True)
class CategoryBias:
    synset: str
    num_boxes: int
    pvalues: dict[str, float]
    mean_cx: float
    mean_cy: float
    mean_width: float
    mean_height: float

    def location_pvalue(self) -> float:
        """The smaller of the x and y position p-values (NaN if neither was tested)."""
        return _smaller(self.pvalues["x_position"], self.pvalues["y_position"])

    def size_pvalue(self) -> float:
        """The smaller of the width and height p-values (NaN if neither was tested)."""
        return _smaller(self.pvalues["width"], self.pvalues["height"])


def _smaller(first: float, second: float) -> float:
    finite = [p for p in (first, second) if np.isfinite(p)]
    return min(finite) if finite else float("nan")


def group_by_synset(boxes: Sequence[Box]) -> dict[str, list[Box]]:
    groups: dict[str, list[Box]] = defaultdict(list)
    for box in boxes:
        groups[box.synset].append(box)
    return dict(sorted(groups.items()))


def analyse_categories(boxes: Sequence[Box], min_boxes: int = 5) -> list[CategoryBias]:
    """Per synset: box count, the four KS p-values and the mean normalised centre and size."""
    out = []
    for synset, group in group_by_synset(boxes).items():
        geometry = BoxGeometry.of(group)
        out.append(
            CategoryBias(
                synset,
                len(group),
                uniformity_pvalues(geometry, min_boxes),
                float(geometry.cx.mean()),
                float(geometry.cy.mean()),
                float(geometry.width.mean()),
                float(geometry.height.mean()),
            )
        )
    return out


def summarize(categories: Sequence[CategoryBias], alpha: float = 1e-10) -> dict[str, float | int]:
    """How many tested categories reject uniform location / size at ``p < alpha``.

    A category counts as non-uniform in location if its x or y test rejects (size: width or
    height); ``both`` needs both. Each null counts the categories it could test: one whose boxes
    all span the image has no location test but still a size test (and a size that is always
    the whole image is as non-uniform as a size can be). Categories with too few boxes are not
    tested.
    """
    location_tested = [c for c in categories if np.isfinite(c.location_pvalue())]
    size_tested = [c for c in categories if np.isfinite(c.size_pvalue())]
    both_tested = [c for c in location_tested if np.isfinite(c.size_pvalue())]
    location = sum(c.location_pvalue() < alpha for c in location_tested)
    size = sum(c.size_pvalue() < alpha for c in size_tested)
    both = sum(c.location_pvalue() < alpha and c.size_pvalue() < alpha for c in both_tested)
    return {
        "alpha": alpha,
        "categories": len(categories),
        "tested_categories": len({c.synset for c in location_tested + size_tested}),
        "tested_location": len(location_tested),
        "tested_size": len(size_tested),
        "tested_both": len(both_tested),
        "nonuniform_location": int(location),
        "nonuniform_size": int(size),
        "nonuniform_location_and_size": int(both),
        "boxes": int(sum(c.num_boxes for c in categories)),
    }
