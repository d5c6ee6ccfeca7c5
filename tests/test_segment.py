import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from temtool.arch import Architecture, build_resunet
from temtool.baselines import fourier_segment, otsu_segment
from temtool.data.io import write_tiff
from temtool.data.simulate import config_for, simulate_batch, simulate_image
from temtool.errors import ParameterError
from temtool.measure import measure_particles
from temtool.metrics import binary_scores_np
from temtool.receptive_field import exact_reach_px, exact_rf_px, reach_bound_px
from temtool.segment import Segmenter
from temtool.tiling import TileGeometry, tile_origins


def test_tile_origins_cover_everything():
    for length, tile, ov in [(1000, 256, 64), (256, 256, 64), (300, 128, 96)]:
        starts = tile_origins(length, tile, ov)
        cover = np.zeros(length, int)
        for s in starts:
            cover[s : s + tile] += 1
        assert cover.min() >= 1 and starts[-1] + tile == max(length, tile)


def test_tile_weights_sum_to_one_between_neighbours():
    g = TileGeometry.for_model(4, reach_px=10, max_tile_px=128)
    canvas = 4 * 200
    t = g.tile_shape(canvas, canvas)[0]
    starts = tile_origins(canvas, t, g.overlap_px)
    total = np.zeros(canvas, np.float32)
    for s in starts:
        total[s : s + t] += g.weights(t, s == 0, s + t == canvas)
    assert len(starts) > 1
    assert total.min() > 0.99  # every pixel is covered by weight that sums to ~1 or more


def _model(pools, filters=2):
    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=len(pools.split(",")), pool=pools, filters=filters)
    return arch, build_resunet(arch)


@pytest.mark.jax
@pytest.mark.parametrize("tta,border_px", [(False, 16), (True, 16), (False, 0), (False, 10**6)])
def test_tiled_prediction_equals_whole_image_everywhere(tta, border_px):
    """For the default border, none, and a border of the whole margin (capped there)."""
    arch, model = _model("2,4")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=128, tta=tta, border_px=border_px)
    assert seg.geometry.border_px == min(border_px, seg.geometry.margin_px)
    img = np.random.default_rng(0).standard_normal((296, 264)).astype(np.float32)
    tiled = seg.predict(img)
    assert seg.info["tiles"] > 4  # really tiled
    whole = seg.predict_whole(img)
    # everywhere, the border included
    assert np.abs(tiled - whole).max() < 1e-4


def test_whole_image_reference_is_an_independent_computation():
    """predict_whole is one model call on the image reflect-padded by its border (16 px by
    default, or any other): check it against the model called directly, so the tiling test
    compares with something that does not share its code."""
    arch, model = _model("2,2")
    img = np.random.default_rng(1).standard_normal((64, 80)).astype(np.float32)
    for border, m in ((None, 16), (4, 4), (0, 0)):
        kw = {} if border is None else {"border_px": border}
        seg = Segmenter(model, arch, exact_reach_px(arch), **kw)
        assert seg.geometry.border_px == m
        padded = np.pad(img, ((m, m), (m, m)), mode="reflect")  # 64+2m, 80+2m: multiples of 4
        logits = np.asarray(model.predict_on_batch(padded[None, ..., None]), np.float32)[0]
        e = np.exp(logits - logits.max(-1, keepdims=True))
        direct = (e[..., 1] / e.sum(-1))[m : m + 64, m : m + 80]
        assert np.abs(seg.predict_whole(img) - direct).max() < 1e-5


def test_margin_smaller_than_the_one_sided_reach_would_break_tiling():
    """The field is off-centre: half the exact RF is not enough context for every pool
    sequence, the one-sided reach is (and the tiles then equal the whole image)."""
    found = []
    for pools in ("2,2", "4,2", "2,4", "3,3", "8,2"):
        arch = Architecture.create(depth=2, pool=pools, filters=1)
        reach, half = exact_reach_px(arch), int(np.ceil(exact_rf_px(arch) / 2))
        assert reach >= half
        assert reach <= reach_bound_px(arch)
        found.append(reach > half)
    assert any(found)


