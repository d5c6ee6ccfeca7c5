"""How the process gives freed memory back to the system.

Segmenting a micrograph allocates and frees arrays of its size (4-18 MB each at 2048x2048)
many times. glibc's allocator hands such blocks back to the kernel when they are freed (above
its trim threshold, or as separate mappings), so the next array of that size faults in fresh,
zeroed pages again: 0.12-0.15 s of system time on every 2048x2048 micrograph of a folder, on
a 2-core machine (benchmarks/RESULTS.md). :func:`keep_freed_memory` tells glibc to keep freed
blocks of up to ``MAX_KEPT_BLOCK_BYTES`` for reuse; the process then stays at its peak memory
instead of shrinking between micrographs. `temtool segment` calls it; a library user segmenting
many micrographs in one process may call it too. Elsewhere (another C library, another
system) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["keep_freed_memory", "MAX_KEPT_BLOCK_BYTES"]

# blocks up to this size come from the heap and are kept there when freed: a 8192x8192 float32
# array; larger ones still get their own mapping, given back when freed
MAX_KEPT_BLOCK_BYTES = 256 * 2**20
_TRIM_BYTES = 2**30  # free memory at the heap's top given back only above this
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to :data:`MAX_KEPT_BLOCK_BYTES` in the process for reuse
    (glibc's ``mallopt``: mmap threshold and trim threshold). True where it took effect; False
    where the C library is not glibc."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - a glibc without the usual soname
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MAX_KEPT_BLOCK_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
