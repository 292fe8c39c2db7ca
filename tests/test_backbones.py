"""Backbone factory: offline weights on real photos, checkpoints, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform

from lightning_inv.data.samples import SAMPLE_PHOTOS, imagenet_index
from lightning_inv.models import backbones
from lightning_inv.models.backbones import BackboneError, create_backbone

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def _photo(name: str) -> Image.Image:
    photo = next(p for p in SAMPLE_PHOTOS if p.name == name)
    return Image.open(photo.path).convert("RGB")


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("tf_efficientnet_lite0", pretrained=True)


def test_lite0_offline_weights_classify_real_photos(lite0):
    model, config = lite0
    transform = create_transform(**config)  # timm's own eval preprocessing for these weights
    batch = torch.stack([transform(_photo("coffee")), transform(_photo("chelsea"))])
    with torch.no_grad():
        probs = model(batch).softmax(-1)
    assert probs[0].argmax().item() == imagenet_index("n07920052")  # espresso
    assert probs[0].max() > 0.8
    assert probs[1].argmax().item() in CAT_CLASSES


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_lite2_offline_weights_recognise_espresso(name):
    model, config = create_backbone(name, pretrained=True)
    assert (
        config["input_size"][-1]
        == {"tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}[name]
    )
    with torch.no_grad():
        top1 = model(create_transform(**config)(_photo("coffee"))[None]).argmax().item()
    assert top1 == imagenet_index("n07920052")


def test_state_dict_mapping_rejects_mismatched_shapes():
    source = {"a": torch.zeros(3), "b": torch.zeros(2)}
    with pytest.raises(BackboneError, match="does not fit"):
        backbones.map_state_dict_in_order(source, {"x": torch.zeros(3), "y": torch.zeros(4)})
    with pytest.raises(BackboneError, match="2 tensors in the file, 1 in the model"):
        backbones.map_state_dict_in_order(source, {"x": torch.zeros(3)})


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(BackboneError, match="resnet18"):
        create_backbone("resnet_18")


def test_pretrained_without_network_names_offline_alternatives(monkeypatch):
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise ConnectionError("no network")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(backbones.timm, "create_model", offline_create)
    with pytest.raises(BackboneError, match="tf_efficientnet_lite0") as info:
        create_backbone("resnet18", pretrained=True)
    assert "ConnectionError" in str(info.value)


def test_new_class_count_replaces_pretrained_head():
    model, _ = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=10)
    assert model.get_classifier().out_features == 10
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)


def test_plain_state_dict_checkpoint_round_trip(tmp_path):
    model, _ = create_backbone("resnet18", num_classes=7)
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    loaded, _ = create_backbone("resnet18", num_classes=7, checkpoint=path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_checkpoint_of_other_architecture_names_the_keys(tmp_path):
    other, _ = create_backbone("resnet18", num_classes=7)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(BackboneError, match="missing keys") as info:
        create_backbone("tf_efficientnet_lite0", checkpoint=path)
    assert "conv_stem.weight" in str(info.value)


def test_checkpoint_with_other_class_count_names_the_shapes(tmp_path):
    other, _ = create_backbone("resnet18", num_classes=7)
    path = tmp_path / "resnet18.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(
        BackboneError, match=r"fc.weight: checkpoint \(7, 512\) vs model \(10, 512\)"
    ):
        create_backbone("resnet18", num_classes=10, checkpoint=path)


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not weights")
    with pytest.raises(BackboneError, match="not a readable PyTorch checkpoint"):
        create_backbone("resnet18", checkpoint=path)
    with pytest.raises(BackboneError, match="checkpoint not found"):
        create_backbone("resnet18", checkpoint=tmp_path / "missing.pth")


def test_checkpoint_never_runs_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(BackboneError, match="not a readable PyTorch checkpoint"):
        create_backbone("resnet18", checkpoint=path)
