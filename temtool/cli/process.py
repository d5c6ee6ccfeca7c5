"""Settings of the ``temtool`` command line's own process, which must be in place before NumPy
loads: the console script applies them (:func:`configure_process`) before it imports the app.
A library user, or an in-process caller of :func:`temtool.cli.app.main`, gets none of them.

Each is kept only because a benchmark beside its removal showed it pays
(``benchmarks/process_settings.py``; ``benchmarks/RESULTS.md``, "Process settings"); a value
the user set in the environment is always kept.
"""

from __future__ import annotations

import os
import signal

__all__ = ["SEGMENT_DEFAULTS", "Terminated", "configure_process", "handle_sigterm", "terminated"]

# for `temtool segment`: no transparent-huge-page advice from NumPy for its large arrays; where
# the system's setting is `defrag=madvise` (a common default) a first touch of such memory can
# wait for the kernel to compact memory
SEGMENT_DEFAULTS = {"NUMPY_MADVISE_HUGEPAGE": "0"}


def configure_process(argv: list[str]) -> None:
    """The settings for a ``temtool`` process that will run ``argv``: for ``segment``,
    :data:`SEGMENT_DEFAULTS` where the environment does not set them already."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "segment":
        for name, value in SEGMENT_DEFAULTS.items():
            os.environ.setdefault(name, value)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``docker stop``, systemd), raised where Ctrl-C would be,
    so every command cleans up as it does on Ctrl-C."""


_received: list[int] = []  # the signals this process was stopped by


def _terminate(signum, frame) -> None:
    _received.append(signum)
    raise Terminated


def handle_sigterm() -> None:
    """From now on this process takes SIGTERM as :class:`Terminated` (the console script's)."""
    signal.signal(signal.SIGTERM, _terminate)


def terminated() -> bool:
    """Whether SIGTERM has stopped this process (Typer reports any interrupt as exit code 130)."""
    return signal.SIGTERM in _received
