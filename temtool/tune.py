"""KerasTuner search over pooling sizes, filters and depth: the study's sweep as a tool.

A :class:`ResUNetHyperModel` translates hyperparameters into the shared
:class:`~temtool.arch.Architecture`; only valid combinations are offered (the pool product
divides the patch and leaves a bottleneck of at least ``min_bottleneck_px``; the parameter
count stays under ``max_params``). Trials train with :func:`temtool.train.fit` (``repeats``
seeds each) and record parameters, receptive field in px and nm, validation soft/hard Dice,
epochs, time and speed. Results go to ``tuner_logs/<project>/``: KerasTuner's own state (so a
re-run resumes and keeps finished trials), ``results.csv``/``results.json`` and the best
model as a bundle.

Distributed search uses KerasTuner's own mode (a chief oracle over gRPC, workers configured by
``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temtool.arch import Architecture, count_params
from temtool.bundle import remember_last_model
from temtool.data.dataset import Dataset, load_dataset
from temtool.errors import TemtoolError
from temtool.receptive_field import theoretical_rf_px
from temtool.train import TrainConfig, fit

TUNERS = ("grid", "random", "bayesian", "hyperband")
OBJECTIVE = "val_hard_dice"


@dataclass
class SearchSpace:
    """Choices the search draws from."""

    depths: tuple[int, ...] = (2, 3, 4)
    pools: tuple[int, ...] = (2, 4, 8)
    base_filters: tuple[int, ...] = (4, 8, 16, 32)
    kernel_size: int = 3
    lrs: tuple[float, ...] = ()  # empty: fixed learning rate from the train config
    losses: tuple[str, ...] = ()  # empty: fixed loss from the train config
    max_params: int | None = None
    min_bottleneck_px: int = 4

    def pool_sequences(self, depth: int, patch_px: int) -> list[tuple[int, ...]]:
        out = []
        for seq in itertools.product(self.pools, repeat=depth):
            prod = math.prod(seq)
            if patch_px % prod == 0 and patch_px // prod >= self.min_bottleneck_px:
                out.append(tuple(seq))
        return out

    def filter_choices(self, depth: int) -> list[int]:
        out = []
        for f in self.base_filters:
            arch = Architecture.create(depth=depth, pool=1, filters=f, kernel_size=self.kernel_size)
            if self.max_params is None or count_params(arch) <= self.max_params:
                out.append(f)
        return out

    def valid_depths(self, patch_px: int) -> list[int]:
        return [d for d in self.depths if self.pool_sequences(d, patch_px) and self.filter_choices(d)]


def _seq_str(seq) -> str:
    return ",".join(map(str, seq))


def make_hypermodel(space: SearchSpace, patch_px: int):
    """A KerasTuner HyperModel whose ``build`` returns the ResUNet for the chosen
    hyperparameters. ``arch_from_hp`` is the translation itself."""
    import keras_tuner as kt

    from temtool.arch import build_resunet

    depths = space.valid_depths(patch_px)
    if not depths:
        raise TemtoolError(
            f"no architecture in the search space fits {patch_px}x{patch_px} patches: every pool "
            f"product must divide {patch_px} and leave at least {space.min_bottleneck_px} px "
            "(use smaller --pools or --depths, or a larger --max-params)"
        )

    class ResUNetHyperModel(kt.HyperModel):
        def declare(self, hp) -> Architecture:
            depth = hp.Choice("depth", depths) if len(depths) > 1 else hp.Fixed("depth", depths[0])
            with hp.conditional_scope("depth", [depth]):
                pools = hp.Choice(
                    f"pools_d{depth}", [_seq_str(s) for s in space.pool_sequences(depth, patch_px)]
                )
                filters = hp.Choice(f"filters_d{depth}", space.filter_choices(depth))
            if space.lrs:
                hp.Choice("lr", list(space.lrs))
            if space.losses:
                hp.Choice("loss", list(space.losses))
            return Architecture.create(
                depth=depth, pool=pools, filters=filters, kernel_size=space.kernel_size
            )

        def build(self, hp):
            return build_resunet(self.declare(hp))

    return ResUNetHyperModel(), depths


def arch_from_values(values: dict, kernel_size: int = 3) -> Architecture:
    d = int(values["depth"])
    return Architecture.create(
        depth=d, pool=values[f"pools_d{d}"], filters=values[f"filters_d{d}"], kernel_size=kernel_size
    )


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tuner_class(kind: str):
    import keras_tuner as kt

    base = {
        "grid": kt.GridSearch,
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[kind]

    class TemtoolTuner(base):
        """Runs a trial as ``repeats`` temtool trainings and records temtool's results."""

        def run_trial(self, trial, *args, **kwargs):
            tt = self._temtool
            hp = trial.hyperparameters
            arch = arch_from_values(hp.values, tt["space"].kernel_size)
            cfg = TrainConfig(**tt["train"].__dict__)
            cfg.epochs = int(hp.values.get("tuner/epochs", cfg.epochs))
            if "lr" in hp.values:
                cfg.lr = float(hp.values["lr"])
            if "loss" in hp.values:
                cfg.loss = hp.values["loss"]
            ds: Dataset = tt["data"]
            runs = []
            t0 = time.perf_counter()
            best_run = None
            for r in range(tt["repeats"]):
                c = TrainConfig(**{**cfg.__dict__, "seed": cfg.seed + r})
                res = fit(arch, ds, c)
                soft = max(res.history.get("val_soft_dice", [float("nan")]))
                runs.append(
                    {
                        "seed": c.seed,
                        "val_hard_dice": res.best_val_hard_dice,
                        "val_soft_dice": soft,
                        "epochs_run": res.epochs_run,
                        "images_per_s": res.images_per_s,
                    }
                )
                if best_run is None or res.best_val_hard_dice > best_run.best_val_hard_dice:
                    best_run = res
            dt = time.perf_counter() - t0
            hard = np.array([r["val_hard_dice"] for r in runs])
            px = ds.pixel_size_nm
            rf = theoretical_rf_px(arch)
            record = {
                "trial_id": trial.trial_id,
                "depth": arch.depth,
                "pools": list(arch.pools),
                "filters": list(arch.filters),
                "params": count_params(best_run.model),
                "rf_px": rf,
                "rf_nm": rf * px if px else None,
                "lr": cfg.lr,
                "loss": cfg.loss,
                "val_hard_dice_mean": float(hard.mean()),
                "val_hard_dice_std": float(hard.std(ddof=1)) if len(hard) > 1 else 0.0,
                "val_soft_dice_mean": float(np.mean([r["val_soft_dice"] for r in runs])),
                "epochs_run": int(np.mean([r["epochs_run"] for r in runs])),
                "time_s": dt,
                "images_per_s": float(np.mean([r["images_per_s"] for r in runs])),
                "repeats": runs,
                "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "local"),
            }
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            trial_dir.mkdir(parents=True, exist_ok=True)
            from temtool.bundle import save_bundle

            save_bundle(
                trial_dir / "bundle",
                best_run.model,
                {
                    "architecture": arch.to_dict(),
                    "params": record["params"],
                    "pixel_size_nm": px,
                    "regime": ds.regime,
                    "data": ds.summary(),
                    "training": {**cfg.__dict__, "precision_used": best_run.precision},
                    "metrics": {"val_hard_dice": best_run.best_val_hard_dice, "trial": record},
                },
                history=best_run.history,
            )
            _atomic_text(trial_dir / "temtool_trial.json", json.dumps(record, indent=1))
            if tt.get("on_trial"):
                with contextlib.redirect_stdout(tt["stdout"]):
                    tt["on_trial"](record)
            return {OBJECTIVE: float(hard.mean())}

    return TemtoolTuner


