"""temtool.segment_signal: HyperSpy and RosettaSciIO signals in, labels and particle tables
in nm out, as `temtool segment` would give for the same image."""

import hyperspy.api as hs  # the hyperspy extra, part of the test extra
import numpy as np
import pytest

import temtool
from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.errors import TemtoolError
from temtool.inference.choice import ModelChooser
from temtool.inference.pipeline import SegmentOptions, segment_file


def _frames(n=2, size=192):
    return np.stack(
        [simulate_image(config_for("standard", pixel_size_nm=0.5), size=size, seed=s).image for s in range(n)]
    ).astype(np.float32)


def _calibrate(signal, scale, units):
    for ax in signal.axes_manager.signal_axes:
        ax.scale, ax.units = scale, units
    return signal


def test_a_hyperspy_stack_in_angstrom_is_measured_in_nm_like_segment(tmp_path):
    data = _frames()
    s = _calibrate(hs.signals.Signal2D(data), 5.0, "Å")  # 0.5 nm
    s.metadata.General.title = "series"
    r = temtool.segment_signal(s)
    assert r.pixel_size_nm == pytest.approx(0.5) and r.pixel_size_source == "metadata"
    assert r.labels.shape == data.shape and r.probability.shape == data.shape
    assert {row["frame"] for row in r.particles} == {0, 1}
    assert all("equivalent_diameter_nm" in row for row in r.particles)
    # the labels come back as a HyperSpy signal with the input's calibration
    assert r.labels_signal.axes_manager.signal_axes[0].scale == 5.0
    assert r.labels_signal.axes_manager.navigation_shape == (2,)
    # frame 1 as a file through `segment` (same default model, pixel size from the file)
    f = tmp_path / "frame1.tif"
    write_tiff(f, data[1], pixel_size_nm=0.5)
    summary = segment_file(f, tmp_path / "out", ModelChooser(), SegmentOptions())
    mine = [row for row in r.particles if row["frame"] == 1]
    assert summary["particles"] == len(mine) == r.frames[1]["particles"] > 0
    assert summary["diameter_mean"] == pytest.approx(r.frames[1]["diameter_mean"], rel=1e-6)


def test_a_rosettasciio_signal_from_a_file_keeps_its_calibration(tmp_path):
    from rsciio.tiff import file_reader

    image = _frames(1)[0]
    f = tmp_path / "calibrated.tif"
    _calibrate(hs.signals.Signal2D(image), 0.0005, "µm").save(f)  # 0.5 nm, in micrometres
    signals = file_reader(str(f))
    assert isinstance(signals, list) and isinstance(signals[0], dict)
    r = temtool.segment_signal(signals)
    assert r.pixel_size_nm == pytest.approx(0.5) and r.pixel_size_source == "metadata"
    assert r.labels.shape == image.shape and r.labels.max() == len(r.particles) > 0
    assert "frame" not in r.particles[0] and "equivalent_diameter_nm" in r.particles[0]
    assert r.labels_signal is None  # no HyperSpy signal to copy the axes from


def test_an_uncalibrated_signal_is_measured_in_px_and_says_so():
    r = temtool.segment_signal(hs.signals.Signal2D(_frames(1)[0]))
    assert r.pixel_size_nm is None and r.pixel_size_source is None
    assert "equivalent_diameter_px" in r.particles[0]
    assert any("sizes in px" in n for n in r.frames[0]["notes"])
    # --pixel-size's counterpart overrides the (missing) calibration
    r = temtool.segment_signal(hs.signals.Signal2D(_frames(1)[0]), pixel_size_nm=0.5)
    assert r.pixel_size_source == "option" and "equivalent_diameter_nm" in r.particles[0]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: hs.signals.Signal1D(np.zeros(64, np.float32)), "dimension 1"),
        (lambda: hs.signals.Signal2D(np.zeros((2, 3, 32, 32), np.float32)), "inav"),
        (lambda: hs.signals.Signal2D(np.zeros((32, 32), np.complex64)), "real-valued"),
        (lambda: np.zeros((32, 32)), "HyperSpy signal"),
        (lambda: [{"data": np.zeros((8, 8)), "axes": []}] * 2, "a list of 2"),
    ],
)
def test_what_is_not_a_micrograph_is_refused_in_one_line(make, words):
    with pytest.raises(TemtoolError, match=words):
        temtool.segment_signal(make())


def test_non_square_pixels_are_refused():
    s = hs.signals.Signal2D(np.zeros((32, 32), np.float32))
    s.axes_manager.signal_axes[0].scale, s.axes_manager.signal_axes[0].units = 0.5, "nm"
    s.axes_manager.signal_axes[1].scale, s.axes_manager.signal_axes[1].units = 0.7, "nm"
    with pytest.raises(TemtoolError, match="not square"):
        temtool.segment_signal(s)
