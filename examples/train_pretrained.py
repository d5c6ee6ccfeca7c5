"""Rebuild the models shipped inside temtool (temtool/pretrained/), reproducibly.

``standard``: bright-field TEM, for real micrographs out of the box. Trained jointly on
domain-randomised simulations (temtool.data.randomise: particle sizes 8-64 px, doses from 2 to
3,000 counts per pixel, pixel sizes 0.1-2 nm/px, defocus, carbon thickness and texture,
gradients, blur, shapes from triangles to rods, sparse to crowded fields with touching and
overlapping aggregates, and a fifth of them jammed fields of particles of 20 px and more,
40-65% of the field, stacked where they overlap) and on the real CC-BY
micrographs of ../shared/data/msa-seg-track-train, *except* the ones copied to examples/data/,
which stay unseen: they are the held-out real test set. The architecture is chosen by
temtool's own tuner (a short grid over depth and filters on the same data); the shipped build
of 2026-12-01 (the defaults below, 1,187 s joint stage + 138 s fine-tune on 2 cores) passed
the tuner's earlier choice, ``--arch 3 8``, to skip that step. The model is
scaled by particle size, not pixel size (``particle_diameter_px`` in its bundle), so
`temtool segment` works on micrographs without a calibration.

``hrtem``: HRTEM of 5 nm Au at the study's 0.02152 nm/px, the calibrated simulator 2.0 (the
`sim:hrtem` recipe: 256x256 crops, 400 of them here). Depth 3, pools 2,2,2, filters 4: the
network with the best validation Dice on `sim:hrtem` in the Figure 2 rerun
(examples/figures/rf_study.csv, rf_study_hrtem_d4.csv).

    python examples/train_pretrained.py --only hrtem

    python examples/train_pretrained.py --only standard [--n-sim 1600] [--n-crowded 400] [--arch 3 8]

Deterministic for a given seed on one backend and machine. Prints what it measured: the test
Dice on held-out simulations and on the held-out real micrographs beside Gaussian + Otsu with
its smoothing chosen on the training micrographs.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.dataset import BUILTIN, load_dataset, write_simulated_dataset  # noqa: E402
from temtool.data.io import read_image, read_mask, write_png, write_tiff  # noqa: E402
from temtool.data.randomise import CROWDED, RANGES, randomised_batch  # noqa: E402
from temtool.image.resample import resample  # noqa: E402
from temtool.inference.classical import otsu_segment  # noqa: E402
from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.architecture import Architecture  # noqa: E402
from temtool.study.baselines import best_otsu_sigma  # noqa: E402
from temtool.study.metrics import binary_scores_np  # noqa: E402
from temtool.study.train import TrainConfig, fit, save_training, train  # noqa: E402

OUT = HERE.parent / "temtool" / "pretrained"
REAL = HERE.parent.parent / "shared" / "data" / "msa-seg-track-train"
HELD_OUT = HERE / "data" / "real-tem"  # never trained on
DIAMETER_RANGE_PX = (10.0, 96.0)  # particle sizes (px) the standard model was trained on
PATCH = 128


def real_pairs(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    imgs = sorted((folder / "images").glob("*.png"))
    out = {}
    for p in imgs:
        mask = folder / "labels" / p.name.replace("image_", "label_")
        out[p.stem] = (read_image(p).data, read_mask(mask, channel=0))
    return out


def real_patches(img: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patches at native scale, and at half scale (particles of 10-45 px instead of 20-90)."""
    out = []
    for y in range(0, img.shape[0] - PATCH + 1, PATCH):
        for x in range(0, img.shape[1] - PATCH + 1, PATCH):
            out.append((img[y : y + PATCH, x : x + PATCH], mask[y : y + PATCH, x : x + PATCH]))
    h, w = img.shape[0] // 2, img.shape[1] // 2
    small = resample(img, (h, w))
    small_m = (resample(mask.astype(np.float32), (h, w)) > 0.5).astype(np.uint8)
    for y in range(0, h - PATCH + 1, PATCH):
        for x in range(0, w - PATCH + 1, PATCH):
            out.append((small[y : y + PATCH, x : x + PATCH], small_m[y : y + PATCH, x : x + PATCH]))
    return out


