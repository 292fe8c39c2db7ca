"""The paper's "simple inpainting procedure": iterated normalised convolution (docs/design.md, "Inpainting").

Azulay & Weiss filled the frame around an embedded image by repeatedly averaging known pixels with
a 12-tap binomial kernel. Their NumPy loop decided "known" by R+G+B != 0, which re-fills truly black
pixels of the photo; here the mask is explicit. Batched on the images' device.

Two implementations of the one definition:

- ``inpaint(images, known)``: any known mask (rotated views); every pass blurs the whole frame.
- ``inpaint_boxes(images, boxes)``: the known region is a rectangle per view (every embedding
  protocol). The known region of pass n is then the rectangle grown by n x (5 px before, 6 px
  after) and clipped to the frame, so only the four bands that pass adds can change, and the
  12-line window of a new line reaches only the 5 (before) or 6 (after) known lines next to the
  rectangle's edge, every other line of the window being still unknown (zero). A pass therefore
  reads 5-6 lines per band, blurs them along the band and mixes them across it with a fixed
  [new lines x known lines] matrix of kernel taps. The normalising weight is the product of a row
  and a column factor (the known region is a rectangle), computed for all passes at once from
  the rectangles, like the number of passes (no host-device synchronisation). On CPU each band
  keeps its lines in a buffer (its known lines are the lines it wrote in the pass before), works
  only while its side still grows and only where its lines can be non-zero, and all passes run
  as one compiled loop (``band_kernel``); on a GPU every band of every view runs every pass as
  tensor operations captured in a CUDA graph.

In ``inpaint`` and the GPU passes the blur is 12 shifted multiply-adds per axis on CPU (about 9x
faster there than ``conv2d`` with a 1 x 12 kernel on one channel) and a depthwise ``conv2d``
elsewhere (one kernel launch per axis).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_inv.device_path import accelerated, device_constants
from lightning_inv.protocols.inpaint_geometry import (
    GROW_AFTER,
    GROW_BEFORE,
    KERNEL_TAPS,
    PAD_AFTER,
    PAD_BEFORE,
)
from lightning_inv.protocols.transfer import to_device

MARGIN = max(PAD_BEFORE, GROW_AFTER)  # frame padding that keeps every band index inside it


def binomial_kernel(taps: int = KERNEL_TAPS, dtype: torch.dtype = torch.float32) -> Tensor:
    """1-D binomial kernel [taps]: C(taps-1, k) / 2^(taps-1), summing to 1."""
    n = taps - 1
    return torch.tensor([math.comb(n, k) / 2**n for k in range(taps)], dtype=dtype)


def correlate_valid(x: Tensor, kernel: Tensor, dim: int, method: str | None = None) -> Tensor:
    """Valid 1-D cross-correlation of ``x`` [B, C, R, L] along ``dim`` (-1 or -2):
    ``out[i] = sum_k kernel[k] * x[i + k]``, so that axis shrinks by ``len(kernel) - 1``.

    ``method``: ``"adds"`` (shifted multiply-adds), ``"conv"`` (depthwise ``conv2d``) or None (adds
    on CPU, conv elsewhere). Both give the same numbers up to float rounding.
    """
    method = method or ("conv" if accelerated(x) else "adds")
    taps = len(kernel)
    length = x.shape[dim] - taps + 1
    if method == "adds":
        weights = kernel.tolist()
        out = x.narrow(dim, 0, length) * weights[0]
        for i in range(1, taps):
            out.add_(x.narrow(dim, i, length), alpha=weights[i])
        return out
    if method != "conv":
        raise ValueError(f"unknown blur method {method!r}; use 'adds' or 'conv'")
    b, c, rows, cols = x.shape
    shape = (1, 1, 1, taps) if dim in (-1, 3) else (1, 1, taps, 1)
    weight = kernel.to(x.device, x.dtype).view(shape)
    out = F.conv2d(x.reshape(b * c, 1, rows, cols), weight)
    return out.view(b, c, *out.shape[-2:])


def _blur_separable(x: Tensor, kernel: Tensor, method: str | None = None) -> Tensor:
    """Zero-padded ('same', scipy alignment) separable cross-correlation of [B, C, H, W]."""
    padded = F.pad(x, (PAD_BEFORE, PAD_AFTER, PAD_BEFORE, PAD_AFTER))
    return correlate_valid(correlate_valid(padded, kernel, -1, method), kernel, -2, method)


def _check(images: Tensor, known_shape: tuple[int, ...], what: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"inpaint needs images [B, C, H, W]; got {tuple(images.shape)}")
    if known_shape[0] != images.shape[0]:
        raise ValueError(f"{what} {known_shape} does not match images {tuple(images.shape)}")


def _autocast_off(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run ``function(images, ...)`` with autocast disabled on the images' device: inside a
    mixed-precision region (``--precision bf16-mixed``) its matmul and conv2d would otherwise run
    in half precision and change the views."""

    @functools.wraps(function)
    def wrapper(images: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(images.device.type, enabled=False):
            return function(images, *args, **kwargs)

    return wrapper


def _compute_dtype(images: Tensor) -> torch.dtype:
    return torch.float64 if images.dtype == torch.float64 else torch.float32


@_autocast_off
def inpaint(
    images: Tensor, known: Tensor, max_passes: int | None = None, method: str | None = None
) -> Tensor:
    """Fill the unknown pixels of ``images`` by iterated normalised convolution.

    Args:
        images: float [B, 3, H, W] in 0-255 (the procedure is linear, so any unit works).
        known: bool [B, 1, H, W], True where the pixel is known; every image needs one.
        max_passes: safety bound; default ``H + W`` (each pass grows the known region by >= 5 px).
        method: the blur, see ``correlate_valid``.

    Returns:
        Float [B, 3, H, W], same dtype: known pixels unchanged, every other pixel filled.
    """
    if known.dim() != 4 or known.shape[1] != 1 or known.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"inpaint needs images [B, C, H, W] and known [B, 1, H, W]; got "
            f"{tuple(images.shape)} and {tuple(known.shape)}"
        )
    _check(images, tuple(known.shape), "known")
    if not known.flatten(1).any(dim=1).all():
        raise ValueError("inpaint needs at least one known pixel in every image")
    channels, height, width = images.shape[1:]
    compute = _compute_dtype(images)
    kernel = binomial_kernel(dtype=compute)
    mask = known.to(compute)
    out = images.to(compute) * mask
    passes = max_passes if max_passes is not None else height + width
    for _ in range(passes):
        if bool(mask.bool().all()):
            break
        blurred = _blur_separable(torch.cat([out * mask, mask], dim=1), kernel, method)
        numerator, weight = blurred[:, :channels], blurred[:, channels:]
        estimate = numerator / (weight + (weight == 0).to(compute))
        out = mask * out + (1 - mask) * estimate
        mask = torch.maximum(mask, (weight > 0).to(compute))
    else:
        if not bool(mask.bool().all()):
            raise RuntimeError(f"inpainting did not finish in {passes} passes")
    return out.to(images.dtype)


