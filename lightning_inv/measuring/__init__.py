"""Measuring: views -> model -> per-image values of every measure -> results with intervals.

``measures`` defines each measure once (a per-image function); ``metrics`` builds torchmetrics
classes on them; ``core`` holds the measuring core used by ``evaluate.py`` and the training
callback alike (``ProtocolMeasures``, ``ProtocolResult``, ``measure_batch``); ``engine`` makes
the views and runs the model; ``nonshiftability`` probes feature maps (Fig. 10); ``statistics``
gives bootstrap intervals; ``evaluator`` is the LightningModule ``Trainer.test`` runs.
"""

from lightning_inv.measuring.core import ProtocolMeasures, ProtocolResult, measure_batch
from lightning_inv.measuring.engine import view_logits
from lightning_inv.measuring.measures import MEASURES, Measure
from lightning_inv.measuring.nonshiftability import (
    FeatureSums,
    Nonshiftability,
    ProbePoint,
    probe_points,
)
from lightning_inv.measuring.statistics import bootstrap_interval, paired_difference

__all__ = [
    "MEASURES",
    "FeatureSums",
    "Measure",
    "Nonshiftability",
    "ProbePoint",
    "ProtocolMeasures",
    "ProtocolResult",
    "bootstrap_interval",
    "measure_batch",
    "paired_difference",
    "probe_points",
    "view_logits",
]