def build_standard_dataset(
    root: Path,
    n_sim: int,
    seed: int,
    real_copies: int,
    val_names: list[str] | None = None,
    n_crowded: int = 0,
) -> dict:
    """Domain-randomised simulations plus the real training micrographs, one dataset folder;
    ``n_crowded`` more simulations of jammed fields (`randomised_batch(crowded=True)`: the
    plain recipe's fields are rarely over a third particle) for training and validation only,
    so the test split stays the plain recipe's."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    splits = {"train": [], "val": [], "test": []}
    n_val, n_test = max(20, n_sim // 20), max(40, n_sim // 10)

    def add(stem: str, image: np.ndarray, mask: np.ndarray, split: str) -> None:
        write_tiff(root / "images" / f"{stem}.tif", image)
        write_png(root / "masks" / f"{stem}.png", mask)
        splits[split].append(stem)

    t0 = time.perf_counter()
    for i, sim in enumerate(randomised_batch(n_sim, PATCH, seed=seed, workers=2)):
        add(
            f"sim_{i:05d}",
            sim.image,
            sim.mask,
            "test" if i < n_test else "val" if i < n_test + n_val else "train",
        )
    crowded = (
        randomised_batch(n_crowded, PATCH, seed=seed + 1000, workers=2, crowded=True) if n_crowded else []
    )
    for i, sim in enumerate(crowded):
        add(f"sim_crowded_{i:05d}", sim.image, sim.mask, "val" if i < n_crowded // 20 else "train")
    print(f"simulated {n_sim} + {n_crowded} crowded randomised images in {time.perf_counter() - t0:.0f} s")
    held = {p.stem for p in (HELD_OUT / "images").glob("*.png")}
    real = {k: v for k, v in real_pairs(REAL).items() if k not in held}
    names = sorted(real, key=lambda s: int(s.split("_")[-1]))
    if val_names is None:
        val_names = np.random.default_rng(seed).choice(names, size=2, replace=False).tolist()
    val_names = set(val_names)
    for name in names:
        split = "val" if name in val_names else "train"
        copies = 1 if split == "val" else real_copies
        for j, (im, m) in enumerate(real_patches(*real[name])):
            for c in range(copies):
                add(f"real_{name}_{j}_{c}", im, m, split)
    (root / "dataset.json").write_text(json.dumps({"regime": "standard", "splits": splits}, indent=1))
    return {
        "real_train": sorted(set(names) - val_names),
        "real_val": sorted(val_names),
        "real_test_held_out": sorted(held),
        "n_sim": n_sim,
        "n_sim_crowded": n_crowded,
    }


def tune_architecture(root: Path, epochs: int) -> Architecture:
    """temtool's own tuner over depth and filters (pools of 2), a short budget."""
    from temtool.study.tune import SearchSpace, TuneConfig, tune

    cfg = TuneConfig(
        data=str(root),
        tuner="grid",
        project="standard-arch",
        directory=str(root.parent / "tuner"),
        space=SearchSpace(depths=(2, 3), pools=(2,), base_filters=(4, 8)),
        train=TrainConfig(epochs=epochs, batch_size=16, lr=2e-3, patience=epochs),
    )
    res = tune(
        cfg, on_trial=lambda r: print(f"  tune: {r['depth']} {r['filters']} {r['val_hard_dice_mean']:.3f}")
    )
    best = res["trials"][0]
    print(
        f"tuner chose depth {best['depth']}, filters {best['filters']}",
        f"(val Dice {best['val_hard_dice_mean']:.3f})",
    )
    return Architecture(depth=best["depth"], pools=tuple(best["pools"]), filters=tuple(best["filters"]))


