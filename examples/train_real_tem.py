"""Train on the 20 real bright-field TEM micrographs in ../shared/data/msa-seg-track-train
and compare validation/test Dice with the Gaussian + Otsu baseline. Runs on a 2-core CPU in a
few minutes.

    python examples/train_real_tem.py [--data ../shared/data/msa-seg-track-train] [--epochs 60]

The micrographs are cut into 256x256 patches and split by micrograph (14 train, 2 val,
4 test), so no patches of one micrograph straddle splits; then `temtool train` and
`temtool evaluate` run on that dataset exactly as a user would run them.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from temtool.data.io import read_image, read_mask, write_png, write_tiff

HERE = Path(__file__).resolve().parent


def build_dataset(raw: Path, out: Path, patch: int = 256, seed: int = 0) -> None:
    images = sorted((raw / "images").glob("image_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    if not images:
        sys.exit(f"{raw}: no images/image_N.png found")
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    order = np.random.default_rng(seed).permutation(len(images))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[images[i].stem] = "train" if rank < 14 else "val" if rank < 16 else "test"
    splits = {"train": [], "val": [], "test": []}
    for p in images:
        img = read_image(p).data
        mask = read_mask(raw / "labels" / p.name.replace("image_", "label_"), channel=0)
        for y in range(0, img.shape[0] - patch + 1, patch):
            for x in range(0, img.shape[1] - patch + 1, patch):
                stem = f"{p.stem}_{y}_{x}"
                write_tiff(out / "images" / f"{stem}.tif", img[y : y + patch, x : x + patch])
                write_png(out / "masks" / f"{stem}.png", mask[y : y + patch, x : x + patch])
                splits[split_of[p.stem]].append(stem)
    (out / "dataset.json").write_text(
        json.dumps({"regime": "standard", "source": str(raw), "splits": splits}, indent=1)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared/data/msa-seg-track-train"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default="models/real-tem")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "real-tem"
        build_dataset(Path(args.data), ds)
        temtool = [sys.executable, "-m", "temtool.cli"]
        subprocess.run(
            [
                *temtool,
                "train",
                "--data",
                str(ds),
                "--epochs",
                str(args.epochs),
                "--lr",
                "1e-3",
                "--batch",
                "8",
                "--patience",
                "15",
                "--out",
                args.out,
            ],
            check=True,
        )
        for split in ("val", "test"):
            r = subprocess.run(
                [*temtool, "evaluate", args.out, "--data", str(ds), "--split", split, "--json"],
                check=True,
                capture_output=True,
                text=True,
            )
            res = json.loads(r.stdout)
            m, o = res["mean"]["model"], res["mean"]["otsu"]
            print(
                f"{split:5s} ({res['n_images']} patches): network hard Dice {m['dice']:.3f} "
                f"+- {m['dice_std']:.3f}   Gaussian+Otsu Dice {o['dice']:.3f} +- {o['dice_std']:.3f}"
            )


if __name__ == "__main__":
    main()
