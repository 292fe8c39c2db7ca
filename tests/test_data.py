"""Offline evaluation data: the 27 real photos, their labels, and decoding of odd image modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_inv.data.datamodules import build_eval_dataset, imagenet_val_items, sample_items
from lightning_inv.data.images import LabelledImage, LabelledImageDataset, collate_skipping, to_rgb


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