def held_out_real_scores(bundle: Path, train_names: list[str]) -> dict:
    """Dice and particle counts of the model and of Gaussian + Otsu (sigma chosen on the
    training micrographs, in px: they have no calibration) on the held-out micrographs."""
    from temtool.inference.measure import PostProcessing, measure_particles

    seg = Segmenter.from_bundle(bundle)
    train = {k: v for k, v in real_pairs(REAL).items() if k in train_names}
    sigma = best_otsu_sigma([v[0] for v in train.values()], [v[1] for v in train.values()])
    rows = []
    post = PostProcessing()
    for name, (img, mask) in sorted(real_pairs(HELD_OUT).items()):
        r = seg.probability(img)
        pred, _ = post.apply(r.prob)
        _, parts = measure_particles(pred, None, min_area_px=1)
        _, truth = measure_particles(mask, None, min_area_px=1)
        base = otsu_segment(img, sigma)
        rows.append(
            {
                "image": name,
                "dice": binary_scores_np(mask, pred)["dice"],
                "otsu_dice": binary_scores_np(mask, base)["dice"],
                "particles": len(parts),
                "particles_true": len(truth),
                "notes": r.notes,
            }
        )
    return {
        "otsu_sigma_px": sigma,
        "dice_mean": float(np.mean([r["dice"] for r in rows])),
        "otsu_dice_mean": float(np.mean([r["otsu_dice"] for r in rows])),
        "per_image": rows,
    }


def _epoch_line(e, logs, ips):
    print(
        f"  epoch {e + 1}: loss {logs.get('loss', 0):.4f} val Dice {logs.get('val_hard_dice', 0):.3f} "
        f"({ips:.0f} img/s)",
        flush=True,
    )


def build_finetune_dataset(
    root: Path, n_sim: int, seed: int, val_names: list[str], real_copies: int = 1, n_crowded: int = 0
) -> None:
    """The real training micrographs with a smaller draw of simulations (so the simulated
    variety stays in view); validation on the real validation micrographs only."""
    info = build_standard_dataset(root, n_sim, seed, real_copies, val_names, n_crowded)
    meta = json.loads((root / "dataset.json").read_text())
    splits = meta["splits"]
    sim_val = [s for s in splits["val"] if s.startswith("sim_")]
    splits["train"] += sim_val + splits["test"]  # simulations only train here
    splits["val"] = [s for s in splits["val"] if not s.startswith("sim_")]
    splits["test"] = []
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return info


def train_standard(args) -> None:
    from temtool.model.bundle import load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "standard"
        info = build_standard_dataset(root, args.n_sim, args.seed, args.real_copies, n_crowded=args.n_crowded)
        ds = load_dataset(root)
        if args.start_from:  # the joint stage was run before (its bundle)
            joint = load_bundle(args.start_from)
            arch, joint_model = joint.arch, joint.model
            print(f"joint stage: {args.start_from} ({arch.label()})")
        else:
            if args.arch:
                arch = Architecture.create(depth=int(args.arch[0]), pool=2, filters=int(args.arch[1]))
            else:  # the tuner on a smaller draw of the same recipe (other seed), a short budget
                build_standard_dataset(Path(tmp) / "tune", args.tune_n_sim, args.seed + 1, 1)
                arch = tune_architecture(Path(tmp) / "tune", args.tune_epochs)
            cfg = TrainConfig(
                epochs=args.epochs, batch_size=16, lr=2e-3, seed=args.seed, patience=args.patience
            )
            t0 = time.perf_counter()
            res = fit(arch, ds, cfg, on_epoch=_epoch_line)
            dt = time.perf_counter() - t0
            print(f"joint stage: {arch.label()} in {dt:.0f} s, best epoch {res.best_epoch}")
            save_training(Path(tmp) / "joint", res, [res], ds, cfg)
            joint_model = res.model
        # fine-tune stage: real micrographs weigh more, epoch chosen on the real validation ones
        ft_root = Path(tmp) / "finetune"
        build_finetune_dataset(
            ft_root,
            args.finetune_n_sim,
            args.seed + 2,
            info["real_val"],
            args.finetune_real_copies,
            round(args.n_crowded * args.finetune_n_sim / max(1, args.n_sim)),
        )
        ft = load_dataset(ft_root)
        cfg = TrainConfig(
            epochs=args.finetune_epochs, batch_size=16, lr=5e-4, seed=args.seed, patience=args.finetune_epochs
        )
        t0 = time.perf_counter()
        res = fit(arch, ft, cfg, on_epoch=_epoch_line, start_from=joint_model)
        print(f"fine-tune stage: {time.perf_counter() - t0:.0f} s, best epoch {res.best_epoch}")
        # test split of the joint stage's simulations (never trained on), scored like evaluate
        seg = Segmenter(res.model, arch, 128)
        sim_test = [
            binary_scores_np(ds.masks[s], seg.probability(ds.images[s], normalised=True).prob > 0.5)["dice"]
            for s in ds.splits["test"]
        ]
        extra = {
            "particle_diameter_px": list(DIAMETER_RANGE_PX),
            "data": {
                **ds.summary(),
                "path": "domain-randomised simulations + real CC-BY micrographs, then a fine-tune",
                "randomised_ranges": {k: list(v) for k, v in RANGES.items()},
                "crowded_ranges": {k: list(v) for k, v in CROWDED.items()} if args.n_crowded else None,
                **info,
            },
            "pretrained": {"name": "standard", "script": "examples/train_pretrained.py", "args": vars(args)},
        }
        out = save_training(Path(args.out) / "standard", res, [res], ft, cfg, extra=extra)
        real = held_out_real_scores(out, info["real_train"])
        meta = json.loads((out / "bundle.json").read_text())
        meta["metrics"]["test"] = {
            "simulated_dice_mean": float(np.mean(sim_test)),
            "simulated_dice_sd": float(np.std(sim_test)),
            "simulated_n": len(sim_test),
            "real_held_out": real,
        }
        (out / "bundle.json").write_text(json.dumps(meta, indent=2))
        print(json.dumps(meta["metrics"]["test"], indent=1))


