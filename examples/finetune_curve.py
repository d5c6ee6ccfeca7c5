"""Learning curve of fine-tuning: test Dice and object F1 against the number of labelled
micrographs, from the shipped ``standard`` model (``temtool train --start-from standard``) and
from scratch (the same architecture), beside the shipped model untouched and Gaussian + Otsu
with its smoothing chosen on the same validation patches.

Data: the 20 CC-BY bright-field micrographs of ../shared/data/msa-seg-track-train.
- Test: the 4 that the shipped model never saw (examples/data/real-tem: image_3, 8, 13, 18),
  whole 512x512 micrographs, the same for every point of the curve.
- Labelled: N of the other 16 (N = 1, 2, 4, 8, 16), drawn at random, several draws per N.
  Each is cut into four 256x256 patches: three train, one (its position drawn) validation,
  so epochs and the threshold's smoothing are chosen on validation patches of the same
  micrographs a user would have labelled.
- Caveat: the shipped model was trained on those 16 micrographs too (with 2,000 simulations),
  so fine-tuning here adapts it to a lab's micrographs it has seen, and its own score on the 4
  test micrographs is already the score of a model that saw this lab.
- Object F1 at IoU 0.5 against the connected components of the masks (the masks are binary).

    python examples/finetune_curve.py [--ns 4,1,2,8,16] [--draws 3] [--scratch-ns 1,4,16] [--resume]

Writes examples/figures/finetune_curve.json (every run, with the command and commit) after
each run, and finetune_curve.png at the end.
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
from temtool.data.io import read_image, read_mask, write_png, write_tiff  # noqa: E402
from temtool.inference.segmenter import Segmenter  # noqa: E402
from temtool.model.bundle import load_bundle  # noqa: E402
from temtool.model.registry import shipped_models  # noqa: E402
from temtool.study import protocol  # noqa: E402
from temtool.study.evaluate import evaluate_segmenter  # noqa: E402
from temtool.study.finetune import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS, finetune  # noqa: E402
from temtool.study.train import TrainConfig, fit  # noqa: E402

REAL = HERE.parent.parent / "shared" / "data" / "msa-seg-track-train"
TEST = ("image_3", "image_8", "image_13", "image_18")  # examples/data/real-tem: never trained on
OUT = HERE / "figures" / "finetune_curve.json"
PATCH = 256


def micrograph(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = read_image(REAL / "images" / f"{name}.png").data
    return img, read_mask(REAL / "labels" / f"{name.replace('image_', 'label_')}.png", channel=0)


def build(root: Path, names: list[str], rng: np.random.Generator) -> Path:
    """A dataset folder: three patches of each labelled micrograph for training, one for
    validation, and the 4 test micrographs whole."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    splits = {"train": [], "val": [], "test": []}

    def add(stem, img, mask, split):
        write_tiff(root / "images" / f"{stem}.tif", img.astype(np.float32))
        write_png(root / "masks" / f"{stem}.png", (mask > 0).astype(np.uint8))
        splits[split].append(stem)

    for name in names:
        img, mask = micrograph(name)
        val_at = int(rng.integers(4))
        for k in range(4):
            y, x = divmod(k, 2)
            sl = np.s_[y * PATCH : (y + 1) * PATCH, x * PATCH : (x + 1) * PATCH]
            add(f"{name}_{k}", img[sl], mask[sl], "val" if k == val_at else "train")
    for name in TEST:
        add(name, *micrograph(name), "test")
    (root / "dataset.json").write_text(json.dumps({"regime": "standard", "splits": splits}))
    return root


def scores(seg: Segmenter, ds) -> dict:
    r = evaluate_segmenter(seg, ds, "test", components_as_instances=True)
    return {
        "dice": r["mean"]["model"]["dice"],
        "object_f1": r["objects"]["model"]["f1"],
        "otsu_dice": r["mean"]["otsu"]["dice"],
        "otsu_object_f1": r["objects"]["otsu"]["f1"],
        "otsu_sigma_px": r["otsu_sigma_px"],
        "dice_per_image": {row["image"]: row["model"]["dice"] for row in r["per_image"]},
        "f1_per_image": {row["image"]: row["model_objects"]["f1"] for row in r["per_image"]},
        "otsu_dice_per_image": {row["image"]: row["otsu"]["dice"] for row in r["per_image"]},
        "otsu_f1_per_image": {row["image"]: row["otsu_objects"]["f1"] for row in r["per_image"]},
    }


