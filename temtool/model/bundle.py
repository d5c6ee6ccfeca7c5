"""The model bundle: a folder that ``segment``, ``evaluate`` and ``rf --model`` need nothing
else to use. It is the plan of inference: every consumer reads the architecture, the
preprocessing, the training pixel size and the receptive field from it.

    MODEL/
      model.keras    the Keras model (architecture + weights)
      model.onnx     the same network as an ONNX graph for inference without Keras
                     (:mod:`temtool.model.onnx_graph`; checked when written, tied to model.keras by hash)
      bundle.json    architecture description, RF in px and nm (study convention, exact
                     worst case, one-sided reach), training pixel size and normalisation,
                     data summary, training settings, metrics, versions, backend
      history.csv    per-epoch training history of the kept run

:func:`write_bundle` is the one place that lays the folder out; :func:`load_bundle` validates
``bundle.json`` against the schema below and checks the architecture it describes against the
saved model, so a bundle can never be used with the wrong tiling.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from temtool.backend import start_backend
from temtool.data.io import atomic_dir, atomic_write
from temtool.errors import ArchitectureError, ParameterError, TemtoolError
from temtool.model.architecture import Architecture, count_params, count_trainable_params
from temtool.model.onnx_graph import ONNX_FILE, RUNTIMES, OnnxModel, export_onnx, gpu_visible, onnx_available
from temtool.model.receptive_field import PROBE_LIMIT_PX, exact_rf_px, theoretical_rf_px, tile_reach_px
from temtool.version import __version__

__all__ = [
    "BUNDLE_FORMAT",
    "NORMALISATIONS",
    "Bundle",
    "write_bundle",
    "load_bundle",
    "add_onnx",
]

BUNDLE_FORMAT = "temtool-bundle/1"
NORMALISATIONS = ("per_image_standardize",)


@dataclass
class Bundle:
    """A loaded bundle: the model (loaded on first use) and what inference needs to know."""

    path: Path
    arch: Architecture
    pixel_size_nm: float | None
    rf_px: int
    exact_rf_px: int | None
    reach_px: int  # one-sided reach of the exact field: the context a tile keeps
    normalisation: str
    regime: str | None
    metadata: dict = field(repr=False)
    diameter_range_px: tuple[float, float] | None = None  # scale by particle size, not pixel size
    _model: object = field(default=None, repr=False)

    @property
    def model(self):
        """The Keras model (not compiled: for inference), checked against :attr:`arch`."""
        if self._model is None:
            self._model = _load_model(self.path, self.arch)
        return self._model

    def inference_model(self, runtime: str = "auto"):
        """``(model, runtime)``: what runs the network for inference. ``"onnx"``: the bundle's
        checked ONNX graph under ONNX Runtime (no Keras import; see :mod:`temtool.model.onnx_graph`);
        ``"keras"``: :attr:`model`; ``"auto"``: ONNX when the bundle has a graph that matches
        its model.keras, ONNX Runtime is installed and no GPU is visible (Keras runs there on
        the GPU), else Keras."""

        if runtime not in RUNTIMES:
            raise ParameterError("runtime", f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime == "auto" and gpu_visible():
            runtime = "keras"
        if runtime != "keras":
            why = self.onnx_problem()
            if why is None:
                try:
                    graph = OnnxModel(self.path / ONNX_FILE)
                except Exception as e:  # noqa: BLE001 - ONNX Runtime's own error types
                    raise TemtoolError(
                        f"{self.path / ONNX_FILE}: ONNX Runtime cannot load it ({e})"
                    ) from None
                _check_architecture(self.path, self.arch, graph.architecture, ONNX_FILE)
                return graph, "onnx"
            if runtime == "onnx":
                raise TemtoolError(f"{self.path}: cannot run with ONNX Runtime: {why}")
        return self.model, "keras"

    def onnx_problem(self) -> str | None:
        """Why the bundle's ONNX graph cannot be used (None when it can): none, one that is
        not the bundle's own ``model.onnx``, one made from another model.keras, one whose hash
        is not the one bundle.json records (replaced, truncated), or no ONNX Runtime."""
        entry = self.metadata.get("onnx")
        graph = self.path / ONNX_FILE
        if not isinstance(entry, dict) or not graph.is_file():
            return f"the bundle has no {ONNX_FILE} (temtool.model.bundle.add_onnx writes one)"
        if entry.get("file") != ONNX_FILE or graph.resolve().parent != self.path.resolve():
            return (
                f"bundle.json names the graph {entry.get('file')!r}: a bundle runs only its own {ONNX_FILE}"
            )
        if entry.get("keras_sha256") != _sha256(self.path / "model.keras"):
            return f"{ONNX_FILE} was made from another model.keras than the one in the bundle"
        if "sha256" not in entry:
            return f"bundle.json records no hash of {ONNX_FILE} (temtool.model.bundle.add_onnx records one)"
        if entry["sha256"] != _sha256(graph):
            return f"{ONNX_FILE} is not the graph bundle.json records (replaced or truncated)"
        if not onnx_available():
            return "onnxruntime is not installed"
        return None

    @property
    def rf_nm(self) -> float | None:
        return self.rf_px * self.pixel_size_nm if self.pixel_size_nm else None


# ------------------------------------------------------------------------------ writing
def _history_csv(history: dict[str, list[float]]) -> str:
    keys = sorted(history)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", *keys])
    n = len(history[keys[0]]) if keys else 0
    for i in range(n):
        w.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return buf.getvalue()


def write_bundle(
    out: str | os.PathLike,
    model,
    arch: Architecture,
    *,
    pixel_size_nm: float | None,
    regime: str | None = None,
    data: dict | None = None,
    training: dict | None = None,
    metrics: dict | None = None,
    history: dict[str, list[float]] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a bundle atomically (a temporary folder beside ``out``, then renamed).

    The receptive fields (study convention, exact worst case and one-sided reach, measured by
    the impulse probe and cached per architecture), parameter counts, versions and the
    normalisation are added here, so every bundle has the same layout.
    """
    import keras

    rf = theoretical_rf_px(arch)
    try:
        exact = exact_rf_px(arch, PROBE_LIMIT_PX)
    except ValueError:  # too large to probe
        exact = None
    reach = tile_reach_px(arch)
    meta = {
        "format": BUNDLE_FORMAT,
        "temtool_version": __version__,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "architecture": arch.to_dict(),
        "params": count_params(model),
        "trainable_params": count_trainable_params(model),
        "pixel_size_nm": pixel_size_nm,
        "regime": regime,
        "normalisation": NORMALISATIONS[0],
        "rf_px": rf,
        "rf_nm": rf * pixel_size_nm if pixel_size_nm else None,
        "exact_rf_px": exact,
        "exact_reach_px": reach,
        "data": data or {},
        "training": training or {},
        "metrics": metrics or {},
        **(extra or {}),
    }
    with atomic_dir(out) as tmp:
        _inference_copy(model).save(tmp / "model.keras")
        meta["onnx"] = _write_onnx(model, arch, tmp)
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=2, default=float))
        if history:
            (tmp / "history.csv").write_text(_history_csv(history))
    return Path(out)


