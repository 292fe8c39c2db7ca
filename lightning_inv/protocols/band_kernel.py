"""The CPU band inpainting as one compiled loop (docs/design.md, "Inpainting").

``inpaint._fill_band_buffers`` plans the passes (per (band, view) pair: its band matrices and
line weights, its known interval along the band, where its new lines go, how many passes it
grows); this module runs them. Written in torch, a pass is about twenty operations that each
sweep the whole band buffer (twelve shifted multiply-adds for the blur alone) at a fixed cost of
a few microseconds each, thirty-odd passes per call. Compiled with numba, each view's four bands
go through all their passes in one call, in parallel over views: the lines are blurred, mixed,
weighted and written while they sit in the cache. The same arithmetic (tested against the
full-frame definition and against the CUDA schedule, which stays in torch).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

TAPS = 12  # the binomial kernel's length (inpaint.KERNEL_TAPS)
PAD = 6  # zero padding before each line in the buffer (inpaint.PAD_BEFORE)
BANDS = 4  # pairs of a view: left, right (along the columns), top, bottom (along the rows)
# A position's 12-px window [p - 6, p + 5] meets the known interval [first, last] along the band
# iff p is in [first - 5, last + 6]: the only positions where a new line is not zero.
REACH_BEFORE, REACH_AFTER = TAPS // 2 - 1, TAPS // 2


@njit(cache=True, nogil=True)
def _first_lines(buffer, pair, column, lines, box, frames, view):
    """The pair's first known lines: the pixels of its rectangle ``box`` (first, last line,
    first, last position), zero elsewhere (a band may read lines past a thin rectangle; the
    frame outside the rectangles may hold anything, NaN included, and is never read)."""
    first, last, start, stop = box[0], box[1], box[2], box[3]
    for i in range(buffer.shape[1]):
        line = lines[i]
        for c in range(buffer.shape[2]):
            buffer[pair, i, c, :] = 0
            if first <= line <= last:
                for p in range(start, stop + 1):
                    if column:
                        buffer[pair, i, c, PAD + p] = frames[view, c, p, line]
                    else:
                        buffer[pair, i, c, PAD + p] = frames[view, c, line, p]


@njit(cache=True, nogil=True)
def _new_lines(buffer, pair, kernel, table, matrix, along, low, high, blurred, mixed, across):
    """Replace the pair's known lines by its new lines at positions ``low .. high - 1`` (where
    they can be non-zero; elsewhere the known lines are zero and stay so): blur along the band,
    mix across it with ``matrix`` [S, S] (line weights folded in), multiply by the weight along
    the band. Loops run over offsets from ``low`` on slices (indices numba knows are not
    negative: no wrap-around checks, so the loops vectorise)."""
    slots, channels, count = buffer.shape[1], buffer.shape[2], high - low
    # inpaint._reciprocal_weight along the band: 1 / the taps the window shares with the known
    # interval
    for q in range(count):
        start = min(max(along[0] + PAD - low - q, 0), TAPS)
        stop = min(max(along[1] + PAD + 1 - low - q, 0), TAPS)
        across[q] = table[start * (TAPS + 1) + stop]
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
    frames,
    buffer,
    needed,
    spans,
    kernel,
    table,
    matrices,
    along,
    write_views,
    write_lines,
    read_lines,
    read_boxes,
):
    """All passes of all views, in parallel over views (numpy arrays, frames filled in place).

    frames [B + 1, C, H, W]; buffer [4 B, S, C, length + 11] (any content); per pair 4 v + b:
    needed [4 B] passes, spans [4 B] the frame's extent along the band, read_lines [4 B, S] and
    read_boxes [4 B, 4] where its first lines come from; per pass and pair: matrices
    [P, 4 B, S, S], along [P, 4 B, 2], write_views and write_lines [P, 4 B, S].

    A band computes and writes only the positions where its new lines can be non-zero, so each
    pixel outside the rectangles is written once, in the pass it becomes known, by the band whose
    line it lies on; a corner pixel that a row and a column band make known in the same pass is
    written by both, columns first, and the row's value stays (one fixed order). Threads write
    only their own view (and the spare view, which nobody reads)."""
    slots, length = buffer.shape[1], buffer.shape[3] - TAPS + 1
    for view in prange(buffer.shape[0] // BANDS):
        blurred = np.empty((slots, length), dtype=buffer.dtype)
        mixed = np.empty((slots, length), dtype=buffer.dtype)
        across = np.empty(length, dtype=buffer.dtype)
        first = view * BANDS
        passes = 0
        for pair in range(first, first + BANDS):
            column = pair - first < 2
            _first_lines(buffer, pair, column, read_lines[pair], read_boxes[pair], frames, view)
            passes = max(passes, needed[pair])
        lows = np.empty(BANDS, dtype=np.int64)
        highs = np.empty(BANDS, dtype=np.int64)
        for n in range(passes):
            for band in range(BANDS):
                pair = first + band
                if needed[pair] > n:
                    lows[band] = max(along[n, pair, 0] - REACH_BEFORE, 0)
                    highs[band] = min(along[n, pair, 1] + REACH_AFTER + 1, spans[pair])
                    _new_lines(
                        buffer,
                        pair,
                        kernel,
                        table,
                        matrices[n, pair],
                        along[n, pair],
                        lows[band],
                        highs[band],
                        blurred,
                        mixed,
                        across,
                    )
            for band in range(BANDS):
                pair = first + band
                if needed[pair] > n:
                    _write(
                        buffer,
                        pair,
                        band < 2,
                        write_views[n, pair],
                        write_lines[n, pair],
                        lows[band],
                        highs[band],
                        frames,
                    )


def fill_bands(
    frames: torch.Tensor,
    buffer: torch.Tensor,
    needed: torch.Tensor,
    spans: torch.Tensor,
    kernel: torch.Tensor,
    table: torch.Tensor,
    plan: dict[str, torch.Tensor],
) -> None:
    """``_fill_bands`` on CPU tensors, in place (one dtype, float32 or float64; ``plan``: the
    per-pass and per-pair tensors by name). Uses at most as many threads as torch."""
    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    _fill_bands(
        frames.numpy(),
        buffer.numpy(),
        needed.numpy(),
        spans.numpy(),
        kernel.numpy(),
        table.numpy(),
        *(
            plan[name].numpy()
            for name in (
                "matrices",
                "along",
                "write_views",
                "write_lines",
                "read_lines",
                "read_boxes",
            )
        ),
    )
