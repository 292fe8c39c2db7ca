"""The paper's inpainting against a plain NumPy/SciPy rendering of the definition in docs/design.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from lightning_inv.protocols import binomial_kernel, inpaint


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