def _sha256(path: Path) -> str:
    """The file's SHA-256, read a megabyte at a time (a model file may be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_onnx(model, arch: Architecture, folder: Path) -> dict | None:
    """Write the ONNX graph of ``model`` beside its model.keras (see :mod:`temtool.model.onnx_graph`);
    its entry for bundle.json, or None when it could not be made or checked."""

    diff = export_onnx(model, arch, folder / ONNX_FILE)
    if diff is None:
        return None
    return {
        "file": ONNX_FILE,
        "sha256": _sha256(folder / ONNX_FILE),
        "keras_sha256": _sha256(folder / "model.keras"),
        "max_logit_diff": diff,
    }


def add_onnx(path: str | os.PathLike) -> dict | None:
    """Give an existing bundle its ONNX graph (bundles written before :mod:`temtool.model.onnx_graph`,
    or where the onnx package was missing): writes model.onnx and its bundle.json entry, each
    atomically. Returns the entry, or None when the graph could not be made or checked."""

    b = load_bundle(path)
    with tempfile.TemporaryDirectory(dir=b.path) as tmp:
        shutil.copy2(b.path / "model.keras", Path(tmp) / "model.keras")
        entry = _write_onnx(b.model, b.arch, Path(tmp))
        if entry is None:
            return None
        atomic_write(b.path / ONNX_FILE, lambda t: shutil.copy2(Path(tmp) / ONNX_FILE, t))
    meta = json.dumps(dict(b.metadata, onnx=entry), indent=2, default=float)
    atomic_write(b.path / "bundle.json", lambda t: t.write_text(meta))
    return entry


def _inference_copy(model):
    """The model without its optimizer state (a third of the file for Adam), for inference
    and fine-tuning alike (``fit(start_from=...)`` compiles afresh)."""
    import keras

    if getattr(model, "optimizer", None) is None:
        return model
    # same layers, not compiled; one input and one output tensor, not one-element lists (a
    # model whose call returns a list breaks the Keras runtime's probability stage)
    ins, outs = model.inputs, model.outputs
    return keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs, name=model.name)


# ------------------------------------------------------------------------------ reading
def _bundle_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.suffix == ".keras":
        p = p.parent
    if not p.exists():
        raise TemtoolError(f"{p}: no such model bundle (train one with 'temtool train --out {p}')")
    if not (p / "bundle.json").is_file() or not (p / "model.keras").is_file():
        raise TemtoolError(f"{p}: not a temtool model bundle (expected model.keras and bundle.json inside)")
    return p


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_schema(meta, where: Path) -> None:
    """Types and ranges of the fields inference reads; one clear line for the first problem."""
    if not isinstance(meta, dict):
        raise TemtoolError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != BUNDLE_FORMAT:
        raise TemtoolError(f"{where}: not a {BUNDLE_FORMAT} file (format is {meta.get('format')!r})")
    checks = {
        "architecture": (lambda v: isinstance(v, dict), "an object"),
        "rf_px": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
        "pixel_size_nm": (lambda v: v is None or (_number(v) and v > 0), "a positive number or null"),
        "exact_rf_px": (lambda v: v is None or (isinstance(v, int) and v >= 1), "an integer >= 1 or null"),
        "exact_reach_px": (lambda v: v is None or (isinstance(v, int) and v >= 0), "an integer or null"),
        "normalisation": (lambda v: v in NORMALISATIONS, f"one of {', '.join(NORMALISATIONS)}"),
        "regime": (lambda v: v is None or isinstance(v, str), "a string or null"),
        "metrics": (lambda v: isinstance(v, dict), "an object"),
        "particle_diameter_px": (
            lambda v: (
                isinstance(v, list) and len(v) == 2 and all(_number(x) and x > 0 for x in v) and v[0] < v[1]
            ),
            "a range [LO, HI] of positive numbers",
        ),
    }
    required = ("architecture", "rf_px", "normalisation")
    for key, (ok, what) in checks.items():
        if key not in meta:
            if key in required:
                raise TemtoolError(f"{where}: missing {key!r}; the bundle is incomplete")
            continue
        if not ok(meta[key]):
            raise TemtoolError(f"{where}: {key!r} must be {what}, got {meta[key]!r:.60}")


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle; the model itself loads on first use of ``.model``.

    Clear errors (naming the file) for a missing folder, a foreign or corrupt bundle.json, a
    field of the wrong type, and (when the model loads) a model.keras whose architecture
    differs from the description.
    """

    p = _bundle_dir(path)
    where = p / "bundle.json"
    try:
        meta = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise TemtoolError(f"{where}: corrupt bundle metadata ({type(e).__name__}: {e})") from None
    _check_schema(meta, where)
    try:
        arch = Architecture.from_dict(meta["architecture"])
    except (ArchitectureError, TypeError, ValueError) as e:
        raise TemtoolError(f"{where}: bad architecture description ({e})") from None
    reach = meta.get("exact_reach_px")
    if reach is None:  # bundles written before the reach was recorded
        reach = tile_reach_px(arch)
    return Bundle(
        path=p,
        arch=arch,
        pixel_size_nm=float(meta["pixel_size_nm"]) if meta.get("pixel_size_nm") else None,
        rf_px=meta["rf_px"],
        exact_rf_px=meta.get("exact_rf_px"),
        reach_px=int(reach),
        normalisation=meta["normalisation"],
        regime=meta.get("regime"),
        metadata=meta,
        diameter_range_px=tuple(meta["particle_diameter_px"]) if meta.get("particle_diameter_px") else None,
    )


def _load_model(p: Path, arch: Architecture):

    start_backend()
    import keras

    try:
        model = keras.saving.load_model(p / "model.keras", compile=False)
    except Exception as e:
        raise TemtoolError(
            f"{p / 'model.keras'}: cannot load the model ({type(e).__name__}: {e}); "
            "the file may be corrupt or from an incompatible Keras"
        ) from None
    try:
        found = Architecture.of_model(model)
    except ValueError as e:
        raise TemtoolError(f"{p / 'model.keras'}: not a temtool residual UNet ({e})") from None
    _check_architecture(p, arch, found, "model.keras")
    return model


def _check_architecture(bundle: Path, described: Architecture, found: Architecture | None, file: str) -> None:
    """Refuse a bundle whose ``file`` holds another network than its bundle.json describes."""
    if found != described:
        what = found.label() if found else "of unknown architecture"
        raise TemtoolError(
            f"{bundle / 'bundle.json'}: describes {described.label()} but {file} is {what}; "
            "the bundle was edited or mixed from two models: retrain, or restore the matching files"
        )
