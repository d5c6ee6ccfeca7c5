"""The study's experiment on simulated data: test Dice against receptive field for standard
TEM and HRTEM, at several depths (complexities), over the pool grid, a few seeds each. The
epoch and the kept seed are chosen on validation; the test split is scored by `temtool
evaluate`, beside Gaussian + Otsu with its smoothing chosen on validation (dashed line).

    python examples/receptive_field_study.py                      # CPU size, under an hour
    python examples/receptive_field_study.py --depths 2 --seeds 2 # quicker
    python examples/receptive_field_study.py --full               # GPU size: 100 epochs, 5 seeds

Writes tuner_logs/rf-study-<regime>-d<depth>/ (one KerasTuner grid project each, resumable),
and examples/figures/rf_study.png plus examples/figures/rf_study.csv. Expected (the study):
on HRTEM Dice rises with RF and then plateaus; on standard TEM it stays nearly flat. Whatever
comes out is printed; nothing here is tuned to produce that picture.
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from temtool.evaluate import evaluate  # noqa: E402
from temtool.train import TrainConfig  # noqa: E402
from temtool.tune import SearchSpace, TuneConfig, tune  # noqa: E402

FIG = Path(__file__).resolve().parent / "figures"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--regimes", default="standard,hrtem")
    ap.add_argument("--depths", default="2,3,4")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--full", action="store_true", help="the study's budget: 100 epochs, 5 seeds")
    args = ap.parse_args()
    epochs, seeds, lr, batch = args.epochs, args.seeds, 1e-3, 8
    if args.full:
        epochs, seeds, lr, batch = 100, 5, 1e-4, 32
    rows = []
    regimes = args.regimes.split(",")
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        for depth in (int(d) for d in args.depths.split(",")):
            cfg = TuneConfig(
                data=f"sim:{regime}",
                tuner="grid",
                repeats=seeds,
                project=f"rf-study-{regime}-d{depth}",
                train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch, patience=epochs),
                space=SearchSpace(depths=(depth,), pools=(2, 4, 8), base_filters=(4,)),
            )
            res = tune(cfg)
            trials = sorted(res["trials"], key=lambda r: r["rf_px"])
            for r in trials:
                test = evaluate(Path(res["project"]) / f"trial_{r['trial_id']}" / "bundle", f"sim:{regime}")
                r["test_dice"] = test["mean"]["model"]["dice"]
                r["test_dice_sd_images"] = test["mean"]["model"]["dice_std"]
                r["otsu_test_dice"] = test["mean"]["otsu"]["dice"]
                r["otsu_sigma_px"] = test["otsu_sigma_px"]
                rows.append(
                    {
                        "regime": regime,
                        **{
                            k: r[k]
                            for k in (
                                "depth",
                                "pools",
                                "params",
                                "rf_px",
                                "rf_nm",
                                "val_hard_dice_mean",
                                "val_hard_dice_std",
                                "test_dice",
                                "test_dice_sd_images",
                                "otsu_test_dice",
                                "otsu_sigma_px",
                            )
                        },
                    }
                )
                print(
                    f"{regime:8s} depth {depth} pools {','.join(map(str, r['pools'])):8s} "
                    f"RF {r['rf_px']:5d} px {r['rf_nm']:7.2f} nm  params {r['params']:7,d}  "
                    f"val Dice {r['val_hard_dice_mean']:.3f} +- {r['val_hard_dice_std']:.3f}  "
                    f"test Dice {r['test_dice']:.3f} (Otsu {r['otsu_test_dice']:.3f})",
                    flush=True,
                )
            ax.errorbar(
                [r["rf_nm"] for r in trials],
                [r["test_dice"] for r in trials],
                yerr=[r["test_dice_sd_images"] for r in trials],
                marker="o",
                capsize=3,
                label=f"depth {depth} ({trials[0]['params']:,} params)",
            )
        ax.axhline(trials[0]["otsu_test_dice"], color="grey", ls="--", label="Gaussian + Otsu (sigma on val)")
        ax.set_xscale("log")
        ax.set_xlabel("receptive field (nm)")
        ax.set_ylabel("test hard Dice (kept seed; bars: sd over images)")
        ax.set_title(f"sim:{regime}")
        ax.legend(fontsize=8)
    FIG.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIG / "rf_study.png", dpi=90)
    with open(FIG / "rf_study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"figure: {FIG / 'rf_study.png'}; table: {FIG / 'rf_study.csv'}")


if __name__ == "__main__":
    main()