def side_passes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Passes [4, B] until each side of each rectangle of ``boxes`` [B, 4] (top, left, bottom,
    right; inclusive) reaches the edge of an ``height`` x ``width`` frame, in band order: top,
    bottom, left, right (ceiling divisions). A rectangle fills the frame after the maximum."""
    top, left, bottom, right = boxes.T
    return torch.stack(
        [
            -(-top // GROW_BEFORE),
            -(-(height - 1 - bottom) // GROW_AFTER),
            -(-left // GROW_BEFORE),
            -(-(width - 1 - right) // GROW_AFTER),
        ]
    )


def _grown_boxes(boxes: Tensor, passes: int, height: int, width: int) -> Tensor:
    """The known rectangle of every view before each pass and after the last:
    [passes + 1, B, 4] (top, left, bottom, right; inclusive)."""
    steps = torch.arange(passes + 1, device=boxes.device)[:, None]
    top = (boxes[None, :, 0] - GROW_BEFORE * steps).clamp(min=0)
    left = (boxes[None, :, 1] - GROW_BEFORE * steps).clamp(min=0)
    bottom = (boxes[None, :, 2] + GROW_AFTER * steps).clamp(max=height - 1)
    right = (boxes[None, :, 3] + GROW_AFTER * steps).clamp(max=width - 1)
    return torch.stack([top, left, bottom, right], dim=-1)


# The two bands of one axis, as offsets from the rectangle's edge line: (new lines, known lines
# they read). New line i reads lines i - 6 .. i + 5, so the 5 lines before the first known line
# read its first 5 lines and the 6 lines after the last known line read its last 6 lines.
BAND_BEFORE = (tuple(range(-GROW_BEFORE, 0)), tuple(range(0, PAD_AFTER)))
BAND_AFTER = (tuple(range(1, GROW_AFTER + 1)), tuple(range(-PAD_BEFORE + 1, 1)))


def band_matrix(band: tuple[tuple[int, ...], tuple[int, ...]], kernel: Tensor) -> Tensor:
    """[new lines, known lines]: the kernel tap that each known line of a band gives each new
    line along the band's axis (zero where the line is out of the 12-line window)."""
    new, known = band
    taps = torch.tensor([[j - i + PAD_BEFORE for j in known] for i in new])
    inside = (taps >= 0) & (taps < len(kernel))
    return torch.where(inside, kernel[taps.clamp(0, len(kernel) - 1)], 0)


