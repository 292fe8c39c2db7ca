"""Protocols: exact 1-px shifts, seeding, fills, shapes and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_inv.protocols import (
    PROTOCOLS,
    Circular,
    Crop,
    PairShift,
    RandomLocation,
    Scale,
    Translate,
    TranslationSequence,
    WorstOfK,
    create_protocol,
    place,
    resize,
)


def _dot_image(size: int = 32, row: int = 5, col: int = 9) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size)
    image[..., row, col] = 1.0
    return image


def _dot_position(view: torch.Tensor) -> tuple[int, int]:
    return tuple((view[0] > 0.5).nonzero()[0].tolist())


@pytest.mark.parametrize(
    "direction,step", [("vertical", (1, 0)), ("horizontal", (0, 1)), ("diagonal", (1, 1))]
)
def test_translate_moves_the_object_by_exactly_one_pixel(direction, step):
    protocol = Translate(canvas=64, scale=0.5, max_shift=5, fill="black", direction=direction)
    views = protocol(_dot_image())[0]  # object 32 px = the source: no resampling
    positions = [_dot_position(v) for v in views]
    centre = (64 - 32) // 2
    assert positions[0] == (centre - 5 * step[0] + 5, centre - 5 * step[1] + 9)
    for before, after in itertools.pairwise(positions):
        assert (after[0] - before[0], after[1] - before[1]) == step
    assert protocol.positions == list(range(-5, 6))


def test_crop_and_sequence_views_are_exact_shifts_of_each_other():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 40)
    crop = Crop(canvas=30, margin=10, steps=9)(image)[0]
    # Window k starts k px right and down: content moves by -1 px per view.
    assert torch.equal(crop[1][:, :-1, :-1], crop[0][:, 1:, 1:])
    frames = TranslationSequence(canvas=30, max_shift=4)(image)[0]
    assert frames.shape == (9, 3, 30, 30)
    # Frame t+1 shows the content 1 px further right.
    assert torch.equal(frames[1][:, :, 1:], frames[0][:, :, :-1])


def test_scale_grows_the_object_one_pixel_per_view():
    image = torch.ones(1, 3, 20, 20)
    protocol = Scale(canvas=40, min_scale=0.25, max_scale=0.5, fill="black")
    views = protocol(image)[0]
    sides = [int((v[0].sum(0) > 0.5).sum()) for v in views]
    assert sides == list(range(10, 21)) == protocol.positions


def test_random_location_is_seeded_per_sample_index_and_uniform_in_range():
    image = torch.rand(4, 3, 20, 20)
    protocol = RandomLocation(canvas=60, scale=0.25, fill="black")
    first = protocol(image, torch.tensor([0, 1, 2, 3]))
    again = protocol(image[[2, 3]], torch.tensor([2, 3]))  # other batch composition, same index
    assert torch.equal(first[2:], again)
    offsets = protocol.offsets(torch.arange(2000))
    assert offsets.min() == 0 and offsets.max() == 60 - 15
    assert abs(offsets.float().mean().item() - 22.5) < 1.5
    other_seed = RandomLocation(canvas=60, scale=0.25, fill="black", seed=1)
    assert not torch.equal(other_seed.offsets(torch.arange(50)), protocol.offsets(torch.arange(50)))


def test_circular_views_are_two_independent_torch_rolls():
    image = torch.rand(3, 3, 32, 32)
    protocol = Circular(canvas=32, max_shift=8)
    views = protocol(image, torch.arange(3))
    shifts = protocol.shifts(torch.arange(3))
    for b in range(3):
        for view in range(2):
            dy, dx = shifts[b, view].tolist()
            rolled = torch.roll(image[b], shifts=(dy, dx), dims=(-2, -1))
            assert torch.equal(views[b, view], rolled)
    assert (shifts[:, 0] != shifts[:, 1]).any()


def test_pair_shift_windows_come_from_the_256_crop():
    protocol = PairShift(canvas=224, num_pairs=5)
    assert protocol.base == 256 and protocol.max_offset == 32
    assert protocol.pairs == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    views = protocol(torch.rand(2, 3, 224, 224), torch.tensor([0, 1]))
    assert views.shape == (2, 10, 3, 224, 224)


@pytest.mark.parametrize("fill", ["mean", "black", "edge", "inpaint"])
def test_fill_modes(fill):
    image = torch.full((1, 3, 16, 16), 0.8)
    protocol = Translate(canvas=32, scale=0.5, max_shift=2, fill=fill, mean=(0.1, 0.2, 0.3))
    corner = protocol(image)[0, 0, :, 0, 0]
    expected = {
        "mean": [0.1, 0.2, 0.3],
        "black": [0.0, 0.0, 0.0],
        "edge": [0.8] * 3,
        "inpaint": [0.8] * 3,
    }[fill]
    torch.testing.assert_close(corner, torch.tensor(expected), atol=1e-5, rtol=0)


def test_worst_of_k_grid_contains_the_identity_view():
    image = torch.rand(1, 3, 32, 32)
    protocol = WorstOfK(canvas=32, max_translation=4, max_rotation=10)
    views = protocol(image)[0]
    assert views.shape[0] == protocol.num_views == 27
    identity = protocol.grid.index((0.0, 0.0, 0.0))
    torch.testing.assert_close(views[identity], image[0], atol=1e-5, rtol=0)


def test_every_protocol_returns_b_t_3_canvas_canvas():
    image = torch.rand(2, 3, 48, 48)
    for name in PROTOCOLS:
        kwargs = {"max_shift": 4} if name == "translate" else {}
        protocol = create_protocol(name, canvas=40, **kwargs)
        views = protocol(image, torch.tensor([0, 1]))
        assert views.shape == (2, protocol.num_views, 3, 40, 40), name
        assert views.min() >= 0 and views.max() <= 1, name


def test_place_wrap_clamp_and_zero_modes():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    zeros, known = place(image, torch.tensor([[1, 1]]), 4)
    assert zeros[0, 0, 0].tolist() == [0, 0, 0, 0] and not known[0, 0, 0].any()
    assert zeros[0, 0, 1, 1:].tolist() == [0, 1, 2]
    clamped, _ = place(image, torch.tensor([[1, 1]]), 4, mode="clamp")
    assert clamped[0, 0, 0].tolist() == [0, 0, 1, 2]
    wrapped, _ = place(image, torch.tensor([[1, 1]]), 4, mode="wrap")
    assert torch.equal(wrapped, torch.roll(image, (1, 1), dims=(-2, -1)))


def test_place_slice_copies_equal_the_index_gather():
    """CPU pastes one slice per view, other devices gather every pixel by index; both must give
    the same views. Catches: an off-by-one at a clipped edge (objects partly or wholly off the
    canvas), views that ignore ``source`` (each view showing image i instead of source[i]), a
    background strip left out or one pixel short (the paste writes into a buffer nobody zeroed:
    here one full of NaN)."""
    from lightning_inv.protocols.placement import _gather, _source_lines, paste, place_views

    torch.manual_seed(0)
    images = torch.rand(5, 3, 7, 9)
    offsets = torch.randint(-12, 14, (60, 2))
    offsets[:4] = torch.tensor([[0, 0], [-6, -8], [11, 11], [-7, 3]])  # corner, 1 px, off, off
    source = torch.randint(0, 5, (60,))
    rows, cols, row_ok, col_ok = _source_lines(offsets, 11, 7, 9, "zeros")
    known = (row_ok[:, :, None] & col_ok[:, None, :])[:, None]
    gathered = _gather(images, rows, cols, source, known)
    pasted = place_views(images, offsets, 11, source=source)
    assert torch.equal(pasted, gathered)
    garbage = torch.full((60, 3, 11, 11), float("nan"))
    assert torch.equal(
        paste(images, offsets, garbage, source, background=torch.zeros(())), gathered
    )
    assert torch.equal(place_views(list(images), offsets, 11, source=source), gathered)
    assert pasted[1, :, 0, 0].tolist() == images[source[1], :, 6, 8].tolist()
    assert not pasted[2].any() and not pasted[3].any()
    views, _ = place(images, offsets, 11, source=source)
    assert torch.equal(views[10], place(images[source[10]][None], offsets[10:11], 11)[0][0])


def test_masks_from_boxes_equal_the_placement_masks():
    """compose() fills from the known rectangles without asking the placement for its mask (on
    the CPU it paints the strips around each pasted object). Catches: an exclusive bottom or
    right edge (one row or column of the object filled with the mean colour), a clipped corner
    computed from the unclipped offset, the black fill given the mean colour or the reverse."""
    from lightning_inv.protocols.fill import box_mask, compose, known_boxes

    torch.manual_seed(1)
    objects = torch.rand(6, 3, 5, 7)
    offsets = torch.tensor([[0, 0], [-2, -3], [8, 6], [-4, 9], [3, -6], [2, 2]])
    views, known = place(objects, offsets, 12)
    masks = box_mask(known_boxes(objects, offsets, 12), 12, 12, views.device)
    assert torch.equal(masks, known)
    colour = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    expected = torch.where(known, views, colour)
    assert torch.equal(compose(objects, offsets, 12, "mean", mean=(0.1, 0.2, 0.3)), expected)
    assert torch.equal(compose(objects, offsets, 12, "black", mean=(0.1, 0.2, 0.3)), views)


def test_inpainted_views_made_in_the_buffer_equal_placement_then_inpainting():
    """On the CPU, compose(fill="inpaint") pastes the objects straight into the inpainting's
    uninitialised buffer. It must equal placing them on zeros and inpainting. Catches: a pixel
    the bands never write (uninitialised memory left in a view), a paste at the wrong offset or
    from the wrong ``source`` image, objects clipped at the canvas edge."""
    from lightning_inv.protocols.fill import compose, compose_many, known_boxes
    from lightning_inv.protocols.inpaint import inpaint_boxes

    torch.manual_seed(2)
    objects = torch.rand(3, 3, 9, 11)
    offsets = torch.tensor([[0, 0], [-3, 5], [14, -4], [6, 6], [20, 17], [2, 13]])
    source = torch.tensor([2, 0, 1, 1, 0, 2])
    placed, _ = place(objects, offsets, 24, source=source)
    expected = inpaint_boxes(placed, known_boxes(objects[source], offsets, 24))
    torch.testing.assert_close(compose(objects, offsets, 24, "inpaint", source=source), expected)
    small = torch.rand(3, 3, 5, 5)
    grid = compose_many([(objects, offsets[:3]), (small, offsets[3:])], 24, "inpaint")
    assert grid.shape == (3, 2, 3, 24, 24)
    torch.testing.assert_close(grid[:, 0], compose(objects, offsets[:3], 24, "inpaint"))
    torch.testing.assert_close(grid[:, 1], compose(small, offsets[3:], 24, "inpaint"))


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: Translate(canvas=64, scale=0.75, max_shift=20),
            "view range larger than the canvas",
        ),
        (lambda: Translate(scale=1.5), r"object scale must be in \(0, 1\]"),
        (lambda: RandomLocation(scale=0.0), r"object scale must be in \(0, 1\]"),
        (lambda: Crop(margin=4, steps=9), "view range larger than the canvas"),
        (lambda: Translate(fill="blur"), "unknown fill"),
        (lambda: create_protocol("rotate"), "unknown protocol"),
        (lambda: create_protocol("crop", scale=0.5), "bad parameters"),
    ],
)
def test_bad_parameters_fail_before_any_compute(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.rand(3, 32, 32), r"\[B, 3, H, W\]"),
        (torch.rand(1, 1, 32, 32), r"\[B, 3, H, W\]"),
        (torch.rand(1, 3, 32, 32) * 255, r"in \[0, 1\]"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "divide by 255"),
    ],
)
def test_bad_images_are_rejected(images, message):
    with pytest.raises(ValueError, match=message):
        Crop(canvas=16)(images)


def test_scale_inpaints_all_sizes_at_once_with_the_same_numbers():
    """Scale fills every size in one call (compose_many, views laid out image by image): the
    views must equal one compose per size, for every fill (a grid in the wrong order would
    swap sizes or images)."""
    from lightning_inv.protocols import compose

    torch.manual_seed(0)
    images = torch.rand(2, 3, 40, 40)
    for fill in ("inpaint", "mean", "edge"):
        protocol = Scale(canvas=40, min_scale=0.5, max_scale=0.6, fill=fill)
        views = protocol(images)
        for t, side in enumerate(protocol.positions):
            top = (40 - side) // 2
            expected = compose(
                resize(images, side), torch.tensor([[top, top]] * 2), 40, fill, protocol.mean
            )
            torch.testing.assert_close(views[:, t], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_every_preset_protocol_makes_the_same_views_on_cuda():
    """On a GPU the placement gathers by index and the inpainting replays CUDA graphs of its band
    passes (every band every pass); on CPU both take other paths. The views must agree for every
    protocol of the paper presets, twice (a stale graph replay would fail the second call)."""
    from lightning_inv.protocols.presets import PresetContext, build_experiments

    protocols, _ = build_experiments(
        ("table1", "fig2", "fig6", "fig9", "zhang2019", "aps2021", "imagenet_p"),
        PresetContext(canvas=64, mean=(0.485, 0.456, 0.406)),
    )
    torch.manual_seed(0)
    for round_ in range(2):
        images = torch.rand(3, 3, 64, 64)
        photos = [torch.rand(3, 90, 120), torch.rand(3, 70, 64), torch.rand(3, 64, 100)]
        indices = torch.arange(3) + 10 * round_
        for protocol in protocols:
            cpu = protocol(images, indices, photos if protocol.uses_original else None)
            gpu = protocol(
                images.cuda(),
                indices,
                [p.cuda() for p in photos] if protocol.uses_original else None,
            )
            torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0, msg=protocol.key)
