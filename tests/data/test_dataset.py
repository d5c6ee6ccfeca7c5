import json

import numpy as np
import pytest

from temtool.data.dataset import load_dataset, resolve_data, write_simulated_dataset
from temtool.data.io import read_image, read_mask
from temtool.errors import TemtoolError


def test_cli_simulate_writes_layout(run_cli, tmp_path):
    out = tmp_path / "d"
    code, stdout, err = run_cli(
        "simulate",
        out,
        "--regime",
        "hrtem",
        "--n",
        5,
        "--size",
        64,
        "--pixel-size",
        0.03,
        "--workers",
        1,
    )
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["regime"] == "hrtem" and meta["pixel_size_nm"] == 0.03 and meta["n_images"] == 5
    assert len(meta["images"]) == 5 and "defocus_nm" in meta["images"][0]["params"]
    assert sum(len(v) for v in meta["splits"].values()) == 5
    img = read_image(out / "images" / "sim_00000.tif")
    assert img.data.dtype == np.float32 and img.data.shape == (64, 64)
    assert img.pixel_size_nm == pytest.approx(0.03)
    m = read_mask(out / "masks" / "sim_00000.png")
    assert set(np.unique(m)) <= {0, 1}
    # refuses to overwrite without --overwrite, and leaves the data as it was
    code, _, err = run_cli("simulate", out, "--n", 2, "--size", 64)
    assert code == 2 and "--overwrite" in err
    assert len(list((out / "images").iterdir())) == 5
    code, _, _ = run_cli("simulate", out, "--n", 2, "--size", 64, "--overwrite")
    assert code == 0 and len(list((out / "images").iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folders left


def test_cli_simulates_haadf_stem_with_bright_particles(run_cli, tmp_path):
    out = tmp_path / "stem"
    code, _, err = run_cli("simulate", out, "--regime", "haadf", "--n", 3, "--size", 64, "--workers", 1)
    assert code == 0, err
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["regime"] == "haadf" and "line_jitter_px" in meta["images"][0]["params"]
    for i in range(3):
        img = read_image(out / "images" / f"sim_{i:05d}.tif").data
        m = read_mask(out / "masks" / f"sim_{i:05d}.png").astype(bool)
        if m.any():
            assert np.median(img[m]) > np.median(img[~m])
    code, _, err = run_cli("simulate", tmp_path / "x", "--regime", "sem", "--n", 1, "--size", 64)
    assert code == 2 and "haadf" in err


def test_interrupted_write_leaves_nothing(tmp_path):
    calls = []

    def progress(i):
        calls.append(i)
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_simulated_dataset(tmp_path / "x", n=4, size=32, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_builtin_dataset_is_cached_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path))
    import temtool.data.dataset as dsm

    monkeypatch.setitem(dsm.BUILTIN, "tiny", {**dsm.BUILTIN["hrtem"], "n": 10, "size": 64})
    p1 = resolve_data("sim:tiny")
    assert (p1 / "dataset.json").is_file() and str(p1).startswith(str(tmp_path))
    mtime = (p1 / "dataset.json").stat().st_mtime_ns
    assert resolve_data("sim:tiny") == p1 and (p1 / "dataset.json").stat().st_mtime_ns == mtime
    ds = load_dataset("sim:tiny")
    x, y = ds.arrays("train")
    assert x.shape == (7, 64, 64, 1) and y.shape == (7, 64, 64)
    assert abs(float(x[0].mean())) < 1e-4 and float(x[0].std()) == pytest.approx(1, rel=1e-3)
    assert ds.pixel_size_nm == pytest.approx(dsm.STUDY_HRTEM_NM_PER_PX)
    notes = json.loads((p1 / "dataset.json").read_text())["notes"]
    assert notes["builtin"] == "sim:tiny" and "study" in notes["scaled"]
    # a changed recipe is a new dataset, never the stale cached one
    monkeypatch.setitem(dsm.BUILTIN, "tiny", {**dsm.BUILTIN["tiny"], "n": 12})
    assert dsm.builtin_path("tiny") != p1
    with pytest.raises(TemtoolError, match="sim:standard"):
        resolve_data("sim:nope")


def test_randomised_builtin_draws_a_recipe_per_image_at_one_pixel_size(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path))
    import temtool.data.dataset as dsm
    from temtool.data.randomise import random_overrides
    from temtool.errors import ParameterError

    monkeypatch.setitem(dsm.BUILTIN, "rtiny", {**dsm.BUILTIN["randomised"], "n": 6, "size": 64})
    ds = load_dataset("sim:rtiny")
    assert ds.regime == "standard" and ds.pixel_size_nm == pytest.approx(0.5)
    meta = json.loads((dsm.builtin_path("rtiny") / "dataset.json").read_text())
    recipes = [r["params"]["randomised"] for r in meta["images"]]
    assert all(r["pixel_size_nm"] == 0.5 for r in recipes)
    assert len({r["dose_e_per_A2"][0] for r in recipes}) == 6  # each image its own dose
    assert len({r["diameter_nm"] for r in recipes}) == 6
    assert read_image(dsm.builtin_path("rtiny") / "images" / "sim_00000.tif").pixel_size_nm == pytest.approx(
        0.5
    )
    assert sum(int(m.any()) for m in ds.masks.values()) >= 4
    # fixing the pixel size keeps every other draw: the particle size in px is the same
    free, fixed = random_overrides(np.random.default_rng(3)), random_overrides(np.random.default_rng(3), 0.5)
    assert fixed["diameter_nm"] / 0.5 == pytest.approx(free["diameter_nm"] / free["pixel_size_nm"])
    assert fixed["defocus_nm"] == free["defocus_nm"]
    with pytest.raises(ParameterError, match="overrides"):
        write_simulated_dataset(tmp_path / "bad", "hrtem", n=2, size=32, randomised=True)


