"""Fine-tune the shipped ``standard`` model on published figures (../shared/data/emps-train,
366 crops from many labs with instance maps; read its SOURCE.md: used to train and validate,
never copied into this repository), cross-validated by article.

For each of the 5 folds of ``benchmarks/results/polarity.json`` (figures grouped by article, the
same folds its out-of-fold polarity decisions use), the shipped ``standard`` network is trained
further on the figures of the other 4 folds and written to ``OUT/foldK``; a tenth of the training
articles is its validation split, which chooses the epoch. ``OUT/folds.json`` maps every figure
to the bundle that never saw it, so that

    python benchmarks/real_data.py --only emps --models-by-figure OUT/folds.json --json RESULT

scores each figure with the model trained without its article (Dice, object F1, AP, count error
beside Gaussian + Otsu with the same polarity decision and post-processing).

What a training figure becomes, as ``segment`` sees a figure: the mean of its channels, its
annotations (scale bars, letters) filled (``mask_annotations``), turned dark-particle side up
by its true polarity (``segment`` inverts figures it decides are bright), standardised as a
whole, resampled so that its typical particle (from the true mask) lies inside the model's
8-64 px (to the middle, 22.6 px, when it does not: what ``segment`` does with its own
estimate), then cut into ``--patches`` random 128-px crops (reflect-padded when smaller).

    python examples/train_emps.py --out runs/emps [--epochs 4] [--patches 3] [--lr 2e-4]
    python examples/train_emps.py --out runs/emps --all   # one model on all 366 figures
    python examples/train_emps.py --out runs/emps_boundary --boundary   # instance-aware

``--boundary`` trains the instance-aware version of the start model (a third class for each
particle's inner boundary, from the figures' instance maps, resampled by nearest neighbour;
``temtool.image.labels.boundary_classes``), starting from the 2-class weights
(``temtool.model.architecture.copy_weights``: the particle map starts unchanged).

Prints each fold's validation Dice and time.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from temtool.backend import start_backend  # noqa: E402

start_backend()

from fit_polarity import folds_by_group  # noqa: E402

from temtool.data.dataset import Dataset  # noqa: E402
from temtool.data.io import read_image  # noqa: E402
from temtool.image.labels import boundary_classes  # noqa: E402
from temtool.image.normalise import standardize  # noqa: E402
from temtool.image.resample import resample  # noqa: E402
from temtool.inference.annotations import mask_annotations  # noqa: E402
from temtool.inference.measure import typical_diameter_px  # noqa: E402
from temtool.inference.polarity import invert  # noqa: E402
from temtool.model.bundle import load_bundle  # noqa: E402
from temtool.model.registry import find_bundle  # noqa: E402
from temtool.study.train import TrainConfig, fit, save_training  # noqa: E402

EMPS = ROOT.parent / "shared" / "data" / "emps-train"
PATCH_PX = 128


def nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label image resampled to ``shape`` by nearest neighbour (ids kept, none invented)."""
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1)
    return labels[rows.astype(int)][:, cols.astype(int)]


def prepared(name: str, truth_polarity: str, diameter_range_px: tuple[float, float]):
    """The figure as the model should see it (see module doc): (image, instance map, resampling
    factor)."""
    image = read_image(EMPS / "images" / name).data
    instances = read_image(EMPS / "instances" / name).data.astype(np.int32)
    mask = instances > 0
    filled, _ = mask_annotations(image)
    x = standardize(invert(filled) if truth_polarity == "bright" else filled)
    lo, hi = diameter_range_px
    d = typical_diameter_px(mask)
    factor = 1.0 if d is None or lo <= d <= hi else float(np.sqrt(lo * hi)) / d
    if factor != 1.0:
        shape = (max(8, round(x.shape[0] * factor)), max(8, round(x.shape[1] * factor)))
        x = resample(x, shape)
        instances = nearest(instances, shape)
    return x.astype(np.float32), instances, factor


