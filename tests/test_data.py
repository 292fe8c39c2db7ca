"""Offline evaluation data: the 27 real photos, their labels, and decoding of odd image modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_inv.data.datamodules import build_eval_dataset, imagenet_val_items, sample_items
from lightning_inv.data.images import (
    LabelledImage,
    LabelledImageDataset,
    LabelMappingError,
    collate_skipping,
    to_rgb,
)
from lightning_inv.data.training import ImageFolderDataModule


def test_the_imagenet_validation_photos_come_with_imagenets_own_labels():
    items = imagenet_val_items()
    assert len(items) == 20
    # foolbox/data/imagenet_00_243.jpg: a bull mastiff, class 243; _14_129: a spoonbill.
    assert (items[0].name, items[0].label) == ("imagenet_val_00", 243)
    assert (items[14].name, items[14].label) == ("imagenet_val_14", 129)
    assert all(item.path.is_file() and item.path.suffix == ".jpg" for item in items)
    assert len(sample_items()) == 27  # + the 7 shipped photos labelled by a person


def test_sixteen_bit_and_palette_images_decode_to_their_8_bit_colours(tmp_path):
    # A plain convert("RGB") clips I;16 values above 255 to white: mid-grey 32768 must stay grey.
    grey16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert grey16.mode.startswith("I;16") or grey16.mode == "I"
    path = tmp_path / "grey16.png"
    grey16.save(path)
    with Image.open(path) as reopened:
        rgb = np.asarray(to_rgb(reopened))
    assert rgb.shape == (8, 8, 3) and np.all(np.abs(rgb.astype(int) - 128) <= 1)
    palette = Image.new("P", (4, 4))
    palette.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [10, 200, 30]


def test_originals_travel_beside_the_prepared_images(tmp_path):
    Image.new("RGB", (90, 60), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not an image")
    items = [LabelledImage(tmp_path / "a.png", 1, "a"), LabelledImage(tmp_path / "b.png", 2, "b")]
    dataset = LabelledImageDataset(items, 32, keep_original=True)
    with pytest.warns(UserWarning, match="skipping unreadable"):
        batch = collate_skipping([dataset[0], dataset[1]])
    assert batch["image"].shape == (1, 3, 32, 32)
    assert batch["original"][0].shape == (3, 60, 90)  # the photo as it is, not centre-cropped
    assert torch.allclose(batch["original"][0][0], torch.ones(60, 90))
    assert batch["skipped"] == ["b"] and "UnidentifiedImageError" in batch["skip_reasons"][0]


def test_digits_have_no_originals_and_protocols_use_the_digit_itself():
    data = build_eval_dataset("digits", 32, num_images=2, keep_original=True)
    batch = collate_skipping([data[0], data[1]])
    assert "original" not in batch


def test_val_classes_take_the_training_index_of_the_same_name(tmp_path, write_photos):
    # Before: val = {cats, fish} was numbered on its own, so val's fish got train's dogs' label.
    for cls in ("cats", "dogs", "fish"):
        write_photos(tmp_path / "train" / cls, 1)
    for cls in ("cats", "fish"):
        write_photos(tmp_path / "val" / cls, 1)
    module = ImageFolderDataModule(tmp_path, image_size=32)
    assert module.classes == ["cats", "dogs", "fish"] and module.num_classes == 3
    assert sorted({item.label for item in module.val_items}) == [0, 2]
    write_photos(tmp_path / "val" / "zebras", 1)
    with pytest.raises(LabelMappingError, match="zebras"):
        ImageFolderDataModule(tmp_path, image_size=32)


def test_exif_orientation_is_a_stated_choice(tmp_path):
    """A phone photo stored landscape with an EXIF 'rotate 90' tag: measured as stored by
    default (as torchvision, timm and the reference scripts load it), with one warning that
    names the flag; rotated with --exif-orientation apply. Before: silently as stored."""
    from lightning_inv.data import images as module
    from lightning_inv.data.images import LabelledImage, LabelledImageDataset

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), "green").save(path, exif=exif)
    items = [LabelledImage(path, 0, "phone.jpg")]
    module._rotated_warned = False
    with pytest.warns(UserWarning, match="--exif-orientation apply"):
        stored = LabelledImageDataset(items, 16, keep_original=True)[0]
    turned = LabelledImageDataset(items, 16, keep_original=True, exif_orientation="apply")[0]
    assert stored["original"].shape == (3, 20, 40) and turned["original"].shape == (3, 40, 20)


def test_a_one_class_image_folder_is_refused_before_the_model_is_built(tmp_path):
    """Before: the data module's error advised --model.num_classes=1, which then crashed inside
    torchmetrics."""
    from lightning_inv.data.training import ImageFolderDataModule
    from lightning_inv.models.classifier import ConfigError, InvarianceClassifier

    for split in ("train", "val"):
        (tmp_path / split / "cats").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / split / "cats" / "0.png")
    with pytest.raises(ConfigError, match="needs at least 2 classes"):
        ImageFolderDataModule(tmp_path, image_size=32)
    with pytest.raises(ConfigError, match=r"--model\.num_classes must be >= 2"):
        InvarianceClassifier("resnet10t", pretrained=False, num_classes=1)
