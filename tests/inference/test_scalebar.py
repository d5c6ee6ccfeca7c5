"""The pixel size from a burned-in scale bar: labels parsed in their variants, bars measured to the
pixel (end caps included, dotted rulers and particles refused), a real OCR read of a drawn label,
and every doubtful case left unknown with its reason rather than guessed."""

import json

import numpy as np
import pytest

from temtool.inference.scalebar import find_bar, parse_length_nm, read_scale_bar


@pytest.mark.parametrize(
    "text, nm",
    [
        ("50 nm", 50.0),
        ("200nm", 200.0),
        ("200 NM", 200.0),
        ("0.2 µm", 200.0),
        ("0.2μm", 200.0),  # the Greek mu, as OCR often returns it
        ("1 um", 1000.0),
        ("5 Å", 0.5),
        ("5 A", 0.5),
        ("2,5 nm", 2.5),
        ("10.nm", 10.0),  # OCR's stray dot
    ],
)
def test_labels_in_their_variants(text, nm):
    assert parse_length_nm(text) == (pytest.approx(nm), None)


@pytest.mark.parametrize("text", ["50 mm", "1xm", "20 pm"])
def test_an_unknown_unit_is_a_reason_not_a_length(text):
    length, why = parse_length_nm(text)
    assert length is None and "unit" in why and text in why


@pytest.mark.parametrize("text", ["Au NPs", "b2", "100", "X25,000"])
def test_other_text_is_not_a_label(text):
    assert parse_length_nm(text) == (None, None)


def _field(seed=0, shape=(200, 300), level=170.0):
    return np.random.default_rng(seed).normal(level, 6.0, shape).astype(np.float32)


