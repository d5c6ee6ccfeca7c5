import keras
import numpy as np
import pytest

from temtool.errors import ArchitectureError
from temtool.model.architecture import Architecture, build_resunet, count_params


def test_create_doubles_filters_and_broadcasts_pool():
    a = Architecture.create(depth=4, pool=2, filters=4)
    assert a.pools == (2, 2, 2, 2)
    assert a.filters == (4, 8, 16, 32, 64)
    b = Architecture.create(depth=2, pool="8,2", filters="3,5,7")
    assert b.pools == (8, 2) and b.filters == (3, 5, 7) and b.pool_product == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=2, pools=(2,), filters=(4, 8, 16)), "pools has 1 entries"),
        (dict(depth=2, pools=(2, 0), filters=(4, 8, 16)), "pool sizes must be >= 1"),
        (dict(depth=2, pools=(2, 2), filters=(4, 8)), "needs 3"),
        (dict(depth=2, pools=(2, 2), filters=(4, 0, 16)), "filters must be > 0"),
        (dict(depth=0, pools=(), filters=(4,)), "depth must be"),
        (dict(depth=1, pools=(2,), filters=(4, 8), kernel_size=4), "odd"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ArchitectureError, match=message):
        Architecture(**kwargs)


def test_bad_pool_string():
    with pytest.raises(ArchitectureError, match="integers"):
        Architecture.create(pool="2,x")


def test_roundtrip_dict():
    a = Architecture.create(depth=3, pool="2,4,8", filters=8)
    assert Architecture.from_dict(a.to_dict()) == a


def _expected_params(arch: Architecture) -> int:
    """Independent count from the paper's block description (conv weights+bias, BN 4/channel)."""
    k = arch.kernel_size

    def block(cin, cout):
        skip = cin * cout + cout
        conv1 = k * k * cin * cout + cout
        conv2 = k * k * cout * cout + cout
        return skip + conv1 + conv2 + 2 * 4 * cout

    total, cin = 0, 1
    for f in arch.filters[:-1]:
        total += block(cin, f)
        cin = f
    total += block(cin, arch.filters[-1])
    up = arch.filters[-1]
    for f in reversed(arch.filters[:-1]):
        total += block(up + f, f)
        up = f
    return total + up * arch.n_classes + arch.n_classes


@pytest.mark.jax
@pytest.mark.parametrize("depth,pool", [(2, "2,2"), (2, "8,8"), (3, "2,4,2"), (4, "2")])
def test_param_count_matches_paper_design(depth, pool):
    a = Architecture.create(depth=depth, pool=pool, filters=4)
    assert count_params(a) == _expected_params(a)


@pytest.mark.jax
def test_forward_shape_and_float32_logits_under_mixed_precision():
    a = Architecture.create(depth=2, pool="2,4", filters=2)
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        m = build_resunet(a)
        assert m.get_layer("enc0_conv1").compute_dtype == "float16"
        y = m(np.zeros((2, 64, 72, 1), "float32"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert tuple(y.shape) == (2, 64, 72, 2)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"


def test_input_not_multiple_of_pools_is_a_clear_error():
    a = Architecture.create(depth=2, pool="4,4", filters=2)
    with pytest.raises(ArchitectureError, match="multiples of 16"):
        build_resunet(a, input_shape=(100, 64))
    with pytest.raises(ArchitectureError, match="multiples of 16"):
        a.check_input_size(64, 8)
    a.check_input_size(64, 48)


@pytest.mark.jax
def test_trains_one_step_and_loss_drops():
    from temtool.study.metrics import DiceScore, make_loss

    keras.utils.set_random_seed(0)
    a = Architecture.create(depth=2, pool=2, filters=4)
    m = build_resunet(a, input_shape=(64, 64))
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss=make_loss("ce"), metrics=[DiceScore(hard=True)])
    rng = np.random.default_rng(0)
    y = np.zeros((4, 64, 64), "int32")
    y[:, 16:40, 20:44] = 1
    x = (y + 0.3 * rng.standard_normal(y.shape)).astype("float32")[..., None]
    h = m.fit(x, y, epochs=8, batch_size=4, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert np.isfinite(h.history["hard_dice"]).all()


def test_copy_weights_to_a_boundary_network_keeps_its_particle_map():
    """A 2-class network's weights in a 3-class one: the particle map (1 - P(background)) is
    unchanged and split evenly between interior and boundary; other mismatches are refused."""
    import keras

    from temtool.model.architecture import copy_weights

    two = build_resunet(Architecture.create(depth=2, pool=2, filters=4))
    rng = np.random.default_rng(0)
    kernel, bias = two.get_layer("logits").get_weights()
    two.get_layer("logits").set_weights([kernel, rng.normal(0, 1, bias.shape).astype(bias.dtype)])
    three = build_resunet(Architecture.create(depth=2, pool=2, filters=4, n_classes=3))
    copy_weights(two, three)
    x = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
    p2 = keras.ops.convert_to_numpy(keras.ops.softmax(two(x), axis=-1))
    p3 = keras.ops.convert_to_numpy(keras.ops.softmax(three(x), axis=-1))
    np.testing.assert_allclose(1 - p3[..., 0], 1 - p2[..., 0], atol=1e-5)
    np.testing.assert_allclose(p3[..., 1], p3[..., 2], atol=1e-6)
    assert np.ptp(p2[..., 1]) > 0.1  # a weight-free network would pass the lines above trivially
    with pytest.raises(ArchitectureError):
        copy_weights(two, build_resunet(Architecture.create(depth=2, pool=2, filters=8)))
