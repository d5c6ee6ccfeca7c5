"""The temtool command line: each command parses, calls one library function, renders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

from temtool.errors import TemtoolError  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Segment nanoparticles in TEM images with residual UNets, and see why they work.",
)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _backend() -> None:
    """Start Keras (quietly unless --debug); only commands that need it call this."""
    from temtool._quiet import start_backend

    start_backend(quiet=not _state["debug"])


def _arch(depth: int, pool: str, filters: str, kernel: int):
    from temtool.arch import Architecture, ArchitectureError

    try:
        return Architecture.create(depth=depth, pool=pool, filters=filters, kernel_size=kernel)
    except ArchitectureError as e:
        raise TemtoolError(f"--depth/--pool/--filters/--kernel: {e}") from None


def _check_pixel_size(pixel_size: float | None, option: str = "--pixel-size") -> None:
    if pixel_size is not None and not pixel_size > 0:
        raise TemtoolError(f"{option} must be a positive number of nm per pixel, got {pixel_size}")


# --------------------------------------------------------------------------------------- rf
@app.command()
def rf(
    depth: Annotated[int, typer.Option(help="Number of pooling levels.")] = 2,
    pool: Annotated[str, typer.Option(help="Pool size for all levels, or one per level: 2,4.")] = "2",
    filters: Annotated[str, typer.Option(help="Base filters (doubling) or one per level+bottleneck.")] = "4",
    kernel: Annotated[int, typer.Option(help="Convolution kernel size (odd).")] = 3,
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="nm per pixel, to report nm.")
    ] = None,
    model: Annotated[
        Optional[Path],
        typer.Option(help="A trained model bundle: use its architecture and pixel size."),
    ] = None,
    exact: Annotated[
        bool,
        typer.Option("--exact", help="Also measure the exact worst-case RF on the built model."),
    ] = False,
    effective: Annotated[
        bool,
        typer.Option("--effective", help="With --model: effective RF from gradients (Luo et al. 2016)."),
    ] = False,
    data: Annotated[
        Optional[str],
        typer.Option(help="With --effective: images to average over (folder or sim:NAME)."),
    ] = None,
    cover: Annotated[
        Optional[float],
        typer.Option(help="List pool sequences of this depth whose RF covers this many nm."),
    ] = None,
    breakdown: Annotated[bool, typer.Option(help="Print the layer-by-layer table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Receptive field of an architecture, in pixels and nm."""
    _backend()
    from temtool import receptive_field as rfm
    from temtool.arch import count_params, count_trainable_params
    from temtool.report import console, rf_table, summary_table

    _check_pixel_size(pixel_size)
    bundle_info = None
    if model is not None:
        from temtool.bundle import load_bundle_metadata

        bundle_info = load_bundle_metadata(model)
        from temtool.arch import Architecture

        arch = Architecture.from_dict(bundle_info["architecture"])
        pixel_size = pixel_size or bundle_info.get("pixel_size_nm")
    else:
        arch = _arch(depth, pool, filters, kernel)
    result: dict = {
        "architecture": arch.to_dict(),
        "params": count_params(arch),
        "trainable_params": count_trainable_params(arch),
        "pixel_size_nm": pixel_size,
        "rf_px": rfm.theoretical_rf_px(arch),
        "rf_convention": "Sytwu et al. 2022 (cumulative-stride walk)",
    }
    result["rf_nm"] = round(result["rf_px"] * pixel_size, 4) if pixel_size else None
    if exact:
        result["exact_rf_px"] = rfm.exact_rf_px(arch)
        result["exact_rf_nm"] = round(result["exact_rf_px"] * pixel_size, 4) if pixel_size else None
    if effective:
        if model is None:
            raise TemtoolError("--effective needs --model MODEL (a trained bundle)")
        from temtool.effective_rf import effective_rf_for_bundle

        result["effective"] = effective_rf_for_bundle(model, data=data)
    if cover is not None:
        if pixel_size is None:
            raise TemtoolError("--cover needs --pixel-size (nm per pixel) to convert nm to px")
        result["cover_nm"] = cover
        result["recommendations"] = [
            {"pools": list(p), "rf_px": r, "rf_nm": round(n, 3)}
            for p, r, n in rfm.rf_recommendation(
                cover, pixel_size, depth=arch.depth, kernel_size=arch.kernel_size
            )
        ]
    if breakdown:
        result["breakdown"] = [vars(r) for r in rfm.rf_breakdown(arch)]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if breakdown:
        console.print(rf_table(rfm.rf_breakdown(arch), pixel_size))
    nm = (lambda v: f"= {v:.2f} nm") if pixel_size else (lambda v: "(give --pixel-size for nm)")
    rows = {
        "architecture": arch.label(),
        "parameters": f"{result['params']:,} ({result['trainable_params']:,} trainable)",
        "RF (study convention)": f"{result['rf_px']} px {nm(result['rf_px'] * (pixel_size or 0))}",
    }
    if exact:
        rows["RF (exact worst case)"] = (
            f"{result['exact_rf_px']} px {nm(result['exact_rf_px'] * (pixel_size or 0))}"
        )
    if effective:
        eff = result["effective"]
        rows["RF (effective, 95% of gradient)"] = (
            f"radius {eff['radius95_px']:.1f} px {nm(eff['radius95_px'] * (pixel_size or 0))}"
            f"; map: {eff['png']}"
        )
    console.print(summary_table("Receptive field", rows))
    if cover is not None:
        from rich.table import Table

        t = Table(title=f"Pool sequences (depth {arch.depth}) whose RF covers {cover} nm")
        for c in ("pools", "RF px", "RF nm"):
            t.add_column(c, justify="right")
        for r in result["recommendations"]:
            t.add_row(",".join(map(str, r["pools"])), str(r["rf_px"]), f"{r['rf_nm']:.2f}")
        if not result["recommendations"]:
            t.caption = "none: use more depth or larger pool choices"
        console.print(t)