def test_overlap_below_the_reach_is_refused():
    arch = Architecture.create(depth=2, pool=2, filters=1)
    with pytest.raises(ParameterError, match="reach") as e:
        Segmenter(None, arch, exact_reach_px(arch), margin_px=10)
    assert e.value.param == "margin_px"


def test_tile_count_stays_linear_for_any_margin():
    """A context margin larger than the preferred tile must not shrink the stride to a few
    pixels (that made a 256 px image take minutes)."""
    for reach in (8, 200, 600, 2000):
        g = TileGeometry.for_model(8, reach_px=reach, max_tile_px=256)
        canvas = g.canvas(np.zeros((4096, 4096), np.float32)).shape[0]
        computed = 1
        for t in g.tile_shape(canvas, canvas):
            n = len(tile_origins(canvas, t, g.overlap_px))
            assert t - g.overlap_px >= g.overlap_px or n == 1
            computed *= n * t
        assert computed <= 9 * canvas**2  # pixels computed: a bounded multiple of the canvas


def _square_side(g, length):
    """The reference: the side of square tiles of at most max_tile_px (the fewest pixels)."""
    options = g._side_options(length)
    fits = [(t * n, t) for t, n in options if t <= g.max_tile_px]
    return min(fits)[1] if fits else options[0][0]


def test_tile_shape_bounds_the_tile_pixels_and_prefers_strips_where_they_are_cheaper():
    """Tiles hold at most max_tile_px squared pixels in any shape: a 2048x2048 micrograph under
    the shipped model's geometry and a 1536x1536 budget goes in two full-width strips (6% more
    pixels than one pass, fewer than four square tiles), and no shape computes more pixels
    than square tiles do."""
    g = TileGeometry.for_model(8, reach_px=51, max_tile_px=1536)
    H = W = g.canvas(np.zeros((2048, 2048), np.float32)).shape[0]
    assert (H, W) == (2080, 2080)
    ty, tx = g.tile_shape(H, W)
    assert (ty, tx) == (1104, 2080) and ty * tx <= 1536**2
    assert len(tile_origins(H, ty, g.overlap_px)) == 2
    assert 2 * ty * tx <= 1.07 * H * W
    rng = np.random.default_rng(0)
    for _ in range(40):
        P = int(rng.choice([4, 8, 16]))
        g = TileGeometry.for_model(
            P, reach_px=int(rng.integers(4, 120)), max_tile_px=int(rng.integers(64, 1024))
        )
        H, W = (int(v) * P for v in rng.integers(4, 600, size=2))
        ty, tx = g.tile_shape(H, W)
        for t, n in ((ty, H), (tx, W)):
            assert t % P == 0 and t <= n
            assert t == n or t >= 2 * g.overlap_px  # a stride of at least the overlap
        computed = len(tile_origins(H, ty, g.overlap_px)) * ty * len(tile_origins(W, tx, g.overlap_px)) * tx
        sy, sx = _square_side(g, H), _square_side(g, W)
        square = len(tile_origins(H, sy, g.overlap_px)) * sy * len(tile_origins(W, sx, g.overlap_px)) * sx
        if sy * sx <= g.max_tile_px**2:  # square tiles fit the budget: the shape does no worse
            assert ty * tx <= g.max_tile_px**2 and computed <= square


@pytest.mark.jax
def test_strip_tiles_equal_the_whole_image():
    arch, model = _model("2,4")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=160)
    img = np.random.default_rng(2).standard_normal((300, 120)).astype(np.float32)
    tiled = seg.predict(img)
    ty, tx = seg.info["tile_px"]
    assert seg.info["tiles"] > 1 and ty != tx  # really strips
    assert np.abs(tiled - seg.predict_whole(img)).max() < 1e-4


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