def run(n: int, draw: int, scratch: bool, record: dict, commit: str = "") -> None:
    pool = sorted({p.stem for p in (REAL / "images").glob("*.png")} - set(TEST))
    rng = np.random.default_rng(1000 * n + draw)
    names = sorted(rng.choice(pool, size=n, replace=False).tolist())
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_dataset(build(Path(tmp) / "ds", names, rng))
        standard = load_bundle(shipped_models()["standard"])
        cfg = TrainConfig(**FINETUNE_DEFAULTS, seed=draw)
        t0 = time.perf_counter()
        best, _, _, rec = finetune("standard", ds, cfg)
        seg = Segmenter.for_model(
            best.model, standard.arch, diameter_range_px=standard.diameter_range_px, runtime="keras"
        )
        row = {
            "n": n,
            "draw": draw,
            "micrographs": names,
            "shipped": scores(Segmenter.from_bundle(standard, runtime="keras"), ds),
            "finetuned": {**scores(seg, ds), "best_epoch": best.best_epoch, "epochs_run": best.epochs_run},
            "finetune_s": time.perf_counter() - t0,
            "commit": commit,
        }
        if scratch:
            cfg = TrainConfig(
                **{**SCRATCH_DEFAULTS, "batch_size": FINETUNE_DEFAULTS["batch_size"]}, seed=draw
            )
            t0 = time.perf_counter()
            res = fit(standard.arch, ds, cfg)
            seg = Segmenter.for_model(
                res.model, standard.arch, diameter_range_px=standard.diameter_range_px, runtime="keras"
            )
            row["scratch"] = {**scores(seg, ds), "best_epoch": res.best_epoch, "epochs_run": res.epochs_run}
            row["scratch_s"] = time.perf_counter() - t0
    record["runs"].append(row)
    summarise(record)
    OUT.write_text(json.dumps(record, indent=1))
    done = {k: round(row[k]["dice"], 3) for k in ("shipped", "finetuned", "scratch") if k in row}
    print(f"n={n} draw={draw} {names}: Dice {done}, Otsu {row['shipped']['otsu_dice']:.3f}", flush=True)


def summarise(record: dict) -> None:
    """Per N: mean and sd over draws of each method's test Dice and object F1, and paired
    bootstrap intervals over the test micrographs (each one's score averaged over draws) of
    fine-tuned minus shipped and fine-tuned minus Otsu."""
    out = {}
    for n in sorted({r["n"] for r in record["runs"]}):
        rows = [r for r in record["runs"] if r["n"] == n]
        s = {"draws": len(rows)}
        for who in ("shipped", "finetuned", "scratch"):
            have = [r[who] for r in rows if who in r]
            if not have:
                continue
            for m in ("dice", "object_f1", "otsu_dice", "otsu_object_f1"):
                v = [h[m] for h in have]
                s[f"{who}_{m}"] = {
                    "mean": float(np.mean(v)),
                    "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                }

        def per_image(who, key, rows=rows):
            return {t: float(np.mean([r[who][key][t] for r in rows])) for t in TEST}

        s["finetuned_minus_shipped"] = {
            "dice": protocol.paired_difference(
                per_image("finetuned", "dice_per_image"), per_image("shipped", "dice_per_image")
            ),
            "object_f1": protocol.paired_difference(
                per_image("finetuned", "f1_per_image"), per_image("shipped", "f1_per_image")
            ),
        }
        s["finetuned_minus_otsu"] = {
            "dice": protocol.paired_difference(
                per_image("finetuned", "dice_per_image"), per_image("finetuned", "otsu_dice_per_image")
            ),
            "object_f1": protocol.paired_difference(
                per_image("finetuned", "f1_per_image"), per_image("finetuned", "otsu_f1_per_image")
            ),
        }
        out[str(n)] = s
    record["summary"] = out


def plot(record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ns = sorted(int(n) for n in record["summary"])
    for ax, m, label in ((axes[0], "dice", "test Dice"), (axes[1], "object_f1", "test object F1 (IoU 0.5)")):
        for who, style in (("finetuned", "o-"), ("scratch", "s--"), ("shipped", ":"), ("otsu", "^-.")):
            key = f"finetuned_otsu_{m}" if who == "otsu" else f"{who}_{m}"
            pts = [(n, record["summary"][str(n)][key]) for n in ns if key in record["summary"][str(n)]]
            if pts:
                x = [p[0] for p in pts]
                ax.errorbar(
                    x,
                    [p[1]["mean"] for p in pts],
                    [p[1]["sd"] for p in pts],
                    fmt=style,
                    capsize=3,
                    label={
                        "finetuned": "fine-tuned from standard",
                        "scratch": "from scratch",
                        "shipped": "shipped standard",
                        "otsu": "Gaussian + Otsu (tuned on val)",
                    }[who],
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labelled micrographs")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Fine-tuning on msa-seg-track micrographs: 4 unseen test micrographs, mean +- sd over draws",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(OUT.with_suffix(".png"), dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="4,1,2,8,16")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--scratch-ns", default="1,4,16")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="add these runs to the existing JSON (each run records the commit it ran at)",
    )
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    record = {
        "command": "python examples/finetune_curve.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "data": "msa-seg-track-train: test image_3, 8, 13, 18 whole; "
        "N others as 3 train + 1 val 256-px patches",
        "schedule": {
            "finetune": FINETUNE_DEFAULTS,
            "scratch": {**SCRATCH_DEFAULTS, "batch_size": FINETUNE_DEFAULTS["batch_size"]},
        },
        "runs": [],
    }
    if args.resume and OUT.is_file():
        earlier = json.loads(OUT.read_text())
        earlier.setdefault("resumed", []).append({"command": record["command"], "commit": commit})
        earlier.pop("stopped", None)
        record = earlier
    scratch_ns = {int(n) for n in args.scratch_ns.split(",") if n}
    for n in (int(n) for n in args.ns.split(",")):
        for draw in range(1 if n == 16 else args.draws):
            run(n, draw, n in scratch_ns, record, commit)
    plot(record)


if __name__ == "__main__":
    main()
