"""The pixel size from the lattice (``segment --lattice``)."""

import json

import numpy as np
import pytest

from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.errors import ParameterError
from temtool.image.resample import resample
from temtool.inference.lattice import d_spacings_nm, lattice_scale

HRTEM = config_for("hrtem")
FRINGED_SEEDS = (3, 10)  # simulated fields with on-zone particles (two families of spots)


@pytest.fixture(scope="module")
def fringed():
    return [simulate_image(HRTEM, 512, s).image for s in FRINGED_SEEDS]


@pytest.mark.parametrize("zoom", [1.0, 0.8, 1.25])
def test_the_lattice_gives_the_pixel_size_of_resampled_micrographs(fringed, zoom):
    for image in fringed:
        x = image if zoom == 1 else resample(image, (round(512 * zoom),) * 2)
        found = lattice_scale(x, "au")
        truth = HRTEM.pixel_size_nm / zoom
        assert found.pixel_size_nm == pytest.approx(truth, rel=0.02), found
        assert len(found.families) >= 2


def test_a_wrong_calibration_is_caught(fringed):
    truth = HRTEM.pixel_size_nm
    found = lattice_scale(fringed[0], "au", known_pixel_size_nm=truth * 1.08)
    assert found.pixel_size_nm == pytest.approx(truth, rel=0.02)


def test_no_lattice_no_pixel_size():
    rng = np.random.default_rng(0)
    noise = lattice_scale(rng.normal(size=(512, 512)), "au")
    assert noise.pixel_size_nm is None and "no Bragg spots" in noise.reason
    standard = config_for("standard")
    for seed in range(4):  # bright-field fields: edges and Thon rings, no lattice to match
        assert lattice_scale(simulate_image(standard, 512, seed).image, "au").pixel_size_nm is None


def test_compression_artifacts_are_not_a_lattice():
    """An 8x8 block grid (JPEG) makes spots at 1/8 and 1/8*sqrt(2) cycles per px at 45 degrees:
    the ratio and angle of Au {200} and {220}."""
    yy, xx = np.indices((512, 512))
    grid = ((yy % 8 == 0) | (xx % 8 == 0)).astype(float)
    image = np.random.default_rng(0).normal(size=(512, 512)) + 0.5 * grid
    assert lattice_scale(image, "au").pixel_size_nm is None


def test_spacings_by_metal_or_by_value():
    au = d_spacings_nm("Au")
    assert sorted(round(v, 4) for v in au.values()) == [0.1442, 0.2039, 0.2354]
    assert list(d_spacings_nm("0.2355, 0.2039").values()) == [0.2355, 0.2039]
    for bad in ("unobtainium", "0.2355,x", "5"):
        with pytest.raises(ParameterError, match="lattice"):
            d_spacings_nm(bad)


def test_segment_sets_or_checks_the_pixel_size_from_the_lattice(run_cli, fringed, tmp_path):
    f = tmp_path / "hr.tif"
    write_tiff(f, fringed[0].astype(np.float32))  # no calibration in the file
    code, out, err = run_cli("segment", f, "--lattice", "au", "--out", tmp_path / "a", "--json")
    assert code == 0, err
    r = json.loads(out)["results"][0]
    assert r["pixel_size_source"] == "lattice"
    assert r["pixel_size_nm"] == pytest.approx(HRTEM.pixel_size_nm, rel=0.02)
    assert r["diameter_unit"] == "nm"

    wrong = HRTEM.pixel_size_nm * 1.1
    code, out, err = run_cli(
        "segment", f, "--lattice", "au", "--pixel-size", wrong, "--out", tmp_path / "b", "--json"
    )
    assert code == 0, err
    r = json.loads(out)["results"][0]
    assert r["pixel_size_nm"] == wrong and r["pixel_size_source"] == "option"
    assert r["lattice"]["deviation_from_calibration"] == pytest.approx(-1 / 11, abs=0.02)
    assert any("check it" in n for n in r["notes"])

    code, _, err = run_cli("segment", f, "--lattice", "gold", "--out", tmp_path / "c")
    assert code == 2 and "--lattice" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
