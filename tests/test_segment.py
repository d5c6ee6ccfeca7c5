import json

import keras
import numpy as np
import pytest

from temtool.arch import Architecture, build_resunet
from temtool.baselines import fourier_segment, otsu_segment
from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_batch, simulate_image
from temtool.metrics import binary_scores_np
from temtool.predict import predict_proba
from temtool.receptive_field import exact_rf_px
from temtool.segment import Segmenter, measure_particles, plan_tiles


def test_plan_tiles_cover_everything():
    for length, tile, ov in [(1000, 256, 64), (256, 256, 64), (300, 128, 96)]:
        starts = plan_tiles(length, tile, ov)
        cover = np.zeros(length, int)
        for s in starts:
            cover[s : s + tile] += 1
        assert cover.min() >= 1 and starts[-1] + tile == max(length, tile)


@pytest.mark.jax
@pytest.mark.parametrize("tta", [False, True])
def test_tiled_prediction_has_no_seams(tta):
    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=2, pool="2,4", filters=2)
    model = build_resunet(arch)
    rf = exact_rf_px(arch)
    img = np.random.default_rng(0).standard_normal((232, 200)).astype(np.float32)
    seg = Segmenter(model, arch, rf, max_tile=128, tta=tta)
    tiled = seg.predict(img)
    assert seg.info["tiles"] > 4  # really tiled
    if tta:
        whole = np.mean(
            [_whole_dihedral(model, arch, img, k) for k in range(8)],
            axis=0,
        )
    else:
        whole = predict_proba(model, img[None, ..., None], arch.pool_product)[0]
    b = rf
    assert np.abs(tiled - whole)[b:-b, b:-b].max() < 1e-4


def _whole_dihedral(model, arch, img, k):
    from temtool.train import dihedral

    x = dihedral(img[None, ..., None], k)
    p = predict_proba(model, x, arch.pool_product)[..., None]
    if k >= 4:
        p = np.flip(p, axis=-2)
    return np.rot90(p, -(k % 4), axes=(-3, -2))[0, ..., 0]


def test_overlap_below_half_rf_is_refused():
    from temtool.errors import TemtoolError

    arch = Architecture.create(depth=2, pool=2, filters=1)
    with pytest.raises(TemtoolError, match="at least half"):
        Segmenter(None, arch, 44, margin_px=10)


def test_particle_counts_and_diameters_on_simulated_truth():
    cfg = config_for("standard", pixel_size_nm=0.25)
    true_n, got_n, true_d, got_d = 0, 0, [], []
    for s in simulate_batch(cfg, 6, 512, seed=5):
        labels, rows = measure_particles(s.mask, 0.25)
        true_n += len(s.particles)
        got_n += len(rows)
        true_d += [p["diameter_nm"] for p in s.particles if not p["touches_border"] and not p["touching"]]
        got_d += [r["equivalent_diameter_nm"] for r in rows if not r["touches_border"]]
        assert labels.max() >= len(rows)
    assert abs(got_n - true_n) <= 0.1 * true_n
    assert np.median(got_d) == pytest.approx(np.median(true_d), rel=0.1)


def test_watershed_splits_two_touching_discs():
    yy, xx = np.mgrid[:80, :120]
    m = ((yy - 40) ** 2 + (xx - 40) ** 2 < 20**2) | ((yy - 40) ** 2 + (xx - 76) ** 2 < 20**2)
    _, rows = measure_particles(m, 0.5)
    assert len(rows) == 2
    for r in rows:
        assert r["equivalent_diameter_nm"] == pytest.approx(20.0, rel=0.1)
        assert not r["touches_border"]


def test_fourier_baseline_finds_fringe_particles():
    cfg = config_for("hrtem", state_weights=(1, 1, 1, 1, 1, 0), amplitude_scale=0.2)
    f_d, o_d = [], []
    for s in simulate_batch(cfg, 3, 512, seed=3):
        f_d.append(binary_scores_np(s.mask, fourier_segment(s.image, cfg.pixel_size_nm))["dice"])
        o_d.append(binary_scores_np(s.mask, otsu_segment(s.image))["dice"])
    assert np.mean(f_d) > 0.7
    assert np.mean(f_d) > np.mean(o_d) + 0.15


@pytest.fixture
def small_bundle(tmp_path):
    from temtool.bundle import save_bundle

    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=2, pool=2, filters=2)
    model = build_resunet(arch)
    meta = {"architecture": arch.to_dict(), "pixel_size_nm": 0.5}
    return save_bundle(tmp_path / "m", model, meta)


def test_cli_segment_outputs_and_partial_failure(run_cli, small_bundle, tmp_path):
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 160, 0)
    write_tiff(tmp_path / "a.tif", sim.image, 0.5)
    write_tiff(tmp_path / "b.tif", sim.image, 1.0)  # twice the model's pixel size: resampled
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "segment",
        tmp_path / "a.tif",
        tmp_path / "b.tif",
        tmp_path / "broken.tif",
        "--model",
        small_bundle,
        "--out",
        out,
        "--json",
    )
    assert code == 2
    res = json.loads(stdout)
    assert [r["file"].endswith(n) for r, n in zip(res["results"], ("a.tif", "b.tif"))] == [True, True]
    assert res["failed"][0]["file"].endswith("broken.tif")
    assert any("resampled" in n for n in res["results"][1]["notes"])
    for stem in ("a", "b"):
        for suffix in ("_mask.png", "_prob.tif", "_overlay.png", "_particles.csv", "_sizes.png"):
            assert (out / f"{stem}{suffix}").is_file()
    header = (out / "a_particles.csv").read_text().splitlines()[0]
    assert header.startswith("id,area_nm2,equivalent_diameter_nm")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_segment_fourier_needs_no_model(run_cli, tmp_path):
    cfg = config_for("hrtem", state_weights=(1, 0, 0, 0, 0, 0))
    sim = simulate_image(cfg, 256, 1)
    write_tiff(tmp_path / "h.tif", sim.image, cfg.pixel_size_nm)
    code, stdout, err = run_cli(
        "segment", tmp_path / "h.tif", "--method", "fourier", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    assert json.loads(stdout)["results"][0]["particles"] >= 1
    code, _, err = run_cli("segment", tmp_path / "nothing*.tif", "--method", "fourier")
    assert code == 2 and "no file matches" in err


def test_without_model_uses_shipped_model_chosen_by_pixel_size(run_cli, tmp_path):
    cfg = config_for("hrtem", pixel_size_nm=0.04, diameter_nm=3.0)
    write_tiff(tmp_path / "h.tif", simulate_image(cfg, 128, 0).image, 0.04)
    cfg = config_for("standard", pixel_size_nm=0.5)
    write_tiff(tmp_path / "s.tif", simulate_image(cfg, 128, 0).image, 0.5)
    code, out, err = run_cli("segment", tmp_path / "h.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'hrtem' model" in out
    code, out, err = run_cli("segment", tmp_path / "s.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'standard' model" in out
