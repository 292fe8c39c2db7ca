"""The paper's inpainting against a plain NumPy/SciPy rendering of the definition in docs/design.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from lightning_inv.protocols import binomial_kernel, inpaint
from lightning_inv.protocols.inpaint import correlate_valid, inpaint_boxes


def reference_inpaint(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """docs/design.md, "Inpainting", literally: 12-tap binomial, scipy 'same' alignment, explicit mask."""
    taps = np.array([1, 11, 55, 165, 330, 462, 462, 330, 165, 55, 11, 1], dtype=float) / 2**11
    kernel = np.outer(taps, taps)
    out, mask = image * known, known.astype(float)
    while mask.min() < 1:
        numerator = np.stack([convolve2d(out[c] * mask, kernel, mode="same") for c in range(3)])
        weight = convolve2d(mask, kernel, mode="same")
        estimate = numerator / (weight + (weight == 0))
        out = mask * out + (1 - mask) * estimate
        mask = np.maximum(mask, weight > 1e-12)
    return out


def test_kernel_is_the_12_tap_binomial():
    kernel = binomial_kernel()
    assert kernel.shape == (12,)
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0))
    assert kernel[0] * 2**11 == pytest.approx(1) and kernel[5] * 2**11 == pytest.approx(462)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_reference_on_random_images_and_masks(seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(3, 3, 37, 45))
    known = np.zeros((3, 1, 37, 45), dtype=bool)
    for b in range(3):  # a pasted rectangle plus scattered known pixels
        top, left = rng.integers(0, 20), rng.integers(0, 25)
        known[b, 0, top : top + 12, left : left + 15] = True
        known[b, 0] |= rng.random((37, 45)) < 0.01
    out = inpaint(torch.from_numpy(images).float(), torch.from_numpy(known))
    for b in range(3):
        expected = reference_inpaint(images[b], known[b, 0])
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-4, rtol=0)


def test_invariants_known_pixels_kept_no_hole_left_constant_stays_constant():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 50, 60) * 255
    known = torch.zeros(2, 1, 50, 60, dtype=torch.bool)
    known[:, :, 20:30, 25:40] = True
    out = inpaint(images, known)
    assert torch.equal(out[known.expand_as(out)], images[known.expand_as(images)])
    assert torch.isfinite(out).all()
    assert (out > 0).all()  # every unknown pixel got a value from the known region
    constant = torch.full((1, 3, 50, 60), 77.0)
    torch.testing.assert_close(inpaint(constant, known[:1]), constant)


def test_black_photo_pixels_are_known_not_refilled():
    image = torch.zeros(1, 3, 30, 30)
    image[..., 10:20, 10:15] = 200.0  # right half of the pasted photo is truly black
    known = torch.zeros(1, 1, 30, 30, dtype=torch.bool)
    known[..., 10:20, 10:20] = True
    out = inpaint(image, known)
    assert (out[..., 10:20, 15:20] == 0).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="at least one known pixel"):
        inpaint(torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="known"):
        inpaint(torch.rand(1, 3, 8, 8), torch.ones(1, 3, 8, 8, dtype=torch.bool))


def _random_boxes(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Rectangles anywhere, edge-touching, 1 px and whole-frame ones included."""
    boxes = []
    for _ in range(count):
        top, bottom = sorted(rng.integers(0, height, size=2))
        left, right = sorted(rng.integers(0, width, size=2))
        boxes.append([top, left, bottom, right])
    boxes[0] = [0, 0, height - 1, width - 1]  # nothing to fill: zero passes
    boxes[1] = [height - 1, width - 1, height - 1, width - 1]  # one pixel in the far corner
    return np.array(boxes)


@pytest.mark.parametrize("seed", [0, 1])
def test_band_inpainting_equals_the_full_frame_definition(seed):
    """inpaint_boxes only computes the band each pass adds. Catches: a band one row short or long
    (the growth is 5 px before and 6 px after, not symmetric), a corner written by neither band,
    a stale corner from the second band, frame edges treated as known, too few passes."""
    rng = np.random.default_rng(seed)
    height, width = 29, 41
    boxes = _random_boxes(rng, 12, height, width)
    images = torch.from_numpy(rng.uniform(0, 255, size=(12, 3, height, width)))
    known = torch.zeros(12, 1, height, width, dtype=torch.bool)
    for b, (top, left, bottom, right) in enumerate(boxes):
        known[b, 0, top : bottom + 1, left : right + 1] = True
    expected = inpaint(images, known)
    for method in ("adds", "conv"):
        out = inpaint_boxes(images, torch.from_numpy(boxes), method=method)
        torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)
    reference = reference_inpaint(images[2].numpy(), known[2, 0].numpy())
    np.testing.assert_allclose(
        inpaint_boxes(images[2:3], torch.from_numpy(boxes[2:3]))[0], reference, atol=1e-6
    )


