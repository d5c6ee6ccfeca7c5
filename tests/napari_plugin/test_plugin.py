"""The napari plugin, driven headless: the manifest, the reader's scale, the widget's layers
and table, errors as notifications, and the correct-and-retrain loop."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.napari_plugin.reader import get_reader
from temtool.napari_plugin.widget import SegmentWidget

MANIFEST = Path(__file__).resolve().parents[2] / "temtool" / "napari_plugin" / "napari.yaml"


def _micrograph(tmp_path, seed=3, size=192, px=0.5, name="a"):
    sim = simulate_image(config_for("standard", pixel_size_nm=px), size=size, seed=seed)
    f = tmp_path / f"{name}.tif"
    write_tiff(f, sim.image, pixel_size_nm=px)
    return f, sim


def _open(viewer, path):
    reader = get_reader(str(path))
    for data, kw, kind in reader(str(path)):
        getattr(viewer, f"add_{kind}")(data, **kw)
    return viewer.layers[-1]


def test_the_manifest_validates_and_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "temtool"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("temtool")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment particles"}
    assert "*.dm4" in manifest.contributions.readers[0].filename_patterns
    assert MANIFEST.is_file()


def test_the_reader_sets_the_scale_in_nm(tmp_path, viewer):
    f, sim = _micrograph(tmp_path, px=0.25)
    layer = _open(viewer, f)
    assert tuple(layer.scale) == (0.25, 0.25)
    assert [str(u) for u in layer.units] == ["nanometer", "nanometer"]
    assert layer.metadata["temtool"]["pixel_size_nm"] == pytest.approx(0.25)
    assert np.allclose(layer.data, sim.image, atol=1e-4)
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_the_widget_adds_labels_probability_uncertainty_and_the_table(tmp_path, viewer):
    f, sim = _micrograph(tmp_path)
    _open(viewer, f)
    w = SegmentWidget(viewer, sync=True)
    assert "0.5 nm" in w.pixel_info.value and "calibration" in w.pixel_info.value
    w.tta.value = True
    w.segment()
    assert w.last_error is None
    labels = viewer.layers["a particles"]
    assert tuple(labels.scale) == (0.5, 0.5)  # on the micrograph
    assert labels.data.shape == sim.image.shape and labels.data.max() == len(labels.features) > 0
    assert list(labels.features["index"]) == list(range(1, labels.data.max() + 1))
    assert "equivalent_diameter_nm" in labels.features
    truth = sim.mask > 0
    found = labels.data > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.8
    prob = viewer.layers["a probability"].data
    assert 0 <= prob.min() and prob.max() <= 1
    assert viewer.layers["a uncertainty"].data.shape == sim.image.shape
    assert f"{len(labels.features)} particles" in w.summary.value
    assert w.sizes.value.shape[-1] == 3  # the size histogram in the dock
    # again: the layers are updated, not duplicated
    w.segment()
    assert [layer.name for layer in viewer.layers].count("a particles") == 1


def test_errors_are_notifications_and_the_widget_stays_usable(tmp_path, viewer, monkeypatch):
    shown = []
    monkeypatch.setattr("temtool.napari_plugin.widget._notify_error", shown.append)
    w = SegmentWidget(viewer, sync=True)
    w.segment()  # no image yet
    assert shown and "open a micrograph" in shown[-1]
    f, _ = _micrograph(tmp_path)
    _open(viewer, f)
    w.bundle.value = str(tmp_path / "no-such-bundle")
    w.segment()
    assert "no-such-bundle" in shown[-1] and w.run.enabled
    w.bundle.value = None
    w.segment()
    assert w.last_error is None and "a particles" in viewer.layers


@pytest.mark.slow
def test_correct_add_and_retrain(tmp_path, viewer, monkeypatch):
    """Three corrected micrographs into a training set, a fine-tune from the shipped model, the
    new bundle segments again and the dock shows the test scores before and after."""
    from temtool.data.prepare import find_pairs

    monkeypatch.chdir(tmp_path)
    w = SegmentWidget(viewer, sync=True)
    w.training_set.value = str(tmp_path / "corrections")
    w.epochs.value = 1
    for i in range(3):
        f, sim = _micrograph(tmp_path, seed=10 + i, size=128, name=f"m{i}")
        layer = _open(viewer, f)
        w.image.value = layer
        w.segment()
        viewer.layers[f"m{i} particles"].data = sim.mask.astype(np.int32)  # the user's correction
        w.add_to_training_set()
    assert w.last_error is None
    pairs = find_pairs(tmp_path / "corrections")
    assert len(pairs) == 3 and np.array_equal(pairs[2].mask > 0, sim.mask > 0)
    w.fine_tune()
    assert w.last_error is None, w.last_error
    assert "test Dice" in w.scores.value and "->" in w.scores.value
    assert Path(w.bundle.value) == tmp_path / "corrections-model"
    assert (tmp_path / "corrections-model" / "bundle.json").is_file()
    assert Path(w.current_model) == tmp_path / "corrections-model"  # re-segmented with it


def test_segmenting_runs_in_a_worker_and_the_viewer_keeps_its_events(tmp_path, viewer, qapp):
    import time

    f, _ = _micrograph(tmp_path)
    _open(viewer, f)
    w = SegmentWidget(viewer)  # a napari thread worker, as in the viewer
    w.segment()
    assert not w.run.enabled  # running: the button waits, the event loop goes on
    deadline = time.monotonic() + 120
    while "a particles" not in viewer.layers and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.02)
    assert "a particles" in viewer.layers and w.run.enabled and w.last_error is None


def test_a_stack_opens_as_frames_and_the_current_frame_is_segmented(tmp_path, viewer):
    import tifffile

    frames = np.stack(
        [simulate_image(config_for("standard", pixel_size_nm=0.5), size=128, seed=s).image for s in (1, 2)]
    ).astype(np.float32)
    f = tmp_path / "series.tif"
    tifffile.imwrite(f, frames)
    layer = _open(viewer, f)
    assert layer.data.shape == frames.shape
    w = SegmentWidget(viewer, sync=True)
    viewer.dims.set_current_step(0, 1)
    w.pixel_size.value = 0.5
    assert "entered" in w.pixel_info.value
    w.segment()
    assert w.last_error is None
    from temtool.inference.signal import segment_image

    expected = segment_image(frames[1], 0.5).labels  # frame 1, the one shown
    assert np.array_equal(viewer.layers["series particles"].data, expected)
