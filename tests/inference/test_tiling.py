"""Tiled prediction equals one whole-image pass, for any image, margin and border."""

import numpy as np
import pytest

from temtool.errors import ParameterError
from temtool.inference.segmenter import Segmenter
from temtool.inference.tiling import TileGeometry, tile_origins
from temtool.model.architecture import Architecture
from temtool.model.receptive_field import exact_reach_px, exact_rf_px, reach_bound_px
from tests.helpers import small_resunet


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


@pytest.mark.jax
@pytest.mark.parametrize("tta,border_px", [(False, 16), (True, 16), (False, 0), (False, 10**6)])
def test_tiled_prediction_equals_whole_image_everywhere(tta, border_px):
    """For the default border, none, and a border of the whole margin (capped there)."""
    arch, model = small_resunet("2,4")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=128, tta=tta, border_px=border_px)
    assert seg.geometry.border_px == min(border_px, seg.geometry.margin_px)
    img = np.random.default_rng(0).standard_normal((296, 264)).astype(np.float32)
    tiled, tiling = seg.predict_tiled(img)
    assert tiling["tiles"] > 4  # really tiled
    whole = seg.predict_whole(img)
    # everywhere, the border included
    assert np.abs(tiled - whole).max() < 1e-4


def test_whole_image_reference_is_an_independent_computation():
    """predict_whole is one model call on the image reflect-padded by its border (16 px by
    default, or any other): check it against the model called directly, so the tiling test
    compares with something that does not share its code."""
    arch, model = small_resunet("2,2")
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
    arch, model = small_resunet("2,4")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=160)
    img = np.random.default_rng(2).standard_normal((300, 120)).astype(np.float32)
    tiled, tiling = seg.predict_tiled(img)
    ty, tx = tiling["tile_px"]
    assert tiling["tiles"] > 1 and ty != tx  # really strips
    assert np.abs(tiled - seg.predict_whole(img)).max() < 1e-4


@pytest.mark.jax
def test_device_blending_equals_host_blending():
    """The Keras runtime cuts, runs and blends tiles on the backend's device; the host
    blending of the same tiles gives the same map."""
    from temtool.inference.tiling import predict_tiled

    arch, model = small_resunet("2,2")
    seg = Segmenter(model, arch, exact_reach_px(arch), max_tile_px=96, tta=True)
    img = np.random.default_rng(1).standard_normal((150, 170)).astype(np.float32)
    on_device, tiling = seg.predict_tiled(img)
    assert tiling["tiles"] > 4
    on_host, _ = predict_tiled(seg.forward, img, seg.geometry, seg.batch_size)
    assert on_device.shape == on_host.shape == (2, 150, 170)
    assert np.abs(on_device - on_host).max() < 1e-5


class _HostModel:
    """A Keras model behind a bare ``predict_on_batch``: the segmenter's host path (as for ONNX
    Runtime) instead of the compiled device stage."""

    def __init__(self, model):
        self.predict_on_batch = model.predict_on_batch


@pytest.mark.jax
def test_an_instance_aware_network_gives_particle_and_boundary_channels_on_both_paths():
    """A 3-class network (background, interior, boundary): the particle probability is
    1 - P(background) and the boundary channel P(boundary), on the device stage and on the
    host alike, tiled as one whole-image pass, with TTA spread in between."""
    arch, model = small_resunet("2,2", n_classes=3)
    img = np.random.default_rng(4).standard_normal((150, 170)).astype(np.float32)
    m = 16
    padded = np.pad(img, ((m, m + 2), (m, m + 2)), mode="reflect")  # 184x204: multiples of 4
    logits = np.asarray(model.predict_on_batch(padded[None, ..., None]), np.float32)[0]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    e /= e.sum(-1, keepdims=True)
    direct = np.stack([1 - e[..., 0], e[..., 2]])[:, m : m + 150, m : m + 170]
    for net in (model, _HostModel(model)):
        seg = Segmenter(net, arch, exact_reach_px(arch), max_tile_px=96)
        assert seg.channels == ("particle", "boundary")
        tiled, tiling = seg.predict_tiled(img)
        assert tiling["tiles"] > 4 and tiled.shape == (2, 150, 170)
        assert np.abs(tiled - direct).max() < 1e-4
        r = seg.probability(img, normalised=True)
        assert np.array_equal(r.prob, tiled[0]) and np.array_equal(r.boundary, tiled[1])
    with_tta = [
        Segmenter(net, arch, exact_reach_px(arch), max_tile_px=96, tta=True)
        for net in (model, _HostModel(model))
    ]
    assert with_tta[0].channels == ("particle", "spread", "boundary")
    device, host = (s.predict_tiled(img)[0] for s in with_tta)
    assert device.shape == host.shape == (3, 150, 170)
    assert np.abs(device - host).max() < 1e-4
    assert device[1].max() > 0  # the spread of an untrained network's members is not zero
