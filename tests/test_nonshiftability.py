"""Nonshiftability and feature-map sums on real timm architectures."""

from __future__ import annotations

import pytest
import torch

from lightning_inv.backbones import create_backbone
from lightning_inv.engine import view_logits
from lightning_inv.metrics import FeatureSums, Nonshiftability
from lightning_inv.metrics.nonshiftability import nonshiftability_counts
from lightning_inv.protocols import Translate


def test_hand_case_counts_jumps_of_counted_channels():
    # One image, 4 views, 3 channels.
    #   channel 0: 10, 10, 13, 10 -> mean 10.75, jumps |0|, |3|, |3| > 2.15 -> 2
    #   channel 1: 5, 5, 5, 5 -> 0 jumps
    #   channel 2: 0.1 peak < 0.1 * 13 -> not counted
    sums = torch.tensor([[[10.0, 5.0, 0.1], [10.0, 5.0, 0.1], [13.0, 5.0, 0.0], [10.0, 5.0, 0.1]]])
    changes, counted = nonshiftability_counts(sums)
    assert counted.tolist() == [[True, True, False]]
    assert changes.tolist() == [[2, 0, 0]]
    result = Nonshiftability()(sums)
    assert result["count"].item() == pytest.approx(1.0)  # (2 + 0) / 2 counted channels
    assert result["rate"].item() == pytest.approx(2 / 6)  # 2 jumps over 2 channels x 3 pairs


def _vgg_sums(photos: torch.Tensor, modify: str | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the same random (timm He-init) weights for both variants
    model, _ = create_backbone("vgg11", num_classes=10, modify=modify)
    protocol = Translate(canvas=96, scale=0.75, max_shift=8, fill="inpaint")
    with FeatureSums(model, ["features.1", "features"]) as probe:
        _, responses = view_logits(model, protocol, photos, probe=probe)
    return {layer: sums for layer, (sums, _) in responses.items()}


@pytest.mark.slow
def test_avgpool_vgg_is_more_shiftable_than_maxpool_vgg(sample_photos):
    photos = sample_photos
    # Random weights suffice to show the sampling effect; their sums vary less than a trained
    # net's, so jumps are counted at 5% of the mean instead of the paper's 20%.
    original = _vgg_sums(photos, None)
    averaged = _vgg_sums(photos, "avgpool")
    rate = {
        name: Nonshiftability(relative_change=0.05)(s)["rate"].item()
        for name, s in original.items()
    }
    rate_avg = {
        name: Nonshiftability(relative_change=0.05)(s)["rate"].item()
        for name, s in averaged.items()
    }
    # features.1: the first conv + ReLU, before any stride: shiftable in both.
    assert rate["features.1"] == 0 and rate_avg["features.1"] == 0
    # The last layer (after five poolings): max pooling aliases, 6x6 average pooling much less.
    assert rate["features"] > 0.03
    assert rate_avg["features"] < rate["features"] / 5
    assert original["features"].shape == (4, 17, 512)


def test_feature_sums_rejects_unknown_layers():
    model, _ = create_backbone("resnet18")
    with pytest.raises(ValueError, match="unknown layers"):
        FeatureSums(model, ["layer9"])


def test_evaluator_probe_records_only_probed_protocols(tiny_classifier):
    """Feature records nobody pops must not pile up: unprobed protocols leave none (a probe
    that recorded every forward grew memory by ~100 KB per image), and with no probed protocol
    there is no probe at all."""
    from lightning_inv.evaluation import InvarianceEvaluator
    from lightning_inv.protocols import RandomLocation, Translate

    sweep = Translate(canvas=32, scale=0.5, max_shift=2, fill="black")
    located = RandomLocation(canvas=32, scale=0.5, fill="black")
    batch = {"image": torch.rand(3, 3, 32, 32), "label": torch.tensor([1, 2, 3]),
             "index": torch.arange(3)}  # fmt: skip
    evaluator = InvarianceEvaluator(tiny_classifier, [sweep, located], probe=True)
    evaluator.on_test_start()
    try:
        for step in range(3):
            evaluator.test_step(batch, step)
            assert all(not records for records in evaluator.probe._records.values())
    finally:
        evaluator.on_test_end()
    state = evaluator.measures[0].metric_state
    assert sum(len(t) for t in state["shift_0"]) == 9  # the sweep was probed every batch
    assert InvarianceEvaluator(tiny_classifier, [located], probe=True).probe is None
