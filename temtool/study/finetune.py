"""Fine-tuning a trained model (a shipped one or any bundle) on a few labelled micrographs of
the user's own: ``temtool train --start-from standard|hrtem|BUNDLE``.

The network keeps the starting bundle's architecture, normalisation and scale convention; its
weights are trained further on the dataset's training split with the schedule for small data
(:data:`FINETUNE_DEFAULTS`: a lower learning rate, early stopping on the validation split's
hard Dice). Before and after, the test split is scored the way ``evaluate`` scores it
(:func:`temtool.study.evaluate.evaluate_segmenter`): Dice and object F1 of the starting
model, of the fine-tuned one and of Gaussian + Otsu tuned on validation, with paired
bootstrap intervals, so the bundle says whether fine-tuning paid.

Scale: a model matched by particle size (``particle_diameter_px``, as ``standard``) is trained
on patches whose typical particle lies inside that range (resampled to its middle when it does
not); a model matched by pixel size (``hrtem``) on patches resampled to its pixel size, which
the dataset must then know.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from temtool.data.dataset import Dataset, dataset_name, load_dataset
from temtool.data.io import check_writable
from temtool.data.prepare import find_pairs, prepare
from temtool.errors import ArchitectureError, TemtoolError
from temtool.image.resample import pixel_size_scale, resample
from temtool.inference.measure import typical_diameter_px
from temtool.inference.segmenter import Segmenter
from temtool.model.bundle import Bundle, load_bundle
from temtool.model.registry import find_bundle, remember_last_model, shipped_models
from temtool.study import protocol
from temtool.study.evaluate import evaluate_segmenter
from temtool.study.train import TrainConfig, TrainResult, baseline_summary, save_training, targets_for, train

__all__ = [
    "FINETUNE_DEFAULTS",
    "SCRATCH_DEFAULTS",
    "resolve_start",
    "finetune_scale",
    "finetune",
    "finetune_and_save",
    "finetune_on_pairs",
]

# the schedule for a handful of micrographs: a tenth of the shipped model's learning rate,
# small batches, early stopping on validation
FINETUNE_DEFAULTS = {"lr": 5e-5, "epochs": 60, "patience": 10, "batch_size": 8}
SCRATCH_DEFAULTS = {k: getattr(TrainConfig(), k) for k in FINETUNE_DEFAULTS}  # training from scratch


def resolve_start(start: str | os.PathLike) -> Bundle:
    """The bundle to start from: a shipped model's name or a bundle folder, checked for what
    fine-tuning needs (a Keras model, a known normalisation: :func:`load_bundle`), or a
    one-line error."""
    path = find_bundle(start)
    if path is None:
        raise TemtoolError(
            f"--start-from: {start} is neither a shipped model ({', '.join(shipped_models())}) nor a "
            "bundle folder (one with bundle.json, written by temtool train or tune)"
        )
    return load_bundle(path)  # refuses a bundle without model.keras, an unknown normalisation


def finetune_scale(bundle: Bundle, ds: Dataset) -> tuple[float, str | None]:
    """The factor that brings the dataset's training patches to the bundle's scale, and a note."""
    if bundle.diameter_range_px:
        lo, hi = bundle.diameter_range_px
        x, y = ds.arrays("train")
        d = typical_diameter_px(np.concatenate([np.asarray(m, bool) for m in y], axis=0))
        if d is None:
            raise TemtoolError(f"{ds.path}: the training masks hold no particles to fine-tune on")
        if lo <= d <= hi:
            return 1.0, None
        f = float(np.sqrt(lo * hi)) / d
        note = f"particles ~{d:.0f} px across: patches resampled x{f:.3g} to the model's {lo:g}-{hi:g} px"
        return f, note
    if bundle.pixel_size_nm:
        if not ds.pixel_size_nm:
            raise TemtoolError(
                f"--start-from: {bundle.path} works at {bundle.pixel_size_nm:g} nm/px and {ds.path} "
                "records no pixel size; pass --pixel-size"
            )
        f = pixel_size_scale(ds.pixel_size_nm, bundle.pixel_size_nm)
        if f != 1.0:
            return f, f"patches resampled x{f:.3g} to the model's {bundle.pixel_size_nm:g} nm/px"
    return 1.0, None


def _rescaled(ds: Dataset, factor: float, multiple: int) -> Dataset:
    """The dataset with its train and val patches resampled by ``factor`` (sides rounded to a
    multiple of the pools); the test split stays as it is (inference rescales it itself)."""
    if ds.lazy or ds.targets == "boundary":
        why = (
            "too large to resample in memory"
            if ds.lazy
            else "an instance-aware model's targets are not resampled"
        )
        raise TemtoolError(f"{ds.path}: {why}; prepare it at the model's scale instead")
    images, masks = dict(ds.images), dict(ds.masks)
    for split in ("train", "val"):
        for s in ds.splits.get(split, []):
            h, w = ds.images[s].shape
            shape = tuple(max(multiple, round(n * factor / multiple) * multiple) for n in (h, w))
            images[s] = resample(ds.images[s], shape).astype(np.float32)
            masks[s] = (resample(ds.masks[s].astype(np.float32), shape) > 0.5).astype(np.uint8)
    px = ds.pixel_size_nm / factor if ds.pixel_size_nm else None
    return dataclasses.replace(ds, images=images, masks=masks, pixel_size_nm=px)


def _scores(seg: Segmenter, ds: Dataset) -> dict:
    """Test Dice and object F1 of a segmenter and of the tuned threshold (see module doc)."""
    r = evaluate_segmenter(seg, ds, "test", components_as_instances=True)
    objects = r["objects"] or {}
    return {
        "dice": r["mean"]["model"]["dice"],
        "object_f1": objects.get("model", {}).get("f1"),
        "otsu_dice": r["mean"]["otsu"]["dice"],
        "otsu_object_f1": objects.get("otsu", {}).get("f1"),
        "minus_otsu": r["model_minus_otsu"],
        "dice_per_image": {row["image"]: row["model"]["dice"] for row in r["per_image"]},
        "f1_per_image": {row["image"]: row["model_objects"]["f1"] for row in r["per_image"]},
        "otsu_sigma_px": r["otsu_sigma_px"],
        "instance_truth": r["instance_truth"],
    }


def finetune(
    start: str | os.PathLike,
    data: str | Dataset,
    cfg: TrainConfig,
    repeats: int = 1,
    pixel_size_nm: float | None = None,
    on_epoch: Callable | None = None,
    on_repeat: Callable | None = None,
    boundary: bool = False,
) -> tuple[TrainResult, list[TrainResult], Dataset, dict]:
    """Fine-tune ``start`` on ``data``'s training split, ``repeats`` seeds, the kept one chosen on
    validation. Returns the best run, all runs, the dataset and the record of the fine-tuning
    (starting model, scale, test scores before and after). ``boundary``: train the
    instance-aware (3-class) version of a 2-class start, its particle map starting unchanged
    (:func:`temtool.model.architecture.copy_weights`)."""
    bundle = resolve_start(start)
    arch = dataclasses.replace(bundle.arch, n_classes=3) if boundary else bundle.arch
    ds = (
        data
        if isinstance(data, Dataset)
        else load_dataset(data, pixel_size_nm=pixel_size_nm, targets=targets_for(arch))
    )
    for split in ("train", "val", "test"):
        if not ds.splits.get(split):
            raise TemtoolError(
                f"{ds.path}: fine-tuning needs a {split} split (it stops early on val and reports "
                "test before and after); prepare with e.g. --split 50,25,25"
            )
    factor, note = finetune_scale(bundle, ds)
    trained_on = _rescaled(ds, factor, bundle.arch.pool_product) if factor != 1.0 else ds
    h, w = np.asarray(trained_on.arrays("train")[0][0]).shape[:2]
    try:
        bundle.arch.check_input_size(h, w)
    except ArchitectureError as e:
        raise TemtoolError(f"--start-from: {bundle.path} cannot be fine-tuned on {ds.path}: {e}") from None

    def segmenter(model=None) -> Segmenter:
        if model is None:
            return Segmenter.from_bundle(bundle, runtime="keras", batch_size=cfg.batch_size)
        return Segmenter.for_model(
            model,
            arch,
            bundle.pixel_size_nm,
            diameter_range_px=bundle.diameter_range_px,
            batch_size=cfg.batch_size,
            runtime="keras",
        )

    before = _scores(segmenter(), ds)
    best, runs, _ = train(
        arch,
        trained_on,
        cfg,
        repeats,
        on_epoch=on_epoch,
        on_repeat=on_repeat,
        start_from=bundle.model,
        test_data=ds,
        segmenter=segmenter,
    )
    after = _scores(segmenter(best.model), ds)
    paired = {
        "dice": protocol.paired_difference(after.pop("dice_per_image"), before.pop("dice_per_image")),
        "object_f1": protocol.paired_difference(after.pop("f1_per_image"), before.pop("f1_per_image")),
    }
    record = {
        "start_from": str(start),
        "start_path": str(bundle.path),
        "boundary_added": arch.instance_aware and not bundle.arch.instance_aware,
        "start_val_hard_dice": bundle.metadata.get("metrics", {}).get("val_hard_dice"),
        "scale": factor,
        "scale_note": note,
        "before": before,
        "after": after,
        "after_minus_before": paired,
    }
    return best, runs, ds, record


def finetune_and_save(
    start: str | os.PathLike,
    data: str | Dataset,
    cfg: TrainConfig,
    out: str | os.PathLike | None = None,
    **kw,
) -> tuple[dict, list[TrainResult]]:
    """``temtool train --start-from``: :func:`finetune` (``kw``: repeats, pixel_size_nm,
    on_epoch, on_repeat), then the bundle (default ``models/DATA-from-START``; the starting
    bundle's scale convention, the fine-tuning record under ``finetune``), remembered as the
    latest model."""
    if out is None:
        name = data.path if isinstance(data, Dataset) else data
        out = Path("models") / f"{dataset_name(name)}-from-{Path(str(start)).name}"
    out = Path(out)
    check_writable(out)
    resolve_start(start)  # a bad --start-from is refused before any work
    best, runs, ds, record = finetune(start, data, cfg, **kw)
    bundle = load_bundle(record["start_path"])
    extra = {"finetune": record}
    if bundle.diameter_range_px:
        extra["particle_diameter_px"] = list(bundle.diameter_range_px)
    baselines = baseline_summary(protocol.baselines(ds, "test"))
    trained_px = ds.pixel_size_nm / record["scale"] if ds.pixel_size_nm else None
    ds_for_bundle = dataclasses.replace(
        ds, regime=ds.regime or bundle.regime, pixel_size_nm=bundle.pixel_size_nm or trained_px
    )
    path = save_training(out, best, runs, ds_for_bundle, cfg, extra=extra, baselines=baselines)
    remember_last_model(path)
    return {**load_bundle(path).metadata, "path": str(path)}, runs


def finetune_on_pairs(
    start: str | os.PathLike,
    raw: str | os.PathLike,
    out: str | os.PathLike,
    cfg: TrainConfig | None = None,
    **kw,
) -> dict:
    """Fine-tune ``start`` on micrograph/mask pairs (``RAW/images`` + ``RAW/masks``, as
    :func:`temtool.data.prepare.add_pair` keeps corrections): prepared into ``RAW-prepared``
    (patches of up to 256 px, every patch kept, split by micrograph so that at least one
    micrograph each is validation and test), then :func:`finetune_and_save` into ``out``
    (``cfg``: default the small-data schedule, :data:`FINETUNE_DEFAULTS`). Returns the new
    bundle's metadata, with the test scores before and after under ``finetune``."""
    raw = Path(raw)
    pairs = find_pairs(raw)
    if len(pairs) < 3:
        raise TemtoolError(
            f"{raw}: {len(pairs)} corrected micrograph(s); fine-tuning needs at least 3 (one each "
            "to train on, to stop early on and to score before and after)"
        )
    side = min(min(p.image.shape) for p in pairs)
    patch = min(256, side // 8 * 8)
    prepared = raw.with_name(f"{raw.name}-prepared")
    n = len(pairs)
    prepare(raw, prepared, patch=patch, min_particle_px=0, split=(1 - 2 / n, 1 / n, 1 / n), overwrite=True)
    cfg = cfg or TrainConfig(**FINETUNE_DEFAULTS)
    meta, _ = finetune_and_save(start, str(prepared), cfg, out=out, **kw)
    return meta
