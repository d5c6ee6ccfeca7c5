"""Train the small models shipped inside temtool (temtool/pretrained/), reproducibly, on
simulated data: one for standard TEM and one for HRTEM. `temtool segment` uses them when no
model of the user's exists, choosing by pixel size.

    python examples/train_pretrained.py [--epochs 40] [--n 400]

Deterministic for a given seed on one backend and machine (same data, same initialisation).
"""

import argparse
import tempfile
from pathlib import Path

from temtool.arch import Architecture
from temtool.data.dataset import BUILTIN, load_dataset, write_simulated_dataset
from temtool.train import TrainConfig, fit, save_training

OUT = Path(__file__).resolve().parent.parent / "temtool" / "pretrained"
MODELS = {
    # name: (built-in data recipe, architecture)
    "standard": ("standard", Architecture.create(depth=2, pool="2,2", filters=4)),
    "hrtem": ("hrtem", Architecture.create(depth=2, pool="4,4", filters=4)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--only", choices=list(MODELS))
    args = ap.parse_args()
    for name, (recipe, arch) in MODELS.items():
        if args.only and name != args.only:
            continue
        spec = BUILTIN[recipe]
        with tempfile.TemporaryDirectory() as tmp:
            path = write_simulated_dataset(
                Path(tmp) / name,
                regime=spec["regime"],
                n=args.n,
                size=spec["size"],
                seed=123,
                workers=2,
                overrides=spec["overrides"],
            )
            ds = load_dataset(path)
            cfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=2e-3, seed=0, patience=15)
            res = fit(arch, ds, cfg)
            save_training(
                OUT / name,
                res,
                [res],
                ds,
                cfg,
                extra={
                    "data": {**ds.summary(), "path": f"simulated ({recipe} recipe, n={args.n}, seed 123)"},
                    "pretrained": {"name": name, "script": "examples/train_pretrained.py"},
                },
            )
            print(
                f"{name}: val hard Dice {res.best_val_hard_dice:.3f} (epoch {res.best_epoch}) -> {OUT / name}"
            )


if __name__ == "__main__":
    main()
