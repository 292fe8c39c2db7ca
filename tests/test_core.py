"""The measuring core: per-image values, their means, and result order (lightning_inv.measuring.core)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_inv.measuring import metrics as M
from lightning_inv.measuring.core import MEASURES, ProtocolMeasures, ProtocolResult
from lightning_inv.measuring.nonshiftability import Nonshiftability, nonshiftability_per_image
from lightning_inv.protocols import PROTOCOLS, RandomLocation, Translate, TranslationSequence


def _result(protocol, logits, labels, indices=None) -> ProtocolResult:
    measures = ProtocolMeasures(protocol, keep_views=True)
    indices = torch.arange(len(labels)) if indices is None else indices
    measures.update(logits, labels, indices)
    return ProtocolResult.from_states(protocol, measures.compute())


def test_every_protocol_declares_only_known_measures():
    for cls in PROTOCOLS.values():
        # A protocol whose measures follow its parameters (LieDerivative) declares them per instance.
        declared = cls(canvas=32).measures if isinstance(cls.measures, property) else cls.measures
        assert set(declared) <= set(MEASURES), cls.__name__


def test_per_image_means_equal_the_pooled_metrics():
    # Catches a per-image definition drifting from the torchmetrics class (e.g. MAC on the
    # second view's top-1, consistency over consecutive pairs only).
    torch.manual_seed(0)
    protocol = TranslationSequence(canvas=16, max_shift=3)
    logits, labels = torch.randn(6, protocol.num_views, 12) * 3, torch.randint(0, 12, (6,))
    row = _result(protocol, logits, labels).summary()
    expected = {
        "accuracy": M.ViewAccuracy()(logits, labels),
        "top5_accuracy": M.ViewAccuracy(top_k=5)(logits, labels),
        "p_top1_change": M.TopOneChange()(logits),
        "mac": M.MeanAbsoluteChange()(logits),
        "mad": M.MeanAbsoluteDifference()(logits, labels),
        "consistency": M.Consistency()(logits),
        "jaggedness_mean": M.Jaggedness()(logits, labels)["mean"],
        "jagged_fraction": M.Jaggedness()(logits, labels)["fraction"],
        "flip_rate": M.FlipRate()(logits),
        "top5_distance": M.TopFiveDistance()(logits),
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(float(value), abs=1e-6), name


def test_jaggedness_counts_top5_membership_not_top1_changes():
    # Image 0: the true class 3 stays 2nd (inside the top 5) while the top-1 flips every step:
    # P(top-1 change) 1, jaggedness 0. Image 1: class 3 falls from 1st to 7th and back: 2
    # transitions. A top-1 implementation would give image 0 three transitions.
    logits = torch.zeros(2, 4, 10)
    ranks0 = [[0, 3], [1, 3], [0, 3], [1, 3]]  # (top-1 class, second class) per view
    for t, (first, second) in enumerate(ranks0):
        logits[0, t, first], logits[0, t, second] = 5.0, 4.0
    logits[1, :, :7] = torch.arange(7, 0, -1).float()  # classes 0..6 ranked first to seventh
    logits[1, [0, 2, 3], 3] = 10.0  # class 3 first, except in view 1
    logits[1, 1, 3] = -1.0  # view 1: class 3 last
    result = _result(
        Translate(canvas=16, scale=0.5, max_shift=1, step=1, fill="black"),
        logits[:, :3],
        torch.tensor([3, 3]),
    )
    assert result.values["p_top1_change"].tolist() == [1.0, 1.0]
    assert result.values["jaggedness_mean"].tolist() == [0.0, 2.0]
    assert result.values["jagged_fraction"].tolist() == [0.0, 1.0]


def test_centred_accuracy_reads_the_unshifted_view_not_the_first():
    protocol = Translate(canvas=32, scale=0.5, max_shift=2, fill="black")  # positions -2..2
    logits = torch.zeros(1, 5, 4)
    logits[0, :, 1] = 1.0  # wrong everywhere ...
    logits[0, 2, 0] = 2.0  # ... except at shift 0, the third view
    result = _result(protocol, logits, torch.tensor([0]))
    assert result.values["centred_accuracy"].tolist() == [1.0]
    assert result.values["accuracy"].tolist() == [pytest.approx(0.2)]


def test_results_are_in_data_set_order_whatever_the_batch_order():
    protocol = RandomLocation(canvas=16, scale=0.5, fill="black")
    measures = ProtocolMeasures(protocol, keep_views=True)
    logits = torch.eye(4)[:, None, :]  # image i predicts class i
    measures.update(logits[2:], torch.tensor([2, 0]), torch.tensor([7, 5]))
    measures.update(logits[:2], torch.tensor([0, 0]), torch.tensor([3, 1]))
    result = ProtocolResult.from_states(protocol, measures.compute())
    assert result.indices.tolist() == [1, 3, 5, 7]
    assert result.values["accuracy"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert result.top1[:, 0].tolist() == [1, 0, 3, 2]


def test_nonshiftability_hand_case_keeps_negative_sums_and_counts_by_spatial_peak():
    # One image, 4 views, 3 feature maps (paper Fig. 10 counting):
    #   map 0: sums 10, 10, 13, 10; strong peak -> |mean| 10.75, jumps of 3 > 2.15: 2
    #   map 1: sums -5, -8, -5, -8 (negative), strong spatial peak -> |mean| 6.5, 3 jumps > 1.3
    #   map 2: sums jump wildly but its spatial peak is below 0.1 x the strongest: not counted
    sums = torch.tensor([[[10.0, -5, 1], [10, -8, 9], [13, -5, 1], [10, -8, 9]]])
    peaks = torch.tensor([[[4.0, 3, 0.1], [4, 3, 0.2], [5, 3, 0.1], [4, 3, 0.2]]])
    value = nonshiftability_per_image(sums, peaks)
    # Mean over counted maps (2 + 3) / 2; dropping the negative map would give 2.0, a total
    # over maps 5.0, counting map 2 by its sum (9 > 0.1 x 13) 3.33.
    assert value.tolist() == [2.5]
    result = Nonshiftability()(sums, peaks)
    assert result["count"].item() == pytest.approx(2.5)
    assert result["rate"].item() == pytest.approx(2.5 / 3)
    assert result["counted_fraction"].item() == pytest.approx(2 / 3)


def test_intervals_come_with_every_measure():
    torch.manual_seed(1)
    protocol = Translate(canvas=32, scale=0.5, max_shift=2, fill="black")
    result = _result(protocol, torch.randn(20, 5, 6), torch.randint(0, 6, (20,)))
    row = result.summary(intervals=True)
    for name in protocol.measures:
        low, high = row[f"{name}_ci95"]
        assert low <= row[name] <= high, name
    assert np.isclose(row["accuracy"], result.values["accuracy"].mean())
