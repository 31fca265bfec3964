"""The C heap around the settings bootstrap: what the allocator keeps after it, given back.

A bootstrap frees a lot of short-lived memory: each record's value (641 bytes, above Python's small
object allocator, so from malloc), librdkafka's fetch buffers, and the table's own hash tables each
time they grow. glibc keeps freed memory in its heap, and its dynamic mmap threshold makes it worse:
once a large mmapped block (a grown table) is freed, blocks up to that size come from the heap too.
1M accounts: 280 MB resident after the bootstrap, 234 MB after `malloc_trim(0)` (bench/README.md,
"Fleet scale"). So the bootstrap runs with a fixed 128 KiB threshold (large blocks mmapped, unmapped
when freed) and ends with a trim; the loop then gets the thresholds glibc's heuristic tends to (mmap:
its 32 MiB ceiling on 64-bit; trim: twice that, its rule), so the loop's fetch buffers come from the
heap again and a freed buffer at the heap's top is not given back and taken again batch after batch.
Anything but glibc: no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
BOOTSTRAP_MMAP_THRESHOLD = 128 * 1024
LOOP_MMAP_THRESHOLD = 32 * 1024 * 1024


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def bootstrapping() -> bool:
    """Large blocks mmapped (returned to the system when freed) while the table is built; False: not glibc."""
    return _LIBC is not None and bool(_LIBC.mallopt(M_MMAP_THRESHOLD, BOOTSTRAP_MMAP_THRESHOLD))


def settle() -> bool:
    """After the bootstrap: the table out of the collector's generations (long-lived, acyclic: later
    collections never rescan it), the free heap given back, the loop's threshold. False: not glibc."""
    gc.freeze()
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, LOOP_MMAP_THRESHOLD)
                and _LIBC.mallopt(M_TRIM_THRESHOLD, 2 * LOOP_MMAP_THRESHOLD))
