"""Figure 2 of the study, rerun: test hard Dice against receptive field (nm), one series per
complexity (depth), for standard TEM and HRTEM, with the tuned classical baselines as
horizontal lines.

Protocol (temtool.study.protocol): each network's epoch and kept seed are chosen on validation;
the plotted number is test-split hard Dice, mean +- sd over seeds (95% interval in the CSV);
Gaussian + Otsu has its smoothing chosen on validation, the Fourier filter (HRTEM) too.

    python examples/receptive_field_study.py                # CPU size (sim:hrtem, sim:standard-cpu)
    python examples/receptive_field_study.py --depths 2     # depth 2 only
    python examples/receptive_field_study.py --full         # the study's sets and budget (GPU)

The grid: depth 2 with all 9 pool pairs of {2, 4, 8}; depths 3 and 4 with four pool
sequences each spanning the same receptive-field range (44-400 px). ``--full`` uses the
study-scale sets (512 px), Adam 1e-4, batch 32, up to 100 epochs with early stopping on
validation (patience 20) and 5 seeds. Writes tuner_logs/fig2-<set>-d<depth>/ (KerasTuner grid
projects, resumable) and examples/figures/rf_study.png and rf_study.csv. Whatever comes out
is plotted; nothing here is tuned to produce the study's picture.
"""

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from temtool.study.train import TrainConfig  # noqa: E402
from temtool.study.tune import RESULT_COLUMNS, SearchSpace, TuneConfig, tune  # noqa: E402

FIG = Path(__file__).resolve().parent / "figures"
# depth 3 and 4: pool sequences whose study-formula RF spans the depth-2 range (44-392 px)
SEQUENCES = {
    3: ((1, 1, 4), (2, 2, 2), (1, 4, 8), (1, 8, 8)),  # 44, 96, 208, 400 px
    4: ((1, 1, 1, 4), (1, 2, 2, 2), (2, 2, 2, 2), (1, 1, 8, 8)),  # 52, 104, 200, 408 px
}
# the trial columns of temtool tune that the figure's table keeps, after the set's name
_DROPPED = {
    "trial_id", "filters", "val_hard_dice_std", "val_soft_dice_mean", "time_s", "images_per_s", "lr", "loss",
    "tuner_id",
}  # fmt: skip
COLUMNS = ("set", *(c for c in RESULT_COLUMNS if c not in _DROPPED), "seeds")


def space_for(depth: int) -> SearchSpace:
    if depth == 2:
        return SearchSpace(depths=(2,), pools=(2, 4, 8), base_filters=(4,))
    return SearchSpace(depths=(depth,), pools=(1, 2, 4, 8), base_filters=(4,), sequences=SEQUENCES[depth])


def run_set(data: str, depths: list[int], train: TrainConfig, seeds: int, ax) -> list[dict]:
    rows, baselines = [], {}
    for depth in depths:
        cfg = TuneConfig(
            data=data,
            tuner="grid",
            repeats=seeds,
            project=f"fig2-{data.removeprefix('sim:')}-d{depth}",
            train=train,
            space=space_for(depth),
        )
        res = tune(cfg)
        baselines = res.get("baselines") or baselines
        trials = sorted(res["trials"], key=lambda r: r["rf_px"])
        for r in trials:
            row = {
                "set": data,
                "seeds": len(r["repeats"]),
                **{k: r.get(k) for k in COLUMNS[1:] if k != "seeds"},
            }
            rows.append(row)
            print(
                f"{data:18s} d{depth} pools {','.join(map(str, r['pools'])):8s} RF {r['rf_px']:4d} px "
                f"{r['rf_nm']:6.2f} nm  params {r['params']:7,d}  val {r['val_hard_dice_mean']:.3f}  "
                f"test {r['test_hard_dice_mean']:.3f} +- {r['test_hard_dice_sd']:.3f}",
                flush=True,
            )
        plot_series(ax, trials, f"depth {depth} ({trials[0]['params']:,} params)")
    for name in plot_baselines(ax, baselines):
        rows.append({"set": data, "pools": name, "test_hard_dice_mean": baselines[name]["dice"]})
    finish_axes(ax, data, f"test hard Dice (mean +- sd, {seeds} seeds)")
    return rows


def plot_series(ax, rows: list[dict], label: str) -> None:
    """Test hard Dice (mean +- sd over seeds) against RF in nm: one complexity's series."""
    ax.errorbar(
        [r["rf_nm"] for r in rows],
        [r["test_hard_dice_mean"] for r in rows],
        yerr=[r["test_hard_dice_sd"] for r in rows],
        marker="o",
        capsize=3,
        label=label,
    )


def plot_baselines(ax, baselines: dict) -> list[str]:
    """The tuned baselines (temtool.study.protocol.baselines) as horizontal lines; their names."""
    drawn = []
    for name, style in (("otsu", ("k", "--")), ("fourier", ("0.45", ":"))):
        if name in baselines:
            b = baselines[name]
            what = (
                f"Gaussian + Otsu, sigma {b['sigma_nm']:.2f} nm"
                if name == "otsu"
                else f"Fourier filter, {b['smooth_nm']:g} nm"
            )
            ax.axhline(b["dice"], color=style[0], ls=style[1], label=f"{what}: {b['dice']:.3f}")
            drawn.append(name)
    return drawn


def finish_axes(ax, title: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("receptive field (nm, study formula)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=None, help="comma-separated datasets (default by --full)")
    ap.add_argument("--depths", default="2,3,4")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--full", action="store_true", help="study-scale sets and budget (GPU)")
    ap.add_argument("--name", default="rf_study", help="figure and table name under examples/figures/")
    args = ap.parse_args()
    if args.full:
        sets = args.sets or "sim:standard-study,sim:hrtem-study"
        train = TrainConfig(epochs=100, lr=1e-4, batch_size=32, patience=20)
        seeds = max(args.seeds, 5)
    else:
        sets = args.sets or "sim:standard-cpu,sim:hrtem"
        train = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=8, patience=args.epochs)
        seeds = args.seeds
    depths = [int(d) for d in args.depths.split(",")]
    t0 = time.perf_counter()
    names = sets.split(",")
    fig, axes = plt.subplots(1, len(names), figsize=(5.8 * len(names), 4.3), squeeze=False)
    rows = []
    for ax, data in zip(axes[0], names):
        rows += run_set(data, depths, train, seeds, ax)
    minutes = (time.perf_counter() - t0) / 60
    machine = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"
    fig.suptitle(
        f"python {' '.join(['examples/receptive_field_study.py', *sys.argv[1:]])}   "
        f"({machine}, {minutes:.0f} min)",
        fontsize=8,
    )
    FIG.mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIG / f"{args.name}.png", dpi=90)
    with open(FIG / f"{args.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    print(f"figure: {FIG / args.name}.png; table: {FIG / args.name}.csv ({minutes:.1f} min on {machine})")


if __name__ == "__main__":
    main()