def test_measure_drops_small_objects_and_numbers_the_rest_in_order():
    """Objects under ``min_area_px`` leave the labels and the table; the rest keep 1..n in
    the order of the rows; with nothing dropped the ids are the same."""
    m = np.zeros((60, 90), bool)
    m[5:15, 5:15] = True  # 100 px
    m[5:7, 40:42] = True  # 4 px: dropped at min_area_px=10
    m[30:50, 60:80] = True  # 400 px
    labels, rows = measure_particles(m, None, min_area_px=10, pinhole_px=0)
    assert [r["id"] for r in rows] == [1, 2] and labels.max() == 2
    assert labels[5:7, 40:42].max() == 0
    assert [r["area_px2"] for r in rows] == [float((labels == i).sum()) for i in (1, 2)] == [100.0, 400.0]
    all_labels, all_rows = measure_particles(m, None, min_area_px=1, pinhole_px=0)
    assert [r["area_px2"] for r in all_rows] == [100.0, 4.0, 400.0]
    assert np.array_equal(all_labels > 0, m) and all_labels.dtype == np.int32


def test_fast_mask_helpers_equal_scikit_image():
    from scipy import ndimage as ndi
    from skimage.morphology import remove_small_holes, remove_small_objects
    from skimage.segmentation import find_boundaries

    from temtool.measure import inner_boundaries, remove_small

    rng = np.random.default_rng(3)
    for _ in range(5):
        m = ndi.gaussian_filter(rng.random((96, 128)), 2) > 0.5
        for k in (0, 1, 6, 40):
            assert np.array_equal(remove_small(m, k), remove_small_objects(m, max_size=k))
            assert np.array_equal(~remove_small(~m, k), remove_small_holes(m, max_size=k))
        labels = ndi.label(m)[0]
        labels[labels % 3 == 0] += 1  # some neighbours with touching different ids
        assert np.array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))


def test_gaussian_filter_equals_scipy_bit_for_bit():
    """Row bands in threads, each with its halo, on a copy with a padded row stride: the same
    values as SciPy's filter for power-of-two and other widths, both float types, wide and
    narrow kernels, and images too small to split."""
    from scipy import ndimage as ndi

    from temtool.measure import _row_stride, gaussian_filter

    rng = np.random.default_rng(5)
    for shape in [(256, 512), (300, 256), (130, 777), (64, 64), (1024, 64)]:
        for dtype in (np.float32, np.float64):
            x = rng.random(shape).astype(dtype)
            for sigma in (0.5, 1.0, 3.0, 9.0):
                for workers in (1, 2, 3):
                    y = gaussian_filter(x, sigma, workers=workers)
                    assert y.dtype == x.dtype and y.shape == x.shape
                    assert np.array_equal(y, ndi.gaussian_filter(x, sigma)), (shape, dtype, sigma, workers)
    assert _row_stride(2048, 4) == 2064 and _row_stride(2080, 4) == 2080 and _row_stride(512, 8) == 520