# --------------------------------------------------------------------------------- simulate
def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise TemtoolError(f"--set {item!r}: expected NAME=VALUE or NAME=LO,HI")
        k, v = item.split("=", 1)
        try:
            vals = [float(x) for x in v.split(",")]
        except ValueError:
            raise TemtoolError(f"--set {item!r}: values must be numbers") from None
        out[k.strip()] = tuple(vals) if len(vals) > 1 else vals[0]
    return out


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    regime: Annotated[
        str, typer.Option(help="standard (amplitude contrast) or hrtem (lattice fringes).")
    ] = "hrtem",
    n: Annotated[int, typer.Option("--n", help="Number of micrographs.")] = 300,
    size: Annotated[int, typer.Option(help="Side length in px.")] = 512,
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="nm per pixel (default: the regime's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same images.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = min(2, os.cpu_count() or 1),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT_DIR.")] = False,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a simulation parameter: NAME=VALUE or NAME=LO,HI (repeatable)."),
    ] = None,
) -> None:
    """Simulate TEM micrographs with exact masks (standard TEM or HRTEM)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from temtool.data.dataset import write_simulated_dataset
    from temtool.report import console, summary_table

    if regime not in ("standard", "hrtem"):
        raise TemtoolError(f"--regime must be 'standard' or 'hrtem', got {regime!r}")
    _check_pixel_size(pixel_size)
    if workers < 1:
        raise TemtoolError(f"--workers must be >= 1, got {workers}")
    overrides = _parse_sets(set_ or [])
    if pixel_size:
        overrides["pixel_size_nm"] = pixel_size
    import time

    t0 = time.perf_counter()
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=n)
        path = write_simulated_dataset(
            out_dir,
            regime=regime,
            n=n,
            size=size,
            seed=seed,
            workers=workers,
            overwrite=overwrite,
            overrides=overrides,
            progress=lambda i: bar.update(task, completed=i),
        )
    dt = time.perf_counter() - t0
    meta = json.loads((path / "dataset.json").read_text())
    n_particles = sum(len(r["particles"]) for r in meta["images"])
    console.print(
        summary_table(
            f"Simulated {regime} dataset",
            {
                "folder": str(path),
                "images": f"{n} x {size}x{size} px at {meta['pixel_size_nm']} nm/px",
                "particles": f"{n_particles} ({n_particles / n:.1f} per image)",
                "splits": ", ".join(f"{k} {len(v)}" for k, v in meta["splits"].items()),
                "time": f"{dt:.1f} s ({n / dt:.1f} images/s, {workers} workers)",
            },
        )
    )


# ---------------------------------------------------------------------------------- prepare
@app.command()
def prepare(
    raw_dir: Annotated[
        Path, typer.Argument(help="Folder with images/ and masks/ (or labels/), or HDF5 files.")
    ],
    out_dir: Annotated[Path, typer.Argument(help="Dataset folder to write.")],
    patch: Annotated[int, typer.Option(help="Patch side in px.")] = 512,
    min_particle_px: Annotated[int, typer.Option(help="Drop patches with fewer particle pixels.")] = 400,
    split: Annotated[
        str, typer.Option(help="train,val,test shares by micrograph, e.g. 70,10,20.")
    ] = "70,10,20",
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    xray_threshold: Annotated[float, typer.Option(help="X-ray outliers: robust std above the median.")] = 8.0,
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="nm per pixel for all micrographs.")
    ] = None,
    channel: Annotated[Optional[int], typer.Option(help="Channel of coloured images to use.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT_DIR.")] = False,
) -> None:
    """The study's preprocessing: x-rays out, standardise, patches, split by micrograph."""
    from temtool.data.prepare import prepare as run_prepare
    from temtool.report import console, summary_table

    _check_pixel_size(pixel_size)
    try:
        shares = tuple(float(v) for v in split.split(","))
    except ValueError:
        raise TemtoolError(f"--split {split!r}: expected three numbers such as 70,10,20") from None
    if len(shares) != 3:
        raise TemtoolError(f"--split {split!r}: expected three numbers such as 70,10,20")
    s = run_prepare(
        raw_dir,
        out_dir,
        patch=patch,
        min_particle_px=min_particle_px,
        split=shares,
        seed=seed,
        xray_threshold=xray_threshold,
        pixel_size_nm=pixel_size,
        overwrite=overwrite,
        channel=channel,
    )
    console.print(
        summary_table(
            "Prepared dataset",
            {
                "folder": s["path"],
                "micrographs": ", ".join(f"{k} {v}" for k, v in s["micrographs"].items()),
                "patches": ", ".join(f"{k} {v}" for k, v in s["patches"].items())
                + f" ({s['patches_dropped']} dropped)",
                "patch size": f"{s['patch_px']} px"
                + (f" = {s['patch_px'] * s['pixel_size_nm']:.1f} nm" if s["pixel_size_nm"] else ""),
                "particle fraction": f"{s['particle_fraction']:.3f}",
                "x-rays replaced": str(s["xrays_replaced"]),
            },
        )
    )


