"""Where temtool keeps what it makes for itself: the cache folder (built-in datasets, compiled
programs, the pointer to the last trained model). One owner, so no layer spells it twice."""

from __future__ import annotations

import os
from pathlib import Path

from temtool.errors import TemtoolError

__all__ = ["cache_dir", "writable_cache_dir"]


def cache_dir() -> Path:
    """The cache folder: ``$TEMTOOL_CACHE``, else ``$XDG_CACHE_HOME/temtool``, else
    ``~/.cache/temtool``. Not created here."""
    env = os.environ.get("TEMTOOL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "temtool"


def writable_cache_dir() -> Path:
    """:func:`cache_dir`, created if need be; a :class:`TemtoolError` naming it (and
    ``TEMTOOL_CACHE``) where it cannot be: a file of that name, no permission, a full disk."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TemtoolError(
            f"{d}: the cache folder cannot be made here ({e.strerror or e}); "
            "set TEMTOOL_CACHE to a folder temtool may write"
        ) from None
    return d
