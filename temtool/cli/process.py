"""Settings of the ``temtool`` command line's own process: environment defaults that must be in
place before NumPy, SciPy or TensorFlow load, and how the process's allocator keeps memory.

The console script applies them (:func:`configure_process`) before it runs a command; a
library user or an in-process caller of :func:`temtool.cli.app.main` gets none of them. Each
is kept because a benchmark beside its removal showed it pays (``benchmarks/RESULTS.md``,
"Process settings"); a value the user set in the environment is always kept.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from temtool.backend import TF_CPP_MIN_LOG_LEVEL

__all__ = ["DEFAULTS", "SEGMENT_DEFAULTS", "process_defaults", "keep_freed_memory", "configure_process"]

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": TF_CPP_MIN_LOG_LEVEL,  # TensorFlow's C++ start-up chatter
    # OpenBLAS's worker threads spin after every call before they sleep; 4: they sleep after
    # 2^4 cycles, so they do not take a core from the work that follows. BLAS stays threaded
    "OPENBLAS_THREAD_TIMEOUT": "4",
}

# for `temtool segment`: no transparent-huge-page advice from NumPy for its large arrays; where
# the system's setting is `defrag=madvise` (a common default) a first touch of such memory can
# wait for the kernel to compact memory
SEGMENT_DEFAULTS = {"NUMPY_MADVISE_HUGEPAGE": "0"}

# freed blocks up to this size stay in the process for reuse (glibc's mmap threshold): a
# micrograph's arrays and ONNX Runtime's arena regions, freed and allocated again per file
MAX_KEPT_BLOCK_BYTES = 3 * 2**29
_TRIM_BYTES = 2**31 - 1  # free memory at the heap's top is given back only above this
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def process_defaults(extra: dict[str, str] | None = None) -> None:
    """Set :data:`DEFAULTS` and ``extra`` where the environment does not set them already."""
    for name, value in {**DEFAULTS, **(extra or {})}.items():
        os.environ.setdefault(name, value)


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to :data:`MAX_KEPT_BLOCK_BYTES` in the process for reuse
    (glibc's ``mallopt``: mmap and trim thresholds), so the next micrograph's arrays reuse
    pages already faulted in; the process stays at its peak memory. True where it took
    effect; False where the C library is not glibc."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - a glibc without the usual soname
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MAX_KEPT_BLOCK_BYTES) and mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def configure_process(argv: list[str]) -> None:
    """The settings for a ``temtool`` process that will run ``argv``: :data:`DEFAULTS`
    always; for ``segment``, :data:`SEGMENT_DEFAULTS` and :func:`keep_freed_memory`."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "segment":
        process_defaults(SEGMENT_DEFAULTS)
        keep_freed_memory()
    else:
        process_defaults()
