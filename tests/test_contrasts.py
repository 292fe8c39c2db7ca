"""Paired comparisons (lightning_inv/measuring/contrasts.py): a preset's contrast and its
published values beside ours."""

from __future__ import annotations

import json

import numpy as np

from lightning_inv.measuring.contrasts import beside_published, group_contrast
from lightning_inv.protocols import presets
from lightning_inv.protocols.presets import PRESETS


class _Result:
    def __init__(self, values):
        self.values = {"p_top1_change": np.array(values), "mac": np.array(values)}


def test_table1_contrast_is_the_paired_black_minus_crop_difference_per_image():
    """Two images. Crop sizes: image 0 changes 0 and 0.25 of its pairs (mean 0.125), image 1
    0.25 and 0.25; Black: 0.5 for both. Per image Black - Crop = 0.375 and 0.25 -> mean 0.3125.
    Catches averaging protocols before pairing images the wrong way, Crop - Black, and a
    protocol of another preset (fig2) taken into a group."""
    contrast = PRESETS["table1"].contrast
    results = {
        "table1_crop_s0.1": _Result([0.0, 0.25]),
        "table1_crop_s1": _Result([0.25, 0.25]),
        "table1_black_s1.3": _Result([0.5, 0.5]),
        "fig2_translate_inpaint": _Result([1.0, 1.0]),
    }
    row = group_contrast(contrast, results)["p_top1_change"]
    assert row["crop"] == 0.1875 and row["black"] == 0.5
    assert row["black_minus_crop"] == 0.3125
    assert 0.25 <= row["ci95"][0] <= row["ci95"][1] <= 0.375
    assert group_contrast(contrast, {"fig2_translate_inpaint": _Result([1.0])}) == {}


def test_published_table1_appears_beside_ours_for_the_weights_it_names(
    tmp_path, monkeypatch, capsys
):
    """A renamed offline model stands in for a published one: Lite0's weights
    (``tf_efficientnet_lite0.in1k``) get ResNet50's published row. results.json and the printed
    table put each published value beside our Crop / Black mean with our interval and whether
    it lies inside. Catches a lookup by the bare spec (timm's default tag for ``resnet50`` is
    not torchvision's weights), published values shown for a modified model, and an inside
    flag computed against another interval."""
    import evaluate

    table = presets.read_published("azulay_weiss_2019_table1.json")
    stand_in = {
        **table,
        "models": {"tf_efficientnet_lite0.in1k": table["models"]["resnet50.tv_in1k"]},
    }
    monkeypatch.setattr(presets, "read_published", lambda name: stand_in)
    code = evaluate.main(
        [
            "--experiment",
            "table1",
            "--models",
            "tf_efficientnet_lite0",
            "tf_efficientnet_lite0:rics",
            "--image-size",
            "64",
            "--num-images",
            "3",
            "--logger",
            "none",
            "--no-figures",
            "--resamples",
            "100",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["weights"] == {
        "tf_efficientnet_lite0": "tf_efficientnet_lite0.in1k",
        "tf_efficientnet_lite0:rics": None,
    }
    published = saved["table1_published"]
    assert list(published) == ["tf_efficientnet_lite0"]
    row = published["tf_efficientnet_lite0"]
    contrast = saved["table1_black_minus_crop"]["tf_efficientnet_lite0"]
    for protocol, value in (("crop", 0.061), ("black", 0.20)):
        cell = row[protocol]["p_top1_change"]
        assert cell["published"] == value
        assert cell["ours"] == contrast["p_top1_change"][protocol]
        assert cell["ci95"] == contrast["p_top1_change"][f"{protocol}_ci95"]
        assert cell["inside"] == (cell["ci95"][0] <= value <= cell["ci95"][1])
    out = capsys.readouterr().out
    assert "beside the published ResNet50" in out and "published 0.061" in out
    # The inside flag on a value that is inside, against the same contrast:
    ours = contrast["mac"]["crop"]
    inside = {**stand_in, "models": {"x.y": {"paper_name": "X", "crop": {"mac": ours}}}}
    monkeypatch.setattr(presets, "read_published", lambda name: inside)
    assert beside_published(PRESETS["table1"], contrast, "x.y")["crop"]["mac"]["inside"] is True
    assert beside_published(PRESETS["table1"], contrast, "resnet50.a1_in1k") is None
