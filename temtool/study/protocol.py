"""The one evaluation protocol every temtool number follows.

- The epoch (and any setting) is chosen on the **validation** split; the number reported is
  hard Dice on the **test** split, pooled over its images' pixels per image then averaged.
- Over seeds: mean, sample standard deviation and a 95% confidence interval of the mean
  (Student's t), :func:`seed_summary`.
- Network against baseline: the mean per-image difference on the test split with a paired
  bootstrap 95% interval over images and the verdict it gives, :func:`paired_difference`.
- Beside it, the classical baselines tuned the same way (:func:`baselines`): Gaussian + Otsu
  with its smoothing chosen on the validation split (reported in px and nm), and for HRTEM the
  Fourier (Bragg-annulus) filter with its smoothing chosen on validation too.
- Where the dataset has instance maps (``instances/``), object scores (:func:`object_scores`:
  precision, recall, F1 at IoU 0.5, AP over 0.5:0.95, count error, size-distribution
  distance) after ``segment``'s post-processing, for the network and the baseline alike.
- On simulated data, Dice per particle class (``fringed``, ``weak_fringe``, ``off_zone`` for
  HRTEM), which the simulator records (:func:`class_dice`).

Used by ``train`` (bundles), ``tune`` (tables, trial metrics), ``evaluate`` and the examples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from temtool.data.io import read_image
from temtool.inference.classical import fourier_segment, otsu_segment
from temtool.inference.measure import PostProcessing
from temtool.inference.pipeline import particles_of
from temtool.inference.segmenter import Segmenter
from temtool.study.baselines import OTSU_SIGMAS_PX, best_otsu_sigma
from temtool.study.metrics import binary_scores_np, instance_scores

__all__ = [
    "paired_difference",
    "seed_summary",
    "hard_dice",
    "particle_classes",
    "class_dice",
    "score_split",
    "baselines",
    "instance_truth",
    "object_scores",
    "object_means",
    "OBJECT_METRICS",
    "FOURIER_SMOOTH_NM",
]

FOURIER_SMOOTH_NM = (0.25, 0.5, 1.0, 2.0)  # local fringe amplitude smoothing, chosen on val


def paired_difference(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Mean of ``a - b`` over the images both score (dicts of per-image scores), with a 95%
    percentile-bootstrap interval (images resampled, ``seed`` fixed) and the verdict it gives:
    ``above`` or ``below`` when the interval excludes 0, else ``level``. None with fewer than
    two images in common."""
    stems = sorted(set(a) & set(b))
    if len(stems) < 2:
        return None
    d = np.array([a[s] - b[s] for s in stems], float)
    means = d[np.random.default_rng(seed).integers(0, d.size, (n_boot, d.size))].mean(1)
    lo, hi = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    verdict = "above" if lo > 0 else ("below" if hi < 0 else "level")
    return {"mean": float(d.mean()), "ci95": [lo, hi], "n_images": len(stems), "verdict": verdict}


