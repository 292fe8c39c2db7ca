"""avgpool, blurpool and APS surgery on real timm architectures (random weights)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BlurPool2d
from torch import nn

from lightning_inv.models.backbones import create_backbone
from lightning_inv.models.surgery import (
    PolyphaseDown,
    apply_surgery,
    polyphase_components,
    strided_ops,
)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_avgpool_replaces_every_2x2_maxpool_of_vgg_and_keeps_weights():
    torch.manual_seed(0)
    model, _ = create_backbone("vgg11", num_classes=10)
    before = _params(model)
    x = torch.rand(1, 3, 64, 64)
    shape = model.forward_features(x).shape
    apply_surgery(model, "avgpool")
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 5  # VGG11 has five 2x2 max pools
    for pool in pools:
        assert (pool.kernel_size, pool.stride, pool.padding) in {((6, 6), 2, (2, 2)), (6, 2, 2)}
    for old, new in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(old, new.detach())
    assert model.forward_features(x).shape == shape


def test_avgpool_on_a_model_without_maxpools_explains():
    model, _ = create_backbone("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="blurpool"):
        apply_surgery(model, "avgpool")


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])
def test_blurpool_makes_every_strided_op_a_blur_and_keeps_shapes(name):
    torch.manual_seed(0)
    model, _ = create_backbone(name)
    before = _params(model)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        features = model.forward_features(x).shape
        logits = model(x).shape
    assert any(not isinstance(m, BlurPool2d) for _, m in strided_ops(model))
    stem = strided_ops(model)[0]
    apply_surgery(model, "blurpool")
    remaining = [
        (n, type(m).__name__) for n, m in strided_ops(model) if not isinstance(m, BlurPool2d)
    ]
    # The stem conv keeps its stride (Zhang's released models).
    assert remaining == [(stem[0], type(stem[1]).__name__)]
    blurs = [m for m in model.modules() if isinstance(m, BlurPool2d)]
    assert len(blurs) >= 4 and all(b.stride == 2 for b in blurs)  # 5 strides, stem kept
    for old, new in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(old, new.detach())
    with torch.no_grad():
        assert model.forward_features(x).shape == features
        assert model(x).shape == logits


def test_blurpool_puts_the_blur_after_norm_and_activation():
    model, _ = create_backbone("resnet18", modify="blurpool")
    # Stem conv kept strided; maxpool -> MaxPool(s1) -> blur (filter 4, Zhang's padding).
    assert model.conv1.stride == (2, 2) and isinstance(model.act1, nn.ReLU)
    assert model.maxpool[0].stride == 1 and isinstance(model.maxpool[1], BlurPool2d)
    assert model.maxpool[1].filt_size == 4 and model.maxpool[1].padding == [1, 2, 1, 2]
    # A strided block: conv1 at stride 1 -> bn1 -> act1 -> blur (wrapped with the last of them).
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and isinstance(block.aa[1], BlurPool2d)
    # A strided 1x1 projection is blurred first (blur and 1x1 conv commute).
    downsample = block.downsample[0]
    assert isinstance(downsample[0], BlurPool2d) and downsample[1].stride == (1, 1)
    # The every-stride variant blurs the stem too, after its activation; filter sizes by name.
    every, _ = create_backbone("resnet18", modify="blurpool_all3")
    assert every.conv1.stride == (1, 1) and isinstance(every.act1[1], BlurPool2d)
    assert every.act1[1].filt_size == 3 and every.act1[1].padding == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("modify", "message"),
    [("antialias", "avgpool, blurpool"), ("blurpool9", "2..7"), ("aps3", "unknown modifier")],
)
def test_unknown_surgery_is_rejected(modify, message):
    model, _ = create_backbone("resnet18")
    with pytest.raises(ValueError, match=message):
        apply_surgery(model, modify)


def test_polyphase_down_keeps_one_component_for_all_channels_by_its_norm():
    # Channel 0 is largest in component (0, 0), channel 1 (much larger) in component (1, 1): the
    # joint l2 norm picks (1, 1) for both channels. A per-channel choice would mix components.
    # On a tie, the first in Chaman & Dokmanic's order (0, 0), (1, 0), (0, 1), (1, 1) wins.
    tie = torch.zeros(1, 1, 2, 2)
    tie[0, 0, 0, 1] = tie[0, 0, 1, 0] = 1.0  # components (0, 1) and (1, 0) tie
    assert (
        PolyphaseDown()(tie).item() == tie[0, 0, 1, 0].item()
        and polyphase_components(tie)[0, 1].item() == 1
    )
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0::2, 0::2] = 1.0
    x[0, 1, 1::2, 1::2] = 5.0
    out = PolyphaseDown()(x)
    torch.testing.assert_close(out, x[..., 1::2, 1::2])
    # The choice follows a circular shift: shifted input -> the same values.
    torch.testing.assert_close(PolyphaseDown()(torch.roll(x, (1, 1), dims=(2, 3))), out)
    assert PolyphaseDown()(torch.rand(2, 3, 5, 7)).shape == (2, 3, 3, 4)  # odd sides padded


def test_aps_circular_resnet18_is_exactly_invariant_to_every_circular_shift():
    # Chaman & Dokmanic's guarantee: stride-1 ops + polyphase choice + circular padding + global
    # pooling. Every (dy, dx) in 0..31 of a 32 px input gives the same logits; the unmodified
    # and the BlurPool network do not (BlurPool only approximates invariance).
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    shifted = torch.cat(
        [torch.roll(x, (dy, dx), dims=(2, 3)) for dy in range(32) for dx in range(32)]
    )
    gaps = {}
    for modify in ("aps_circular", None, "blurpool"):
        torch.manual_seed(0)
        model, _ = create_backbone("resnet18", num_classes=10, modify=modify)
        with torch.no_grad():
            base = model.eval()(x)
            logits = torch.cat([model(chunk) for chunk in shifted.split(256)])
        gaps[modify] = float((logits - base).abs().max() / base.abs().max())
    assert gaps["aps_circular"] < 1e-5
    assert gaps[None] > 0.1 and gaps["blurpool"] > 1e-3


def test_aps_keeps_weights_and_wraps_each_subsampling_point():
    torch.manual_seed(0)
    plain, _ = create_backbone("resnet18", num_classes=10)
    torch.manual_seed(0)
    aps, _ = create_backbone("resnet18", num_classes=10, modify="aps")
    downs = [m for m in aps.modules() if isinstance(m, PolyphaseDown)]
    assert len(downs) == 8  # stem conv, max pool, layers 2-4: main path + shortcut each
    assert not strided_ops(aps)
    for (name, a), (_, b) in zip(plain.state_dict().items(), aps.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    x = torch.rand(2, 3, 64, 64)
    assert aps(x).shape == plain(x).shape
    lite, _ = create_backbone("tf_efficientnet_lite0", modify="blurpool+aps")  # "same" padding
    assert not strided_ops(lite) and lite(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="aps_circular needs fixed padding"):
        create_backbone("tf_efficientnet_lite0", modify="aps_circular")
