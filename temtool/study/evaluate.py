"""Scores of a trained model on a dataset split, next to the classical baselines tuned the way a
network is (:mod:`temtool.study.protocol`): Gaussian + Otsu with its smoothing chosen on the
validation split (reported in px and nm) and, for HRTEM, the Fourier filter; where the dataset
has instance maps, object scores of both after the same post-processing; on simulated data
also Dice per particle class."""

from __future__ import annotations

import numpy as np

from temtool.data.dataset import load_dataset
from temtool.errors import ParameterError
from temtool.inference.classical import otsu_segment
from temtool.inference.segmenter import Segmenter
from temtool.model.bundle import load_bundle
from temtool.study import protocol
from temtool.study.metrics import binary_scores_np, dice_np

METRICS = ("soft_dice", "dice", "iou", "precision", "recall")


def evaluate(model_path, data: str, split: str = "test", pixel_size_nm: float | None = None) -> dict:
    """Per-image and mean soft/hard Dice, IoU, precision, recall of the model and the
    Gaussian + Otsu baseline on one split of a dataset.

    The model sees the images as in training (the dataset's normalisation) and at its own
    pixel size: images are resampled to the bundle's pixel size and back when they differ.
    """

    seg = Segmenter.from_bundle(load_bundle(model_path))
    return evaluate_segmenter(seg, load_dataset(data, pixel_size_nm=pixel_size_nm), split)


def evaluate_segmenter(
    seg: Segmenter, ds, split: str = "test", components_as_instances: bool = False
) -> dict:
    """:func:`evaluate` of a segmenter (a bundle's, or a model in memory) on a loaded dataset.
    ``components_as_instances``: where the dataset has no ``instances/``, score particles
    against the connected components of its masks (``instance_truth`` in the result says which)."""

    stems = ds.splits.get(split)
    if not stems:
        raise ParameterError(
            "split",
            f"{split!r} is empty or missing in {ds.path}; splits here: "
            + ", ".join(f"{k} ({len(v)})" for k, v in ds.splits.items()),
        )
    tuned = protocol.baselines(ds, split, objects=False)  # Otsu's objects are scored below, per image
    sigma, tune_split = tuned["otsu"]["sigma_px"], tuned["otsu"]["chosen_on"]
    rows, notes, preds = [], set(), []
    objects = {"model": [], "otsu": []}
    for stem in stems:
        img, mask = ds.images[stem], ds.masks[stem]
        result = seg.probability(img, ds.pixel_size_nm, normalised=True)
        prob = result.prob
        notes.update(result.notes)
        preds.append(prob > 0.5)
        net = binary_scores_np(mask, prob > 0.5)
        net["soft_dice"] = dice_np(mask, prob)
        base = dict(tuned["otsu"]["per_image_scores"][stem])  # its masks, made once
        base["soft_dice"] = base["dice"]
        row = {"image": stem, "model": net, "otsu": base}
        truth = protocol.instance_truth(ds, stem, components=components_as_instances)
        if truth is not None:  # the same post-processing and splitting for both
            row["model_objects"] = protocol.object_scores(truth, prob, ds.pixel_size_nm, result.boundary)
            otsu_mask = otsu_segment(img, sigma)  # the baseline's mask (Otsu is affine-invariant)
            row["otsu_objects"] = protocol.object_scores(truth, otsu_mask, ds.pixel_size_nm)
            for who in objects:
                objects[who].append(row[f"{who}_objects"])
        rows.append(row)
    summary = {
        who: {m: float(np.mean([r[who][m] for r in rows])) for m in METRICS} for who in ("model", "otsu")
    }
    for who in ("model", "otsu"):
        summary[who]["dice_std"] = float(np.std([r[who]["dice"] for r in rows]))
    object_means = {who: protocol.object_means(v) for who, v in objects.items()} if objects["model"] else None
    # the network against the threshold, image by image: a paired bootstrap interval
    paired = {
        "dice": protocol.paired_difference(
            {r["image"]: r["model"]["dice"] for r in rows}, {r["image"]: r["otsu"]["dice"] for r in rows}
        )
    }
    if objects["model"]:
        paired["object_f1"] = protocol.paired_difference(
            {r["image"]: r["model_objects"]["f1"] for r in rows},
            {r["image"]: r["otsu_objects"]["f1"] for r in rows},
        )
    by_class = {}
    classes = protocol.particle_classes(ds, stems)
    if classes:
        by_class["model"] = protocol.class_dice(
            [ds.masks[s] for s in stems], preds, [classes[s] for s in stems]
        )
    for name, b in tuned.items():
        if "dice_by_class" in b:
            by_class[name] = b["dice_by_class"]
    fourier = tuned.get("fourier")
    has_instances = any((ds.path / "instances").glob("*")) if ds.path else False
    return {
        "model": seg.name,
        "data": str(ds.path),
        "split": split,
        "n_images": len(rows),
        "pixel_size_nm": ds.pixel_size_nm,
        "otsu_sigma_px": sigma,
        "otsu_sigma_nm": sigma * ds.pixel_size_nm if ds.pixel_size_nm else None,
        "otsu_sigma_chosen_on": tune_split,
        "fourier": None
        if fourier is None
        else {"dice": fourier["dice"], "smooth_nm": fourier["smooth_nm"], "chosen_on": fourier["chosen_on"]},
        "dice_by_class": by_class,
        "notes": sorted(notes),
        "mean": summary,
        "objects": object_means,
        "instance_truth": None
        if object_means is None
        else ("instances/" if has_instances else "connected components of the masks"),
        "model_minus_otsu": paired,
        "per_image": rows,
    }
