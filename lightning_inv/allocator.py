"""Keep freed memory for reuse instead of handing it back to the kernel (glibc only).

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold
(128 KB at first, raised up to 32 MB as large blocks are freed) with a fresh ``mmap`` and unmaps
it on ``free``, and trims the top of the heap once 128 KB or more lies free there. A CNN forward
pass allocates and frees tens of activation maps of many MB each, so every pass page-faults all of
them in again and the kernel zeroes every page: on this project's 2-core CI machine (a virtual
machine, where a fault is expensive) lite0's forward over 32 views at 224 px spent more time in
the kernel than in PyTorch (user 5.3 s, system 6.4 s for 5 passes; 26.5 views/s). With both
thresholds at 1 GiB the freed blocks stay in the heap and the next pass reuses them: 80 views/s,
0.1 s of system time, peak resident memory 1.7 instead of 1.5 GB (docs/design.md, "Allocator").
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
KEEP_BYTES = 1 << 30


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Let glibc keep up to ``limit`` bytes of freed memory for reuse: blocks below ``limit`` come
    from the heap (no ``mmap`` per tensor) and the heap is trimmed only when ``limit`` bytes lie
    free at its top. Applies to this process and to the processes it forks later (data loader
    workers). Returns False where there is no glibc (macOS, Windows, musl), changing nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
