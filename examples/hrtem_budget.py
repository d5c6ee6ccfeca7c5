"""The HRTEM receptive-field question at a training budget closer to the study's: 280 training
crops of the calibrated `sim:hrtem` recipe for up to 40 epochs (the Figure 2 rerun had 84 crops
and 10 epochs), depth 2 at four receptive fields, beside the shipped depth-3 HRTEM model
trained on the very same data (temtool/pretrained/hrtem) and the tuned baselines, all scored
on the same 80 test crops.

    temtool simulate hrtem400 --regime hrtem --n 400 --size 256 --seed 123 \\
        --set pixel_size_nm=0.02152 --set diameter_nm=5
    temtool tune --data hrtem400 --depths 2 --pools 2,8 --epochs 40 --batch 16 --lr 2e-3 \\
        --patience 15 --project hrtem400-d2-budget
    temtool tune ... --seed 1 --project hrtem400-d2-budget-seed1     # the same, a second seed
    temtool tune ... --seed 2 --project hrtem400-d2-budget-seed2     # and a third
    python examples/hrtem_budget.py [--projects DIR ...]

(`temtool simulate` with these settings writes exactly the data that
`examples/train_pretrained.py --only hrtem` trains on.) Writes
examples/figures/hrtem_budget.png and .csv.
"""

import argparse
import csv
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from receptive_field_study import finish_axes, plot_baselines, plot_series  # noqa: E402 (same figure style)

ROOT = Path(__file__).resolve().parent.parent
FIG = ROOT / "examples" / "figures"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--projects",
        nargs="+",
        default=[
            str(ROOT / "tuner_logs" / p)
            for p in ("hrtem400-d2-budget", "hrtem400-d2-budget-seed1", "hrtem400-d2-budget-seed2")
        ],
        help="tune projects of the same grid, one per seed (those that exist are used)",
    )
    args = ap.parse_args()
    projects = [Path(p) for p in args.projects if (Path(p) / "results.csv").is_file()]
    runs: dict[tuple, list[dict]] = {}
    for project in projects:
        for r in csv.DictReader(open(project / "results.csv")):
            runs.setdefault((r["depth"], r["pools"]), []).append(r)
    base = json.loads((projects[0] / "baselines.json").read_text())
    shipped = json.loads((ROOT / "temtool" / "pretrained" / "hrtem" / "bundle.json").read_text())
    m = shipped["metrics"]
    rows = []
    for (depth, pools), rs in sorted(runs.items(), key=lambda kv: float(kv[1][0]["rf_nm"])):
        test = np.array([float(r["test_hard_dice_mean"]) for r in rs])
        rows.append(
            {
                "network": f"d{depth} p{pools} f4",
                "params": int(rs[0]["params"]),
                "rf_nm": float(rs[0]["rf_nm"]),
                "test_hard_dice_mean": float(test.mean()),
                "test_hard_dice_sd": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
                "test_hard_dice_per_seed": " ".join(f"{t:.3f}" for t in test),
                "epochs_run_per_seed": " ".join(r["epochs_run"] for r in rs),
            }
        )
    n_grid = len(rows)
    arch = shipped["architecture"]
    rows.append(
        {
            "network": f"d{arch['depth']} p{','.join(map(str, arch['pools']))} f4 (shipped hrtem, seed 0)",
            "params": shipped["params"],
            "rf_nm": shipped["rf_nm"],
            "test_hard_dice_mean": m["test_hard_dice_kept"],
            "test_hard_dice_sd": 0.0,
            "test_hard_dice_per_seed": f"{m['test_hard_dice_kept']:.3f}",
            "epochs_run_per_seed": str(m["epochs_run"]),
        }
    )
    for name in ("otsu", "fourier"):
        rows.append({"network": name, "test_hard_dice_mean": base[name]["dice"]})
    FIG.mkdir(parents=True, exist_ok=True)
    with open(FIG / "hrtem_budget.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    seeds = len(projects)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_series(ax, rows[:n_grid], f"depth 2 (8,234 params), {seeds} seed{'s' if seeds > 1 else ''}")
    d3 = rows[n_grid]
    ax.plot([d3["rf_nm"]], [d3["test_hard_dice_mean"]], "s", ms=8,
            label=f"depth 3 ({shipped['params']:,} params), the shipped model")  # fmt: skip
    plot_baselines(ax, base)
    finish_axes(
        ax, "sim:hrtem recipe, 280 training crops, up to 40 epochs", "test hard Dice (mean +- sd over seeds)"
    )
    fig.tight_layout()
    fig.savefig(FIG / "hrtem_budget.png", dpi=110)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
