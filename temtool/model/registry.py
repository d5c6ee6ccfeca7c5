"""The models temtool knows without being told: the shipped bundles (``temtool/pretrained/``)
and the most recently trained or tuned one (a pointer file in :func:`temtool.paths.cache_dir`).
The one owner of both: ``segment`` asks here, ``train`` and ``tune`` record here."""

from __future__ import annotations

import os
from pathlib import Path

from temtool.data.io import atomic_write
from temtool.errors import TemtoolError
from temtool.paths import cache_dir, writable_cache_dir

__all__ = [
    "PRETRAINED_DIR",
    "shipped_models",
    "find_bundle",
    "last_model",
    "last_model_file",
    "remember_last_model",
]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def shipped_models() -> dict[str, Path]:
    """The shipped bundles by name (``standard``, ``hrtem``), sorted by name."""
    return {p.name: p for p in sorted(PRETRAINED_DIR.glob("*")) if (p / "bundle.json").is_file()}


def find_bundle(name: str | os.PathLike) -> Path | None:
    """A shipped model's name (``standard``, ``hrtem``) or a bundle folder: the folder, or None
    when it holds no ``bundle.json`` (the caller says what it expected)."""
    path = Path(shipped_models().get(str(name), name))
    return path if (path / "bundle.json").is_file() else None


def last_model_file() -> Path:
    """The file that names the most recent bundle (it may not exist)."""
    return cache_dir() / "last_model.txt"


def last_model() -> Path | None:
    """The most recently trained or tuned bundle, if it still exists."""
    f = last_model_file()
    if not f.is_file():
        return None
    p = Path(f.read_text().strip())
    return p if (p / "bundle.json").is_file() else None


def remember_last_model(path: str | os.PathLike) -> None:
    """Record a bundle as the most recent model (``segment`` uses it without ``--model``); a
    cache folder that cannot be written is not an error."""
    try:
        writable_cache_dir()
        atomic_write(last_model_file(), lambda p: p.write_text(str(Path(path).resolve())))
    except (OSError, TemtoolError):
        pass