def _label(x, r0, c0, value=20.0, h=16, w=60):
    """Dark 'glyphs' standing in for a label's letters; returns its text box (r0, c0, r1, c1),
    with the few pixels of padding OCR boxes have."""
    for k in range(w // 12):
        x[r0 : r0 + h, c0 + 12 * k : c0 + 12 * k + 7] = value
    return (r0 - 2, c0 - 2, r0 + h + 2, c0 + w + 2)


def test_a_bar_under_its_label_is_measured_to_the_pixel():
    x = _field()
    box = _label(x, 120, 170)
    x[145:151, 150:267] = 20.0  # a 117-px bar, 6 px thick
    assert find_bar(x, box) == (145, 150, 6, 117)


def test_end_caps_belong_to_the_bar_and_a_dotted_ruler_is_not_a_bar():
    x = _field()
    box = _label(x, 120, 170)
    x[147:149, 150:230] = 20.0  # a thin ruler ...
    x[142:154, 150:152] = 20.0  # ... with end caps
    x[142:154, 228:230] = 20.0
    r, c, h, w = find_bar(x, box)
    assert (c, w) == (150, 80)
    y = _field()
    box = _label(y, 120, 170)
    for c0 in range(150, 260, 6):  # a dotted ruler
        y[147:149, c0 : c0 + 3] = 20.0
    assert find_bar(y, box) is None


def test_a_particle_beside_a_label_is_not_a_bar():
    x = _field()
    box = _label(x, 120, 170)
    rr, cc = np.mgrid[:200, :300]
    x[(rr - 160) ** 2 + (cc - 120) ** 2 < 30**2] = 20.0  # a dark disc below-left of the label
    assert find_bar(x, box) is None


def test_a_label_on_a_box_with_its_bar_in_the_box_colour():
    x = _field()
    x[114:142, 164:238] = 0.0  # a black box ...
    box = _label(x, 120, 170, value=255.0)  # ... with white letters
    x[128:132, 60:150] = 0.0  # a black bar beside it, on the micrograph
    assert find_bar(x, box) == (128, 60, 4, 90)


class FakeOCR:
    """RapidOCR's answer for given lines: ``[(polygon, text, score)], timing``."""

    def __init__(self, lines):
        self.lines = lines

    def __call__(self, image):
        return [
            ([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], t, 0.99) for t, (r0, c0, r1, c1) in self.lines
        ], None


def test_one_label_and_its_bar_give_the_pixel_size():
    x = _field()
    box = _label(x, 120, 170)
    x[145:151, 150:270] = 20.0
    found = read_scale_bar(x, FakeOCR([("50", (120, 170, 136, 200)), ("nm", (122, 204, 136, 230))]))
    assert found.text == "50 nm" and found.bar_px == 120  # "50" and "nm" read apart, joined
    assert found.pixel_size_nm == pytest.approx(50 / 120)
    assert box  # the drawn glyphs were what the fake OCR 'read'


@pytest.mark.parametrize(
    "lines, bar_cols, reason",
    [
        ([("50 mm", (120, 170, 136, 230))], (150, 270), "unit"),
        ([("50 nm", (120, 170, 136, 230))], (150, 165), "no bar"),  # 15 px: too short to trust
        ([("Au NPs", (120, 170, 136, 230))], (150, 270), "no scale-bar label"),
    ],
)
def test_doubtful_cases_stay_unknown_with_a_reason(lines, bar_cols, reason):
    x = _field()
    _label(x, 120, 170)
    x[145:151, bar_cols[0] : bar_cols[1]] = 20.0
    found = read_scale_bar(x, FakeOCR(lines))
    assert found.pixel_size_nm is None and reason in found.reason


def test_two_bars_that_disagree_give_no_pixel_size():
    x = _field(shape=(200, 600))
    _label(x, 120, 170)
    x[145:151, 150:270] = 20.0  # 50 nm over 120 px
    _label(x, 20, 420)
    x[45:51, 400:460] = 20.0  # 50 nm over 60 px
    ocr = FakeOCR([("50 nm", (120, 170, 136, 230)), ("50 nm", (20, 420, 36, 480))])
    found = read_scale_bar(x, ocr)
    assert found.pixel_size_nm is None and "disagree" in found.reason


def _drawn_figure(path, label="50 nm", bar_px=120):
    """A grey 8-bit figure with a dark particle, a drawn bar and its label in a real font."""
    from PIL import Image, ImageDraw, ImageFont

    noise = np.random.default_rng(0).normal(180, 5, (224, 320))
    im = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse([40, 40, 100, 100], fill=60)
    d.rectangle([150, 190, 150 + bar_px - 1, 197], fill=10)
    d.text((170, 158), label, fill=10, font=ImageFont.load_default(size=24))
    im.save(path)
    return path


def test_real_ocr_reads_a_drawn_label(tmp_path):
    from temtool.data.io import read_image

    x = read_image(_drawn_figure(tmp_path / "fig.png")).data
    found = read_scale_bar(x)
    assert found.bar_px == 120 and found.length_nm == 50.0
    assert found.pixel_size_nm == pytest.approx(50 / 120)


def test_segment_takes_the_pixel_size_from_the_bar_and_says_so(run_cli, tmp_path):
    fig = _drawn_figure(tmp_path / "fig.png")
    code, stdout, err = run_cli("segment", fig, "--out", tmp_path / "a", "--json")
    assert code == 0, err
    r = json.loads(stdout)["results"][0]
    assert r["pixel_size_source"] == "scale bar" and r["pixel_size_nm"] == pytest.approx(50 / 120)
    assert r["scale_bar"]["bar_px"] == 120 and r["diameter_unit"] == "nm"
    code, stdout, err = run_cli("segment", fig, "--out", tmp_path / "b", "--json", "--no-scale-bar")
    assert code == 0, err
    r = json.loads(stdout)["results"][0]
    assert r["pixel_size_source"] is None and r["scale_bar"] is None and r["diameter_unit"] == "px"


def test_a_file_calibration_that_the_bar_contradicts_is_kept_and_questioned(run_cli, tmp_path):
    from temtool.data.io import read_image, write_tiff

    x = read_image(_drawn_figure(tmp_path / "fig.png")).data
    write_tiff(tmp_path / "fig.tif", x.astype(np.uint8), pixel_size_nm=1.0)  # the bar says 0.417
    code, stdout, err = run_cli("segment", tmp_path / "fig.tif", "--out", tmp_path / "a", "--json")
    assert code == 0, err
    r = json.loads(stdout)["results"][0]
    assert r["pixel_size_source"] == "metadata" and r["pixel_size_nm"] == pytest.approx(1.0)
    assert any("-58%" in n and "file's is used" in n for n in r["notes"])
