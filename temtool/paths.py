"""Where temtool keeps what it makes for itself: the cache folder (built-in datasets, compiled
programs, the pointer to the last trained model). One owner, so no layer spells it twice."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache folder: ``$TEMTOOL_CACHE``, else ``$XDG_CACHE_HOME/temtool``, else
    ``~/.cache/temtool``. Not created here."""
    env = os.environ.get("TEMTOOL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "temtool"
