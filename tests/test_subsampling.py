"""The subsampling factor is measured from the model: hand-built nets, timm models, surgery."""

from __future__ import annotations

import pytest
import timm
from torch import nn

from lightning_inv.models.subsampling import measure_subsampling
from lightning_inv.models.surgery import apply_surgery


def test_hand_built_net_strides_and_ignores_the_global_pool():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),  # constant 1x1: not a stride
    )
    result = measure_subsampling(net, input_size=64)
    assert result.layers == (("0", 2.0), ("2", 4.0), ("4", 8.0))
    assert result.factor == 8 and result.invariant_fraction == pytest.approx(1 / 64)
    assert "1/64" in result.describe()


def test_stride_free_net_is_fully_shift_invariant():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
    result = measure_subsampling(net, input_size=32)
    assert result.factor == 1 and result.invariant_fraction == 1


def test_valid_padding_does_not_inflate_the_factor():
    # 'valid' convolutions shrink the map (224 -> 52 px is not 224 / 4), but the shift period is 4.
    net = nn.Sequential(nn.Conv2d(3, 4, 7, stride=2), nn.Conv2d(4, 4, 5, stride=2))
    assert measure_subsampling(net, input_size=224).factor == 4


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "tf_efficientnet_lite0"])
def test_timm_models_subsample_by_32_with_or_without_surgery(name):
    model = timm.create_model(name, pretrained=False)
    result = measure_subsampling(model, 96)
    assert result.factor == 32 and result.invariant_fraction == pytest.approx(1 / 1024)
    assert result.layers[0][1] == (1.0 if name == "vgg11" else 2.0)
    # Anti-aliasing blurs before subsampling but keeps the factor (paper Sec. 5).
    assert measure_subsampling(apply_surgery(model, "blurpool"), 96).factor == 32
    assert model.training  # the probe restores the mode


def test_model_without_feature_maps_is_an_error():
    with pytest.raises(ValueError, match="no 4-D feature maps"):
        measure_subsampling(nn.Sequential(nn.Flatten(), nn.ReLU()), 16)
    with pytest.raises(ValueError, match="no spatial feature maps"):
        measure_subsampling(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 16)