@device_constants
def _band_constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The kernel and the two band matrices on ``device``, made once per (dtype, device): no
    host-to-device copy per call, and the tensors a CUDA graph captured stay alive."""
    kernel = binomial_kernel(dtype=dtype)
    matrices = [band_matrix(band, kernel) for band in (BAND_BEFORE, BAND_AFTER)]
    return tuple(to_device(t, device) for t in (kernel, *matrices))


def _interval(boxes: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """(first, last) [..., 1] of ``boxes`` [..., 4] along ``axis`` (0: lines, 1: across)."""
    return boxes[..., axis : axis + 1], boxes[..., axis + 2 : axis + 3]


def reciprocal_table(kernel: Tensor) -> Tensor:
    """[(taps + 1)^2]: at ``low * (taps + 1) + high``, 1 / (sum of the kernel taps ``low`` ..
    ``high - 1``), 0 where that range is empty. Sums in float64, then the kernel's dtype: the
    taps of the binomial kernel are multiples of 1/2048, so every sum is exact."""
    cumulative = F.pad(torch.cumsum(kernel.to(torch.float64), 0), (1, 0))  # [taps + 1]
    sums = cumulative[None, :] - cumulative[:, None]  # [low, high]
    table = torch.where(sums > 0, 1 / torch.where(sums > 0, sums, 1), 0)
    return table.flatten().to(kernel.dtype)


def _reciprocal_weight(lines: Tensor, first: Tensor, last: Tensor, table: Tensor) -> Tensor:
    """1 / (1-D blur of the indicator of the known interval [first, last]) at ``lines`` (frame
    coordinates; broadcast), and 0 where the 12-line window of a line misses the interval, i.e.
    outside the interval grown by one pass. The known region is a rectangle, so the 2-D weight
    of normalised convolution is the product of a row and a column weight."""
    low = (first + PAD_BEFORE - lines).clamp_(0, KERNEL_TAPS)
    high = (last + PAD_BEFORE + 1 - lines).clamp_(0, KERNEL_TAPS)
    return torch.take(table, low.mul_(KERNEL_TAPS + 1).add_(high))


def _axis_plans(grown: Tensor, across: int, table: Tensor) -> list[dict[str, Tensor]]:
    """What pass n of the two bands along one axis needs, for all passes at once, from the
    rectangles ``grown`` [P + 1, B, 4] (first line, first across, last line, last across): per band
    the padded indices of the known lines to read (``known``) and of the new lines to write
    (``new``) [P, B, lines], the reciprocal line weight [P, B, new lines] and the reciprocal weight
    across [P, B, across]. The frame clips the growth: lines and positions outside it get 0."""
    box, after = grown[:-1], grown[1:]
    positions = torch.arange(across, device=grown.device)
    across_weight = _reciprocal_weight(positions, *_interval(box, 1), table)
    plans = []
    for edge, (new, known) in zip(_interval(box, 0), (BAND_BEFORE, BAND_AFTER), strict=True):
        # aranges, not tensors of the offsets: a host copy would break a CUDA graph capture
        new_lines = edge + torch.arange(new[0], new[-1] + 1, device=grown.device)
        known_lines = edge + torch.arange(known[0], known[-1] + 1, device=grown.device)
        first, last = _interval(after, 0)
        inside = (new_lines >= first) & (new_lines <= last)
        line_weight = _reciprocal_weight(new_lines, *_interval(box, 0), table) * inside
        plans.append(
            {
                "known": known_lines + MARGIN,
                "new": new_lines + MARGIN,
                "line_weight": line_weight,
                "across": across_weight,
            }
        )
    return plans


def _band_plans(grown: Tensor, height: int, width: int, kernel: Tensor) -> list[dict[str, Tensor]]:
    """The plans of the four bands in ``side_passes`` order: top, bottom (along the rows), left,
    right (along the columns, with rows and columns exchanged); weights in the kernel's dtype."""
    table = reciprocal_table(kernel)
    # Slices, not an index list: a list would be copied from the host, which a graph forbids.
    swapped = torch.stack([grown[..., 1], grown[..., 0], grown[..., 3], grown[..., 2]], dim=-1)
    return _axis_plans(grown, width, table) + _axis_plans(swapped, height, table)


