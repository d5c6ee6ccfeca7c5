"""The HRTEM receptive-field question at a training budget closer to the study's: 280 training
crops of the calibrated `sim:hrtem` recipe for up to 40 epochs (the Figure 2 rerun had 84 crops
and 10 epochs), depth 2 at four receptive fields, beside the shipped depth-3 HRTEM model
trained on the very same data (temtool/pretrained/hrtem) and the tuned baselines, all scored
on the same 80 test crops.

    temtool simulate hrtem400 --regime hrtem --n 400 --size 256 --seed 123 \\
        --set pixel_size_nm=0.02152 --set diameter_nm=5
    temtool tune --data hrtem400 --depths 2 --pools 2,8 --epochs 40 --batch 16 --lr 2e-3 \\
        --patience 15 --project hrtem400-d2-budget
    python examples/hrtem_budget.py [--project tuner_logs/hrtem400-d2-budget]

(`temtool simulate` with these settings writes exactly the data that
`examples/train_pretrained.py --only hrtem` trains on.) Writes
examples/figures/hrtem_budget.png and .csv.
"""

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIG = ROOT / "examples" / "figures"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", default=str(ROOT / "tuner_logs" / "hrtem400-d2-budget"))
    args = ap.parse_args()
    project = Path(args.project)
    trials = sorted(csv.DictReader(open(project / "results.csv")), key=lambda r: float(r["rf_nm"]))
    base = json.loads((project / "baselines.json").read_text())
    shipped = json.loads((ROOT / "temtool" / "pretrained" / "hrtem" / "bundle.json").read_text())
    m = shipped["metrics"]
    rows = [
        {
            "network": f"d{r['depth']} p{r['pools']} f4",
            "params": int(r["params"]),
            "rf_nm": float(r["rf_nm"]),
            "test_hard_dice": float(r["test_hard_dice_mean"]),
            "val_hard_dice": float(r["val_hard_dice_mean"]),
            "epochs_run": int(r["epochs_run"]),
        }
        for r in trials
    ]
    arch = shipped["architecture"]
    rows.append(
        {
            "network": f"d{arch['depth']} p{','.join(map(str, arch['pools']))} f4 (shipped hrtem)",
            "params": shipped["params"],
            "rf_nm": shipped["rf_nm"],
            "test_hard_dice": m["test_hard_dice_kept"],
            "val_hard_dice": m["val_hard_dice"],
            "epochs_run": m["epochs_run"],
        }
    )
    for name in ("otsu", "fourier"):
        rows.append({"network": name, "test_hard_dice": base[name]["dice"]})
    FIG.mkdir(parents=True, exist_ok=True)
    with open(FIG / "hrtem_budget.csv", "w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["network", "params", "rf_nm", "test_hard_dice", "val_hard_dice", "epochs_run"]
        )
        w.writeheader()
        w.writerows(rows)

    fig, ax = plt.subplots(figsize=(6, 4))
    d2 = rows[: len(trials)]
    ax.plot([r["rf_nm"] for r in d2], [r["test_hard_dice"] for r in d2], "o-", label="depth 2 (8,234 params)")
    ax.plot([rows[len(trials)]["rf_nm"]], [rows[len(trials)]["test_hard_dice"]], "s", ms=8,
            label=f"depth 3 ({shipped['params']:,} params), the shipped model")  # fmt: skip
    ax.axhline(base["otsu"]["dice"], color="k", ls="--", label=f"Gaussian + Otsu: {base['otsu']['dice']:.3f}")
    ax.axhline(
        base["fourier"]["dice"], color="0.45", ls=":", label=f"Fourier filter: {base['fourier']['dice']:.3f}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("receptive field (nm, study formula)")
    ax.set_ylabel("test hard Dice (one seed)")
    ax.set_title("sim:hrtem recipe, 280 training crops, up to 40 epochs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / "hrtem_budget.png", dpi=110)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