def test_crowded_randomised_draws_fill_the_field_and_leave_plain_draws_alone():
    from temtool.data.randomise import CROWDED, random_overrides, randomised_batch

    plain = [float((s.mask > 0).mean()) for s in randomised_batch(8, 96, seed=7)]
    jammed = [float((s.mask > 0).mean()) for s in randomised_batch(8, 96, seed=7, crowded=True)]
    # the plain recipe's fields are mostly under a third particle; jammed ones are mostly over
    assert np.mean(jammed) > np.mean(plain) + 0.15 and np.median(jammed) > 0.35
    a, b = (
        random_overrides(np.random.default_rng(5)),
        random_overrides(np.random.default_rng(5), crowded=True),
    )
    assert CROWDED["touching_fraction"][0] <= b["touching_fraction"] <= CROWDED["touching_fraction"][1]
    # the rest as drawn
    assert b["defocus_nm"] == a["defocus_nm"]
    assert b["pixel_size_nm"] == a["pixel_size_nm"]
    lo, hi = CROWDED["particle_diameter_px"]
    assert lo <= b["diameter_nm"] / b["pixel_size_nm"] <= hi
    assert b["particles_per_256px2"][1] > a["particles_per_256px2"][1]


def test_missing_data_folder_is_clear(tmp_path):
    with pytest.raises(TemtoolError, match="no such folder"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "images").mkdir()
    with pytest.raises(TemtoolError, match="masks"):
        load_dataset(tmp_path)


def test_streaming_from_disk_matches_memory_and_trains(tmp_path, monkeypatch):
    from temtool.model.architecture import Architecture
    from temtool.study.train import TrainConfig, fit

    d = write_simulated_dataset(
        tmp_path / "d", regime="standard", n=10, size=32, overrides={"pixel_size_nm": 1.0, "diameter_nm": 8.0}
    )
    mem = load_dataset(d, in_memory=True)
    monkeypatch.setenv("TEMTOOL_MAX_MEMORY_GB", "0.000001")  # smaller than the files
    lazy = load_dataset(d)
    assert lazy.lazy and not mem.lazy
    xm, ym = mem.arrays("train")
    xl, yl = lazy.arrays("train")
    assert xl.shape == xm.shape and len(xl) == 7
    idx = np.array([3, 0, 5])
    assert np.array_equal(xl[idx], xm[idx]) and np.array_equal(yl[idx], ym[idx])
    assert np.array_equal(xl[1:3], xm[1:3])
    r = fit(Architecture.create(depth=1, pool=2, filters=2), lazy, TrainConfig(epochs=1, batch_size=4))
    assert np.isfinite(r.history["val_hard_dice"]).all()
    assert lazy.summary()["streamed_from_disk"] is True


def test_boundary_targets_come_from_instance_maps_or_mask_components(small_data, tmp_path):
    """``targets="boundary"``: the masks stay binary (every score uses them), the training
    arrays are the 3-class targets of the instance maps, in memory and streamed alike;
    without instances/ the masks' components stand in; an image without its map is refused."""
    import shutil

    from temtool.image.labels import boundary_classes

    plain = load_dataset(small_data)
    ds = load_dataset(small_data, targets="boundary")
    assert ds.instances_from == "instances/"
    stem = ds.splits["train"][0]
    inst = read_image(small_data / "instances" / f"{stem}.png").data.astype(int)
    assert np.array_equal(ds.boundary[stem], boundary_classes(inst))
    assert np.array_equal(ds.masks[stem], plain.masks[stem]) and set(np.unique(ds.masks[stem])) <= {0, 1}
    x, y = ds.arrays("train")
    assert y.max() == 2 and np.array_equal(y > 0, plain.arrays("train")[1] > 0)
    streamed = load_dataset(small_data, targets="boundary", in_memory=False)
    assert np.array_equal(np.asarray(streamed.arrays("train")[1][:]), y)
    assert not np.array_equal(plain.arrays("train")[1], y)  # really other targets

    copy = tmp_path / "copy"
    shutil.copytree(small_data, copy)
    shutil.rmtree(copy / "instances")
    comps = load_dataset(copy, targets="boundary")
    assert comps.instances_from == "mask components" and comps.boundary[stem].max() == 2
    shutil.copytree(small_data / "instances", copy / "instances")
    (copy / "instances" / f"{stem}.png").unlink()
    with pytest.raises(TemtoolError, match=f"{stem}.*no instance map"):
        load_dataset(copy, targets="boundary")