def test_region_properties_equal_scikit_image():
    """The bounding-box moments give regionprops' numbers for every region kept, with gaps in
    the label ids, one-pixel regions, lines (zero minor axis) and regions at the border."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    from temtool.measure import region_properties

    rng = np.random.default_rng(4)
    for sigma in (1.5, 4):
        labels = ndi.label(ndi.gaussian_filter(rng.random((90, 140)), sigma) > 0.5)[0]
        labels[labels % 4 == 0] = 0  # gaps in the ids
        labels[0, 0], labels[5, 10:20], labels[30:40, 139] = 900, 901, 902  # a pixel, lines
        props = region_properties(labels)
        regions = regionprops(labels)
        # boxes that hold each label loosely (here the whole image) give the same numbers
        whole = (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
        loose = region_properties(labels, [None if b is None else whole for b in ndi.find_objects(labels)])
        for key in props:
            assert np.array_equal(loose[key], props[key]), key
        assert list(props["label"]) == [r.label for r in regions]
        for i, r in enumerate(regions):
            assert props["area"][i] == r.area
            assert tuple(props["bbox"][i]) == r.bbox
            np.testing.assert_allclose(props["centroid"][i], r.centroid, rtol=1e-12)
            for key, want in (
                ("equivalent_diameter", r.equivalent_diameter_area),
                ("axis_major_length", r.axis_major_length),
                ("axis_minor_length", r.axis_minor_length),
                ("eccentricity", r.eccentricity),
            ):
                assert props[key][i] == pytest.approx(want, rel=1e-9, abs=1e-9), key
    assert region_properties(np.zeros((8, 8), np.int32))["label"].size == 0


def test_split_skips_only_components_with_one_peak(monkeypatch):
    """A component whose distance map has one connected set of local maxima is kept whole
    without h-maxima; two touching discs and an hourglass still go through it and split."""
    import temtool.measure as tm

    yy, xx = np.mgrid[:90, :200]
    one = ((yy - 45) / 20) ** 2 + ((xx - 40) / 30) ** 2 < 1  # an ellipse: one particle
    two = ((yy - 45) ** 2 + (xx - 110) ** 2 < 18**2) | ((yy - 45) ** 2 + (xx - 140) ** 2 < 18**2)
    m = one | two
    calls = []
    h_maxima = tm._h_maxima

    def spy(dist, *args):
        calls.append(dist.shape)
        return h_maxima(dist, *args)

    monkeypatch.setattr(tm, "_h_maxima", spy)
    labels = tm._split_touching(m)
    assert len(calls) == 1  # the two discs only
    assert len(np.unique(labels[one])) == 1 and labels[one].min() > 0
    assert len(np.unique(labels[two])) == 2


def test_split_numbers_pairs_and_whole_discs_in_order():
    """Pairs of touching discs among whole ones split in two, whole ones stay one label, and
    labels run 1..n in the order of the components."""
    import temtool.measure as tm

    yy, xx = np.mgrid[:240, :320]
    m = np.zeros(yy.shape, bool)
    rng = np.random.default_rng(7)
    for k in range(12):
        cy, cx = 30 + 60 * (k // 4), 40 + 80 * (k % 4)
        r = int(rng.integers(10, 18))
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        if k % 2:  # a touching neighbour: a component to split
            m |= (yy - cy) ** 2 + (xx - cx - int(1.6 * r)) ** 2 < r**2
    labels = tm._split_touching(m)
    assert labels.max() == 18  # 6 whole discs and 6 pairs split in two
    assert np.array_equal(labels > 0, m)
    first = [np.flatnonzero(labels.ravel() == i)[0] for i in range(1, 19)]
    rows = [f // m.shape[1] for f in first]
    assert rows == sorted(rows)  # component order: the top row of discs first


def test_h_maxima_equals_scikit_image(monkeypatch):
    """temtool's h-maxima of a distance map, from its sets of local maxima, are
    scikit-image's pixels exactly: random masks of many components, plateaus, h equal to
    differences of distances (1, 2, sqrt 2), h above the map's range, and the fallback to
    scikit-image for maps with many distinct peak values."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima

    import temtool.measure as tm

    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(60):
        shape = tuple(int(v) for v in rng.integers(20, 130, 2))
        m = ndi.gaussian_filter(rng.random(shape), float(rng.choice([1.5, 3, 6, 10]))) > rng.uniform(
            0.45, 0.55
        )
        if trial % 3 == 0:
            m = np.pad(m, 1)
        dist = ndi.distance_transform_edt(m)
        peaks = (dist == ndi.maximum_filter(dist, size=3)) & m
        sets, n_sets = ndi.label(peaks, structure=np.ones((3, 3), bool))
        for h in (1.0, 2.0, 0.5, float(np.sqrt(2)), 1.7, 3.0, 1e3):
            got = tm._h_maxima(dist, h, sets, n_sets)
            assert got.dtype == np.uint8
            assert np.array_equal(got, h_maxima(dist, h)), (trial, h)
            cases += 1
    assert cases == 420
    # many distinct peak values: scikit-image's one sort instead, the same pixels
    import skimage.morphology as skm

    calls = []
    monkeypatch.setattr(tm, "MAX_LEVELS", 2)
    monkeypatch.setattr(skm, "h_maxima", lambda d, h: calls.append(h) or h_maxima(d, h))
    yy, xx = np.mgrid[:200, :200]  # discs of 9 sizes: 9 peak values
    m = np.zeros(yy.shape, bool)
    for k in range(80):
        m |= (yy - 10 - 20 * (k // 10)) ** 2 + (xx - 10 - 20 * (k % 10)) ** 2 < (2 + k % 9) ** 2
    dist = ndi.distance_transform_edt(m)
    sets, n_sets = ndi.label((dist == ndi.maximum_filter(dist, size=3)) & m, structure=np.ones((3, 3), bool))
    assert np.array_equal(tm._h_maxima(dist, 1.0, sets, n_sets), h_maxima(dist, 1.0))
    assert calls == [1.0]


def test_medial_axis_equals_scikit_image():
    """The medial axis with its tables built once: scikit-image's skeleton and distance map,
    the same arrays, for masks of every size down to one pixel wide."""
    from scipy import ndimage as ndi
    from skimage.morphology import medial_axis as sk_medial_axis

    from temtool.measure import medial_axis

    rng = np.random.default_rng(1)
    for trial in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 150, 2))
        m = ndi.gaussian_filter(rng.random(shape), float(rng.choice([0.5, 2, 5]))) > rng.uniform(0.4, 0.6)
        want = sk_medial_axis(m, return_distance=True, rng=0)
        got = medial_axis(m)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and np.array_equal(g, w), trial