@_autocast_off
def inpaint_boxes(images: Tensor, boxes: Tensor, method: str | None = None) -> Tensor:
    """``inpaint`` for views whose known pixels form one rectangle each, the same numbers.

    Args:
        images: float [B, 3, H, W] (any unit: the procedure is linear); only the pixels inside
            each box are read.
        boxes: int [B, 4] on the CPU: (top, left, bottom, right) of each known rectangle,
            inclusive, inside the frame.
        method: the blur of the passes on a GPU, see ``correlate_valid`` (the CPU runs each
            pass as one compiled loop, ``band_kernel``).

    Returns:
        Float [B, 3, H, W], same dtype: pixels inside the boxes unchanged, every other filled.

    On CUDA the passes are captured once per (shape, dtype, number of passes) as a CUDA graph and
    replayed (hundreds of small kernels launched as one); any failure to capture falls back to
    launching them one by one.
    """
    _check(images, tuple(boxes.shape), "boxes")
    height, width = images.shape[-2:]
    boxes = _checked_boxes(boxes, height, width)
    compute = _compute_dtype(images)
    sides = side_passes(boxes, height, width)  # [4, B]
    passes = int(sides.max()) if sides.numel() else 0
    if passes == 0:
        return images.clone()
    constants = _band_constants(compute, images.device)
    if accelerated(images):  # fixed shapes for a graph: every band of every view every pass
        grown = to_device(_grown_boxes(boxes, passes, height, width), images.device)
        frames = images.to(compute)
        return _graph_replay(frames, grown, constants, passes, method).to(images.dtype)
    frames = images.new_empty(len(images) + 1, *images.shape[1:], dtype=compute)
    for view, (top, left, bottom, right) in enumerate(boxes.tolist()):
        frames[view, :, top : bottom + 1, left : right + 1] = images[
            view, :, top : bottom + 1, left : right + 1
        ]
    return _fill_band_buffers(frames, boxes, sides, constants).to(images.dtype)


@_autocast_off
def fill_pasted(frames: Tensor, boxes: Tensor) -> Tensor:
    """``inpaint_boxes`` in place on the CPU, for views made straight into a buffer.

    Args:
        frames: float32 or float64 [B + 1, 3, H, W] on the CPU: view i holds the pixels of its
            rectangle (anything elsewhere, even uninitialised memory, is ignored); the last view
            is spare room for band lines that fall outside the frame.
        boxes: int [B, 4]: (top, left, bottom, right) of each rectangle, inclusive.

    Returns:
        ``frames[:B]``, filled (the same numbers as ``inpaint_boxes``). It saves the zero fill of
        a placement and a copy of the rectangles.
    """
    if frames.dim() != 4 or frames.is_cuda or frames.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"fill_pasted needs float32/float64 CPU frames [B + 1, C, H, W]; got "
            f"{frames.dtype} {tuple(frames.shape)} on {frames.device}"
        )
    _check(frames[:-1], tuple(boxes.shape), "boxes")
    height, width = frames.shape[-2:]
    boxes = _checked_boxes(boxes, height, width)
    sides = side_passes(boxes, height, width)
    if not sides.numel() or int(sides.max()) == 0:
        return frames[:-1]
    constants = _band_constants(frames.dtype, frames.device)
    return _fill_band_buffers(frames, boxes, sides, constants)


