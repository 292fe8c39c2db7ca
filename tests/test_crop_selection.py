"""Crop selection (``modify="rics"``): the consistency guarantee, checked on real photos."""

from __future__ import annotations

import pytest
import torch

from lightning_inv.data.datamodules import build_eval_dataset
from lightning_inv.models.backbones import create_backbone
from lightning_inv.models.crop_selection import CropSelection, add_crop_selection, guarantee_holds

FRAME, MAX_SHIFT, MARGIN, SIGMA = 64, 2, 8, 1.0


@pytest.fixture(scope="module")
def scenes():
    """All 27 offline photos at FRAME + MAX_SHIFT px: every frame of the sweep lies inside."""
    data = build_eval_dataset("sample", FRAME + MAX_SHIFT)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def sweep(scenes: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """Every FRAME x FRAME window at offsets (dy, dx) in 0..MAX_SHIFT: a camera moving 1 px."""
    shifts = range(MAX_SHIFT + 1)
    return [
        (dy, dx, scenes[..., dy : dy + FRAME, dx : dx + FRAME]) for dy in shifts for dx in shifts
    ]


def test_predicted_guarantee_is_exactly_when_every_frame_crops_the_same_pixels(scenes):
    """The prediction (maximum over the union of candidate centres, unique and inside their
    intersection) must agree image by image with what the frames choose. Catches: a score
    computed with padding (it then depends on where the frame edge is), an off-by-one between
    crop offset and centre, a union/intersection range one px off, rows and columns swapped."""
    selector = CropSelection(MARGIN, SIGMA)
    predicted = guarantee_holds(selector.scores(scenes, MAX_SHIFT, FRAME), MARGIN, MAX_SHIFT)
    chosen = torch.stack(
        [selector.offsets(frames) + torch.tensor([dy, dx]) for dy, dx, frames in sweep(scenes)]
    )  # [frames, B, 2] in scene coordinates
    same_everywhere = (chosen == chosen[:1]).all(dim=2).all(dim=0)
    assert torch.equal(predicted, same_everywhere)
    assert 0 < predicted.sum() < len(scenes)  # both cases occur, so the equality says something


def test_outputs_are_identical_where_guaranteed_and_differ_without_selection(scenes):
    """Any model (random resnet18): identical logits over the whole sweep for the guaranteed
    images; the plain model's logits do change, so the test would notice a hook that is not
    applied."""
    torch.manual_seed(0)
    plain, _ = create_backbone("resnet18", num_classes=10)
    selecting, _ = create_backbone("resnet18", num_classes=10)
    selecting.load_state_dict(plain.state_dict())
    selecting.crop_selection = CropSelection(MARGIN, SIGMA)
    selecting.register_forward_pre_hook(lambda m, a: (m.crop_selection(a[0]),))
    selector = CropSelection(MARGIN, SIGMA)
    guaranteed = guarantee_holds(selector.scores(scenes, MAX_SHIFT, FRAME), MARGIN, MAX_SHIFT)
    with torch.no_grad():
        selected = torch.stack([selecting(frames) for _, _, frames in sweep(scenes)])
        unselected = torch.stack([plain(frames) for _, _, frames in sweep(scenes)])
    spread = (selected - selected[:1]).abs().amax(dim=(0, 2))  # per image
    assert (spread[guaranteed] < 1e-5).all()
    assert (spread[~guaranteed] > 1e-5).all()
    assert ((unselected - unselected[:1]).abs().amax(dim=(0, 2)) > 1e-4).all()


def test_hand_case_bright_spot_is_centred():
    """One bright spot at (row 20, col 29) of a 48 px frame: the crop (40 px, margin 4) is the one
    centred on it as far as the margin allows. Catches swapped axes and centre off-by-ones."""
    frame = torch.zeros(1, 3, 48, 48)
    frame[..., 20, 29] = 1.0
    offsets = CropSelection(4, 1.0).offsets(frame)
    # centre of crop p is p + 20: row 20 -> p = 0; col 29 -> p = 9, one past 2m = 8, so the
    # nearest candidate (the band-pass is still positive 1 px from the spot).
    assert offsets.tolist() == [[0, 8]]
    frame = torch.zeros(1, 3, 48, 48)
    frame[..., 23, 25] = 1.0  # inside the range: the crop centred exactly on it
    assert CropSelection(4, 1.0).offsets(frame).tolist() == [[3, 5]]


def test_rics_modifier_keeps_weights_and_works_on_a_vit():
    """``modify="rics"`` adds no parameters (checkpoints load either way), refuses to stack, and
    runs on a transformer as on a CNN."""
    plain, _ = create_backbone("test_vit", num_classes=5)
    selecting, _ = create_backbone("test_vit", num_classes=5, modify="rics")
    assert plain.state_dict().keys() == selecting.state_dict().keys()
    size = selecting.pretrained_cfg["input_size"][-1]
    with torch.no_grad():
        assert selecting(torch.rand(2, 3, size, size)).shape == (2, 5)
    with pytest.raises(ValueError, match="already selects crops"):
        add_crop_selection(selecting)
    with pytest.raises(ValueError, match="margin"):
        CropSelection(margin=0).settings(32, 32)


def test_rics_tradeoff_counts_guaranteed_and_observed_pairs_consistently(tmp_path):
    """The margin sweep on 4 photos (random resnet10t): per image the predicted guarantee
    implies the observed same crop (catches a guarantee computed on the unnormalised frames the
    model never sees, or in shifted coordinates), and the top-1 changes only in pairs whose
    crops differ (catches measuring a model that does not select). The command writes its
    table, CSV and figure, and refuses a margin that does not fit before any work."""
    from lightning_inv.studies.rics_tradeoff import main, measure_margins

    values, canvas = measure_margins(
        "resnet10t", [4, 12], "sample", num_images=4, pretrained=False, batch_size=2
    )
    assert canvas == 176 and set(values) == {0, 4, 12}
    for margin in (4, 12):
        row = values[margin]
        assert (row["guaranteed"] <= row["same_crop"] + 1e-12).all()
        assert (row["p_top1_change"] <= 1 - row["same_crop"] + 1e-12).all()
    assert values[12]["same_crop"].mean() > 0  # the comparison says something
    assert "guaranteed" not in values[0]
    code = main(
        [
            "--model",
            "resnet10t",
            "--no-pretrained",
            "--num-images",
            "2",
            "--margins",
            "4",
            "--output",
            str(tmp_path / "run"),
            "--resamples",
            "50",
        ]
    )
    assert code == 0
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        "results.json",
        "tradeoff.csv",
        "rics_tradeoff.png",
    }
    assert (
        main(
            [
                "--model",
                "resnet10t",
                "--no-pretrained",
                "--margins",
                "200",
                "--output",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "bad").exists()