def train_hrtem(args) -> None:
    # best on validation in the Figure 2 rerun on sim:hrtem (0.587; depth 4: 0.583, depth 2: <= 0.563)
    arch = Architecture.create(depth=3, pool="2,2,2", filters=4)
    spec = BUILTIN["hrtem"]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_simulated_dataset(
            Path(tmp) / "hrtem",
            regime=spec["regime"],
            n=400,
            size=spec["size"],
            seed=123,
            workers=2,
            overrides=spec["overrides"],
        )
        ds = load_dataset(path)
        cfg = TrainConfig(epochs=40, batch_size=16, lr=2e-3, seed=args.seed, patience=15)  # data: seed 123
        res, runs, _ = train(arch, ds, cfg)  # records the test split's Dice, chosen by nothing
        save_training(
            Path(args.out) / "hrtem",
            res,
            runs,
            ds,
            cfg,
            extra={
                "data": {
                    **ds.summary(),
                    "path": "simulated (sim:hrtem recipe, simulator 2.0, n=400, seed 123)",
                },
                "pretrained": {"name": "hrtem", "script": "examples/train_pretrained.py"},
            },
        )
        print(
            f"hrtem: val hard Dice {res.best_val_hard_dice:.3f} (epoch {res.best_epoch}), "
            f"test {res.test['dice']:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["standard", "hrtem"])
    ap.add_argument("--n-sim", type=int, default=1600)
    ap.add_argument("--n-crowded", type=int, default=400, help="more simulations of jammed fields")
    ap.add_argument("--tune-n-sim", type=int, default=300)
    ap.add_argument("--real-copies", type=int, default=2, help="oversampling of real training patches")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--tune-epochs", type=int, default=2)
    ap.add_argument("--arch", nargs=2, metavar=("DEPTH", "FILTERS"), help="skip the tuner")
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--finetune-n-sim", type=int, default=300)
    ap.add_argument("--finetune-real-copies", type=int, default=1)
    ap.add_argument("--start-from", help="the joint stage's bundle: run the fine-tune stage only")
    ap.add_argument("--seed", type=int, default=0, help="standard: data and training; hrtem: training only")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.only in (None, "standard"):
        if not (REAL / "images").is_dir():
            sys.exit(f"{REAL}: the real micrographs are needed for the standard model")
        train_standard(args)
    if args.only in (None, "hrtem"):
        train_hrtem(args)


if __name__ == "__main__":
    main()
