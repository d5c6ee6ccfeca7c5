"""The "Segment particles" dock widget, and its correct-and-retrain loop.

Segment: the current image layer through ``temtool segment``'s stages
(:func:`temtool.inference.signal.segment_image`) with the chosen model, pixel size (shown with
where it came from) and TTA, in a background thread; the result lands as a labels layer of the
particles (their table as the layer's features), the probability and, with TTA, the
uncertainty as image layers, on the micrograph's scale, with a count and a size histogram in
the dock.

Correct and retrain: edit the labels layer (paint, erase, fill), add the micrograph and its
corrected labels to a training set on disk (:func:`temtool.data.prepare.add_pair`: the layout
``temtool prepare`` reads), and fine-tune from the current model
(:func:`temtool.study.finetune.finetune_on_pairs`, ``train --start-from``'s schedule) in the
background; the new bundle then segments the micrograph again, and the dock shows the test
scores before and after.

Errors show as a napari notification, never a traceback dialog; the viewer stays usable.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from magicgui import widgets

from temtool.errors import TemtoolError

__all__ = ["SegmentWidget", "DEFAULT_MODEL"]

DEFAULT_MODEL = "default (as temtool segment)"
LAST_MODEL = "last trained"


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _histogram(values, unit: str) -> np.ndarray:
    """The size histogram as an RGB array (temtool's own chart)."""
    from PIL import Image

    from temtool.inference.histogram import histogram_png

    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "sizes.png"
        histogram_png(p, values, f"equivalent diameter ({unit})", title="particle sizes")
        return np.asarray(Image.open(p).convert("RGB"))


class SegmentWidget(widgets.Container):
    """The dock widget; ``viewer`` is the napari viewer (a ``ViewerModel`` is enough).

    ``sync=True`` runs the work in the calling thread (for scripts and tests); otherwise it runs
    in a napari thread worker and the viewer stays responsive."""

    def __init__(self, viewer, sync: bool = False):
        from temtool.study.finetune import FINETUNE_DEFAULTS

        super().__init__(labels=True)
        self.viewer, self.sync = viewer, sync
        self.image = widgets.ComboBox(label="image", choices=self._image_layers)
        self.model = widgets.ComboBox(label="model", choices=self._model_choices, value=DEFAULT_MODEL)
        self.bundle = widgets.FileEdit(label="or bundle folder", mode="d", nullable=True, value=None)
        self.pixel_size = widgets.FloatSpinBox(
            label="pixel size (nm, 0: the file's)", value=0.0, min=0.0, max=1e4, step=0.001
        )
        self.pixel_info = widgets.Label(value="")
        self.tta = widgets.CheckBox(text="TTA: average 8 flips and rotations", value=False)
        self.run = widgets.PushButton(text="Segment particles")
        self.summary = widgets.Label(value="")
        self.sizes = widgets.Image(value=np.full((8, 8, 3), 255, np.uint8))
        self.training_set = widgets.FileEdit(
            label="training set", mode="d", value=str(Path.cwd() / "temtool-corrections")
        )
        self.add = widgets.PushButton(text="Add image and corrected labels")
        self.epochs = widgets.SpinBox(label="epochs", value=FINETUNE_DEFAULTS["epochs"], min=1, max=1000)
        self.finetune = widgets.PushButton(text="Fine-tune, then segment again")
        self.scores = widgets.Label(value="")
        self.extend(
            [
                self.image,
                self.model,
                self.bundle,
                self.pixel_size,
                self.pixel_info,
                self.tta,
                self.run,
                self.summary,
                self.sizes,
                widgets.Label(value="Correct the labels layer, then:"),
                self.training_set,
                self.add,
                self.epochs,
                self.finetune,
                self.scores,
            ]
        )
        self.current_model: str | None = None  # the bundle that made the last result
        self.last_error: str | None = None
        self.image.changed.connect(self._show_pixel_size)
        self.pixel_size.changed.connect(self._show_pixel_size)
        self.run.clicked.connect(self.segment)
        self.add.clicked.connect(self.add_to_training_set)
        self.finetune.clicked.connect(self.fine_tune)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _=None: self.image.reset_choices())
        self._show_pixel_size()

    # ------------------------------------------------------------------ choices
    def _image_layers(self, _=None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    @staticmethod
    def _model_choices(_=None) -> list[str]:
        from temtool.model.registry import last_model, shipped_models

        return [DEFAULT_MODEL, *shipped_models(), *([LAST_MODEL] if last_model() else [])]

    def model_path(self) -> str | None:
        """The bundle to use: the folder if one is named, else the choice (None: segment's default)."""
        from temtool.model.registry import last_model, shipped_models

        if self.bundle.value is not None:
            return str(self.bundle.value)
        choice = self.model.value
        if choice == LAST_MODEL:
            return str(last_model())
        return str(shipped_models()[choice]) if choice in shipped_models() else None

    def pixel_size_nm(self) -> tuple[float | None, str | None]:
        """The pixel size for the current image and where it comes from."""
        if self.pixel_size.value > 0:
            return float(self.pixel_size.value), "option"
        layer = self.image.value
        record = (layer.metadata or {}).get("temtool", {}) if layer is not None else {}
        px = record.get("pixel_size_nm")
        return (float(px), record.get("pixel_size_source") or "metadata") if px else (None, None)

    def _show_pixel_size(self, _=None) -> None:
        px, source = self.pixel_size_nm()
        where = {"option": "entered here", "metadata": "the file's calibration"}.get(source, source)
        self.pixel_info.value = (
            f"pixel size {px:.4g} nm ({where})" if px else "pixel size unknown: sizes in px"
        )

    def _plane(self, layer) -> np.ndarray:
        """The grey 2-D image of a layer: the frame on screen for a stack."""
        data = np.asarray(layer.data)
        if data.ndim == 3 and data.shape[-1] not in (3, 4):
            data = data[int(self.viewer.dims.current_step[0])]
        if data.ndim != 2:
            raise TemtoolError(f"{layer.name}: a {data.shape} layer; segment takes a grey 2-D image")
        return data

    # ------------------------------------------------------------------ running
    def _start(self, work, done) -> None:
        """``work()`` in a thread worker (or here, with ``sync``), then ``done(result)``; a
        :class:`TemtoolError` or any other failure becomes a notification."""
        self.last_error = None
        if self.sync:
            try:
                result = work()
            except Exception as e:  # noqa: BLE001 - shown to the user, never raised into Qt
                self._failed(e)
                return
            done(result)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(work)
        worker.returned.connect(done)
        worker.errored.connect(self._failed)
        worker.start()

    def _failed(self, e: Exception) -> None:
        self.last_error = str(e) if isinstance(e, TemtoolError) else f"{type(e).__name__}: {e}"
        _notify_error(f"temtool: {self.last_error}")
        for b in (self.run, self.add, self.finetune):
            b.enabled = True

    def segment(self, _=None) -> None:
        """Segment the current image layer (its current frame for a stack)."""
        layer = self.image.value
        if layer is None:
            self._failed(TemtoolError("open a micrograph first (no image layer)"))
            return
        try:
            data = self._plane(layer)
        except TemtoolError as e:
            self._failed(e)
            return
        px, source = self.pixel_size_nm()
        model, tta = self.model_path(), bool(self.tta.value)
        self.run.enabled = False

        def work():
            from temtool.inference.signal import segment_image

            return segment_image(data, px, model=model, tta=tta, title=layer.name, pixel_size_source=source)

        self._start(work, lambda r: self._show(layer, r))

    def _show(self, layer, r) -> None:
        import pandas as pd

        self.run.enabled = True
        self.current_model = r.frames[0]["model"]
        scale = tuple(layer.scale[-2:])
        features = pd.DataFrame(r.particles)
        if len(features):
            features.insert(0, "index", features.pop("id"))
        name = f"{layer.name} particles"
        self._replace(name, "labels", r.labels, scale=scale, features=features)
        self._replace(
            f"{layer.name} probability",
            "image",
            r.probability,
            scale=scale,
            colormap="magma",
            opacity=0.5,
            blending="additive",
            visible=False,
        )
        if r.uncertainty is not None:
            self._replace(
                f"{layer.name} uncertainty",
                "image",
                r.uncertainty,
                scale=scale,
                colormap="viridis",
                visible=False,
            )
        from temtool.inference.measure import interior_diameters

        frame = r.frames[0]
        unit, mean_d = frame["diameter_unit"], frame["diameter_mean"]
        d = interior_diameters(r.particles, unit)
        mean = f", mean diameter {mean_d:.3g} {unit}" if mean_d is not None else ""
        model = Path(self.current_model).name if self.current_model else "no model"
        self.summary.value = f"{len(r.particles)} particles{mean} ({model})"
        chart = _histogram(d, unit)
        self.sizes.value = chart
        self.sizes.min_width, self.sizes.min_height = chart.shape[1] * 3 // 4, chart.shape[0] * 3 // 4
        for note in r.frames[0]["notes"]:
            _notify(f"temtool: {note}")

    def _replace(self, name: str, kind: str, data, **kw) -> None:
        """Put ``data`` in the layer ``name`` (made on first use, updated after)."""
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            if "features" in kw:
                layer.features = kw["features"]
            return
        getattr(self.viewer, f"add_{kind}")(data, name=name, **kw)

    # ------------------------------------------------------------------ correct and retrain
    def add_to_training_set(self, _=None) -> None:
        """The current micrograph and its (corrected) labels layer into the training set."""
        from temtool.data.prepare import add_pair

        layer = self.image.value
        name = f"{layer.name} particles" if layer is not None else ""
        if layer is None or name not in self.viewer.layers:
            self._failed(TemtoolError("segment the micrograph first: its labels layer is what you correct"))
            return
        labels = np.asarray(self.viewer.layers[name].data)
        px, _ = self.pixel_size_nm()
        try:
            image = self._plane(layer)
            img_path, _ = add_pair(self.training_set.value, layer.name, image, labels, px, overwrite=True)
        except (TemtoolError, OSError) as e:
            self._failed(e)
            return
        n = len(list(img_path.parent.glob("*.tif")))
        _notify(f"temtool: {layer.name} added to {self.training_set.value} ({n} micrographs)")
        self.scores.value = f"training set: {n} micrograph(s); fine-tuning needs at least 3"

    def fine_tune(self, _=None) -> None:
        """Fine-tune from the current model on the training set, then segment again."""
        from temtool.study.finetune import FINETUNE_DEFAULTS, finetune_on_pairs
        from temtool.study.train import TrainConfig

        start = self.model_path() or self.current_model
        if start is None:
            self._failed(TemtoolError("segment once first, or choose a model: fine-tuning starts from it"))
            return
        raw = Path(self.training_set.value)
        out = raw.with_name(f"{raw.name}-model")
        cfg = TrainConfig(**{**FINETUNE_DEFAULTS, "epochs": int(self.epochs.value)})
        self.finetune.enabled = False
        self.scores.value = "fine-tuning..."
        self._start(lambda: finetune_on_pairs(start, raw, out, cfg), self._tuned)

    def _tuned(self, meta: dict) -> None:
        self.finetune.enabled = True
        rec = meta["finetune"]
        b, a = rec["before"], rec["after"]

        def f1(x):
            return "n/a" if x is None else f"{x:.3f}"

        self.scores.value = (
            f"test Dice {b['dice']:.3f} -> {a['dice']:.3f} (Otsu {a['otsu_dice']:.3f}), "
            f"object F1 {f1(b['object_f1'])} -> {f1(a['object_f1'])} ({Path(meta['path']).name})"
        )
        self.bundle.value = meta["path"]
        self.segment()
