"""Object scores of instance labels: matches at IoU 0.5, AP over 0.5:0.95, counts and sizes."""

import numpy as np
import pytest

from temtool.study.metrics import AP_THRESHOLDS, instance_scores, iou_matrix


def discs(shape, centres, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


TRUE = discs((64, 96), [(16, 16), (16, 48), (16, 80), (48, 32)], 8)


def test_iou_matrix_equals_pairwise_counts_for_any_ids():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (20, 30)) * 7  # ids 0, 7, 14, 21
    b = rng.integers(0, 3, (20, 30)) + 100 * (rng.random((20, 30)) > 0.5)
    iou = iou_matrix(a, b)
    ta, tb = [i for i in np.unique(a) if i], [j for j in np.unique(b) if j]
    assert iou.shape == (len(ta), len(tb))
    for r, i in enumerate(ta):
        for c, j in enumerate(tb):
            inter = np.sum((a == i) & (b == j))
            assert iou[r, c] == pytest.approx(inter / np.sum((a == i) | (b == j)))


def test_the_same_instances_under_other_ids_score_perfectly():
    pred = np.where(TRUE > 0, 50 - TRUE, 0)
    s = instance_scores(TRUE, pred)
    assert (s["f1"], s["ap"], s["count_error"], s["size_distance"]) == (1.0, 1.0, 0.0, 0.0)


def test_a_missed_particle_and_a_false_one():
    pred = TRUE.copy()
    pred[TRUE == 4] = 0
    pred[40:50, 70:80] = 9
    s = instance_scores(TRUE, pred)
    assert (s["n_true"], s["n_pred"]) == (4, 4)
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 4)
    assert s["f1"] == pytest.approx(3 / 4) and s["count_error"] == 0.0


def test_two_touching_particles_merged_count_as_no_match():
    true = np.zeros((20, 40), np.int32)
    true[5:15, 5:15], true[5:15, 15:25] = 1, 2
    merged = (true > 0).astype(np.int32)  # IoU exactly 0.5 with each: not a match
    s = instance_scores(true, merged)
    assert s["f1"] == 0.0 and s["count_error"] == -0.5
    assert s["size_distance"] > 0.3


def test_a_shifted_outline_keeps_f1_but_loses_ap():
    pred = np.roll(TRUE, 3, axis=1)  # IoU of each disc with itself ~0.7
    s = instance_scores(TRUE, pred)
    assert s["f1"] == 1.0
    assert 0.2 < s["ap"] < 0.6  # matched at 0.5-0.65, not at 0.7 and above
    assert len(AP_THRESHOLDS) == 10 and AP_THRESHOLDS[0] == 0.5 and AP_THRESHOLDS[-1] == 0.95


def test_empty_images():
    empty = np.zeros((8, 8), np.int32)
    assert instance_scores(empty, empty)["f1"] == 1.0
    s = instance_scores(TRUE, np.zeros_like(TRUE))
    assert s["recall"] == 0.0 and s["count_error"] == -1.0 and s["size_distance"] is None
