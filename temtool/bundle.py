"""The model bundle: a folder that ``segment``, ``evaluate`` and ``rf --model`` need nothing
else to use.

    MODEL/
      model.keras    the Keras model (architecture + weights)
      bundle.json    architecture description, RF in px and nm, training pixel size and
                     normalisation, data summary, metrics, versions, backend, precision
      history.csv    per-epoch training history of the kept run
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import keras

from temtool import __version__
from temtool.arch import Architecture
from temtool.errors import TemtoolError

BUNDLE_FORMAT = "temtool-bundle/1"
NORMALISATION = "per_image_standardize"


def _history_csv(history: dict[str, list[float]]) -> str:
    keys = sorted(history)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", *keys])
    n = len(history[keys[0]]) if keys else 0
    for i in range(n):
        w.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return buf.getvalue()


def save_bundle(
    out: str | os.PathLike,
    model: keras.Model,
    metadata: dict,
    history: dict[str, list[float]] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a bundle atomically: into a temporary folder beside ``out``, then renamed."""
    from temtool.receptive_field import exact_rf_px, theoretical_rf_px

    out = Path(out)
    if out.exists() and not overwrite:
        raise TemtoolError(f"{out}: exists; choose another --out or pass --overwrite")
    arch = Architecture.from_dict(metadata["architecture"])
    px = metadata.get("pixel_size_nm")
    rf = theoretical_rf_px(arch)
    meta = {
        "format": BUNDLE_FORMAT,
        "temtool_version": __version__,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "normalisation": NORMALISATION,
        "rf_px": rf,
        "rf_nm": rf * px if px else None,
        **metadata,
    }
    try:
        meta["exact_rf_px"] = exact_rf_px(arch, max_probe_px=1 << 13)
    except ValueError:
        meta["exact_rf_px"] = None
    from temtool.data.io import atomic_dir

    with atomic_dir(out) as tmp:
        model.save(tmp / "model.keras")
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2, default=float))
        if history:
            (tmp / "history.csv").write_text(_history_csv(history))
    return out


def remember_last_model(path: str | os.PathLike) -> None:
    """Record a bundle as the most recent model (``segment`` uses it without ``--model``)."""
    from temtool.data.dataset import cache_dir

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        (cache_dir() / "last_model.txt").write_text(str(Path(path).resolve()))
    except OSError:
        pass


def _bundle_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.suffix == ".keras":
        p = p.parent
    if not p.exists():
        raise TemtoolError(f"{p}: no such model bundle (train one with 'temtool train --out {p}')")
    if not (p / "bundle.json").is_file() or not (p / "model.keras").is_file():
        raise TemtoolError(f"{p}: not a temtool model bundle (expected model.keras and bundle.json inside)")
    return p


def load_bundle_metadata(path: str | os.PathLike) -> dict:
    """The bundle's metadata; clear errors for missing, corrupt or foreign files."""
    p = _bundle_dir(path)
    try:
        meta = json.loads((p / "bundle.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TemtoolError(f"{p / 'bundle.json'}: corrupt bundle metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise TemtoolError(f"{p / 'bundle.json'}: not a {BUNDLE_FORMAT} file")
    try:
        Architecture.from_dict(meta["architecture"])
    except Exception as e:
        raise TemtoolError(f"{p / 'bundle.json'}: bad architecture description ({e})") from None
    meta["path"] = str(p)
    return meta


def load_bundle(path: str | os.PathLike) -> tuple[keras.Model, dict]:
    """Load the model (not compiled: for inference) and its metadata."""
    meta = load_bundle_metadata(path)
    p = Path(meta["path"])
    try:
        model = keras.saving.load_model(p / "model.keras", compile=False)
    except Exception as e:
        raise TemtoolError(
            f"{p / 'model.keras'}: cannot load the model ({type(e).__name__}: {e}); "
            "the file may be corrupt or from an incompatible Keras"
        ) from None
    return model, meta
