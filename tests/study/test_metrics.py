import numpy as np
import pytest

from temtool.study.metrics import DiceScore, binary_scores_np, dice_loss, dice_np, dice_per_image


def _logits_from_mask(mask, scale=20.0):
    fg = np.where(mask, scale, -scale).astype("float32")
    return np.stack([np.zeros_like(fg), fg], axis=-1)


@pytest.mark.jax
def test_hard_dice_against_hand_count():
    t = np.zeros((1, 8, 8), "int32")
    t[0, :4, :4] = 1  # 16 px
    p = np.zeros((1, 8, 8), bool)
    p[0, 2:6, :4] = True  # 16 px, 8 overlapping
    expected = (2 * 8 + 1) / (16 + 16 + 1)
    got = float(np.asarray(dice_per_image(t, _logits_from_mask(p), hard=True))[0])
    assert got == pytest.approx(expected, rel=1e-6)
    assert dice_np(t[0], p[0]) == pytest.approx(expected)


@pytest.mark.jax
def test_dice_is_averaged_per_image_not_pooled():
    t = np.zeros((2, 4, 4), "int32")
    t[0] = 1
    p = np.zeros((2, 4, 4), bool)
    p[0] = True  # image 0 perfect, image 1 empty/empty -> dice (0+1)/(0+1) = 1
    p[1, 0, 0] = True  # image 1: one false positive -> 1/2
    m = DiceScore(hard=True)
    m.update_state(t, _logits_from_mask(p))
    assert float(m.result()) == pytest.approx((1.0 + 0.5) / 2)


@pytest.mark.jax
def test_soft_dice_and_loss():
    t = np.ones((1, 2, 2), "int32")
    logits = np.zeros((1, 2, 2, 2), "float32")  # p = 0.5 everywhere
    expected = (2 * 2 + 1) / (2 + 4 + 1)
    assert float(np.asarray(dice_per_image(t, logits))[0]) == pytest.approx(expected, rel=1e-6)
    assert float(dice_loss(t, logits)) == pytest.approx(1 - expected, rel=1e-6)


def test_binary_scores():
    t = np.array([[1, 1, 0, 0]], bool)
    p = np.array([[1, 0, 1, 0]], bool)
    s = binary_scores_np(t, p)
    assert s["dice"] == pytest.approx(3 / 5)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["iou"] == pytest.approx(2 / 4)


@pytest.mark.jax
def test_dice_of_an_instance_aware_network_scores_both_particle_classes_together():
    """Three classes (background, interior, boundary): Dice is that of the two-class network
    whose particle logit gathers interior and boundary, against labels > 0."""
    from keras import ops

    rng = np.random.default_rng(0)
    logits3 = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    labels3 = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
    logits2 = np.stack([logits3[..., 0], np.logaddexp(logits3[..., 1], logits3[..., 2])], -1)
    for hard in (False, True):
        d3 = ops.convert_to_numpy(dice_per_image(labels3, logits3, hard=hard))
        d2 = ops.convert_to_numpy(dice_per_image((labels3 > 0).astype(np.uint8), logits2, hard=hard))
        assert np.allclose(d3, d2, atol=1e-5)
    assert not np.allclose(  # the boundary class counts as particle: scoring class 1 alone differs
        ops.convert_to_numpy(dice_per_image((labels3 == 1).astype(np.uint8), logits2)), d2, atol=1e-3
    )
