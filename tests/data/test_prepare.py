"""Readers, `temtool prepare`, and every bad input the data issue lists."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from temtool.data.io import read_h5_stack, read_image, read_mask, write_png, write_tiff
from temtool.data.prepare import remove_xrays
from temtool.errors import TemtoolError
from tests.helpers import REAL_DATA


def _raw(tmp_path, n=4, size=96, seed=0, suffix=".tif"):
    """A raw folder of synthetic micrographs (dark discs) and masks."""
    rng = np.random.default_rng(seed)
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(10, size - 10, 2)
            m |= ((yy - cy) ** 2 + (xx - cx) ** 2 < 12**2).astype(np.uint8)
        img = (1.0 - 0.5 * m + 0.05 * rng.standard_normal((size, size))).astype(np.float32)
        if suffix == ".tif":
            write_tiff(raw / "images" / f"image_{i}.tif", img, 0.25)
        else:
            np.save(raw / "images" / f"image_{i}.npy", img)
        write_png(raw / "masks" / f"label_{i}.png", (m * 255).astype(np.uint8))
    return raw


def test_prepare_splits_by_micrograph_and_reads_back(run_cli, tmp_path):
    raw = _raw(tmp_path, n=6)
    out = tmp_path / "ds"
    code, stdout, err = run_cli(
        "prepare", raw, out, "--patch", 32, "--min-particle-px", 20, "--split", "4,1,1"
    )
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["micrographs"] == {"train": 4, "val": 1, "test": 1}
    assert meta["pixel_size_nm"] == pytest.approx(0.25)
    owner = {}
    for split, stems in meta["splits"].items():
        for s in stems:
            src = meta["patch_sources"][s]
            assert owner.setdefault(src, split) == split  # no micrograph straddles splits
    from temtool.data.dataset import load_dataset

    ds = load_dataset(out)
    x, y = ds.arrays("train")
    assert x.shape[1:] == (32, 32, 1) and y.max() == 1
    assert all(y_.sum() >= 20 for y_ in y)  # near-empty patches dropped


def test_xray_outliers_replaced_by_neighbour_mean():
    img = np.ones((20, 20), np.float32)
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    img[5, 5] = 50.0
    img[10, 12] = 80.0
    clean, n = remove_xrays(img, threshold=8)
    assert n == 2
    assert abs(clean[5, 5] - 1.0) < 0.05 and abs(clean[10, 12] - 1.0) < 0.05
    assert np.array_equal(np.delete(clean.ravel(), [105, 212]), np.delete(img.ravel(), [105, 212]))


@pytest.mark.skipif(not os.path.isdir(REAL_DATA), reason="../shared/data/msa-seg-track-train absent")
def test_prepare_real_micrographs(run_cli, tmp_path):
    code, _, err = run_cli("prepare", REAL_DATA, tmp_path / "msa", "--patch", 256)
    assert code == 0, err
    meta = json.loads((tmp_path / "msa" / "dataset.json").read_text())
    assert sum(meta["micrographs"].values()) == 20
    assert meta["micrographs"]["test"] == 4 and meta["micrographs"]["val"] == 2
    assert 0.05 < meta["particle_fraction"] < 0.5
    m = read_mask(Path(REAL_DATA) / "labels" / "label_0.png", channel=0)
    assert set(np.unique(m)) == {0, 1}
    img = read_image(Path(REAL_DATA) / "images" / "image_0.png")
    assert img.data.shape == (512, 512)


# ---------------------------------------------------------------------------- bad input
def _prepare(run_cli, raw, out, *extra):
    code, stdout, err = run_cli("prepare", raw, out, "--patch", 32, "--min-particle-px", 1, *extra)
    assert "Traceback" not in err + stdout
    return code, err


def _assert_nothing_written(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_missing_and_empty_folders(run_cli, tmp_path):
    code, err = _prepare(run_cli, tmp_path / "nope", tmp_path / "out")
    assert code == 2 and "nope" in err and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, err = _prepare(run_cli, tmp_path / "empty", tmp_path / "out")
    assert code == 2 and "empty" in err
    _assert_nothing_written(tmp_path / "out")


def test_image_without_mask_and_mask_without_image(run_cli, tmp_path):
    raw = _raw(tmp_path)
    (raw / "masks" / "label_1.png").unlink()
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "image_1.tif" in err and "no matching mask" in err
    raw2 = _raw(tmp_path / "b")
    (raw2 / "images" / "image_2.tif").unlink()
    code, err = _prepare(run_cli, raw2, tmp_path / "out")
    assert code == 2 and "label_2.png" in err and "no matching image" in err
    _assert_nothing_written(tmp_path / "out")


def test_shape_mismatch(run_cli, tmp_path):
    raw = _raw(tmp_path)
    write_png(raw / "masks" / "label_0.png", np.zeros((50, 96), np.uint8))
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "label_0.png" in err and "50x96" in err


def test_corrupt_and_truncated_files(run_cli, tmp_path):
    raw = _raw(tmp_path)
    data = (raw / "images" / "image_1.tif").read_bytes()
    (raw / "images" / "image_1.tif").write_bytes(data[: len(data) // 3])
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "image_1.tif" in err and "corrupt" in err
    (raw / "images" / "image_1.tif").write_bytes(b"this is not a tiff")
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "image_1.tif" in err
    _assert_nothing_written(tmp_path / "out")


def test_non_binary_mask(run_cli, tmp_path):
    raw = _raw(tmp_path)
    grey = np.random.default_rng(0).integers(1, 255, (96, 96)).astype(np.uint8)
    write_png(raw / "masks" / "label_3.png", grey)
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "label_3.png" in err and "binary" in err


def test_nan_pixels(run_cli, tmp_path):
    raw = _raw(tmp_path, suffix=".npy")
    a = np.load(raw / "images" / "image_2.npy")
    a[3, 3] = np.nan
    np.save(raw / "images" / "image_2.npy", a)
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "image_2.npy" in err and "NaN" in err


def test_micrograph_smaller_than_patch(run_cli, tmp_path):
    raw = _raw(tmp_path, size=96)
    code, stdout, err = run_cli("prepare", raw, tmp_path / "out", "--patch", 128)
    assert code == 2 and "smaller than the patch size (128 px)" in err
    _assert_nothing_written(tmp_path / "out")


def test_mixed_pixel_sizes(run_cli, tmp_path):
    raw = _raw(tmp_path)
    img = read_image(raw / "images" / "image_2.tif").data
    write_tiff(raw / "images" / "image_2.tif", img, 0.5)
    code, err = _prepare(run_cli, raw, tmp_path / "out")
    assert code == 2 and "mixed pixel sizes" in err and "--pixel-size" in err
    code, err = _prepare(run_cli, raw, tmp_path / "out", "--pixel-size", 0.3)
    assert code == 0


def test_existing_output_is_kept_without_overwrite(run_cli, tmp_path):
    raw = _raw(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _prepare(run_cli, raw, out)
    assert code == 2 and "--overwrite" in err and (out / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- readers
def test_rgb_images_and_masks(tmp_path):
    grey = np.random.default_rng(0).integers(0, 255, (20, 30)).astype(np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], -1)
    write_png(tmp_path / "g.png", rgba)
    assert np.array_equal(read_image(tmp_path / "g.png").data, grey)
    colour = rgba.copy()
    colour[..., 1] = 0
    write_png(tmp_path / "c.png", colour)
    with pytest.raises(TemtoolError, match="coloured"):
        read_image(tmp_path / "c.png")
    assert np.array_equal(read_image(tmp_path / "c.png", channel=0).data, grey)
    inst = np.zeros((20, 30), np.uint16)
    inst[2:5, 2:5], inst[10:15, 10:20] = 1, 7
    write_png(tmp_path / "i.png", inst)
    assert np.array_equal(read_mask(tmp_path / "i.png"), (inst > 0).astype(np.uint8))
    np.save(tmp_path / "b.npy", inst > 0)
    assert read_mask(tmp_path / "b.npy").sum() == (inst > 0).sum()


def test_tiff_pixel_size_from_resolution_tags_in_cm(tmp_path):
    import tifffile

    a = np.zeros((8, 8), np.float32)
    tifffile.imwrite(
        tmp_path / "r.tif", a, resolution=(1e7 / 0.124, 1e7 / 0.124), resolutionunit="CENTIMETER"
    )
    assert read_image(tmp_path / "r.tif").pixel_size_nm == pytest.approx(0.124, rel=1e-4)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_hdf5_study_layout(tmp_path, layout, run_cli):
    import h5py

    rng = np.random.default_rng(0)
    imgs = rng.standard_normal((3, 1, 64, 64)).astype(np.float32)
    lab = np.zeros((3, 2, 64, 64), np.float32)
    lab[:, 1, 10:40, 10:40] = 1
    lab[:, 0] = 1 - lab[:, 1]
    if layout == "NHWC":
        imgs, lab = np.moveaxis(imgs, 1, -1), np.moveaxis(lab, 1, -1)
    raw = tmp_path / "raw"
    raw.mkdir()
    with h5py.File(raw / "study.h5", "w") as f:
        f["images"] = imgs
        f["maps"] = lab
    ims, masks = read_h5_stack(raw / "study.h5")
    assert len(ims) == 3 and ims[0].shape == (64, 64)
    assert masks[0].sum() == 900
    code, _, err = run_cli("prepare", raw, tmp_path / "out", "--patch", 32, "--min-particle-px", 1)
    assert code == 0, err


def _write_mrc(path, data, px_angstrom):
    ny, nx = data.shape
    hdr = np.zeros(256, np.int32)
    hdr[0:3] = [nx, ny, 1]
    hdr[3] = 2  # float32
    hdr[7:10] = [nx, ny, 1]
    f = hdr.view(np.float32)
    f[10:13] = [nx * px_angstrom, ny * px_angstrom, px_angstrom]
    f[13:16] = [90, 90, 90]
    hdr[16:19] = [1, 2, 3]
    raw = bytearray(hdr.tobytes())
    raw[208:212] = b"MAP "
    raw[212:216] = bytes([0x44, 0x44, 0, 0])
    path.write_bytes(bytes(raw) + data.astype("<f4").tobytes())


def test_mrc_through_the_microscopy_extra(tmp_path):
    pytest.importorskip("rsciio", reason="install the microscopy extra: pip install -e '.[test]'")
    d = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    _write_mrc(tmp_path / "a.mrc", d, 1.5)
    mg = read_image(tmp_path / "a.mrc")
    assert np.allclose(mg.data, d) and mg.pixel_size_nm == pytest.approx(0.15)


@pytest.mark.parametrize("unit, scale, expected_nm", [("nm", 0.124, 0.124), ("µm", 0.0005, 0.5)])
def test_dm3_through_the_microscopy_extra(tmp_path, unit, scale, expected_nm):
    pytest.importorskip("rsciio", reason="install the microscopy extra: pip install -e '.[test]'")
    from tests.dm3 import write_dm3

    d = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    write_dm3(tmp_path / "a.dm3", d, scale, unit)
    mg = read_image(tmp_path / "a.dm3")
    assert np.array_equal(mg.data, d)
    assert mg.pixel_size_nm == pytest.approx(expected_nm, rel=1e-5)
