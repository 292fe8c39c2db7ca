"""The paper presets: the authors' Table 1 protocols exactly, and defaults that fit any canvas."""

from __future__ import annotations

import pytest
import torch

from lightning_inv.protocols import Crop, Embed, resize
from lightning_inv.protocols.base import random_resized_crop_box, sample_generator
from lightning_inv.protocols.presets import PRESETS, PresetContext, build_experiments, table1_sizes

MEAN = (0.485, 0.456, 0.406)


def test_table1_sizes_are_the_authors():
    """The script's sizes are the unrounded floats of np.arange: catches rounding them (s = 1.6
    then gives a 140 px photo at 41 instead of the script's 139 px at 42)."""
    assert table1_sizes() == [
        0.1,
        0.4,
        0.7000000000000001,
        1.0000000000000002,
        1.3000000000000003,
        1.6000000000000003,
        1.9000000000000004,
    ]
    protocols, _ = build_experiments(["table1"], PresetContext(224, MEAN))
    black_16 = protocols[5]
    assert (black_16.side, black_16.centre) == (139, 42)
    assert [p.key for p in protocols] == [
        "table1_crop_s0.1",
        "table1_crop_s0.4",
        "table1_crop_s0.7",
        "table1_crop_s1",
        "table1_black_s1.3",
        "table1_black_s1.6",
        "table1_black_s1.9",
    ]
    assert all(p.num_views == 9 for p in protocols)  # 8 one-pixel pairs each


def test_crop_windows_are_one_pixel_diagonal_shifts_of_one_crop_of_the_original_photo():
    # Catches: cropping the centre-cropped eval image instead of the original (a second
    # resampling), offsets that are not exactly 1 px, the same crop place for every image.
    torch.manual_seed(0)
    photo = torch.rand(3, 90, 120)
    protocol = Crop(canvas=24, margin=10, steps=9, area=0.4, seed=5)
    prepared = torch.rand(1, 3, 24, 24)  # the eval-prepared image: must not be used
    views = protocol(prepared, torch.tensor([3]), [photo])[0]
    top, left, h, w = random_resized_crop_box(90, 120, 0.4, sample_generator(5, 3))
    assert abs(h * w / (90 * 120) - 0.4) < 0.02 and 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    picture = resize(photo[None, :, top : top + h, left : left + w], 34)[0]
    for t in range(9):
        torch.testing.assert_close(views[t], picture[:, t : t + 24, t : t + 24])
    other = random_resized_crop_box(90, 120, 0.4, sample_generator(5, 4))
    assert other != (top, left, h, w)


def test_crop_of_the_whole_photo_squashes_it_like_random_resized_crop():
    photo = torch.rand(3, 60, 80)  # aspect 4/3: the only crop of area 1 is the whole photo
    views = Crop(canvas=20, margin=10, area=1.0)(torch.rand(1, 3, 20, 20), None, [photo])[0]
    torch.testing.assert_close(views[0], resize(photo[None], 30)[0][:, :20, :20])


@pytest.mark.parametrize(("canvas", "zoom_out"), [(224, 1.3), (224, 1.9), (64, 1.6)])
def test_black_canvas_is_the_mean_colour_with_the_photo_at_int_canvas_over_s(canvas, zoom_out):
    # Catches: round() instead of int(), the wrong centre, RGB black instead of the mean
    # colour (zero after normalisation), a vertical instead of a diagonal shift.
    photo = torch.full((3, 50, 70), 0.9)
    protocol = Embed(canvas=canvas, zoom_out=zoom_out, mean=MEAN)
    views = protocol(torch.rand(1, 3, canvas, canvas), None, [photo])[0]
    side, centre = int(canvas / zoom_out), int((canvas - int(canvas / zoom_out) - 1) / 2)
    assert protocol.side == side and protocol.num_views == 9
    for t, shift in enumerate(range(-4, 5)):
        corner = centre + shift
        inside = views[t, :, corner : corner + side, corner : corner + side]
        torch.testing.assert_close(inside, torch.full_like(inside, 0.9))
        outside = views[t].clone()
        outside[:, corner : corner + side, corner : corner + side] = -1
        colour = torch.tensor(MEAN).view(3, 1, 1).expand_as(outside)
        mask = outside[0] >= 0
        torch.testing.assert_close(outside[:, mask], colour[:, mask])


@pytest.mark.parametrize("canvas", [32, 64])
def test_every_preset_fits_small_canvases(canvas):
    # Today's default (+-16 px at scale 0.75) does not fit a 32 or 64 px canvas: defaults are
    # relative to the canvas or the largest that fits.
    protocols, probed = build_experiments(
        ["paper"], PresetContext(canvas, MEAN, location_fill="black")
    )
    assert probed == {"fig2_translate_inpaint", "lie2023_lie", "lie2023_crop_shift"}
    images = torch.rand(2, 3, canvas, canvas)
    for protocol in protocols:
        views = protocol(images, torch.tensor([0, 1]))
        assert views.shape == (2, protocol.num_views, 3, canvas, canvas), protocol.key
    assert (
        len(protocols)
        == sum(len(p.build(PresetContext(canvas, MEAN))) for p in PRESETS.values()) - 1
    )


def test_unknown_experiment_names_the_choices():
    with pytest.raises(ValueError, match="table1, fig2"):
        build_experiments(["table2"], PresetContext(224, MEAN))