def _checked_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """``boxes`` as int64 [B, 4] on the CPU; ``ValueError`` unless each is a non-empty
    rectangle inside the ``height`` x ``width`` frame."""
    boxes = boxes.to("cpu", torch.long)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must be [B, 4] (top, left, bottom, right); got {tuple(boxes.shape)}"
        )
    top, left, bottom, right = boxes.T
    if bool(
        ((top > bottom) | (left > right) | (top < 0) | (left < 0)).any()
        or (bottom >= height).any()
        or (right >= width).any()
    ):
        raise ValueError(
            "inpaint_boxes needs one non-empty (top, left, bottom, right) rectangle inside the "
            f"{height} x {width} frame per image; got {boxes.tolist()}"
        )
    return boxes


# The CPU path keeps each band's known lines in a buffer of six slots for both kinds of band
# (before: five lines and a dummy slot far outside every window: weight 0, never written).
SLOTS = max(len(BAND_BEFORE[0]), len(BAND_AFTER[0]))
_DUMMY = -4 * KERNEL_TAPS


def _slots(offsets: tuple[int, ...]) -> tuple[int, ...]:
    return offsets + (_DUMMY,) * (SLOTS - len(offsets))


def _fill_band_buffers(
    frames: Tensor, boxes: Tensor, sides: Tensor, constants: tuple[Tensor, Tensor, Tensor]
) -> Tensor:
    """``inpaint_boxes`` on the CPU, in place: ``frames`` [B + 1, C, H, W] with each view's
    rectangle in place (anything elsewhere) and a spare last view; ``sides`` [4, B] from
    ``side_passes``; returns the first B views, filled by ``band_kernel.fill_bands`` (one compiled call: each view's four bands through all
    their passes, views in parallel).

    A band's known lines in pass n + 1 are exactly the new lines it wrote in pass n (it grows by
    as many lines as a new line's window reaches into the known region: 5 before, 6 after), and
    a pixel that another band makes known meanwhile is one the window would read as unknown
    (zero) anyway. So each (band, view) pair keeps its lines in a buffer of six slots (the
    before-band's sixth is a dummy line of weight 0) and only the first pass reads the frame.
    A band writes its new lines only where they can be non-zero: every pixel outside the
    rectangles is written when it becomes known, so nothing needs zeros first."""
    from lightning_inv.protocols.band_kernel import fill_bands  # numba: on the CPU path only

    kernel, before, after = constants
    padding = (0, SLOTS - len(before), 0, SLOTS - len(before))  # the dummy slot: zeros
    matrices = torch.stack([F.pad(before, padding), after])
    offsets = [
        torch.tensor([_slots(band[i]) for band in (BAND_BEFORE, BAND_AFTER)]) for i in (0, 1)
    ]
    fill_bands(
        frames,
        boxes,
        sides[[2, 3, 0, 1]].T.contiguous(),  # pair order: left, right, top, bottom
        kernel,
        reciprocal_table(kernel),
        matrices,
        *offsets,
        offsets[0] != _DUMMY,
    )
    return frames[:-1]


