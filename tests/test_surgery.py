"""avgpool and blurpool surgery on real timm architectures (random weights: the structure is tested)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BlurPool2d
from torch import nn

from lightning_inv.backbones import create_backbone
from lightning_inv.surgery import apply_surgery, strided_ops


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
    apply_surgery(model, "blurpool")
    remaining = [
        (n, type(m).__name__) for n, m in strided_ops(model) if not isinstance(m, BlurPool2d)
    ]
    assert remaining == []
    blurs = [m for m in model.modules() if isinstance(m, BlurPool2d)]
    assert len(blurs) >= 5 and all(b.stride == 2 for b in blurs)
    for old, new in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(old, new.detach())
    with torch.no_grad():
        assert model.forward_features(x).shape == features
        assert model(x).shape == logits


def test_blurpool_puts_the_blur_after_norm_and_activation():
    model, _ = create_backbone("resnet18", modify="blurpool")
    # ResNet stem: conv1 (now stride 1) -> bn1 -> act1 -> blur; maxpool -> MaxPool(s1) -> blur.
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.act1, nn.Sequential) and isinstance(model.act1[1], BlurPool2d)
    assert model.maxpool[0].stride == 1 and isinstance(model.maxpool[1], BlurPool2d)
    # A strided 1x1 projection is blurred first (blur and 1x1 conv commute).
    downsample = model.layer2[0].downsample[0]
    assert isinstance(downsample[0], BlurPool2d) and downsample[1].stride == (1, 1)


def test_unknown_surgery_is_rejected():
    model, _ = create_backbone("resnet18")
    with pytest.raises(ValueError, match="avgpool, blurpool"):
        apply_surgery(model, "antialias")
