"""Environment defaults of temtool's own processes (the command line, the benchmarks that
measure it), set before NumPy, SciPy or TensorFlow load; a value the user set is kept."""

from __future__ import annotations

import os

DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up chatter
    # OpenBLAS's worker threads (NumPy's and SciPy's each) spin for about 0.1 s when they start
    # and after every call before they sleep; on 2 cores that spinning took 0.2 s of CPU from
    # the imports of `temtool segment` and a core from its post-processing after each BLAS
    # call (benchmarks/RESULTS.md). 4: they sleep after 2^4 cycles; BLAS stays multithreaded
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


def process_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
