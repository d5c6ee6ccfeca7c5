"""Which model segments a micrograph when none is named: the last trained one, else the
shipped model for what the image shows (bright-field or HRTEM)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from temtool.errors import TemtoolError
from temtool.inference.regime import classify
from temtool.inference.segmenter import Segmenter
from temtool.model.bundle import load_bundle
from temtool.model.registry import last_model, shipped_models


def default_model(pixel_size_nm: float | None, image: np.ndarray | None = None) -> tuple[Path, str]:
    """The model to use without ``--model``, and why: the last trained or tuned one
    (:func:`temtool.model.registry.last_model`), else the shipped model for what the image is
    (:func:`temtool.inference.regime.classify`: HRTEM only with lattice fringes and weak
    amplitude contrast; standard bright-field TEM otherwise)."""
    last = last_model()
    if last is not None:
        return last, f"the most recent trained model ({last})"
    shipped = shipped_models()
    if not shipped:
        raise TemtoolError("no model given and none trained yet: pass --model MODEL or run 'temtool train'")
    if image is None:
        kind, why = "standard", "no image to look at"
    else:
        kind, why = classify(image, pixel_size_nm)
    p = shipped.get(kind) or shipped.get("standard") or next(iter(shipped.values()))
    return p, f"the shipped '{p.name}' model ({why})"


class ModelChooser:
    """The :class:`Segmenter` for an image: the given bundle (loaded at once, so a bad
    ``model`` fails before any file), else :func:`default_model` for that image.
    Each bundle is loaded once; ``on_load(why)`` is called when one is."""

    def __init__(
        self, model: str | os.PathLike | None = None, on_load: Callable | None = None, **segmenter_kw
    ):
        self.model, self.on_load, self.kw = model, on_load, segmenter_kw
        self.loaded: dict[str, Segmenter] = {}
        self.reason = str(model) if model is not None else ""
        if model is not None:
            self._load(Path(model), str(model))

    def _load(self, path: Path, why: str) -> Segmenter:
        key = str(path)
        self.reason = why
        if key not in self.loaded:
            bundle = load_bundle(path)
            seg = self.loaded[key] = Segmenter.from_bundle(bundle, **self.kw)
            problem = (
                bundle.onnx_problem()
                if seg.runtime == "keras" and self.kw.get("runtime") != "keras"
                else None
            )
            if self.on_load:
                self.on_load(f"{why} (runs on {seg.runtime}{f': {problem}' if problem else ''})")
        return self.loaded[key]

    def __call__(self, pixel_size_nm: float | None, image: np.ndarray | None = None) -> Segmenter:
        if self.model is not None:
            return self.loaded[str(self.model)]
        return self._load(*default_model(pixel_size_nm, image))
