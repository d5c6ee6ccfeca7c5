"""Files read as image viewers show them, or refused in one line (temtool.data.io)."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from temtool.data.io import read_image
from temtool.errors import TemtoolError


@pytest.fixture
def grey():
    """A 96x128 uint8 micrograph-like image: dark discs on a brighter, noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    img = 170 + 20 * rng.standard_normal((96, 128))
    for cy, cx in ((30, 30), (60, 90), (70, 40)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 12**2] -= 90
    return np.clip(img, 0, 255).astype(np.uint8)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_palette_png_is_read_as_its_colours_not_its_indices(grey, tmp_path):
    Image.fromarray(grey).convert("RGB").quantize(64).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    got = read_image(tmp_path / "p.png").data
    assert _corr(got, grey) > 0.98 and np.abs(got - grey).mean() < 6


def test_miniswhite_tiff_is_inverted_back(grey, tmp_path):
    tifffile.imwrite(tmp_path / "w.tif", 255 - grey, photometric="miniswhite")
    assert np.array_equal(read_image(tmp_path / "w.tif").data, grey)


def test_cmyk_jpeg_is_read_as_its_colours(grey, tmp_path):
    Image.fromarray(grey).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    got = read_image(tmp_path / "c.jpg", channel=0).data
    assert _corr(got, grey) > 0.97


def test_grey_and_alpha_png_is_its_grey(grey, tmp_path):
    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png").data, grey)


def test_exif_orientation_is_applied(grey, tmp_path):
    im = Image.fromarray(grey)
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    im.save(tmp_path / "o.png", exif=exif)
    got = read_image(tmp_path / "o.png").data
    assert got.shape == (128, 96) and np.array_equal(got, np.rot90(grey, -1))


def test_animated_png_needs_a_frame(grey, tmp_path):
    frames = [Image.fromarray(grey), Image.fromarray(255 - grey), Image.fromarray(grey // 2)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    with pytest.raises(TemtoolError, match="3 frames.*--frame"):
        read_image(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png", frame=1).data, 255 - grey)
    with pytest.raises(TemtoolError, match="--frame 5 is not one of them"):
        read_image(tmp_path / "a.png", frame=5)


def test_lzw_tiff_is_read(grey, tmp_path):
    tifffile.imwrite(tmp_path / "lzw.tif", grey, compression="lzw")
    assert np.array_equal(read_image(tmp_path / "lzw.tif").data, grey)


def test_an_empty_file_is_one_clear_line(tmp_path):
    for name in ("e.mrc", "e.tif", "e.png"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(TemtoolError, match="the file is empty"):
            read_image(tmp_path / name)


def _ome(path, grey, size, unit=None):
    unit_attr = f' PhysicalSizeXUnit="{unit}"' if unit else ""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint8" '
        f'SizeX="{grey.shape[1]}" SizeY="{grey.shape[0]}" SizeZ="1" SizeC="1" SizeT="1" '
        f'PhysicalSizeX="{size}"{unit_attr} '
        f'PhysicalSizeY="{size}"><Channel ID="Channel:0" SamplesPerPixel="1"/></Pixels></Image></OME>'
    )
    tifffile.imwrite(path, grey, description=xml, metadata=None)


def test_calibrations_in_known_units_only(grey, tmp_path):
    """OME units are converted where known (cm, m, mm, and micrometres where none is given);
    a unit that is no length (pixel) is no calibration, never a guess."""
    cases = {"cm": (1e-7, 1.0), "m": (1e-9, 1.0), "mm": (5e-7, 0.5), None: (0.002, 2.0), "pixel": (1.0, None)}
    for i, (unit, (size, nm)) in enumerate(cases.items()):
        _ome(tmp_path / f"{i}.ome.tif", grey, size, unit)
        got = read_image(tmp_path / f"{i}.ome.tif").pixel_size_nm
        assert got == (pytest.approx(nm) if nm else None), unit


def _at_72_dpi(path, grey):
    """A TIFF as image editors write it: 72 dots per inch, in the centimetre resolution unit."""
    tifffile.imwrite(path, grey, resolution=(72 / 2.54, 72 / 2.54), resolutionunit="CENTIMETER")


def test_a_pixel_size_no_electron_microscope_records_is_not_used(grey, tmp_path):
    """A 72-dpi image's centimetre resolution tag (352,778 nm/px) or 1e-9 nm/px: not used,
    and the micrograph says why."""
    tifffile.imwrite(
        tmp_path / "dpi.tif", grey, resolution=(72 / 2.54, 72 / 2.54), resolutionunit="CENTIMETER"
    )
    mg = read_image(tmp_path / "dpi.tif")
    assert mg.pixel_size_nm is None and "outside what electron microscopes record" in mg.notes[0]
    tifffile.imwrite(tmp_path / "tiny.tif", grey, imagej=True, resolution=(1e9, 1e9), metadata={"unit": "nm"})
    assert read_image(tmp_path / "tiny.tif").pixel_size_nm is None


def test_the_cli_refuses_an_impossible_pixel_size_and_reports_a_dropped_one(run_cli, grey, tmp_path):
    tifffile.imwrite(
        tmp_path / "dpi.tif", grey, resolution=(72 / 2.54, 72 / 2.54), resolutionunit="CENTIMETER"
    )
    code, _, err = run_cli("segment", tmp_path / "dpi.tif", "--pixel-size", 1e-9, "--out", tmp_path / "o")
    assert code == 2 and "--pixel-size" in err and "Traceback" not in err
    code, out, err = run_cli("segment", tmp_path / "dpi.tif", "--method", "fourier", "--pixel-size", 0.02,
                             "--out", tmp_path / "o", "--json")  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("segment", tmp_path / "dpi.tif", "--out", tmp_path / "o2", "--json")
    assert code == 0, err
    summary = json.loads(out)["results"][0]
    assert summary["pixel_size_nm"] is None and summary["diameter_unit"] == "px"
    assert any("outside what electron microscopes record" in n for n in summary["notes"])