def _repair_grid_order(oracle) -> None:
    """KerasTuner 1.4's GridSearchOracle keeps its walk through the grid (a linked list of
    trial ids and a queue of trials to extend) only in memory. After a reload both are empty,
    so a resumed grid search stops early or fails on a retried trial. Rebuild them from the
    trials on record: ordered by the oracle's own comparison, each one queued for extension
    (combinations already tried are skipped by the oracle itself)."""
    import functools

    import keras_tuner as kt

    if not isinstance(oracle, kt.oracles.GridSearchOracle) or not oracle.trials:
        return
    ids = sorted(
        oracle.trials,
        key=functools.cmp_to_key(
            lambda a, b: oracle._compare(
                oracle.trials[a].hyperparameters.values, oracle.trials[b].hyperparameters.values
            )
        ),
    )
    linked = type(oracle._ordered_ids)()
    for trial_id in ids:
        linked.insert(trial_id)
    oracle._ordered_ids = linked
    oracle._populate_next = list(ids)


@dataclass
class TuneConfig:
    data: str = "sim:hrtem"
    tuner: str = "grid"
    max_trials: int | None = None
    repeats: int = 1
    project: str | None = None
    directory: str = "tuner_logs"
    overwrite: bool = False
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, lr=1e-3, batch_size=8, patience=10)
    )
    space: SearchSpace = field(default_factory=SearchSpace)
    pixel_size_nm: float | None = None


def default_project(data: str) -> str:
    name = data[4:] if data.startswith("sim:") else Path(data).name or "data"
    return f"{name}-search"