def seed_summary(values: Sequence[float]) -> dict:
    """Mean, sample sd and 95% confidence interval of the mean (Student's t) of per-seed
    scores; with one seed, sd 0 and no interval (``ci95`` None)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    if v.size == 1:
        return {"n": 1, "mean": float(v[0]), "sd": 0.0, "ci95": None}
    from scipy.stats import t

    sd = float(v.std(ddof=1))
    half = float(t.ppf(0.975, v.size - 1) * sd / math.sqrt(v.size))
    m = float(v.mean())
    return {"n": int(v.size), "mean": m, "sd": sd, "ci95": [m - half, m + half]}


def hard_dice(mask_true: np.ndarray, mask_pred: np.ndarray) -> float:
    """Hard Dice of one image, with the smoothing of 1 used by every temtool Dice (the
    training metric, ``evaluate``): 1 when both masks are empty."""

    return float(binary_scores_np(np.asarray(mask_true) > 0, np.asarray(mask_pred) > 0)["dice"])


def particle_classes(ds, stems: Sequence[str]) -> dict[str, dict[str, np.ndarray]] | None:
    """Per image, a boolean map of each particle class, from a simulated dataset's
    dataset.json (particle ``fringe_class``) and instances/; None when the dataset does not
    record classes, or has a single one (standard TEM)."""

    meta_path = ds.path / "dataset.json"
    if not meta_path.is_file() or not (ds.path / "instances").is_dir():
        return None
    try:
        records = {r["stem"]: r for r in json.loads(meta_path.read_text()).get("images", [])}
    except (ValueError, KeyError, TypeError):
        return None
    out: dict[str, dict[str, np.ndarray]] = {}
    names: set[str] = set()
    for stem in stems:
        rec = records.get(stem)
        files = sorted((ds.path / "instances").glob(f"{stem}.*"))
        if rec is None or not files or not all("fringe_class" in p for p in rec.get("particles", [])):
            return None
        inst = np.asarray(read_image(files[0]).data)
        if inst.shape != ds.masks[stem].shape:
            return None
        by_class: dict[str, list[int]] = {}
        for p in rec["particles"]:
            by_class.setdefault(p["fringe_class"], []).append(int(p["id"]))
        out[stem] = {c: np.isin(inst, ids) for c, ids in by_class.items()}
        names |= set(by_class)
    return out if len(names) > 1 else None


def class_dice(
    truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], classes: Sequence[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Dice of each particle class pooled over images: a class's particles against the
    prediction, ignoring the pixels of the other classes' particles (so a class is not
    penalised for the others), background false positives counting against every class."""
    inter: dict[str, float] = {}
    total: dict[str, float] = {}
    for truth, pred, cls in zip(truths, preds, classes):
        pred = np.asarray(pred) > 0
        particle = np.asarray(truth) > 0
        for name, region in cls.items():
            others = particle & ~region
            inter[name] = inter.get(name, 0) + float((pred & region).sum())
            total[name] = total.get(name, 0) + float(region.sum() + (pred & ~others).sum())
    return {n: 2 * inter[n] / total[n] for n in sorted(inter) if total[n] > 0}


def score_split(
    ds, split: str, predict_masks: Callable[[list[str]], list[np.ndarray]], classes: dict | None = None
) -> dict:
    """Hard Dice of predicted masks on one split: mean, per image, per class (simulated);
    ``per_image_scores``: Dice, IoU, precision and recall of each image.
    ``classes``: :func:`particle_classes` of the split when already read (else read here)."""

    stems = ds.splits.get(split) or []
    preds = predict_masks(stems)
    truths = [ds.masks[s] for s in stems]
    scores = [binary_scores_np(t, p) for t, p in zip(truths, preds)]
    per_image = [sc["dice"] for sc in scores]
    out = {"split": split, "n_images": len(stems), "dice": float(np.mean(per_image)) if stems else None}
    out["dice_sd_over_images"] = float(np.std(per_image)) if stems else None
    if classes is None and stems:
        classes = particle_classes(ds, stems)
    if classes:
        out["dice_by_class"] = class_dice(truths, preds, [classes[s] for s in stems])
    out["per_image"] = dict(zip(stems, per_image))
    out["per_image_scores"] = dict(zip(stems, scores))
    return out


def _tuning_split(ds) -> str:
    return "val" if ds.splits.get("val") else "train"


def best_fourier_smooth(ds, stems: Sequence[str]) -> float:
    """The fringe-amplitude smoothing (nm) at which the Fourier baseline scores best."""

    def score(s):
        return np.mean(
            [
                hard_dice(ds.masks[t], fourier_segment(ds.images[t], ds.pixel_size_nm, smooth_nm=s))
                for t in stems
            ]
        )

    return float(max(FOURIER_SMOOTH_NM, key=score))


def instance_truth(ds, stem: str, components: bool = False) -> np.ndarray | None:
    """The instance map of one image of a dataset (its ``instances/`` folder), or None; with
    ``components``, where there is none, the connected components of its mask (touching
    particles then count as one in the truth, for every method scored against it)."""
    files = sorted((ds.path / "instances").glob(f"{stem}.*")) if ds.path else []
    if not files:
        if components:
            return ndimage.label(ds.masks[stem] > 0)[0].astype(np.int64)
        return None
    inst = np.rint(read_image(files[0]).data).astype(np.int64)  # ids, whatever the file's type
    return inst if inst.shape == ds.masks[stem].shape else None


def object_scores(
    truth: np.ndarray,
    prob: np.ndarray,
    pixel_size_nm: float | None = None,
    boundary: np.ndarray | None = None,
) -> dict:
    """:func:`temtool.study.metrics.instance_scores` of a probability map (or a 0/1 mask)
    after ``segment``'s post-processing and particle splitting
    (:func:`temtool.inference.pipeline.particles_of`: an instance-aware network's
    ``boundary`` probability, else the distance watershed), against an instance map: the same
    steps for a network and a baseline."""
    _, _, labels, _ = particles_of(np.asarray(prob, np.float32), pixel_size_nm, PostProcessing(), boundary)
    return instance_scores(truth, labels)


