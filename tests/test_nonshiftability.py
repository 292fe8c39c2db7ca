"""Nonshiftability and feature-map sums on real timm architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_inv.measuring.engine import view_logits
from lightning_inv.measuring.nonshiftability import (
    FeatureSums,
    Nonshiftability,
    nonshiftability_counts,
)
from lightning_inv.models.backbones import create_backbone
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
    from lightning_inv.measuring.evaluator import InvarianceEvaluator
    from lightning_inv.protocols import RandomLocation, Translate

    sweep = Translate(canvas=32, scale=0.5, max_shift=2, fill="black")
    located = RandomLocation(canvas=32, scale=0.5, fill="black")
    batch = {
        "image": torch.rand(3, 3, 32, 32),
        "label": torch.tensor([1, 2, 3]),
        "index": torch.arange(3),
    }
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


def _names(points) -> dict[str, int]:
    return {p.name: p.depth for p in points}


@pytest.mark.parametrize(
    "name", ["resnet18", "vgg11", "tf_efficientnet_lite0", "densenet121", "convnext_atto"]
)
def test_probe_points_are_the_activities_of_timm_cnns_in_forward_order(name):
    """Fig. 10 counts activities: every probed map is a nonlinearity's output, in forward order,
    with its depth (convolutions run before it). Catches probing raw convolution outputs, a
    depth counted in registration order, and linear projections counted as activities."""
    from lightning_inv.measuring.nonshiftability import probe_points
    from lightning_inv.models.layers import is_activation

    model, _ = create_backbone(name)
    modules = dict(model.named_modules())
    points = probe_points(model, 64)
    assert points and all(is_activation(modules[p.module]) for p in points)
    depths = [p.depth for p in points]
    assert depths == sorted(depths) and depths[0] >= 1
    names = _names(points)
    if name == "resnet18":
        # stem act1 after conv1; a block's act2 follows the residual sum. layer2.0 runs conv1,
        # conv2, then its downsample conv before act2: forward order gives 5 + 3 = 8
        # (registration order, where act2 precedes downsample, would give 7).
        assert names["act1"] == 1 and names["layer1.0.act2"] == 3
        assert names["layer2.0.act2"] == 8 and not any("downsample" in n for n in names)
    if name == "tf_efficientnet_lite0":
        # bn3 of an inverted residual has no activation: its projection is left out.
        assert names["bn1.act"] == 1 and not any(".bn3" in n for n in names)
        assert names["bn2.act"] == 49  # the head, after all 49 convolutions


def test_channels_last_mlp_activities_are_read_as_feature_maps():
    """ConvNeXt with linear MLPs applies them to [B, H, W, C]: its activities must be summed
    over H and W, not over W and C (catches flattening a channels-last map as NCHW)."""
    from lightning_inv.measuring.nonshiftability import probe_points

    torch.manual_seed(0)
    model, _ = create_backbone("convnext_atto", conv_mlp=False)
    points = probe_points(model, 64)
    assert all(p.channels_last for p in points)
    first = points[0]
    seen = {}
    handle = dict(model.named_modules())[first.module].register_forward_hook(
        lambda m, i, o: seen.setdefault("map", o.detach())
    )
    x = torch.rand(2, 3, 64, 64)
    with FeatureSums(model, points) as probe, torch.no_grad():
        model(x)
    handle.remove()
    sums, _ = probe.pop()
    torch.testing.assert_close(sums[first.name], seen["map"].sum(dim=(1, 2)))


class _ReusedReLU(nn.Module):
    """Two convolutions sharing one ReLU module (torchvision's ResNet blocks reuse theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x)))).mean((2, 3))


def test_a_module_called_twice_gives_two_points_recorded_apart():
    """Catches recording both calls of a reused activation under one key (the [B, T, K] view
    of the records then mixes the two feature maps)."""
    from lightning_inv.measuring.nonshiftability import probe_points

    torch.manual_seed(0)
    model = _ReusedReLU().eval()
    points = probe_points(model, 8)
    assert [(p.name, p.depth) for p in points] == [("relu@0", 1), ("relu@1", 2)]
    x = torch.randn(3, 3, 8, 8)
    with FeatureSums(model, points) as probe, torch.no_grad():
        model(x[:2])
        model(x[2:])  # two passes: call counts restart with each
    sums, _ = probe.pop()
    with torch.no_grad():
        first = torch.relu(model.conv1(x))
        second = torch.relu(model.conv2(first))
    torch.testing.assert_close(sums["relu@0"], first.sum((2, 3)))
    torch.testing.assert_close(sums["relu@1"], second.sum((2, 3)))


class _CircularNet(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        conv = lambda i, o, s=1: nn.Conv2d(i, o, 3, s, 1, padding_mode="circular")  # noqa: E731
        self.body = nn.Sequential(
            conv(3, 8), nn.ReLU(), conv(8, 8, stride), nn.ReLU(), conv(8, 8), nn.ReLU()
        )

    def forward(self, x):
        return self.body(x).mean((2, 3))


def test_circularly_shifted_views_leave_a_stride_free_networks_activities_unchanged():
    """Theory: without subsampling, a circular shift permutes every feature map, so every
    activity's global sum is the same in every view and nonshiftability is exactly 0 at every
    depth; a stride-2 convolution breaks it after the stride. Catches counting jumps against a
    mean that is not |mean| and thresholds that fire on rounding."""
    from lightning_inv.measuring.nonshiftability import probe_points

    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    views = torch.cat([torch.roll(image, (0, t), (2, 3)) for t in range(9)])
    counts = {}
    for stride in (1, 2):
        model = _CircularNet(stride).eval()
        points = probe_points(model, 32)
        with FeatureSums(model, points) as probe, torch.no_grad():
            model(views)
        sums, peaks = probe.pop()
        counts[stride] = [
            Nonshiftability(relative_change=0.01)(sums[p.name][None], peaks[p.name][None])[
                "count"
            ].item()
            for p in points
        ]
    assert counts[1] == [0.0, 0.0, 0.0]
    assert counts[2][0] == 0.0 and counts[2][2] > 0


@pytest.mark.slow
def test_lite0_activities_are_shiftable_early_and_not_late_on_imagenet_photos():
    """The paper's Fig. 10 reading on real photos with pretrained Lite0 (6 ImageNet validation
    photos, the fig2 sweep): nonshiftability of the first activities near 0, the last ones
    several jumps per map. The raw output of the stem convolution jumps several times per map
    (edge-like filters sum to nearly 0): catches a probe on convolution outputs."""
    from lightning_inv.data.datamodules import build_eval_dataset
    from lightning_inv.measuring.nonshiftability import probe_points
    from lightning_inv.models.classifier import InvarianceClassifier

    data = build_eval_dataset("imagenet_val", 224, num_images=6)
    images = torch.stack([data[i]["image"] for i in range(len(data))])
    model = InvarianceClassifier("tf_efficientnet_lite0").eval()
    protocol = Translate(canvas=224, scale=0.75, max_shift=16, fill="inpaint")
    means = {}
    for kind in ("activity", "conv"):
        points = probe_points(model.model, 224, kind)
        with FeatureSums(model.model, points) as probe:
            _, responses = view_logits(model, protocol, images, probe=probe, chunk_size=66)
        means[kind] = [
            Nonshiftability()(sums, peaks)["count"].item() for sums, peaks in responses.values()
        ]
    activity = means["activity"]
    assert max(activity[:3]) < 0.5 and min(activity[-3:]) > 3 and activity[-1] > 8
    assert means["conv"][0] > 2  # conv_stem's raw output