def test_thin_and_edge_rectangles_equal_the_full_frame_definition():
    """Rectangles thinner than the 5-6 lines a band reads, and ones against the frame edge: the
    first known lines of a band then reach past the rectangle (unknown, zero) or past the frame.
    Catches: a band that reads image pixels outside its rectangle as known, a read clamped to the
    frame edge that repeats a real line, a band written into a known line of the other side."""
    height, width = 23, 27
    boxes = torch.tensor(
        [
            [10, 3, 11, 20],  # 2 rows, inside
            [4, 12, 18, 12],  # 1 column
            [0, 5, 2, 9],  # 3 rows against the top edge
            [21, 0, 22, 3],  # 2 rows against the bottom edge, left edge
            [9, 24, 12, 26],  # 3 columns against the right edge
            [11, 13, 11, 13],  # one pixel in the middle
        ]
    )
    rng = np.random.default_rng(11)
    images = torch.from_numpy(rng.uniform(0, 255, size=(len(boxes), 3, height, width)))
    known = torch.zeros(len(boxes), 1, height, width, dtype=torch.bool)
    for b, (top, left, bottom, right) in enumerate(boxes.tolist()):
        known[b, 0, top : bottom + 1, left : right + 1] = True
    torch.testing.assert_close(
        inpaint_boxes(images, boxes), inpaint(images, known), atol=1e-9, rtol=0
    )


def test_filling_in_place_ignores_whatever_the_buffer_holds():
    """fill_pasted works in a buffer nobody zeroed: NaN or infinity outside the rectangles must
    not reach the result. Catches: first known lines masked by a product (NaN * 0 = NaN)
    instead of a selection, a spare view missing (a line outside the frame written into a
    real view)."""
    from lightning_inv.protocols.inpaint import fill_pasted

    rng = np.random.default_rng(4)
    boxes = torch.from_numpy(_random_boxes(rng, 7, 26, 22))
    images = torch.rand(7, 3, 26, 22)
    frames = torch.full((8, 3, 26, 22), float("nan"))
    frames[3, :, :4] = float("inf")
    for b, (top, left, bottom, right) in enumerate(boxes.tolist()):
        frames[b, :, top : bottom + 1, left : right + 1] = images[
            b, :, top : bottom + 1, left : right + 1
        ]
    filled = fill_pasted(frames, boxes)
    assert filled.data_ptr() == frames.data_ptr()  # in place
    torch.testing.assert_close(filled, inpaint_boxes(images, boxes), atol=0, rtol=0)


def test_reciprocal_weight_table_is_exact_in_float32():
    """The normalising weights come from a table of 1 / (sum of kernel taps low..high-1). The
    binomial taps are multiples of 1/2048, so float32 sums are exact and the float32 table equals
    the float64 one rounded once. Catches: a table built from float32 running sums of another
    kernel, an off-by-one between low and high (a tap too many or too few)."""
    from lightning_inv.protocols.inpaint import reciprocal_table

    taps = binomial_kernel(dtype=torch.float64)
    table = reciprocal_table(binomial_kernel()).view(13, 13)
    for low in range(13):
        for high in range(13):
            total = float(taps[low:high].sum())
            expected = 1 / total if high > low else 0.0
            assert table[low, high].item() == torch.tensor(expected, dtype=torch.float32).item()


def test_unscheduled_band_passes_equal_the_scheduled_ones():
    """CUDA runs every band of every view in every pass from the frame (fixed shapes for its
    graph); the CPU keeps each band's lines in a buffer and runs a band only while its side
    grows. Run the CUDA path on the CPU, with the conv blur CUDA uses: catches a band that
    misbehaves once its side reached the frame edge (writing into the frame instead of the
    padding) and a view order mixed up between bands."""
    from lightning_inv.protocols.inpaint import (
        BAND_AFTER,
        BAND_BEFORE,
        _fill_boxes,
        _grown_boxes,
        band_matrix,
        side_passes,
    )

    rng = np.random.default_rng(5)
    boxes = torch.from_numpy(_random_boxes(rng, 10, 31, 26))
    images = torch.from_numpy(rng.uniform(0, 255, size=(10, 3, 31, 26)))
    kernel = binomial_kernel(dtype=torch.float64)
    constants = (kernel, *(band_matrix(band, kernel) for band in (BAND_BEFORE, BAND_AFTER)))
    passes = int(side_passes(boxes, 31, 26).max())
    grown = _grown_boxes(boxes, passes, 31, 26)
    unscheduled = _fill_boxes(images, grown, constants, passes, "conv")
    torch.testing.assert_close(unscheduled, inpaint_boxes(images, boxes), atol=1e-9, rtol=0)


