"""Scores of a trained model on a dataset split, next to the Otsu baseline."""

from __future__ import annotations

import numpy as np

from temtool.arch import Architecture
from temtool.baselines import otsu_segment
from temtool.bundle import load_bundle
from temtool.data.dataset import load_dataset
from temtool.errors import TemtoolError
from temtool.metrics import binary_scores_np, dice_np
from temtool.predict import predict_proba

METRICS = ("soft_dice", "dice", "iou", "precision", "recall")


def evaluate(model_path, data: str, split: str = "test", pixel_size_nm: float | None = None) -> dict:
    """Per-image and mean soft/hard Dice, IoU, precision, recall of the model and the
    Gaussian + Otsu baseline on one split of a dataset."""
    model, meta = load_bundle(model_path)
    arch = Architecture.from_dict(meta["architecture"])
    ds = load_dataset(data, pixel_size_nm=pixel_size_nm)
    stems = ds.splits.get(split)
    if not stems:
        raise TemtoolError(
            f"--split {split}: empty or missing in {ds.path}; splits here: "
            + ", ".join(f"{k} ({len(v)})" for k, v in ds.splits.items())
        )
    rows = []
    for stem in stems:
        img, mask = ds.images[stem], ds.masks[stem]
        prob = predict_proba(model, img[None, ..., None], arch.pool_product)[0]
        net = binary_scores_np(mask, prob > 0.5)
        net["soft_dice"] = dice_np(mask, prob)
        base = binary_scores_np(mask, otsu_segment(img))
        base["soft_dice"] = base["dice"]
        rows.append({"image": stem, "model": net, "otsu": base})
    summary = {
        who: {m: float(np.mean([r[who][m] for r in rows])) for m in METRICS} for who in ("model", "otsu")
    }
    for who in ("model", "otsu"):
        summary[who]["dice_std"] = float(np.std([r[who]["dice"] for r in rows]))
    return {
        "model": meta["path"],
        "data": str(ds.path),
        "split": split,
        "n_images": len(rows),
        "pixel_size_nm": ds.pixel_size_nm,
        "mean": summary,
        "per_image": rows,
    }
