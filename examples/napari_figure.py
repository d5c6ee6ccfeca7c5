"""The napari plugin's picture in docs/interop.md, made headless (Qt's offscreen platform):
the "Segment particles" dock widget as Qt draws it, after a run on a real micrograph, beside
the viewer's layers (the micrograph and the labels layer) composed the way the canvas shows
them. The canvas itself is not grabbed: napari draws it with OpenGL, which Qt's offscreen
platform does not offer on a machine without a display.

    QT_QPA_PLATFORM=offscreen python examples/napari_figure.py

Micrograph: examples/data/real-tem/images/image_13.png (CC-BY-4.0, pixel size not stated).
Writes docs/figures/napari_plugin.png and docs/figures/napari_plugin.json (count, commit).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from qtpy.QtWidgets import QApplication  # noqa: E402

APP = QApplication.instance() or QApplication([])

from napari.components import ViewerModel  # noqa: E402
from PIL import Image  # noqa: E402

from temtool.data.io import read_image  # noqa: E402
from temtool.napari_plugin.widget import SegmentWidget  # noqa: E402

FIGURES = HERE.parent / "docs" / "figures"
MICROGRAPH = HERE / "data" / "real-tem" / "images" / "image_13.png"


def _layers_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The micrograph in grey with each particle in a colour of napari's label colormap kind."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    grey = np.clip((image - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.2, 1.0, size=(int(labels.max()) + 1, 3))
    on = labels > 0
    rgb[on] = 0.45 * rgb[on] + 0.55 * colours[labels[on]]
    return (rgb * 255).astype(np.uint8)


def main() -> None:
    viewer = ViewerModel()
    mg = read_image(MICROGRAPH)  # a PNG: napari's own reader would open it; no calibration
    viewer.add_image(mg.data, name="image_13", metadata={"temtool": {"pixel_size_nm": None}})
    widget = SegmentWidget(viewer, sync=True)
    widget.tta.value = True
    widget.training_set.value = Path.home() / "temtool-corrections"
    widget.segment()
    assert widget.last_error is None, widget.last_error
    widget.native.resize(520, 1000)
    grab = widget.native.grab()
    path = FIGURES / "napari_widget.tmp.png"
    grab.save(str(path))
    dock = np.asarray(Image.open(path).convert("RGB"))
    path.unlink()
    layers = _layers_rgb(mg.data, np.asarray(viewer.layers["image_13 particles"].data))
    h = max(dock.shape[0], layers.shape[0])
    pad = [np.full((h - a.shape[0], a.shape[1], 3), 255, np.uint8) for a in (layers, dock)]
    both = np.concatenate(
        [
            np.concatenate([layers, pad[0]]),
            np.full((h, 12, 3), 255, np.uint8),
            np.concatenate([dock, pad[1]]),
        ],
        axis=1,
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(both).save(FIGURES / "napari_plugin.png")
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    record = {
        "command": "QT_QPA_PLATFORM=offscreen python examples/napari_figure.py",
        "commit": commit,
        "micrograph": str(MICROGRAPH.relative_to(HERE.parent)),
        "particles": len(viewer.layers["image_13 particles"].features),
        "summary": widget.summary.value,
        "layers": [layer.name for layer in viewer.layers],
    }
    (FIGURES / "napari_plugin.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
