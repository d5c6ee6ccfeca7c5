"""Environment defaults of temtool's own processes (the command line, the benchmarks that
measure it), set before NumPy, SciPy or TensorFlow load; a value the user set is kept."""

from __future__ import annotations

import importlib.util
import os
import sys

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up chatter
    # OpenBLAS's worker threads (NumPy's and SciPy's each) spin for about 0.1 s when they start
    # and after every call before they sleep; on 2 cores that spinning took 0.2 s of CPU from
    # the imports of `temtool segment` and a core from its post-processing after each BLAS
    # call (benchmarks/RESULTS.md). 4: they sleep after 2^4 cycles; BLAS stays multithreaded
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


# and for `temtool segment` (set as it starts, before NumPy loads): NumPy asks for transparent
# huge pages for arrays of 4 MB and more; where the system's setting is `defrag=madvise` (a
# common default), a first touch of such fresh memory may wait for the kernel to compact memory.
# Without the advice the command ran 0.2 s faster from the prompt for a 2048x2048 micrograph
# (median 2.77 -> 2.59 s, 13 of 16 alternations; system time 0.76 -> 0.50 s) and level in a
# folder, where the memory is reused (benchmarks/RESULTS.md)
SEGMENT_DEFAULTS = {"NUMPY_MADVISE_HUGEPAGE": "0"}


def process_defaults(extra: dict[str, str] | None = None) -> None:
    """Set :data:`DEFAULTS` and ``extra`` where the environment does not set them already."""
    for name, value in {**DEFAULTS, **(extra or {})}.items():
        os.environ.setdefault(name, value)


# NumPy submodules that `temtool segment` never uses, yet imports: loading scipy.ndimage loads
# SciPy's vendored array-api-compat, which copies every public attribute of NumPy and so imports
# each of NumPy's lazily imported submodules. f2py alone (with the charset-normalizer it imports)
# took 0.04 s; these four 0.06 s of a 2-core start (benchmarks/RESULTS.md). numpy.ma is not
# here: np.unique uses it.
DEFERRED_NUMPY_MODULES = ("f2py", "testing", "polynomial", "ctypeslib")


def defer_numpy_modules(names: tuple[str, ...] = DEFERRED_NUMPY_MODULES) -> list[str]:
    """Register NumPy's submodules ``names`` so that their code runs when they are first used,
    not when they are first imported (:class:`importlib.util.LazyLoader`), for a process that
    will not use them; returns those deferred. Modules already imported, or already an
    attribute of NumPy, are left as they are. A deferred module is the one module of its name:
    ``import numpy.testing`` and ``np.testing`` both give it, and its first attribute lookup
    loads it whole. (Python before 3.12 does not guard that first load against two threads
    at once; temtool's threads do not use these modules.)"""
    import numpy

    deferred = []
    for name in names:
        full = f"numpy.{name}"
        if full in sys.modules or name in vars(numpy):
            continue
        spec = importlib.util.find_spec(full)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            continue
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        # on NumPy too: its __getattr__ (`import numpy.f2py as f2py`) would look it up there again
        setattr(numpy, name, module)
        deferred.append(name)
    return deferred
