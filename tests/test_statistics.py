"""Bootstrap intervals and paired differences (lightning_inv.measuring.statistics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lightning_inv.measuring.statistics import bootstrap_interval, paired_difference


def test_a_constant_per_image_value_has_a_zero_width_interval():
    assert bootstrap_interval(np.full(27, 0.125)) == (0.125, 0.125)


def test_interval_is_numpys_percentile_bootstrap_of_the_image_means():
    # Catches: resampling views instead of images (a [N, T] input is refused), a normal
    # approximation instead of percentiles, a 90% instead of a 95% interval.
    values = np.random.default_rng(3).exponential(size=40)
    rng = np.random.default_rng(7)
    means = np.array([values[rng.integers(0, 40, size=40)].mean() for _ in range(1000)])
    expected = tuple(np.percentile(means, [2.5, 97.5]))
    assert bootstrap_interval(values, resamples=1000, seed=7) == pytest.approx(expected, abs=1e-12)
    # And it agrees with SciPy's percentile bootstrap up to resampling noise.
    scipy_ci = stats.bootstrap(
        (values,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    ours = bootstrap_interval(values, resamples=20000)
    assert ours == pytest.approx((scipy_ci.low, scipy_ci.high), abs=0.03)
    with pytest.raises(ValueError, match="one per image"):
        bootstrap_interval(np.zeros((4, 3)))


def test_paired_difference_cancels_what_both_models_share():
    # Per-image values vary a lot, but the second model is always 0.1 lower: the paired
    # interval is exactly 0.1 wide at 0.1 (an unpaired one would span the image spread).
    first = np.random.default_rng(0).uniform(size=30)
    paired = paired_difference(first, first - 0.1)
    assert paired["difference"] == pytest.approx(0.1)
    assert paired["ci95"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="same images"):
        paired_difference(first, first[:-1])


def test_resamples_drawn_in_chunks_equal_one_draw_of_all():
    """The means are drawn CHUNK resamples at a time (memory 50 x N, not 1000 x N). Catches: a
    chunk that restarts the generator (every chunk the same resamples: a too narrow interval), a
    last chunk short or long when resamples is not a multiple of the chunk."""
    from lightning_inv.measuring.statistics import CHUNK, resample_means

    values = np.random.default_rng(1).normal(size=37)
    for resamples in (CHUNK, 3 * CHUNK + 7):
        drawn = np.random.default_rng(4).integers(0, 37, size=(resamples, 37))
        expected = values[drawn].mean(axis=1)
        np.testing.assert_allclose(resample_means(values, resamples, seed=4), expected, rtol=1e-12)
