"""Dice scores and segmentation losses, on ``keras.ops`` only (any Keras backend).

Conventions follow the study: Dice is computed per image with smoothing 1 and averaged over
images; *soft* Dice uses the softmax probability of the particle class, *hard* Dice rounds it
first (argmax for two classes). Labels are integer class maps ``(N, H, W)`` or
``(N, H, W, 1)`` (0 = background, 1 = particle; an instance-aware network's targets add
2 = particle boundary, :mod:`temtool.image.labels`, and Dice scores both particle classes
together); predictions are logits ``(N, H, W, C)``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = [
    "dice_per_image",
    "DiceScore",
    "dice_loss",
    "make_loss",
    "dice_np",
    "binary_scores_np",
    "iou_matrix",
    "instance_scores",
    "AP_THRESHOLDS",
]

AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # IoU 0.5, 0.55, ..., 0.95


def _fg_prob_and_target(y_true, logits):
    """The particle probability and the binary particle target. With two classes the
    particle class; with three (an instance-aware network: background, particle interior,
    particle boundary) both particle classes together, 1 - P(background), and labels >= 1."""
    logits = ops.cast(logits, "float32")
    soft = ops.softmax(logits, axis=-1)
    prob = soft[..., 1] if logits.shape[-1] == 2 else 1.0 - soft[..., 0]
    y = ops.cast(ops.cast(y_true, "int32") >= 1, "float32")
    if len(y.shape) == len(prob.shape) + 1:
        y = ops.squeeze(y, axis=-1)
    return prob, y


def dice_per_image(y_true, logits, hard: bool = False, smooth: float = 1.0):
    """Dice of the particle class for each image of a batch: shape ``(N,)``."""
    prob, y = _fg_prob_and_target(y_true, logits)
    if hard:
        prob = ops.cast(prob > 0.5, "float32")
    axes = tuple(range(1, len(prob.shape)))
    inter = ops.sum(prob * y, axis=axes)
    total = ops.sum(prob, axis=axes) + ops.sum(y, axis=axes)
    return (2.0 * inter + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="temtool")
class DiceScore(keras.metrics.Mean):
    """Mean over images of the per-image Dice (smoothing 1); ``hard=True`` rounds first."""

    def __init__(self, hard: bool = False, smooth: float = 1.0, name: str | None = None, **kw):
        super().__init__(name=name or ("hard_dice" if hard else "soft_dice"), **kw)
        self.hard = hard
        self.smooth = smooth

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(
            dice_per_image(y_true, y_pred, hard=self.hard, smooth=self.smooth), sample_weight
        )

    def get_config(self):
        return {**super().get_config(), "hard": self.hard, "smooth": self.smooth}


def dice_loss(y_true, logits, smooth: float = 1.0):
    """1 - mean soft Dice over images."""
    return 1.0 - ops.mean(dice_per_image(y_true, logits, hard=False, smooth=smooth))


def _cross_entropy(y_true, logits):
    y = y_true
    if len(y.shape) == len(logits.shape):
        y = ops.squeeze(y, axis=-1)
    ce = keras.losses.sparse_categorical_crossentropy(
        ops.cast(y, "int32"), ops.cast(logits, "float32"), from_logits=True
    )
    return ops.mean(ce)


LOSSES = ("ce", "dice", "ce+dice")


def make_loss(name: str = "ce"):
    """The training loss by name: ``ce`` (the study's), ``dice``, or ``ce+dice``."""
    if name == "ce":
        return _cross_entropy
    if name == "dice":
        return dice_loss
    if name == "ce+dice":

        def ce_dice(y_true, logits):
            return _cross_entropy(y_true, logits) + dice_loss(y_true, logits)

        return ce_dice
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


# ---------------------------------------------------------------- numpy (evaluation, baselines)


def dice_np(mask_true: np.ndarray, mask_pred: np.ndarray, smooth: float = 1.0) -> float:
    """Dice of two binary (or probability) masks of one image, smoothing 1."""
    t = np.asarray(mask_true, dtype=np.float64)
    p = np.asarray(mask_pred, dtype=np.float64)
    return float((2 * (t * p).sum() + smooth) / (t.sum() + p.sum() + smooth))


def binary_scores_np(mask_true: np.ndarray, mask_pred: np.ndarray) -> dict[str, float]:
    """Hard Dice, IoU, precision and recall of two binary masks (smoothing 1 for Dice)."""
    t = np.asarray(mask_true, dtype=bool)
    p = np.asarray(mask_pred, dtype=bool)
    tp = float(np.logical_and(t, p).sum())
    fp = float(np.logical_and(~t, p).sum())
    fn = float(np.logical_and(t, ~p).sum())
    return {
        "dice": (2 * tp + 1) / (2 * tp + fp + fn + 1),
        "iou": (tp + 1) / (tp + fp + fn + 1),
        "precision": (tp + 1) / (tp + fp + 1),
        "recall": (tp + 1) / (tp + fn + 1),
    }


# ---------------------------------------------------------------- instances (numpy)


def iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """IoU ``(n_true, n_pred)`` of every true against every predicted instance of two label
    images (0 = background, ids need not be consecutive), from one joint histogram."""
    t = np.asarray(true_labels).ravel()
    p = np.asarray(pred_labels).ravel()
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    joint = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids))
    joint = joint.reshape(len(t_ids), len(p_ids)).astype(np.float64)
    inter = joint[t_ids != 0][:, p_ids != 0]
    area_t = joint.sum(1)[t_ids != 0][:, None]
    area_p = joint.sum(0)[p_ids != 0][None, :]
    union = area_t + area_p - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    _, areas = np.unique(lab[lab != 0], return_counts=True)
    return np.sqrt(4 * areas / np.pi)


def instance_scores(true_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Object scores of predicted against true instances of one image.

    A predicted instance matches a true one when their IoU exceeds 0.5 (a match is then
    unique both ways). ``precision``, ``recall``, ``f1``: of the matches at IoU 0.5 (1 where
    both images have no instances); ``ap``: the mean over IoU 0.5:0.95 of TP / (TP + FP + FN)
    (the "average precision" of the instance-segmentation literature, StarDist and Cellpose);
    ``count_error``: (predicted - true) / true instances (None without true ones);
    ``size_distance``: the Wasserstein-1 distance between the true and predicted distributions
    of equivalent diameters, over the median true diameter (0: the same sizes; None where either
    side has none).
    """
    from scipy.stats import wasserstein_distance

    iou = iou_matrix(true_labels, pred_labels)
    n_true, n_pred = iou.shape
    best = iou.max(1) if n_pred else np.zeros(n_true)  # each true's best IoU (matches are unique above 0.5)

    def tp_at(t: float) -> int:
        return int((best > t).sum())

    tp = tp_at(0.5)
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else float(n_pred == 0)
    f1 = 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0
    ap = float(
        np.mean([tp_at(t) / (n_true + n_pred - tp_at(t)) if n_true + n_pred else 1.0 for t in AP_THRESHOLDS])
    )
    d_true, d_pred = _equivalent_diameters(true_labels), _equivalent_diameters(pred_labels)
    size = (
        float(wasserstein_distance(d_true, d_pred) / np.median(d_true))
        if len(d_true) and len(d_pred)
        else None
    )
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "ap": ap,
        "n_true": int(n_true),
        "n_pred": int(n_pred),
        "count_error": (n_pred - n_true) / n_true if n_true else None,
        "size_distance": size,
    }