def test_fourier_baseline_finds_fringe_particles():
    cfg = config_for(  # crystalline particles with clear fringes (none weak, none twinned)
        "hrtem",
        state_weights=(1, 1, 1, 1, 1, 0),
        amplitude_scale=0.2,
        lattice_strength=(0.3, 0.7),
        twin_fraction=0,
    )
    f_d, o_d = [], []
    for s in simulate_batch(cfg, 3, 512, seed=3):
        f_d.append(binary_scores_np(s.mask, fourier_segment(s.image, cfg.pixel_size_nm))["dice"])
        o_d.append(binary_scores_np(s.mask, otsu_segment(s.image))["dice"])
    assert np.mean(f_d) > 0.7
    assert np.mean(f_d) > np.mean(o_d) + 0.15


@pytest.fixture
def small_bundle(tmp_path):
    from temtool.bundle import write_bundle

    arch, model = _model("2,2")
    return write_bundle(tmp_path / "m", model, arch, pixel_size_nm=0.5)


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


def test_without_model_the_shipped_model_is_chosen_by_what_the_image_is(run_cli, tmp_path):
    cfg = config_for(
        "hrtem",
        pixel_size_nm=0.04,
        diameter_nm=3.0,
        state_weights=(1, 0, 0, 0, 0, 0),
        lattice_strength=0.7,  # clearly fringed [110] particles, none twinned
        twin_fraction=0,
        particles_per_256px2=3.0,
    )
    # seed 0: fringes detected (not every simulated image shows them: see test_real_data)
    write_tiff(tmp_path / "h.tif", simulate_image(cfg, 256, 0).image, 0.04)
    cfg = config_for("standard", pixel_size_nm=0.12)  # the study's sampling: never the HRTEM model
    write_tiff(tmp_path / "s.tif", simulate_image(cfg, 512, 0).image, 0.12)
    code, out, err = run_cli("segment", tmp_path / "h.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'hrtem' model (lattice fringes" in out
    code, out, err = run_cli("segment", tmp_path / "s.tif", "--out", tmp_path / "o")
    assert code == 0, err
    assert "shipped 'standard' model" in out


def test_folder_pipeline_gives_what_one_file_after_the_other_gives(small_bundle, tmp_path):
    """Reading ahead, segmenting and writing in parallel changes nothing in the outputs, keeps
    the input order, reports every file once and still isolates a broken file."""
    from temtool.data.io import read_mask
    from temtool.segment import ModelChooser, segment_files

    (tmp_path / "in").mkdir()
    for i in range(5):
        sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 96 + 16 * i, i)
        write_tiff(tmp_path / "in" / f"m{i}.tif", sim.image, 0.5)
    (tmp_path / "in" / "m2.tif").write_bytes(b"II*\x00garbage")  # the third file is broken
    runs, calls = {}, {}
    for workers in (0, 2):
        seen = []
        runs[workers] = segment_files(
            [str(tmp_path / "in")],
            tmp_path / f"out{workers}",
            ModelChooser(small_bundle),
            on_file=lambda i, n, r, e, seen=seen: seen.append((i, n, r is None, e is None)),
            workers=workers,
        )
        calls[workers] = seen
    a, b = runs[0], runs[2]
    assert [r["file"] for r in a["results"]] == [r["file"] for r in b["results"]]
    assert [Path(r["file"]).name for r in b["results"]] == ["m0.tif", "m1.tif", "m3.tif", "m4.tif"]
    assert [f["file"] for f in b["failed"]] == [str(tmp_path / "in" / "m2.tif")]
    assert sorted(c[0] for c in calls[2]) == [1, 2, 3, 4, 5] and all(c[1] == 5 for c in calls[2])
    for ra, rb in zip(a["results"], b["results"]):
        assert {k: v for k, v in ra.items() if k not in ("time_s", "outputs")} == {
            k: v for k, v in rb.items() if k not in ("time_s", "outputs")
        }
        stem = ra["output_stem"]
        masks = [read_mask(tmp_path / f"out{w}" / f"{stem}_mask.png") for w in (0, 2)]
        assert (masks[0] == masks[1]).all()
    assert not [p for p in (tmp_path / "out2").iterdir() if p.name.startswith(".")]


