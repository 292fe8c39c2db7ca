"""How sure is a number: percentile bootstrap intervals over images, and paired differences.

Every measure of this package is a mean over images of a per-image value (docs/design.md,
"Intervals"), so its uncertainty from the choice of images is estimated by resampling images
with replacement (views of one image stay together). Resample indices depend only on the seed
and the number of images, so every measure and every model measured on the same images share
them, and one or two processes give the same interval (per-image values are sorted by data set
index before they get here).
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


CHUNK = 50  # resamples drawn at once: memory 50 x N, not 1000 x N (16 KB per image at the end)


def resample_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means [resamples] of ``values`` [N] over images drawn with replacement (seeded), the
    resamples drawn ``CHUNK`` at a time from one generator (an even chunk size draws the same
    indices as one [resamples, N] call)."""
    if len(values) < 1:
        raise ValueError("a bootstrap needs at least one image")
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        drawn = generator.integers(0, len(values), size=(rows, len(values)))
        means[start : start + rows] = values[drawn].mean(axis=1)
    return means


def bootstrap_interval(
    values: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` [N] (one value per image).

    >>> bootstrap_interval(np.full(10, 0.25))
    (0.25, 0.25)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be one per image [N]; got shape {values.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    means = resample_means(values, resamples, seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(
    first: np.ndarray,
    second: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, float | list[float]]:
    """Mean of ``first - second`` (the same images, in the same order) with its bootstrap interval.

    Returns ``{"difference": d, "ci95": [low, high]}``; an interval that excludes 0 says the two
    differ on this kind of image at that level.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same images: {first.shape} vs {second.shape}")
    difference = first - second
    low, high = bootstrap_interval(difference, resamples, seed, level)
    return {"difference": float(difference.mean()), "ci95": [low, high]}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..N-1 of ``values`` [N], ties given their mean rank (as Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranked)
    return (sums / counts)[inverse]


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of two per-image measures (NaN when one is constant).

    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0]))
    0.8
    """
    a, b = ranks(first), ranks(second)
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else float("nan")


def rank_correlation(
    first: np.ndarray,
    second: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, float | int | list[float]]:
    """Spearman's rho between two per-image measures of the same images, with a percentile
    bootstrap interval over images (images drawn with replacement, as for the means; resamples
    where a measure is constant are dropped, their count reported as ``undefined``)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(
            f"a correlation needs one value per image of the same images: {first.shape} vs {second.shape}"
        )
    generator = np.random.default_rng(seed)
    drawn = [
        spearman(first[i], second[i])
        for i in (generator.integers(0, len(first), len(first)) for _ in range(resamples))
    ]
    finite = np.array([r for r in drawn if np.isfinite(r)])
    tail = 100 * (1 - level) / 2
    interval = (
        [float(v) for v in np.percentile(finite, [tail, 100 - tail])]
        if len(finite)
        else [float("nan")] * 2
    )
    return {
        "spearman": spearman(first, second),
        "ci95": interval,
        "num_images": len(first),
        "undefined": resamples - len(finite),
    }
