"""The typicality study's pieces: region-restricted training placement and named callback sets."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from callbacks import InvarianceEvaluation, InvarianceFigures, InvarianceSet
from callbacks.invariance import change_stroke
from lightning_inv.data.augment import AugmentedDataset
from lightning_inv.data.digits import CentredDigits, PlacedDigits, Placement
from lightning_inv.data.training import DigitsDataModule
from lightning_inv.protocols import RandomLocation, Region, Translate

TOP = Region(rows=(0.0, 0.5))
BOTTOM = Region(rows=(0.5, 1.0))


def test_restricted_placement_never_leaves_its_region_and_varies_per_epoch():
    """Every training digit lies in the top half at a side within the scale range, over two
    epochs of keys. Catches: corner drawn over the whole canvas, the scale range ignored or
    inclusive by one pixel too many, the same placement every epoch (the key's epoch dropped)."""
    tight = CentredDigits("train", 16, 16)
    placed = PlacedDigits(
        AugmentedDataset(tight, None), 64, Placement(scales=(0.25, 0.4), region=TOP), seed=1
    )
    n = len(placed)
    lows, highs = [], []
    for key in [*range(0, 200), *range(n, n + 200)]:
        top, left, side = placed.box(key)
        image = placed[key]["image"]
        rows = image.sum(dim=(0, 2)).nonzero()
        assert 16 <= side <= 26 and top >= 0 and top + side <= 32 and left + side <= 64
        assert rows.min() >= top and rows.max() < top + side <= 32  # ink only in the top half
        lows.append(top)
        highs.append(top + side)
    assert min(lows) == 0 and max(highs) == 32  # the whole region is used
    assert [placed.box(k) for k in range(50)] != [placed.box(n + k) for k in range(50)]
    assert [placed.box(k) for k in range(50)] == [placed.box(k) for k in range(50)]
    with pytest.raises(ValueError, match="does not fit"):
        PlacedDigits(tight, 64, Placement(scales=(0.3, 0.6), region=TOP))


def test_region_protocols_place_objects_only_inside_their_region():
    """Random-location corners stay in the region (top/bottom differ: the rows are not drawn
    over the whole canvas); a sweep starts at the region's centre."""
    indices = torch.arange(300)
    top = RandomLocation(canvas=64, scale=0.25, region=TOP, fill="black").offsets(indices)
    bottom = RandomLocation(canvas=64, scale=0.25, region=BOTTOM, fill="black").offsets(indices)
    assert top[:, 0].max() <= 16 and bottom[:, 0].min() >= 32 and bottom[:, 0].max() <= 48
    assert top[:, 1].min() == 0 and top[:, 1].max() == 48  # columns: the full width
    sweep = Translate(canvas=64, scale=0.25, region=BOTTOM, max_shift=4, direction="horizontal")
    assert sweep.corner == (40, 24)
    with pytest.raises(ValueError, match="moves at most"):
        Translate(canvas=64, scale=0.25, region=BOTTOM, max_shift=9, direction="vertical")


def test_stroke_change_thickens_and_thins():
    image = torch.zeros(1, 1, 9, 9)
    image[..., 4, 2:7] = 1.0  # a 1 px stroke
    assert change_stroke(image, 1).sum() == 3 * 7  # 3 px thick, 1 px longer at each end
    assert change_stroke(image, -1).sum() == 0  # a 1 px stroke vanishes
    assert torch.equal(change_stroke(image, 0), image)


def test_callback_reports_each_named_set_under_its_own_keys(tmp_path, make_tiny):
    """A tiny model trained a few steps with top-half placement: the callback logs every set
    under its own keys (history file and logged metrics), and a thickened set measures other
    views than the plain one (a stroke that was not applied would give equal numbers)."""
    model = make_tiny(32).train()
    data = DigitsDataModule(
        canvas=32,
        digit_size=16,
        batch_size=16,
        max_train_images=64,
        placement=Placement(scales=(0.3, 0.4), region=TOP),
    )
    sets = [
        InvarianceSet("seen", scales=(0.3,), region=TOP, direction="horizontal"),
        InvarianceSet("unseen", scales=(0.3,), region=BOTTOM, direction="horizontal"),
        InvarianceSet("seen_thick", scales=(0.3,), region=TOP, direction="horizontal", stroke=1),
    ]
    callback = InvarianceEvaluation(num_images=12, max_shift=2, batch_size=6, sets=sets)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=pl.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback, InvarianceFigures(save_files=True)],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    record = callback.history[-1]
    for name in ("seen", "unseen", "seen_thick"):
        assert f"{name}_random_location_black_s0.3/accuracy" in record
        assert f"{name}_translate_black/p_top1_change" in record
        assert f"invariance/{name}_translate_black/jaggedness_mean" in trainer.callback_metrics
    per_image = callback.latest_per_image
    assert not (
        per_image["seen_thick_translate_black"].p_true == per_image["seen_translate_black"].p_true
    ).all()
    assert list(tmp_path.rglob("accuracy_vs_scale_epoch000.png"))  # one curve per set
    with pytest.raises(ValueError, match="differ"):
        InvarianceEvaluation(sets=[InvarianceSet("a"), InvarianceSet("a")])
    tall = InvarianceSet("low", scales=(0.3,), region=BOTTOM, direction="vertical")
    late = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[InvarianceEvaluation(max_shift=9, sets=[tall])],
    )
    with pytest.raises(ValueError, match="moves at most"):  # at setup, before any step
        late.fit(model, data)
    assert late.global_step == 0


def test_study_summary_averages_seeds_and_keeps_sets_apart(tmp_path):
    """Synthetic histories: location accuracy is the mean over a set's scales (not over every
    set's: 'seen' must not pick up 'unseen_...' or 'seen_thick_...' keys), the spread is the
    sample standard deviation over seeds, the last epoch is the one reported."""
    import json

    from lightning_inv.studies import typicality

    def record(epoch: int, shift: float) -> dict[str, float]:
        out = {"epoch": epoch}
        for name, base in (("seen", 0.8), ("unseen", 0.2), ("seen_thick", 0.5)):
            out[f"{name}_random_location_black_s0.3/accuracy"] = base - 0.1 + shift
            out[f"{name}_random_location_black_s0.5/accuracy"] = base + 0.1 + shift
            for measure in ("accuracy", "p_top1_change", "jaggedness_mean"):
                out[f"{name}_translate_black/{measure}"] = base / 2 + shift
        return out

    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.04)):
        folder = tmp_path / f"top-s{seed}"
        folder.mkdir()
        history = [record(0, shift - 0.5), record(1, shift)]
        (folder / "invariance_history.json").write_text(json.dumps({"history": history}))
    summary = typicality.summarise(typicality.load_runs(tmp_path))
    seen = summary["top"]["seen"]["location accuracy"]
    assert seen["mean"] == pytest.approx(0.82) and seen["sd"] == pytest.approx(0.02)
    assert summary["top"]["unseen"]["location accuracy"]["mean"] == pytest.approx(0.22)
    assert summary["top"]["seen_thick"]["P(top-1 change)"]["mean"] == pytest.approx(0.27)
    assert len(seen["curves"][0]) == 2
    assert "| top | unseen | 3 | 0.220 +- 0.020 |" in typicality.table(summary)
    assert typicality.main([str(tmp_path), "--output", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.json").exists()