def test_folder_pipeline_holds_a_bounded_number_of_micrographs(tmp_path, monkeypatch):
    """However many files a folder has, the pipeline holds at most ``workers + 1``
    micrographs being inferred or finished and two read ahead: memory stays bounded."""
    import threading

    from temtool import segment as S

    n_files, workers = 12, 2
    (tmp_path / "in").mkdir()
    for i in range(n_files):
        (tmp_path / "in" / f"m{i:02d}.tif").write_bytes(b"stand-in")
    lock, held = threading.Lock(), {"now": 0, "max": 0}

    def read(path, channel=None, frame=None):  # a micrograph enters memory
        with lock:
            held["now"] += 1
            held["max"] = max(held["max"], held["now"])
        return path

    def finish(path, r, out, post, stem, t0):  # slow writers: the reader could run far ahead
        time.sleep(0.03)
        with lock:
            held["now"] -= 1
        return {"file": str(path), "output_stem": stem, "notes": []}

    monkeypatch.setattr(S, "_read", read)
    monkeypatch.setattr(S, "_infer", lambda path, mg, segmenter, **kw: {"path": path})
    monkeypatch.setattr(S, "_finish", finish)
    res = S.segment_files([str(tmp_path / "in")], tmp_path / "out", None, workers=workers)
    assert [Path(r["file"]).name for r in res["results"]] == [f"m{i:02d}.tif" for i in range(n_files)]
    assert held["now"] == 0
    assert 3 <= held["max"] <= workers + 1 + 2  # overlapped, and bounded


@pytest.mark.jax
def test_device_blending_equals_host_blending():
    """The Keras runtime cuts, runs and blends tiles on the backend's device; the host
    blending of the same tiles gives the same map."""
    from temtool.tiling import predict_tiled

    arch, model = _model("2,2")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=96, tta=True)
    img = np.random.default_rng(1).standard_normal((150, 170)).astype(np.float32)
    on_device = seg.predict(img)
    assert seg.info["tiles"] > 4
    on_host, _ = predict_tiled(seg.forward, img, seg.geometry, seg.batch_size)
    assert on_device.shape == on_host.shape == (2, 150, 170)
    assert np.abs(on_device - on_host).max() < 1e-5