# ------------------------------------------------------------------------------------ train
def _default_out(data: str, arch) -> Path:
    name = data[4:] if data.startswith("sim:") else Path(data).name or "data"
    return Path("models") / f"{name}-d{arch.depth}-p{'x'.join(map(str, arch.pools))}-f{arch.filters[0]}"


@app.command()
def train(
    data: Annotated[
        str, typer.Option(help="Dataset folder, or a built-in: sim:standard, sim:hrtem.")
    ] = "sim:standard",
    depth: Annotated[int, typer.Option(help="Number of pooling levels.")] = 2,
    pool: Annotated[str, typer.Option(help="Pool size for all levels, or one per level: 2,4.")] = "2",
    filters: Annotated[str, typer.Option(help="Base filters (doubling) or one per level+bottleneck.")] = "4",
    kernel: Annotated[int, typer.Option(help="Convolution kernel size (odd).")] = 3,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 100,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    loss: Annotated[str, typer.Option(help="ce, dice or ce+dice.")] = "ce",
    precision: Annotated[str, typer.Option(help="auto, float32, mixed_float16 or mixed_bfloat16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed (repeats use seed, seed+1, ...).")] = 0,
    repeats: Annotated[int, typer.Option(help="Train this many seeds; report mean and std.")] = 1,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without val Dice gain.")] = 20,
    pixel_size: Annotated[
        Optional[float],
        typer.Option("--pixel-size", help="nm per pixel of the data (overrides the dataset's)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Bundle folder to write (default models/DATA-ARCH).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train the residual UNet and write a self-describing model bundle."""
    _backend()
    import numpy as np
    from rich.table import Table

    from temtool.bundle import load_bundle_metadata, save_bundle
    from temtool.report import console, summary_table
    from temtool.train import TrainConfig
    from temtool.train import train as run_train

    _check_pixel_size(pixel_size)
    arch = _arch(depth, pool, filters, kernel)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        loss=loss,
        precision=precision,
        seed=seed,
        patience=patience,
    )
    cfg.validate()
    out = out or _default_out(data, arch)
    quiet = as_json

    def on_repeat(r, s):
        if not quiet and repeats > 1:
            console.rule(f"repeat {r + 1}/{repeats} (seed {s})")

    def on_epoch(epoch, logs, ips):
        if quiet:
            return
        console.print(
            f"epoch {epoch + 1:3d}/{epochs}  loss {logs.get('loss', float('nan')):.4f}  "
            f"dice {logs.get('soft_dice', float('nan')):.3f}  "
            f"hard {logs.get('hard_dice', float('nan')):.3f}  "
            f"val hard {logs.get('val_hard_dice', float('nan')):.3f}  {ips:6.1f} img/s",
            highlight=False,
        )

    best, runs, ds = run_train(
        arch,
        data,
        cfg,
        repeats=repeats,
        pixel_size_nm=pixel_size,
        on_epoch=on_epoch,
        on_repeat=on_repeat,
    )
    vals = np.array([r.best_val_hard_dice for r in runs])
    from temtool.arch import count_params, count_trainable_params

    meta = {
        "architecture": arch.to_dict(),
        "params": count_params(best.model),
        "trainable_params": count_trainable_params(best.model),
        "pixel_size_nm": ds.pixel_size_nm,
        "regime": ds.regime,
        "data": ds.summary(),
        "training": {**cfg.__dict__, "precision_used": best.precision, "seed_kept": best.seed},
        "metrics": {
            "val_hard_dice": best.best_val_hard_dice,
            "best_epoch": best.best_epoch,
            "epochs_run": best.epochs_run,
            "train_time_s": best.train_time_s,
            "images_per_s": best.images_per_s,
            "repeats": [
                {
                    "seed": r.seed,
                    "val_hard_dice": r.best_val_hard_dice,
                    "best_epoch": r.best_epoch,
                    "epochs_run": r.epochs_run,
                }
                for r in runs
            ],
            "val_hard_dice_mean": float(vals.mean()),
            "val_hard_dice_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
        },
    }
    path = save_bundle(out, best.model, meta, history=best.history)
    from temtool.bundle import remember_last_model

    remember_last_model(path)
    saved = load_bundle_metadata(path)
    rf_text = f"{saved['rf_px']} px" + (f" = {saved['rf_nm']:.2f} nm" if saved.get("rf_nm") else "")
    summary = {
        "bundle": str(path),
        "architecture": arch.label(),
        "parameters": f"{meta['params']:,}",
        "RF": rf_text,
        "precision": best.precision,
        "val hard Dice": (
            f"{vals.mean():.3f} +- {meta['metrics']['val_hard_dice_std']:.3f} over {len(runs)} seeds"
            if len(runs) > 1
            else f"{vals[0]:.3f} (epoch {best.best_epoch})"
        ),
        "epochs run": str(best.epochs_run),
        "speed": f"{best.images_per_s:.1f} images/s",
    }
    if as_json:
        print(json.dumps(saved, indent=2))
        return
    if len(runs) > 1:
        t = Table(title="Repeats")
        for c in ("seed", "val hard Dice", "best epoch", "epochs"):
            t.add_column(c, justify="right")
        for r in runs:
            t.add_row(str(r.seed), f"{r.best_val_hard_dice:.3f}", str(r.best_epoch), str(r.epochs_run))
        console.print(t)
    console.print(summary_table("Training finished", summary))


# --------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A model bundle folder (from temtool train).")],
    data: Annotated[str, typer.Option(help="Dataset folder or sim:NAME.")] = "sim:standard",
    split: Annotated[str, typer.Option(help="Split to score: train, val or test.")] = "test",
    pixel_size: Annotated[
        Optional[float],
        typer.Option("--pixel-size", help="nm per pixel (overrides the dataset's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score a model on a dataset split, next to a Gaussian + Otsu baseline."""
    _backend()
    from rich.table import Table

    from temtool.evaluate import evaluate as run_eval
    from temtool.report import console

    _check_pixel_size(pixel_size)
    res = run_eval(model, data, split=split, pixel_size_nm=pixel_size)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    t = Table(title=f"Per image ({res['split']} split of {res['data']})")
    t.add_column("image")
    for c in ("model Dice", "model IoU", "Otsu Dice"):
        t.add_column(c, justify="right")
    for r in res["per_image"]:
        t.add_row(
            r["image"],
            f"{r['model']['dice']:.3f}",
            f"{r['model']['iou']:.3f}",
            f"{r['otsu']['dice']:.3f}",
        )
    console.print(t)
    s = Table(title=f"Mean over {res['n_images']} images")
    s.add_column("method")
    for c in ("soft Dice", "hard Dice", "IoU", "precision", "recall"):
        s.add_column(c, justify="right")
    for who, label in (("model", "network"), ("otsu", "Gaussian + Otsu")):
        m = res["mean"][who]
        s.add_row(
            label,
            f"{m['soft_dice']:.3f}",
            f"{m['dice']:.3f} +- {m['dice_std']:.3f}",
            f"{m['iou']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
        )
    console.print(s)


# ------------------------------------------------------------------------------------- tune
def _trials_table(results: dict):
    from rich.table import Table

    t = Table(title=f"{results['project']}: {results['n_trials']} trials, best first")
    for c in ("depth", "pools", "filters", "params", "RF px", "RF nm", "val Dice", "epochs", "time s"):
        t.add_column(c, justify="right")
    for r in results["trials"]:
        dice = f"{r['val_hard_dice_mean']:.3f}"
        if len(r.get("repeats", [])) > 1:
            dice += f" +- {r['val_hard_dice_std']:.3f}"
        t.add_row(
            str(r["depth"]),
            ",".join(map(str, r["pools"])),
            "-".join(map(str, r["filters"])),
            f"{r['params']:,}",
            str(r["rf_px"]),
            f"{r['rf_nm']:.2f}" if r.get("rf_nm") else "-",
            dice,
            str(r["epochs_run"]),
            f"{r['time_s']:.0f}",
        )
    return t


def _host_port(value: str, option: str) -> tuple[str, str]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise TemtoolError(f"{option} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, port


@app.command()
def tune(
    data: Annotated[str, typer.Option(help="Dataset folder or sim:NAME.")] = "sim:hrtem",
    tuner: Annotated[
        str, typer.Option(help="grid (the study's sweep), random, bayesian or hyperband.")
    ] = "grid",
    depths: Annotated[str, typer.Option(help="Depth choices, e.g. 2,3,4.")] = "2",
    pools: Annotated[str, typer.Option(help="Pool-size choices per level, e.g. 2,4,8.")] = "2,4,8",
    filters: Annotated[str, typer.Option(help="Base-filter choices, e.g. 4,8,16,32.")] = "4",
    lrs: Annotated[Optional[str], typer.Option(help="Also search learning rates, e.g. 1e-3,1e-4.")] = None,
    losses: Annotated[Optional[str], typer.Option(help="Also search losses, e.g. ce,ce+dice.")] = None,
    max_params: Annotated[Optional[int], typer.Option(help="Skip networks with more parameters.")] = None,
    max_trials: Annotated[
        Optional[int], typer.Option(help="Stop after this many trials (grid: all by default).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Seeds per configuration (mean +- std).")] = 1,
    epochs: Annotated[int, typer.Option(help="Maximum epochs per training.")] = 10,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate (when --lrs is not given).")] = 1e-3,
    loss: Annotated[str, typer.Option(help="Loss (when --losses is not given).")] = "ce",
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 10,
    precision: Annotated[str, typer.Option(help="auto, float32, mixed_float16, mixed_bfloat16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="nm per pixel (overrides the dataset's).")
    ] = None,
    project: Annotated[
        Optional[str], typer.Option(help="Project name under --directory (default DATA-search).")
    ] = None,
    directory: Annotated[str, typer.Option(help="Folder of search projects.")] = "tuner_logs",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the project over (default: resume).")
    ] = False,
    report: Annotated[
        Optional[str], typer.Option(help="Print a project's table and draw its plot, without training.")
    ] = None,
    chief: Annotated[
        Optional[str], typer.Option(help="Run the chief oracle of a distributed search at HOST:PORT.")
    ] = None,
    worker: Annotated[
        Optional[str],
        typer.Option(help="Run a worker of the distributed search whose chief is at HOST:PORT."),
    ] = None,
    worker_id: Annotated[int, typer.Option(help="With --worker: this worker's number.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Search pooling sizes, filters and depth with KerasTuner; table of Dice, RF and parameters."""
    from temtool.report import console

    _backend()

    if report:
        from temtool.tune import load_results, plot_dice_vs_rf

        res = load_results(report, directory)
        png = plot_dice_vs_rf(res, Path(res["project"]) / "dice_vs_rf.png")
        if as_json:
            print(json.dumps(res, indent=2))
            return
        console.print(_trials_table(res))
        console.print(f"plot: {png}")
        return
    if chief and worker:
        raise TemtoolError("--chief and --worker exclude each other: run one process of each")
    if chief or worker:
        host, port = _host_port(chief or worker, "--chief" if chief else "--worker")
        os.environ["KERASTUNER_ORACLE_IP"] = host
        os.environ["KERASTUNER_ORACLE_PORT"] = port
        os.environ["KERASTUNER_TUNER_ID"] = "chief" if chief else f"tuner{worker_id}"
    from temtool.arch import ArchitectureError, parse_int_list
    from temtool.train import TrainConfig
    from temtool.tune import SearchSpace, TuneConfig
    from temtool.tune import tune as run_tune

    _check_pixel_size(pixel_size)
    try:
        space = SearchSpace(
            depths=parse_int_list(depths, "--depths"),
            pools=parse_int_list(pools, "--pools"),
            base_filters=parse_int_list(filters, "--filters"),
            lrs=tuple(float(v) for v in lrs.split(",")) if lrs else (),
            losses=tuple(v.strip() for v in losses.split(",")) if losses else (),
            max_params=max_params,
        )
    except (ArchitectureError, ValueError) as e:
        raise TemtoolError(f"search space: {e}") from None
    if (
        any(d < 1 for d in space.depths)
        or any(p < 1 for p in space.pools)
        or any(f < 1 for f in space.base_filters)
    ):
        raise TemtoolError("--depths, --pools and --filters must be positive integers")
    from temtool.metrics import LOSSES

    bad = [v for v in space.losses if v not in LOSSES]
    if bad:
        raise TemtoolError(f"--losses: unknown loss {bad[0]!r}; choose from {', '.join(LOSSES)}")
    cfg = TuneConfig(
        data=data,
        tuner=tuner,
        max_trials=max_trials,
        repeats=repeats,
        project=project,
        directory=directory,
        overwrite=overwrite,
        seed=seed,
        space=space,
        pixel_size_nm=pixel_size,
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch,
            lr=lr,
            loss=loss,
            precision=precision,
            seed=seed,
            patience=patience,
        ),
    )

    def on_trial(r):
        if not as_json:
            console.print(
                f"trial {r['trial_id']}: depth {r['depth']} pools {','.join(map(str, r['pools']))} "
                f"filters {r['filters'][0]}  params {r['params']:,}  RF {r['rf_px']} px  "
                f"val Dice {r['val_hard_dice_mean']:.3f}  ({r['time_s']:.0f} s)",
                highlight=False,
            )

    res = run_tune(cfg, on_trial=on_trial)
    if "worker" in res:
        console.print(
            f"worker {res['worker']} finished; results are collected by the chief in {res['project']}"
        )
        return
    if as_json:
        print(json.dumps(res, indent=2))
        return
    console.print(_trials_table(res))
    console.print(f"results: {res['project']}/results.csv; best model: {res.get('best_model', '-')}")
    console.print(f"plot: temtool tune --report {res['project']}")


# ---------------------------------------------------------------------------------- segment
def _expand_inputs(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    import glob

    from temtool.data.io import IMAGE_SUFFIXES

    files, failed = [], []
    for p in paths:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not matches:
            failed.append((p, "no file matches this pattern"))
        for m in matches:
            q = Path(m)
            if q.is_dir():
                found = sorted(f for f in q.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if not found:
                    failed.append((m, "folder holds no images"))
                files.extend(found)
            elif q.exists():
                files.append(q)
            else:
                failed.append((m, "no such file"))
    return files, failed


@app.command()
def segment(
    paths: Annotated[list[str], typer.Argument(help="Micrographs: files, folders or globs.")],
    model: Annotated[
        Optional[Path], typer.Option(help="Model bundle (default: last trained, else shipped).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("segmented"),
    pixel_size: Annotated[
        Optional[float], typer.Option("--pixel-size", help="nm per pixel (overrides the files').")
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="8-fold dihedral test-time augmentation.")] = False,
    overlap: Annotated[
        Optional[int], typer.Option(help="Context margin per tile in px (default: half the exact RF).")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Probability threshold for the mask.")] = 0.5,
    batch: Annotated[int, typer.Option(help="Tiles per batch.")] = 4,
    method: Annotated[
        str, typer.Option(help="model, or fourier (Bragg-filter baseline, no model).")
    ] = "model",
    d_spacing: Annotated[
        str, typer.Option(help="With --method fourier: lattice spacings in nm.")
    ] = "0.2355,0.2039",
    channel: Annotated[Optional[int], typer.Option(help="Channel of coloured images.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Segment whole micrographs of any size and measure the particles."""
    from rich.table import Table

    from temtool.report import console, err_console

    _check_pixel_size(pixel_size)
    if method not in ("model", "fourier"):
        raise TemtoolError(f"--method must be 'model' or 'fourier', got {method!r}")
    if not 0 < threshold < 1:
        raise TemtoolError(f"--threshold must be between 0 and 1, got {threshold}")
    if batch < 1:
        raise TemtoolError(f"--batch must be >= 1, got {batch}")
    try:
        spacings = tuple(float(v) for v in d_spacing.split(","))
    except ValueError:
        raise TemtoolError(f"--d-spacing {d_spacing!r}: expected numbers in nm, e.g. 0.2355,0.2039") from None
    files, failed = _expand_inputs(paths)
    n_inputs = len(files) + len(failed)
    segmenters = {}

    def get_segmenter(px):
        from temtool.arch import Architecture
        from temtool.bundle import load_bundle
        from temtool.segment import Segmenter, default_model

        if model is not None:
            path, why = model, str(model)
        else:
            path, why = default_model(px)
        key = str(path)
        if key not in segmenters:
            m, meta = load_bundle(path)
            arch = Architecture.from_dict(meta["architecture"])
            rf = meta.get("exact_rf_px") or meta["rf_px"]
            segmenters[key] = Segmenter(
                m, arch, rf, meta.get("pixel_size_nm"), batch_size=batch, tta=tta, margin_px=overlap
            )
            if not as_json:
                console.print(f"model: {why}", highlight=False)
        return segmenters[key]

    if method == "model":
        _backend()
    from temtool.segment import segment_file

    results = []
    for f in files:
        try:
            results.append(
                segment_file(
                    f,
                    out,
                    get_segmenter if method == "model" else None,
                    pixel_size_nm=pixel_size,
                    threshold=threshold,
                    method=method,
                    d_spacing_nm=spacings,
                    channel=channel,
                )
            )
        except TemtoolError as e:
            if model is not None and str(model) in str(e):
                raise
            failed.append((str(f), str(e)))
            err_console.print(f"[red]failed:[/] {e}", highlight=False)
    if as_json:
        print(
            json.dumps({"results": results, "failed": [{"file": a, "error": b} for a, b in failed]}, indent=2)
        )
    else:
        t = Table(title=f"Segmentation ({method}) -> {out}")
        for c in ("file", "particles", "diameter mean +- sd", "median", "area fraction", "time s"):
            t.add_column(c, justify="right")
        for r in results:
            d = (
                f"{r['diameter_mean']:.2f} +- {r['diameter_sd']:.2f} {r['diameter_unit']}"
                if r["diameter_mean"] is not None
                else "-"
            )
            med = f"{r['diameter_median']:.2f}" if r["diameter_median"] is not None else "-"
            t.add_row(
                Path(r["file"]).name,
                str(r["particles"]),
                d,
                med,
                f"{r['area_fraction']:.3f}",
                f"{r['time_s']:.2f}",
            )
        console.print(t)
        for r in results:
            for n in r["notes"]:
                console.print(f"{Path(r['file']).name}: {n}", highlight=False)
    if failed:
        err_console.print(f"[red]{len(failed)} of {n_inputs} inputs failed:[/]")
        for a, b in failed:
            err_console.print(f"  {a}: {b}", highlight=False)
        raise typer.Exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``temtool`` console script."""
    try:
        app(args=argv, prog_name="temtool")
    except TemtoolError as e:
        if _state["debug"]:
            raise
        from temtool.report import err_console

        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        from temtool.report import err_console

        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