def crops(x: np.ndarray, m: np.ndarray, n: int, rng: np.random.Generator):
    """``n`` random PATCH_PX crops (reflect-padded to PATCH_PX first where smaller)."""
    pad = [(0, max(0, PATCH_PX - s)) for s in x.shape]
    if any(p[1] for p in pad):
        x, m = np.pad(x, pad, mode="reflect"), np.pad(m, pad, mode="reflect")
    out = []
    for _ in range(n):
        i = int(rng.integers(0, x.shape[0] - PATCH_PX + 1))
        j = int(rng.integers(0, x.shape[1] - PATCH_PX + 1))
        out.append((x[i : i + PATCH_PX, j : j + PATCH_PX], m[i : i + PATCH_PX, j : j + PATCH_PX]))
    return out


def dataset(names, val_names, figures, patches: int, seed: int, boundary: bool) -> Dataset:
    rng = np.random.default_rng(seed)
    images, masks, classes, splits = {}, {}, {}, {"train": [], "val": []}
    for split, group in (("train", names), ("val", val_names)):
        for n in group:
            x, inst, _ = figures[n]
            for k, (xc, ic) in enumerate(crops(x, inst, patches, rng)):
                stem = f"{Path(n).stem}_{k}"
                images[stem], masks[stem] = xc, (ic > 0).astype(np.uint8)
                if boundary:
                    classes[stem] = boundary_classes(ic)
                splits[split].append(stem)
    return Dataset(
        path=EMPS,
        pixel_size_nm=None,
        regime="standard",
        splits=splits,
        images=images,
        masks=masks,
        targets="boundary" if boundary else "mask",
        boundary=classes,
        instances_from="instances/" if boundary else None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the fold bundles and folds.json")
    ap.add_argument("--start", default="standard", help="the bundle to fine-tune")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--patches", type=int, default=3, help="random 128-px crops per figure")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--folds", default=None, help="comma-separated folds to train (default: all)")
    ap.add_argument("--all", action="store_true", help="one model on every figure (no held-out fold)")
    ap.add_argument("--boundary", action="store_true", help="train the instance-aware (3-class) version")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    commit = commit.stdout.strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = load_bundle(find_bundle(args.start))
    pol = json.loads((ROOT / "benchmarks" / "results" / "polarity.json").read_text())["out_of_fold"]
    doi = {r["filename"]: r["doi"] for r in csv.DictReader(open(EMPS / "sources.csv"))}
    names = sorted(pol)
    folds = folds_by_group([doi[n] for n in names])
    t0 = time.perf_counter()
    figures = {n: prepared(n, pol[n]["truth"], start.diameter_range_px) for n in names}
    print(f"{len(names)} figures prepared in {time.perf_counter() - t0:.0f} s", flush=True)

    runs = [("all", names)] if args.all else []
    wanted = range(folds.max() + 1) if args.folds is None else [int(f) for f in args.folds.split(",")]
    runs += [(f"fold{k}", [n for n, f in zip(names, folds) if f != k]) for k in ([] if args.all else wanted)]
    manifest_path = out / "folds.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    arch = replace(start.arch, n_classes=3) if args.boundary else start.arch
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.epochs)
    for label, train_names in runs:
        # a tenth of the training articles validates (chooses the epoch)
        inner = folds_by_group([doi[n] for n in train_names], k=10)
        val = [n for n, f in zip(train_names, inner) if f == 0]
        tr = [n for n, f in zip(train_names, inner) if f != 0]
        ds = dataset(tr, val, figures, args.patches, seed=len(manifest), boundary=args.boundary)
        t0 = time.perf_counter()
        run = fit(arch, ds, cfg, start_from=start.model)  # its weights are read, not changed
        extra = {
            "particle_diameter_px": list(start.diameter_range_px),
            "emps_finetune": {
                "command": "python examples/train_emps.py " + " ".join(sys.argv[1:]),
                "commit": commit,
                "start": str(args.start),
                "held_out": label,
                "train_figures": len(tr),
                "val_figures": len(val),
                "patches_per_figure": args.patches,
                "patch_px": PATCH_PX,
                "boundary": args.boundary,
            },
        }
        path = save_training(out / label, run, [run], ds, cfg, extra=extra)
        seconds = time.perf_counter() - t0
        print(
            f"{label}: {len(tr)} train / {len(val)} val figures; val hard Dice {run.best_val_hard_dice:.3f} "
            f"(epoch {run.best_epoch} of {run.epochs_run}); {seconds:.0f} s",
            flush=True,
        )
        if label != "all":
            k = int(label[4:])
            manifest.update({n: str(path) for n, f in zip(names, folds) if f == k})
            manifest_path.write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
