"""Does the instance-aware output part touching particles better than the distance watershed?

Two networks of the shipped standard architecture (depth 3, pools 2,2,2, filters 8) are
trained on the same domain-randomised simulations (temtool.data.randomise: plain fields and
jammed ones, with the simulator's exact instance maps), with the same schedule and seed:

- ``binary``: the study's two classes; ``segment`` parts touching particles by the
  distance-transform watershed;
- ``boundary``: three classes (background, interior, boundary, ``train --boundary``);
  ``segment`` parts them where the network sees boundaries.

Each keeps its epoch by validation Dice. They are then scored on fresh fields drawn from seeds
no training or choice used (plain and jammed, 256x256), beside Gaussian + Otsu (sigma chosen
on the validation split, the same post-processing and watershed). Also reported: the
3-class network's particle map split by the distance watershed, which separates what the
boundary output adds from what the training changed. Object precision, recall and F1 at IoU
0.5, AP over 0.5:0.95, count error, and Dice; paired 95% bootstrap intervals over test fields.

    python examples/instance_head.py [--n-train 600] [--epochs 30] [--n-test 40]

Writes docs/figures/instance_head.json (the command, the commit, the recipe, every field's
scores). CPU: about 30 min on 2 cores with the defaults.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from temtool.backend import start_backend  # noqa: E402

start_backend()

from temtool.data.dataset import load_dataset  # noqa: E402
from temtool.data.io import write_png, write_tiff  # noqa: E402
from temtool.data.randomise import CROWDED, RANGES, randomised_batch  # noqa: E402
from temtool.image.normalise import standardize  # noqa: E402
from temtool.inference.classical import otsu_segment  # noqa: E402
from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.architecture import Architecture  # noqa: E402
from temtool.study.baselines import best_otsu_sigma  # noqa: E402
from temtool.study.metrics import dice_np  # noqa: E402
from temtool.study.protocol import object_scores, paired_difference  # noqa: E402
from temtool.study.train import TrainConfig, fit, targets_for  # noqa: E402

OUT = HERE.parent / "docs" / "figures" / "instance_head.json"
PATCH = 128
TRAIN_SEED, TEST_SEED = 0, 777_000  # the test fields' seeds: used by nothing else here


def write_training_set(root: Path, n: int, seed: int) -> None:
    """``n`` randomised fields, half of them jammed, with images, masks and instance maps;
    a tenth of each kind for validation."""
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    splits = {"train": [], "val": []}
    for kind, crowded in (("plain", False), ("crowded", True)):
        m = n // 2
        for i, sim in enumerate(
            randomised_batch(m, PATCH, seed=seed + 1000 * crowded, workers=2, crowded=crowded)
        ):
            stem = f"{kind}_{i:05d}"
            write_tiff(root / "images" / f"{stem}.tif", sim.image)
            write_png(root / "masks" / f"{stem}.png", sim.mask)
            write_png(root / "instances" / f"{stem}.png", sim.instances.astype(np.uint16))
            splits["val" if i < m // 10 else "train"].append(stem)
    (root / "dataset.json").write_text(json.dumps({"regime": "standard", "splits": splits}))


def test_fields(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for kind, crowded in (("plain", False), ("crowded", True)):
        for i, sim in enumerate(
            randomised_batch(n, 256, seed=TEST_SEED + 1000 * crowded, workers=2, crowded=crowded)
        ):
            out.append((f"{kind}_{i:03d}", sim.image, sim.instances.astype(np.int64)))
    return out


def summarise(per: dict[str, dict]) -> dict:
    keys = ("precision", "recall", "f1", "ap", "abs_count_error", "dice")
    return {k: float(np.mean([v[k] for v in per.values() if v[k] is not None])) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n-test", type=int, default=40, help="fields of each kind (plain, jammed)")
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    t_start = time.perf_counter()
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=2e-3, patience=args.epochs, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_training_set(root, args.n_train, TRAIN_SEED)
        nets = {}
        for name, n_classes in (("binary", 2), ("boundary", 3)):
            arch = Architecture.create(depth=3, pool=2, filters=8, n_classes=n_classes)
            ds = load_dataset(root, targets=targets_for(arch))
            t0 = time.perf_counter()
            res = fit(arch, ds, cfg)
            nets[name] = (arch, res)
            print(
                f"{name}: best epoch {res.best_epoch}/{res.epochs_run}, "
                f"val Dice {res.best_val_hard_dice:.3f}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        val = load_dataset(root)
        stems = val.splits["val"]
        sigma = best_otsu_sigma(
            [val.images[s] for s in stems], [val.masks[s] for s in stems], (0.0, 0.5, 1.0, 2.0, 4.0)
        )
    per = {k: {} for k in ("binary", "boundary", "boundary_particle_map_watershed", "otsu")}
    fields = test_fields(args.n_test)
    for stem, image, truth in fields:
        x = standardize(image)
        results = {}
        for name, (arch, res) in nets.items():
            seg = Segmenter.for_model(res.model, arch, None, runtime="keras")
            results[name] = seg.probability(x, normalised=True)
        otsu = otsu_segment(x, sigma).astype(np.float32)
        mask = (truth > 0).astype(np.uint8)
        for name, prob, boundary in (
            ("binary", results["binary"].prob, None),
            ("boundary", results["boundary"].prob, results["boundary"].boundary),
            ("boundary_particle_map_watershed", results["boundary"].prob, None),
            ("otsu", otsu, None),
        ):
            s = object_scores(truth, prob, None, boundary)
            s["abs_count_error"] = None if s["count_error"] is None else abs(s["count_error"])
            s["dice"] = dice_np(mask, prob > 0.5)
            per[name][stem] = s
    kinds = {
        "all": lambda s: True,
        "plain": lambda s: s.startswith("plain"),
        "crowded": lambda s: s.startswith("crowded"),
    }
    table = {
        kind: {name: summarise({s: v for s, v in d.items() if keep(s)}) for name, d in per.items()}
        for kind, keep in kinds.items()
    }
    pairs = {}
    for a, b in (
        ("boundary", "binary"),
        ("boundary", "otsu"),
        ("binary", "otsu"),
        ("boundary", "boundary_particle_map_watershed"),
    ):
        for kind, keep in kinds.items():
            for metric in ("f1", "ap", "dice"):
                pa = {s: v[metric] for s, v in per[a].items() if keep(s)}
                pb = {s: v[metric] for s, v in per[b].items() if keep(s)}
                pairs[f"{a} - {b} | {kind} | {metric}"] = paired_difference(pa, pb)
    record = {
        "command": "python examples/instance_head.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "recipe": {
            "train": f"randomised_batch({args.n_train // 2}, {PATCH}, seed={TRAIN_SEED}) plain + "
            f"({args.n_train // 2}, crowded=True, seed={TRAIN_SEED + 1000}); a tenth of each for validation",
            "test": f"randomised_batch({args.n_test}, 256, seed={TEST_SEED}) plain + "
            f"crowded=True seed {TEST_SEED + 1000}",
            "randomised_ranges": RANGES,
            "crowded_ranges": CROWDED,
        },
        "train": {"config": cfg.__dict__, "architecture": "d3 p2,2,2 f8"}
        | {
            name: {
                "best_epoch": r.best_epoch,
                "epochs_run": r.epochs_run,
                "val_hard_dice": r.best_val_hard_dice,
                "train_time_s": r.train_time_s,
            }
            for name, (_, r) in nets.items()
        },
        "otsu_sigma_px": sigma,
        "means": table,
        "paired_95": pairs,
        "per_field": per,
        "cpu_s": time.perf_counter() - t_start,
    }
    OUT.write_text(json.dumps(record, indent=1, default=float))
    for kind, rows in table.items():
        print(f"\n{kind}")
        for name, m in rows.items():
            print(
                f"  {name:34s} F1 {m['f1']:.3f}  AP {m['ap']:.3f}  "
                f"|count err| {m['abs_count_error']:.2f}  Dice {m['dice']:.3f}"
            )
    for k, v in pairs.items():
        if v and "| f1" in k:
            lo, hi = v["ci95"]
            print(f"  {k}: {v['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] {v['verdict']}")
    print(f"wrote {OUT} ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
