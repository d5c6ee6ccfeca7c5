"""How the process takes memory from the system and gives it back.

Segmenting a micrograph allocates and frees arrays of its size (4-18 MB each at 2048x2048)
many times. glibc's allocator hands such blocks back to the kernel when they are freed (above
its trim threshold, or as separate mappings), so the next array of that size faults in fresh,
zeroed pages again: 0.12-0.15 s of system time on every 2048x2048 micrograph of a folder, on
a 2-core machine (benchmarks/RESULTS.md). :func:`keep_freed_memory` tells glibc to keep freed
blocks of up to ``MAX_KEPT_BLOCK_BYTES`` for reuse; the process then stays at its peak memory
instead of shrinking between micrographs. `temtool segment` calls it; a library user segmenting
many micrographs in one process may call it too. Elsewhere (another C library, another
system) it does nothing.

The first micrograph of a process still faults in all of its working memory (about 0.6 GB for
a 2048x2048 micrograph, most of it ONNX Runtime's arena for the network's first tile; 1 GB
when tiles were 1104-row strips), and on the thread that runs the network, where it slowed
the first strip by about half.
:func:`prefault` faults such memory in ahead, on another thread, while the command is still
importing its modules on one core: the heap keeps it (see above) and the network's first
allocations reuse it.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import sys
import threading

__all__ = ["keep_freed_memory", "prefault", "prefault_bytes", "MAX_KEPT_BLOCK_BYTES", "MAX_PREFAULT_BYTES"]

# blocks up to this size come from the heap and are kept there when freed: ONNX Runtime's arena
# regions (up to 512 MiB, for a 1104-row strip under a 1536x1536 px tile budget), a 16384x16384 float32
# array; larger ones still get their own mapping, given back when freed
MAX_KEPT_BLOCK_BYTES = 3 * 2**29
_TRIM_BYTES = 2**31 - 1  # free memory at the heap's top given back only above this
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MADV_POPULATE_WRITE = 23  # madvise advice (Linux 5.14+): fault pages in, their contents untouched
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CHUNK_BYTES = 16 * 2**20  # faulted in a chunk at a time: an mmap (imports) waits for one at most

# working memory to fault in ahead, per byte of the largest input file, and at most: about what
# ONNX Runtime's arena takes for the largest tile (1104x1104 px, temtool.segment.Segmenter)
PREFAULT_BYTES_PER_FILE_BYTE = 256
MAX_PREFAULT_BYTES = 2**29
_FOLDER_FILES_LOOKED_AT = 64  # a folder on a network share must not delay the start
_kept = False


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - a glibc without the usual soname
        return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to :data:`MAX_KEPT_BLOCK_BYTES` in the process for reuse
    (glibc's ``mallopt``: mmap threshold and trim threshold). True where it took effect; False
    where the C library is not glibc."""
    global _kept
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MAX_KEPT_BLOCK_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    return _kept


def prefault_bytes(paths) -> int:
    """Working memory worth faulting in ahead for segmenting ``paths`` (files, and the first 64
    files of folders; globs count nothing): :data:`PREFAULT_BYTES_PER_FILE_BYTE` per byte of
    the largest file, at most :data:`MAX_PREFAULT_BYTES`. A file's size bounds its pixel
    count for 8-bit and wider images; compressed files get less than they will use."""
    largest = 0
    for p in paths:
        try:
            if os.path.isdir(p):  # the first files are enough: a folder's micrographs are alike
                with os.scandir(p) as entries:
                    files = itertools.islice((e for e in entries if e.is_file()), _FOLDER_FILES_LOOKED_AT)
                    largest = max([largest, *(e.stat().st_size for e in files)])
            elif os.path.isfile(p):
                largest = max(largest, os.path.getsize(p))
        except OSError:
            continue  # unreadable: the command reports it
    return min(MAX_PREFAULT_BYTES, largest * PREFAULT_BYTES_PER_FILE_BYTE)


def prefault(nbytes: int) -> threading.Thread | None:
    """Fault ``nbytes`` of heap memory in on a background thread, for the allocations that
    follow to reuse. It takes the memory from the heap and frees it at once (kept, after
    :func:`keep_freed_memory`), then asks the kernel to fault its pages in
    (``MADV_POPULATE_WRITE``, which leaves their contents alone, so the memory may be handed
    out again meanwhile). The thread, or None where nothing was started: not glibc,
    :func:`keep_freed_memory` not in effect, nothing to do, or one core only (no other core to
    do it on). On kernels without the advice (before Linux 5.14) the thread ends at once."""
    nbytes = min(nbytes, MAX_KEPT_BLOCK_BYTES - _CHUNK_BYTES)  # larger blocks get their own mapping
    libc = _glibc() if _kept and nbytes >= _CHUNK_BYTES and _cores() > 1 else None
    if libc is None:
        return None
    libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = (ctypes.c_void_p,), None
    libc.madvise.argtypes, libc.madvise.restype = (
        (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int),
        ctypes.c_int,
    )
    block = libc.malloc(nbytes)
    if not block:
        return None
    libc.free(block)  # kept in the heap: below the mmap and trim thresholds
    start = -(-block // _PAGE_BYTES) * _PAGE_BYTES
    end = (block + nbytes) // _PAGE_BYTES * _PAGE_BYTES

    def fault_in() -> None:
        for at in range(start, end, _CHUNK_BYTES):
            # ctypes lets go of the GIL; an error (an older kernel, the heap trimmed) ends it
            if libc.madvise(at, min(_CHUNK_BYTES, end - at), _MADV_POPULATE_WRITE):
                return

    thread = threading.Thread(target=fault_in, name="temtool-prefault", daemon=True)
    thread.start()
    return thread