OBJECT_METRICS = ("precision", "recall", "f1", "ap", "size_distance")


def object_means(scores: list[dict]) -> dict:
    """Means of the object scores over images; the count error as the median of its magnitude."""
    out = {
        m: float(np.mean([s[m] for s in scores if s[m] is not None]))
        if any(s[m] is not None for s in scores)
        else None
        for m in OBJECT_METRICS
    }
    errors = [abs(s["count_error"]) for s in scores if s["count_error"] is not None]
    out["median_abs_count_error"] = float(np.median(errors)) if errors else None
    return out


class _ObjectScores:
    """Object scores of a split's images that have instance truth (``instances/``), collected
    as a method's maps are made (so no map is kept): ``add`` each, then ``summary``."""

    def __init__(self, ds):
        self.ds, self.per_image = ds, {}

    def add(self, stem: str, prob: np.ndarray, boundary: np.ndarray | None = None) -> None:
        truth = instance_truth(self.ds, stem)
        if truth is not None:
            self.per_image[stem] = object_scores(truth, prob, self.ds.pixel_size_nm, boundary)

    def summary(self) -> dict:
        """``objects`` (:func:`object_means`), or nothing when no image had instance truth."""
        return {"objects": object_means(list(self.per_image.values()))} if self.per_image else {}


def baselines(
    ds, split: str = "test", fourier: bool | None = None, max_tuning_images: int = 64, objects: bool = True
) -> dict:
    """The classical baselines on ``split``, their settings chosen on the validation split
    (training split if there is none): Gaussian + Otsu (smoothing in px and nm), and the
    Fourier filter (default: for HRTEM with a known pixel size). ``objects``: Otsu's object
    scores where the images have instance maps (False: a caller that scores objects itself)."""
    tune_on = _tuning_split(ds)
    tune_stems = (ds.splits.get(tune_on) or [])[:max_tuning_images]
    images, masks = [ds.images[s] for s in tune_stems], [ds.masks[s] for s in tune_stems]
    sigma = best_otsu_sigma(images, masks, OTSU_SIGMAS_PX)
    px = ds.pixel_size_nm
    stems = ds.splits.get(split) or []
    classes = (particle_classes(ds, stems) if stems else None) or {}  # read once for both baselines
    scored = _ObjectScores(ds)  # the same post-processing and splitting as a network's

    def otsu_masks(stems):
        masks = [otsu_segment(ds.images[s], sigma) for s in stems]
        if objects:
            for s, m in zip(stems, masks):
                scored.add(s, m.astype(np.float32))
        return masks

    otsu = score_split(ds, split, otsu_masks, classes)
    otsu.update(sigma_px=sigma, sigma_nm=sigma * px if px else None, chosen_on=tune_on, **scored.summary())
    out = {"otsu": otsu}
    if fourier is None:
        fourier = ds.regime == "hrtem" and bool(px)
    if fourier and px:
        smooth = best_fourier_smooth(ds, tune_stems)
        four = score_split(
            ds,
            split,
            lambda stems: [fourier_segment(ds.images[s], px, smooth_nm=smooth) for s in stems],
            classes,
        )
        four.update(smooth_nm=smooth, chosen_on=tune_on)
        out["fourier"] = four
    return out


def model_scores(segmenter: Segmenter, ds, split: str = "test") -> dict:
    """:func:`score_split` of a segmenter (probability > 0.5) on a dataset's images as the
    dataset normalised them, through the same tiling, padding and resampling as ``segment``
    and ``evaluate``: the scores bundles record are what those commands would measure; and
    where the images have instance maps, object scores after ``segment``'s post-processing
    and splitting (``objects``, as :func:`baselines` gives Otsu's)."""

    objects = _ObjectScores(ds)

    def predict(stems):
        masks = []
        for s in stems:
            r = segmenter.probability(ds.images[s], ds.pixel_size_nm, normalised=True)
            objects.add(s, r.prob, r.boundary)
            masks.append(r.prob > 0.5)
        return masks

    out = score_split(ds, split, predict)
    out.update(objects.summary())
    return out