def tune(cfg: TuneConfig, on_trial=None) -> dict:
    """Run (or resume) a search; returns the results summary written to the project folder."""
    import keras_tuner as kt

    if cfg.tuner not in TUNERS:
        raise TemtoolError(f"--tuner must be one of {', '.join(TUNERS)}, got {cfg.tuner!r}")
    if cfg.repeats < 1:
        raise TemtoolError(f"--repeats must be >= 1, got {cfg.repeats}")
    cfg.train.validate()
    ds = load_dataset(cfg.data, pixel_size_nm=cfg.pixel_size_nm)
    x_tr, _ = ds.arrays("train")
    h, w = x_tr.shape[1:3]
    patch = math.gcd(h, w)
    hypermodel, _ = make_hypermodel(cfg.space, patch)
    project = cfg.project or default_project(cfg.data)
    root = Path(cfg.directory) / project
    if cfg.overwrite and root.exists() and os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief":
        shutil.rmtree(root)
    kw = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(OBJECTIVE, direction="max"),
        directory=cfg.directory,
        project_name=project,
        overwrite=False,
        seed=cfg.seed,
    )
    if cfg.tuner == "hyperband":
        kw["max_epochs"] = cfg.train.epochs
    else:
        kw["max_trials"] = cfg.max_trials if cfg.max_trials else (None if cfg.tuner == "grid" else 10)
    if cfg.tuner == "grid" and kw["max_trials"] is None:
        kw.pop("max_trials")
    kw["max_consecutive_failed_trials"] = 1
    # KerasTuner prints to stdout (e.g. "Reloading Tuner from ..."); keep stdout for temtool's
    # own output (trial lines, tables, --json); TEMTOOL_TUNER_VERBOSE=1 shows its lines on stderr.
    real_stdout = sys.stdout
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        tuner = _tuner_class(cfg.tuner)(**kw)
        _repair_grid_order(tuner.oracle)
        tuner._temtool = {
            "space": cfg.space,
            "train": cfg.train,
            "data": ds,
            "repeats": cfg.repeats,
            "on_trial": on_trial,
            "stdout": real_stdout,
        }
        tuner.search(verbose=0)
    if os.environ.get("TEMTOOL_TUNER_VERBOSE"):
        sys.stderr.write(chatter.getvalue())
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief":
        return {"project": str(root), "worker": os.environ.get("KERASTUNER_TUNER_ID")}
    return write_results(
        root,
        meta={
            "data": str(ds.path),
            "tuner": cfg.tuner,
            "pixel_size_nm": ds.pixel_size_nm,
            "regime": ds.regime,
            "repeats": cfg.repeats,
            "train": cfg.train.__dict__,
        },
    )


RESULT_COLUMNS = (
    "trial_id",
    "depth",
    "pools",
    "filters",
    "params",
    "rf_px",
    "rf_nm",
    "val_hard_dice_mean",
    "val_hard_dice_std",
    "val_soft_dice_mean",
    "epochs_run",
    "time_s",
    "images_per_s",
    "lr",
    "loss",
    "tuner_id",
)


def collect_trials(root: Path) -> list[dict]:
    """temtool's record of every finished trial of a project, best first."""
    rows = []
    for f in sorted(Path(root).glob("trial_*/temtool_trial.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    rows.sort(key=lambda r: -r["val_hard_dice_mean"])
    return rows


def write_results(root: Path, meta: dict | None = None) -> dict:
    """Write results.json, results.csv and best_model/ for a project; returns the summary."""
    root = Path(root)
    rows = collect_trials(root)
    if not rows:
        raise TemtoolError(f"{root}: no finished trials yet")
    summary = {"project": str(root), "n_trials": len(rows), **(meta or {}), "trials": rows}
    _atomic_text(root / "results.json", json.dumps(summary, indent=1))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(RESULT_COLUMNS)
    for r in rows:
        w.writerow(
            [",".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c) for c in RESULT_COLUMNS]
        )
    _atomic_text(root / "results.csv", buf.getvalue())
    best = root / f"trial_{rows[0]['trial_id']}" / "bundle"
    if best.is_dir():
        from temtool.data.io import atomic_dir

        with atomic_dir(root / "best_model") as tmp:
            shutil.copytree(best, tmp, dirs_exist_ok=True)
        summary["best_model"] = str(root / "best_model")
        remember_last_model(root / "best_model")
    return summary


def load_results(project: str | os.PathLike, directory: str = "tuner_logs") -> dict:
    """Results of a finished or interrupted project (by name under ``directory`` or by path)."""
    p = Path(project)
    if not p.is_dir():
        p = Path(directory) / str(project)
    if not p.is_dir():
        raise TemtoolError(f"--report {project}: no such project folder (looked in {directory}/)")
    if (p / "results.json").is_file():
        res = json.loads((p / "results.json").read_text())
        if len(collect_trials(p)) == res.get("n_trials"):
            return res
    return write_results(p)


def plot_dice_vs_rf(results: dict, png: str | os.PathLike) -> Path:
    """Dice against receptive field (nm if known, else px), one series per complexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["trials"]
    use_nm = all(r.get("rf_nm") for r in rows)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for params in sorted({r["params"] for r in rows}):
        sel = sorted((r for r in rows if r["params"] == params), key=lambda r: r["rf_px"])
        d = sel[0]
        label = f"depth {d['depth']}, filters {d['filters'][0]} ({params:,} params)"
        xs = [r["rf_nm"] if use_nm else r["rf_px"] for r in sel]
        ax.errorbar(
            xs,
            [r["val_hard_dice_mean"] for r in sel],
            yerr=[r["val_hard_dice_std"] for r in sel],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_xlabel("receptive field (nm)" if use_nm else "receptive field (px)")
    ax.set_ylabel("validation hard Dice")
    ax.set_title(Path(results["project"]).name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png
