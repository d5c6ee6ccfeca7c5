"""Starting the Keras backend, in one place: quietly (without TensorFlow's C++ start-up
chatter on stderr) and, on JAX, with a persistent compilation cache. Keras is imported here
only when :func:`start_backend` is called."""

from __future__ import annotations

import contextlib
import os
import sys

from temtool.errors import TemtoolError
from temtool.paths import cache_dir

__all__ = ["TF_CPP_MIN_LOG_LEVEL", "quiet_stderr_fd", "start_backend"]

TF_CPP_MIN_LOG_LEVEL = "2"  # TensorFlow's C++ log level: warnings and errors only


@contextlib.contextmanager
def quiet_stderr_fd():
    """Send file descriptor 2 to /dev/null for the duration (C++ logs ignore Python)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_backend(quiet: bool = True) -> None:
    """Import Keras and initialise its backend's devices once, quietly unless asked not to."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_MIN_LOG_LEVEL)
    if os.environ.get("KERAS_BACKEND") == "jax":
        _jax_compilation_cache()
    ctx = quiet_stderr_fd() if quiet else contextlib.nullcontext()
    try:
        with ctx:
            import keras

            keras.ops.convert_to_numpy(keras.ops.zeros((1,)))
    except (ImportError, ValueError) as e:  # KERAS_BACKEND names a backend not installed, or none
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        raise TemtoolError(
            f"KERAS_BACKEND={backend}: Keras cannot start this backend ({type(e).__name__}: {e}); "
            "install it, or unset KERAS_BACKEND for TensorFlow"
        ) from None
    if quiet and keras.backend.backend() == "tensorflow":
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _jax_compilation_cache() -> None:
    """Keep JAX's compiled programs across runs (in temtool's cache folder, ``jax/``): on the
    CPU the first pass of a model over a new tile shape compiles for seconds, every later
    process reads it back. ``TEMTOOL_JAX_CACHE=0`` turns it off."""
    if os.environ.get("TEMTOOL_JAX_CACHE") == "0":
        return
    try:
        import jax

        folder = cache_dir() / "jax"
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # an old JAX or an unwritable cache: compile as before
        return