def _fill_boxes(
    images: Tensor,
    grown: Tensor,
    constants: tuple[Tensor, Tensor, Tensor],
    passes: int,
    method: str | None,
) -> Tensor:
    """The passes on device tensors only (``grown`` from ``_grown_boxes``; ``constants``: the
    kernel and the two band matrices, on the images' device): no host-device synchronisation, so
    CUDA can capture it as a graph. Every band of every view runs every pass (fixed shapes); a band
    whose side reached the frame edge writes zeros into the padding.

    A pass reads, per view and band, the 5 or 6 known lines next to the rectangle's edge (the only
    non-zero lines a new line's 12-line window reaches), blurs them along the band, mixes them
    across it with the band's matrix, divides by the weight and writes the new lines; all four
    bands read the state before any of them writes. Returns [B, C, H, W], contiguous."""
    kernel, *matrices = constants
    count, channels, height, width = images.shape
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside = ((rows >= grown[0, :, 0:1]) & (rows <= grown[0, :, 2:3]))[:, :, None] & (
        (cols >= grown[0, :, 1:2]) & (cols <= grown[0, :, 3:4])
    )[:, None, :]
    state = images.new_zeros(count, channels, height + 2 * MARGIN, width + 2 * MARGIN)
    frame = state[..., MARGIN : MARGIN + height, MARGIN : MARGIN + width]
    torch.mul(images, inside[:, None], out=frame)
    plans = _band_plans(grown, height, width, kernel)
    batch = torch.arange(count, device=images.device)[:, None]
    axis_states = (state, state, state.transpose(2, 3), state.transpose(2, 3))
    for n in range(passes):
        writes = []
        for axis_state, plan, matrix in zip(axis_states, plans, matrices * 2, strict=True):
            length = axis_state.shape[-1] - 2 * MARGIN
            lines = axis_state[batch, :, plan["known"][n]]  # [B, lines, C, length + 2 M]
            window = lines[..., MARGIN - PAD_BEFORE : MARGIN + length + PAD_AFTER]
            blurred = correlate_valid(window, kernel, -1, method)  # [B, lines, C, length]
            mixed = torch.matmul(matrix, blurred.flatten(2)).view(count, -1, *blurred.shape[2:])
            factor = plan["line_weight"][n, :, :, None, None] * plan["across"][n, :, None, None]
            writes.append((axis_state, batch, plan["new"][n], mixed * factor))
        for axis_state, batch, new, values in writes:
            axis_state[batch, :, new, MARGIN : MARGIN + values.shape[-1]] = values
    return frame.contiguous()


_GRAPHS: OrderedDict[tuple, tuple] = OrderedDict()
_POOLS: dict[torch.device, Any] = {}
# Captured shapes kept: an evaluation meets one per protocol and batch shape (fig6 alone has 8
# scales); replays are sequential and their outputs copied at once, so all graphs of a device
# share one memory pool and only their inputs and outputs stay allocated.
MAX_GRAPHS = 32


def _graph_replay(
    images: Tensor, grown: Tensor, constants: tuple, passes: int, method: str | None
) -> Tensor:
    if not images.is_cuda:  # the accelerator path on the CPU (tests): no graph to capture
        return _fill_boxes(images, grown, constants, passes, method)
    key = (tuple(images.shape), images.dtype, images.device, passes, method)
    entry = _GRAPHS.get(key)
    if entry is None:
        try:
            entry = _capture(images, grown, constants, passes, method)
        except RuntimeError as err:  # e.g. a capture inside another capture
            warnings.warn(f"inpainting runs without a CUDA graph: {err}", stacklevel=3)
            return _fill_boxes(images, grown, constants, passes, method)
        _GRAPHS[key] = entry
        while len(_GRAPHS) > MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    graph, static_images, static_grown, static_out = entry
    static_images.copy_(images)
    static_grown.copy_(grown)
    graph.replay()
    return static_out.clone()


def _capture(
    images: Tensor, grown: Tensor, constants: tuple, passes: int, method: str | None
) -> tuple:
    static_images, static_grown = images.clone(), grown.clone()
    side = torch.cuda.Stream(images.device)
    side.wait_stream(torch.cuda.current_stream(images.device))
    with torch.cuda.stream(side):  # warm-up outside the graph, as CUDA graphs require
        _fill_boxes(static_images, static_grown, constants, passes, method)
    torch.cuda.current_stream(images.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    pool = _POOLS.setdefault(images.device, torch.cuda.graph_pool_handle())
    with torch.cuda.graph(graph, pool=pool):
        static_out = _fill_boxes(static_images, static_grown, constants, passes, method)
    return graph, static_images, static_grown, static_out
