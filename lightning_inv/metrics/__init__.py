"""Invariance measures as torchmetrics ``Metric`` classes (functional core in ``functional``)."""

from lightning_inv.metrics.classes import (
    Consistency,
    FlipRate,
    Jaggedness,
    MeanAbsoluteChange,
    MeanAbsoluteDifference,
    TopFiveDistance,
    TopOneChange,
    ViewAccuracy,
    WorstOfKAccuracy,
)
from lightning_inv.metrics.nonshiftability import FeatureSums, Nonshiftability, probe_layers

__all__ = [
    "Consistency",
    "FeatureSums",
    "FlipRate",
    "Jaggedness",
    "MeanAbsoluteChange",
    "MeanAbsoluteDifference",
    "Nonshiftability",
    "TopFiveDistance",
    "TopOneChange",
    "ViewAccuracy",
    "WorstOfKAccuracy",
    "probe_layers",
]