def test_outputs_written_side_by_side_all_finish_and_the_first_error_is_raised(tmp_path, monkeypatch):
    """The writes of one micrograph run in threads and land as one set: a failing write is
    raised after the others finished, and then none of the new outputs is in place (no
    temporary either), while the outputs of an earlier run stay as they were. The overlay is
    a palette PNG whose outline colour marks exactly the labels' inner boundaries."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    import temtool.segment as segm

    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, 1).image
    f = tmp_path / "m.tif"
    write_tiff(f, img, 0.5)
    seg = Segmenter.from_bundle(Path(segm.__file__).parent / "pretrained" / "standard")  # finds particles
    post = segm.PostProcessing(threshold=0.5)

    def broken(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(segm, "_histogram_png", broken)
        with pytest.raises(OSError, match="disk full"):
            segm.segment_file(f, tmp_path / "out", seg, post=post)
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-done, no temporaries

    segm.segment_file(f, tmp_path / "out", seg, post=post)
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == [
        "m_labels.tif",
        "m_mask.png",
        "m_overlay.png",
        "m_particles.csv",
        "m_prob.tif",
        "m_sizes.png",
    ]
    before = {n: (tmp_path / "out" / n).read_bytes() for n in made}
    img2 = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, 2).image  # other outputs
    write_tiff(f, img2, 0.5)
    with monkeypatch.context() as m:
        m.setattr(segm, "_overlay_png", broken)
        with pytest.raises(OSError, match="disk full"):
            segm.segment_file(f, tmp_path / "out", seg, post=post)
    assert {n.name: n.read_bytes() for n in (tmp_path / "out").iterdir()} == before  # the earlier set
    overlay = Image.open(tmp_path / "out" / "m_overlay.png")
    assert overlay.mode == "P"
    import tifffile

    labels = tifffile.imread(tmp_path / "out" / "m_labels.tif")
    rgb = np.asarray(overlay.convert("RGB"))
    outline = np.all(rgb == segm.OUTLINE_RGB, axis=-1)
    assert labels.max() > 0 and outline.any()
    assert np.array_equal(outline, find_boundaries(labels, mode="inner"))


def test_each_output_is_renamed_into_place_once(tmp_path, monkeypatch):
    """The writers write straight to the temporary names the set of outputs is staged under
    (no second temporary inside), and each output is renamed once, from its staged name."""
    import os

    import temtool.segment as segm

    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 96, 1).image
    write_tiff(tmp_path / "m.tif", img, 0.5)
    seg = Segmenter.from_bundle(Path(segm.__file__).parent / "pretrained" / "standard")
    renames, real = [], os.replace

    def replace(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    segm.segment_file(tmp_path / "m.tif", tmp_path / "out", seg)
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(made) == 6 and sorted(dst for _, dst in renames) == made
    assert all(src.startswith(f".{dst}.part-") for src, dst in renames)


def test_atomic_write_is_direct_only_inside_staged_writes_and_in_that_thread(tmp_path):
    import threading

    from temtool.data.io import atomic_write, staged_writes

    seen = []
    with staged_writes():
        atomic_write(tmp_path / "a.txt", lambda p: seen.append(p.name) or p.write_text("a"))
        t = threading.Thread(
            target=atomic_write, args=(tmp_path / "b.txt", lambda p: seen.append(p.name) or p.write_text("b"))
        )
        t.start()
        t.join()
    atomic_write(tmp_path / "c.txt", lambda p: seen.append(p.name) or p.write_text("c"))
    assert seen[0] == "a.txt"  # straight to the path
    assert seen[1].startswith(".b.txt.tmp-") and seen[2].startswith(".c.txt.tmp-")  # a temporary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]


def test_console_script_exit_keeps_every_output_and_message(tmp_path):
    """`temtool segment` from the command line ends without the interpreter's shutdown once
    everything is written: the JSON on stdout is whole, every output is in place, and a
    partial failure still gives its message on stderr and exit code 2."""
    import subprocess
    import sys

    x = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", x, 0.5)
    cmd = [
        sys.executable,
        "-m",
        "temtool.cli",
        "segment",
        str(tmp_path / "a.tif"),
        "--out",
        str(tmp_path / "o"),
    ]
    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert [Path(f["file"]).name for f in result["results"]] == ["a.tif"]
    suffixes = ("_labels.tif", "_mask.png", "_overlay.png", "_particles.csv", "_prob.tif", "_sizes.png")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted("a" + s for s in suffixes)
    r = subprocess.run(cmd + [str(tmp_path / "missing.tif")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "1 of 2 inputs failed" in r.stderr and "missing.tif" in r.stderr
    assert "a.tif" in r.stdout  # the table of the file that worked