def test_band_inpainting_is_the_same_on_one_thread_and_on_several():
    """The CPU passes run in parallel over views (band_kernel). Each view must be computed by
    one thread from its own scratch lines: catches scratch arrays shared between threads (views
    overwriting each other's blurred lines) and a view whose bands are split across threads
    (corner pixels written in either order). Bit for bit: nothing else may differ."""
    rng = np.random.default_rng(8)
    boxes = torch.from_numpy(_random_boxes(rng, 24, 48, 40))
    images = torch.from_numpy(rng.uniform(0, 1, size=(24, 3, 48, 40))).float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = inpaint_boxes(images, boxes)
        torch.set_num_threads(max(2, threads))
        several = inpaint_boxes(images, boxes)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, several)


def test_band_inpainting_reads_only_the_boxes():
    """Pixels outside a box are unknown whatever they hold (placement leaves zeros there, but a
    caller may not): the result must not depend on them."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 20, 24) * 255
    boxes = torch.tensor([[5, 6, 12, 15], [0, 0, 3, 3]])
    noisy = images + 1000 * torch.rand_like(images)
    for b, (top, left, bottom, right) in enumerate(boxes.tolist()):
        noisy[b, :, top : bottom + 1, left : right + 1] = images[
            b, :, top : bottom + 1, left : right + 1
        ]
    torch.testing.assert_close(inpaint_boxes(noisy, boxes), inpaint_boxes(images, boxes))


def test_blur_methods_agree():
    """Shifted adds (CPU) and depthwise conv2d (GPU) are the same correlation, on both axes."""
    torch.manual_seed(0)
    x = torch.rand(2, 4, 19, 23, dtype=torch.float64)
    kernel = binomial_kernel(dtype=torch.float64)
    for dim in (-1, -2):
        adds = correlate_valid(x, kernel, dim, "adds")
        conv = correlate_valid(x, kernel, dim, "conv")
        assert adds.shape[dim] == x.shape[dim] - 11
        torch.testing.assert_close(adds, conv)
    manual = sum(kernel[k] * x[..., k : k + 12] for k in range(12))
    torch.testing.assert_close(correlate_valid(x, kernel, -1)[..., :12], manual)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_band_inpainting_on_cuda_matches_cpu():
    """The CUDA path (depthwise conv2d, passes replayed from a captured CUDA graph) gives the
    CPU numbers, also on the second and third call of a shape: a replay that kept the first
    call's images or rectangles would fail here."""
    rng = np.random.default_rng(3)
    boxes = torch.from_numpy(_random_boxes(rng, 8, 64, 64))
    moved = boxes.clone()
    moved[2:, [0, 2]] = (moved[2:, [0, 2]] // 2).clamp(max=63)  # other rectangles
    for images, rectangles in (
        (torch.rand(8, 3, 64, 64) * 255, boxes),
        (torch.rand(8, 3, 64, 64) * 255, boxes),
        (torch.rand(8, 3, 64, 64) * 255, moved),
    ):
        cpu = inpaint_boxes(images, rectangles)
        gpu = inpaint_boxes(images.cuda(), rectangles).cpu()
        torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-5)


def test_bad_boxes_are_rejected():
    with pytest.raises(ValueError, match="rectangle inside"):
        inpaint_boxes(torch.rand(1, 3, 8, 8), torch.tensor([[0, 0, 8, 3]]))
    with pytest.raises(ValueError, match="rectangle inside"):
        inpaint_boxes(torch.rand(1, 3, 8, 8), torch.tensor([[4, 0, 3, 3]]))


def test_inpainting_ignores_a_mixed_precision_region():
    """evaluate.py --precision bf16-mixed makes the views inside an autocast region; the
    inpainting must still compute in float32. Catches: the band matrix product (and conv2d on a
    GPU) silently running in bfloat16, which moves filled pixels by ~1% of their value."""
    rng = np.random.default_rng(7)
    boxes = torch.from_numpy(_random_boxes(rng, 6, 40, 40))
    images = torch.from_numpy(rng.uniform(0, 1, size=(6, 3, 40, 40))).float()
    known = torch.zeros(6, 1, 40, 40, dtype=torch.bool)
    for b, (top, left, bottom, right) in enumerate(boxes.tolist()):
        known[b, 0, top : bottom + 1, left : right + 1] = True
    expected_boxes, expected_full = inpaint_boxes(images, boxes), inpaint(images, known)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(inpaint_boxes(images, boxes), expected_boxes)
        torch.testing.assert_close(inpaint(images, known), expected_full)
