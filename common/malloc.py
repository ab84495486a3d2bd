"""Let glibc keep big freed buffers for reuse instead of handing them back at once.

A 1 MiB frame (a log chunk, a file chunk) is a fresh allocation each time: the bytes read,
the packed frame, the frame with its header. glibc serves blocks that big with ``mmap``
and returns them to the kernel on ``free``, so every chunk pays a page fault per 4 KiB
page, three times over: measured here, that was most of the client's CPU time when it
streams a log (``bench/log_follow.py``: 600 MB/s, 2,000 MB/s with buffers reused). Raising
the thresholds makes such blocks come from the heap, where a freed one is reused by the
next chunk. At most ``TRIM_THRESHOLD`` of freed memory stays with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("corral.malloc")

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit for this setting on 64-bit
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_big_buffers() -> bool:
    """Apply the thresholds; False (and nothing changed) without glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): their allocators behave otherwise
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.debug("mallopt refused the buffer thresholds")
    return done
