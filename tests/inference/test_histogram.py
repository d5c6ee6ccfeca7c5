"""The particle-size histogram drawn with Pillow (temtool.inference.histogram)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from temtool.inference.histogram import (
    MARGINS_PX,
    ORANGE,
    SIZE_PX,
    histogram_png,
    nice_ticks,
    size_bins,
    tick_labels,
)


def _bars(path) -> np.ndarray:
    """Height in px of the orange fill in every pixel column of the plot area."""
    im = np.asarray(Image.open(path).convert("RGB")).astype(int)
    orange = np.all(im == ORANGE, axis=-1)
    left, _, right, _ = MARGINS_PX
    return orange[:, left + 1 : SIZE_PX[0] - right - 1].sum(axis=0)


def test_bars_are_the_counts(tmp_path):
    """Each bin's bar is as tall as its count on the axis (the tallest at 1/1.05 of the plot
    height), empty bins draw nothing, and the bars span the plot's width."""
    rng = np.random.default_rng(0)
    values = rng.normal(12, 2.5, 200)
    histogram_png(tmp_path / "h.png", values, "equivalent diameter (nm)", title="n = 200")
    assert Image.open(tmp_path / "h.png").size == SIZE_PX
    heights = _bars(tmp_path / "h.png")
    counts, _ = np.histogram(values, bins=size_bins(values.size))
    plot_h = SIZE_PX[1] - MARGINS_PX[1] - MARGINS_PX[3]
    n = heights.size
    centres = ((np.arange(counts.size) + 0.5) * n / counts.size).astype(int)
    expected = counts * plot_h / (counts.max() * 1.05)
    assert np.all(np.abs(heights[centres] - expected) <= 1.5), (heights[centres], expected)
    assert heights[0] > 0 or counts[0] == 0
    assert heights[-1] > 0 or counts[-1] == 0


def test_no_values_draws_labelled_empty_axes(tmp_path):
    histogram_png(tmp_path / "e.png", [], "equivalent diameter (px)", title="n = 0")
    im = np.asarray(Image.open(tmp_path / "e.png").convert("RGB"))
    assert im.shape[:2] == SIZE_PX[::-1]
    assert _bars(tmp_path / "e.png").sum() == 0
    assert (im < 128).any()  # the frame, ticks and labels are drawn


@pytest.mark.parametrize(
    "lo,hi", [(6.8, 17.7), (4.5, 5.5), (0.0, 1.05), (0.0012, 0.0031), (120, 940), (0, 3150)]
)
def test_ticks_are_round_and_inside(lo, hi):
    t = nice_ticks(lo, hi, 5)
    assert 3 <= t.size <= 11
    assert t[0] >= lo - 1e-12 and t[-1] <= hi + 1e-12
    step = t[1] - t[0]
    assert np.allclose(np.diff(t), step)
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5)) < 1e-9
    labels = tick_labels(t)
    assert [float(s) for s in labels] == pytest.approx(list(t))
    assert len(set(labels)) == len(labels)


def test_count_ticks_are_whole_numbers():
    for top in (1.05, 3.15, 17.85, 1050.0):
        t = nice_ticks(0.0, top, 5, integer=True)
        assert t[0] == 0 and np.all(t == np.round(t)) and t[-1] <= top
        assert all("." not in s for s in tick_labels(t))
    assert tick_labels([7.5, 10, 12.5]) == ["7.5", "10.0", "12.5"]
    assert tick_labels([4.6, 4.8, 5.0]) == ["4.6", "4.8", "5.0"]


def test_segment_command_does_not_import_matplotlib(tmp_path):
    """`temtool segment` draws the histogram without Matplotlib (half a second of imports on a
    cold start): no Matplotlib module is imported from the prompt to the last output."""
    from temtool.data.io import write_tiff

    x = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", x, 0.5)
    cmd = [sys.executable, "-X", "importtime", "-m", "temtool.cli", "segment", str(tmp_path / "a.tif")]
    r = subprocess.run(cmd + ["--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "a_sizes.png").exists()
    imported = [line for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert len(imported) > 100  # the import log is there
    assert not [line for line in imported if "matplotlib" in line]


def test_bitmap_font_fallback_draws_the_same_chart(tmp_path, monkeypatch):
    """A Pillow built without FreeType gives a bitmap font (no ``anchor``): text is placed
    by its box, and the bars are the same."""
    from PIL import ImageFont

    import temtool.inference.histogram as hist

    values = np.random.default_rng(1).normal(5, 1, 60)
    histogram_png(tmp_path / "a.png", values, "d (nm)", title="n = 60")
    bitmap = ImageFont.load_default_imagefont()
    monkeypatch.setattr(hist, "_fonts", lambda: (bitmap, bitmap))
    histogram_png(tmp_path / "b.png", values, "d (nm)", title="n = 60")
    assert np.array_equal(_bars(tmp_path / "a.png"), _bars(tmp_path / "b.png"))
    im = np.asarray(Image.open(tmp_path / "b.png").convert("L"))
    assert (im[: MARGINS_PX[1], :] < 128).any()  # the title, above the plot
    assert (im[:, : MARGINS_PX[0] // 3] < 128).any()  # the turned y label, at the left
