"""The CPU band inpainting as one compiled loop (docs/design.md, "Inpainting").

``inpaint.inpaint_boxes`` and ``inpaint.fill_pasted`` call ``fill_bands`` on the CPU with the
rectangles and the band constants; each view's four bands go through all their passes in one
compiled call (numba), in parallel over views: a band's lines are blurred, mixed, weighted and
written while they sit in the cache, and the plan of each pass (grown rectangle, line weights,
where the new lines go) is a few integer operations in the loop. Written as torch operations, a
pass was about twenty operations that each swept the whole band buffer at a fixed cost of a few
microseconds, thirty-odd passes per call, after a plan of some two hundred more. The same
arithmetic (tested against the full-frame definition and against the CUDA schedule, which stays
in torch).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from lightning_inv.protocols.inpaint_geometry import (
    GROW_AFTER,
    GROW_BEFORE,
    KERNEL_TAPS,
    PAD_BEFORE,
)

TAPS = KERNEL_TAPS  # the binomial kernel's length
PAD = PAD_BEFORE  # zero padding before each line in the buffer
BANDS = 4  # pairs of a view: left, right (along the columns), top, bottom (along the rows)
# A position's 12-px window [p - 6, p + 5] meets the known interval [first, last] iff p is in
# [first - 5, last + 6]: where a new line can be non-zero, and how far the known rectangle grows
# per pass.
REACH_BEFORE, REACH_AFTER = GROW_BEFORE, GROW_AFTER


@njit(cache=True, nogil=True)
def _weight(line, first, last, table):
    """inpaint._reciprocal_weight: 1 / the kernel taps that the window of ``line`` shares with
    the known interval [first, last], 0 where it shares none."""
    start = min(max(first + PAD - line, 0), TAPS)
    stop = min(max(last + PAD + 1 - line, 0), TAPS)
    return table[start * (TAPS + 1) + stop]


@njit(cache=True, nogil=True)
def _new_lines(buffer, pair, kernel, table, matrix, first, last, low, high, blurred, mixed, across):
    """Replace the pair's known lines by its new lines at positions ``low .. high - 1`` (where
    they can be non-zero; elsewhere the known lines are zero and stay so), for the known
    interval [``first``, ``last``] along the band: blur along the band, mix across it with
    ``matrix`` [S, S] (line weights folded in), multiply by the weight along the band. Loops run
    over offsets from ``low`` on slices (indices numba knows are not negative: no wrap-around
    checks, so the loops vectorise)."""
    slots, channels, count = buffer.shape[1], buffer.shape[2], high - low
    # inpaint._reciprocal_weight along the band: 1 / the taps the window shares with the known
    # interval
    for q in range(count):
        across[q] = _weight(low + q, first, last, table)
    for c in range(channels):
        for i in range(slots):
            line = buffer[pair, i, c, low : high + TAPS - 1]
            out = blurred[i]
            for q in range(count):
                out[q] = kernel[0] * line[q]
            for t in range(1, TAPS):
                tap = kernel[t]
                for q in range(count):
                    out[q] += tap * line[q + t]
        for d in range(slots):
            out = mixed[d]
            for q in range(count):
                out[q] = matrix[d, 0] * blurred[0, q]
            for i in range(1, slots):
                weight = matrix[d, i]
                source = blurred[i]
                for q in range(count):
                    out[q] += weight * source[q]
            new = buffer[pair, d, c, PAD + low : PAD + high]
            for q in range(count):
                new[q] = out[q] * across[q]


@njit(cache=True, nogil=True)
def _write(buffer, pair, column, views, lines, low, high, frames):
    """The pair's new lines at positions ``low .. high - 1`` into the frames (line d of the pair
    to ``views[d]``, ``lines[d]``)."""
    slots, channels = buffer.shape[1], buffer.shape[2]
    for d in range(slots):
        for c in range(channels):
            new = buffer[pair, d, c, PAD + low : PAD + high]
            if column:  # position p along the band is a row of the frame
                frames[views[d], c, low:high, lines[d]] = new
            else:
                frames[views[d], c, lines[d], low:high] = new


@njit(parallel=True, cache=True, nogil=True)
def _fill_bands(
    frames, buffer, boxes, passes_needed, kernel, table, matrices, new_offsets, known_offsets, real
):
    """All passes of all views, in parallel over views (numpy arrays; frames filled in place).

    frames [B + 1, C, H, W] (the last one spare); buffer [4 B, S, C, length + 11] (any content);
    boxes [B, 4] (top, left, bottom, right; inclusive); passes_needed [B, 4]: the passes until
    each band's side reaches the frame edge (``inpaint.side_passes``, in pair order); kernel [12];
    table: see
    ``inpaint.reciprocal_table``; per band kind (0: before the rectangle, 1: after it): the band
    matrix [2, S, S], the new and the known lines' offsets from the edge line [2, S], and which
    slots are real lines [2, S] (the others are dummies of weight 0). Pair 4 v + b of view v:
    b = 0 left, 1 right (along the columns), 2 top, 3 bottom (along the rows).

    The known rectangle before pass n is the box grown by 5n px at its top and left and 6n px at
    its bottom and right, clipped to the frame; a band runs until its side reaches the frame
    edge. A band computes and writes only the positions where its new lines can be non-zero, so
    each pixel outside the rectangles is written once, in the pass it becomes known, by the band
    whose line holds it; a corner pixel that a row and a column band make known in the same pass
    is written by both, columns first, and the row's value stays (one fixed order). Threads write
    only their own view (and the spare view, which nobody reads)."""
    slots, length = buffer.shape[1], buffer.shape[3] - TAPS + 1
    height, width, spare = frames.shape[2], frames.shape[3], frames.shape[0] - 1
    for view in prange(boxes.shape[0]):
        blurred = np.empty((slots, length), dtype=buffer.dtype)
        mixed = np.empty((slots, length), dtype=buffer.dtype)
        across = np.empty(length, dtype=buffer.dtype)
        matrix = np.empty((BANDS, slots, slots), dtype=buffer.dtype)
        targets = np.empty((BANDS, 2, slots), dtype=np.int64)  # (view, line) of each new line
        lows = np.empty(BANDS, dtype=np.int64)
        highs = np.empty(BANDS, dtype=np.int64)
        top, left, bottom, right = boxes[view, 0], boxes[view, 1], boxes[view, 2], boxes[view, 3]
        needed = passes_needed[view]
        passes = 0
        for band in range(BANDS):
            passes = max(passes, needed[band])
        for n in range(passes + 1):  # n = passes: nothing runs, only the first lines (n = 0)
            grown_top = max(top - REACH_BEFORE * n, 0)
            grown_left = max(left - REACH_BEFORE * n, 0)
            grown_bottom = min(bottom + REACH_AFTER * n, height - 1)
            grown_right = min(right + REACH_AFTER * n, width - 1)
            for band in range(BANDS):
                column, kind, pair = band < 2, band % 2, BANDS * view + band
                if column:  # lines are columns, positions rows
                    first, last, start, stop = grown_left, grown_right, grown_top, grown_bottom
                    line_count, span = width, height
                else:
                    first, last, start, stop = grown_top, grown_bottom, grown_left, grown_right
                    line_count, span = height, width
                edge = first if kind == 0 else last
                if n == 0:  # the first known lines: the rectangle's, zero past it
                    for i in range(slots):
                        line = edge + known_offsets[kind, i]
                        for c in range(buffer.shape[2]):
                            buffer[pair, i, c, :] = 0
                            if real[kind, i] and first <= line <= last:
                                for p in range(start, stop + 1):
                                    if column:
                                        buffer[pair, i, c, PAD + p] = frames[view, c, p, line]
                                    else:
                                        buffer[pair, i, c, PAD + p] = frames[view, c, line, p]
                if needed[band] <= n:
                    continue
                for d in range(slots):
                    line = edge + new_offsets[kind, d]
                    weight = _weight(line, first, last, table)
                    for i in range(slots):
                        matrix[band, d, i] = weight * matrices[kind, d, i]
                    inside = real[kind, d] and 0 <= line < line_count
                    targets[band, 0, d] = view if inside else spare
                    targets[band, 1, d] = line if inside else 0
                lows[band] = max(start - REACH_BEFORE, 0)
                highs[band] = min(stop + REACH_AFTER + 1, span)
                _new_lines(
                    buffer,
                    pair,
                    kernel,
                    table,
                    matrix[band],
                    start,
                    stop,
                    lows[band],
                    highs[band],
                    blurred,
                    mixed,
                    across,
                )
            for band in range(BANDS):
                if needed[band] > n:
                    _write(
                        buffer,
                        BANDS * view + band,
                        band < 2,
                        targets[band, 0],
                        targets[band, 1],
                        lows[band],
                        highs[band],
                        frames,
                    )


def fill_bands(
    frames: torch.Tensor,
    boxes: torch.Tensor,
    passes_needed: torch.Tensor,
    kernel: torch.Tensor,
    table: torch.Tensor,
    matrices: torch.Tensor,
    new_offsets: torch.Tensor,
    known_offsets: torch.Tensor,
    real: torch.Tensor,
) -> None:
    """``_fill_bands`` on CPU tensors, in place (frames float32 or float64, the constants in the
    same dtype; boxes, passes_needed, offsets int64; real bool). Uses at most as many threads
    as torch."""
    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    count, channels, height, width = len(boxes), frames.shape[1], *frames.shape[-2:]
    buffer = frames.new_empty(
        BANDS * count, matrices.shape[-1], channels, max(height, width) + TAPS - 1
    )
    _fill_bands(
        *(
            t.numpy()
            for t in (
                frames,
                buffer,
                boxes,
                passes_needed,
                kernel,
                table,
                matrices,
                new_offsets,
                known_offsets,
                real,
            )
        )
    )
