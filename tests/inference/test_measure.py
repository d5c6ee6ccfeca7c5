"""Particle measurement: splitting touching particles, sizes and shapes, against scikit-image."""

import numpy as np
import pytest

from temtool.data.simulate import config_for, simulate_batch
from temtool.inference.measure import measure_particles


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

    from temtool.image.labels import inner_boundaries
    from temtool.inference.measure import remove_small

    rng = np.random.default_rng(3)
    for _ in range(5):
        m = ndi.gaussian_filter(rng.random((96, 128)), 2) > 0.5
        for k in (0, 1, 6, 40):
            assert np.array_equal(remove_small(m, k), remove_small_objects(m, max_size=k))
            assert np.array_equal(~remove_small(~m, k), remove_small_holes(m, max_size=k))
        labels = ndi.label(m)[0]
        labels[labels % 3 == 0] += 1  # some neighbours with touching different ids
        assert np.array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))


def test_region_properties_equal_scikit_image():
    """The bounding-box moments give regionprops' numbers for every region kept, with gaps in
    the label ids, one-pixel regions, lines (zero minor axis) and regions at the border."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    from temtool.inference.measure import region_properties

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
                ("perimeter", r.perimeter),
            ):
                assert props[key][i] == pytest.approx(want, rel=1e-9, abs=1e-9), key
            # the hull of the pixels' corners: the caliper diameter at least scikit-image's
            # (which spans pixel centres), by at most one pixel diagonal
            assert r.feret_diameter_max - 1e-9 <= props["feret_max"][i] <= r.feret_diameter_max + 1.5
            assert props["feret_min"][i] <= props["feret_max"][i] and 0 < props["solidity"][i] <= 1
    assert region_properties(np.zeros((8, 8), np.int32))["label"].size == 0


def test_outline_measures_of_known_shapes():
    """A 10 x 20 px rectangle: calipers 10 and its diagonal, solidity 1, perimeter as
    scikit-image counts it; a disc of radius 20: calipers about 41 px, circularity near 0.9,
    a C shape far less solid than either."""
    from temtool.inference.measure import outline_properties, region_properties

    lab = np.zeros((80, 120), np.int32)
    lab[5:15, 5:25] = 1
    yy, xx = np.mgrid[:80, :120]
    lab[(yy - 40) ** 2 + (xx - 40) ** 2 <= 400] = 2
    c = ((yy - 40) ** 2 + (xx - 95) ** 2 <= 400) & ((yy - 40) ** 2 + (xx - 105) ** 2 > 225)
    lab[c] = 3
    p = region_properties(lab)
    assert (p["feret_min"][0], p["feret_max"][0]) == pytest.approx((10.0, np.hypot(10, 20)))
    assert p["solidity"][0] == pytest.approx(1.0) and outline_properties(lab == 1)[3] == pytest.approx(200)
    assert 40.5 <= p["feret_min"][1] <= p["feret_max"][1] <= 41.5
    assert 0.85 < p["circularity"][1] < 1.0 and p["solidity"][1] > 0.95
    assert p["solidity"][2] < 0.7 and p["circularity"][2] < 0.5


def test_an_elongated_particle_stays_whole_beside_a_touching_pair():
    """An ellipse (one connected set of distance-map maxima) is one particle; two touching
    discs beside it are two."""
    import temtool.inference.measure as tm

    yy, xx = np.mgrid[:90, :200]
    one = ((yy - 45) / 20) ** 2 + ((xx - 40) / 30) ** 2 < 1  # an ellipse: one particle
    two = ((yy - 45) ** 2 + (xx - 110) ** 2 < 18**2) | ((yy - 45) ** 2 + (xx - 140) ** 2 < 18**2)
    labels = tm._split_touching(one | two)
    assert len(np.unique(labels[one])) == 1 and labels[one].min() > 0
    assert len(np.unique(labels[two])) == 2


def test_split_numbers_pairs_and_whole_discs_in_order():
    """Pairs of touching discs among whole ones split in two, whole ones stay one label, and
    labels run 1..n in the order of the components."""
    import temtool.inference.measure as tm

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

    import temtool.inference.measure as tm

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
    # many distinct peak values (more than MAX_LEVELS): the same pixels
    monkeypatch.setattr(tm, "MAX_LEVELS", 2)
    yy, xx = np.mgrid[:200, :200]  # discs of 9 sizes: 9 peak values
    m = np.zeros(yy.shape, bool)
    for k in range(80):
        m |= (yy - 10 - 20 * (k // 10)) ** 2 + (xx - 10 - 20 * (k % 10)) ** 2 < (2 + k % 9) ** 2
    dist = ndi.distance_transform_edt(m)
    sets, n_sets = ndi.label((dist == ndi.maximum_filter(dist, size=3)) & m, structure=np.ones((3, 3), bool))
    assert np.array_equal(tm._h_maxima(dist, 1.0, sets, n_sets), h_maxima(dist, 1.0))


def test_network_boundaries_part_touching_particles_the_distance_watershed_cannot():
    """Two 20x30 particles side by side make one 20x60 rectangle: no neck, so the distance
    watershed sees one particle; a boundary map with a line between them parts them at it.
    A particle too small for an interior (all boundary) stays one particle."""
    m = np.zeros((40, 90), bool)
    m[10:30, 10:70] = True
    m[10:13, 80:83] = True  # 9 px, no interior
    _, rows = measure_particles(m, None, min_area_px=1, pinhole_px=0)
    assert len(rows) == 2  # the rectangle whole, and the small one
    boundary = np.zeros(m.shape, np.float32)
    boundary[10:30, 39:41] = 0.9
    boundary[10:13, 80:83] = 0.8
    labels, rows = measure_particles(m, None, min_area_px=1, pinhole_px=0, boundary=boundary)
    assert sorted(r["area_px2"] for r in rows) == [9.0, 600.0, 600.0]
    assert labels[20, 20] != labels[20, 60] and labels[20, 39] == labels[20, 20]
    assert np.array_equal(labels > 0, m)


def test_boundary_noise_inside_a_particle_does_not_split_it():
    """Specks of interior on a boundary (smaller than MIN_SEED_PX) are not seeds."""
    yy, xx = np.mgrid[:60, :60]
    m = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    boundary = np.where(m, 0.0, 1.0).astype(np.float32)
    ring = m & ((yy - 30) ** 2 + (xx - 30) ** 2 > 14**2)
    boundary[ring] = 0.9
    boundary[30, 47] = 0.1  # a one-pixel hole in the boundary ring
    _, rows = measure_particles(m, None, min_area_px=1, pinhole_px=0, boundary=boundary)
    assert len(rows) == 1
