"""Photographer's bias: read ImageNet boxes, test location and size uniformity (paper Sec. 4)."""

from lightning_inv.studies.bias.analysis import (
    BoxGeometry,
    CategoryBias,
    analyse_categories,
    summarize,
    uniformity_pvalues,
)
from lightning_inv.studies.bias.annotations import (
    Box,
    Problem,
    read_boxes,
    read_loc_csv,
    read_voc_folder,
)

__all__ = [
    "Box",
    "BoxGeometry",
    "CategoryBias",
    "Problem",
    "analyse_categories",
    "read_boxes",
    "read_loc_csv",
    "read_voc_folder",
    "summarize",
    "uniformity_pvalues",
]
