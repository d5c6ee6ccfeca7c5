"""The temtool command line: each command parses its options, calls one library function and
renders the result (:mod:`temtool.cli.render`). No science here.

Library errors name Python parameters (``batch_size``); :data:`FLAGS` maps them to options.
Each command imports its library code when it runs (the one seam of this module): so
``temtool segment`` starts without Keras, and ``temtool rf`` without the simulator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer import Argument as A
from typer import Option as O

from temtool.cli.process import terminated
from temtool.cli.render import (
    Progress,
    console,
    err_console,
    evaluation_tables,
    export_summary,
    otsu_verdict,
    prepared_summary,
    rf_summary,
    segment_callback,
    segment_summary,
    simulated_summary,
    styled,
    training_callbacks,
    training_summary,
    trials_table,
    tune_callbacks,
    tune_summary,
)
from temtool.errors import ArchitectureError, ParameterError, TemtoolError, check_positive

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Segment nanoparticles in TEM images with residual UNets, and see why they work.",
)
_state: dict = {"debug": False, "flags": {}}

# library parameter -> command-line option (commands add their own in _state["flags"])
FLAGS = {
    "base_filters": "--filters",
    "batch_size": "--batch",
    "cover_nm": "--cover",
    "d_spacing_nm": "--d-spacing",
    "max_params": "--max-params",
    "max_trials": "--max-trials",
    "min_area": "--min-area",
    "smooth_px": "--smooth",
    "min_particle_px": "--min-particle-px",
    "pixel_size_nm": "--pixel-size",
    "worker_id": "--worker-id",
    "xray_threshold": "--xray-threshold",
    "arch": "--depth/--pool/--filters",
    "out_dir": "OUT_DIR",
    "overrides": "--set",
}

# ------------------------------------------------------------------ shared option types
PixelSize = Annotated[
    Optional[float],
    O("--pixel-size", help="nm per pixel (overrides what the files or dataset say)."),
]
Data = Annotated[
    str,
    O(
        help="Dataset folder, or a built-in: sim:standard, sim:randomised, sim:hrtem, "
        "sim:hrtem-study, sim:standard-cpu, sim:standard-study."
    ),
]
AsJson = Annotated[bool, O("--json", help="Print JSON instead of tables.")]
Overwrite = Annotated[bool, O("--overwrite", help="Replace a non-empty output folder.")]
Depth = Annotated[int, O(min=1, help="Number of pooling levels.")]
Pool = Annotated[str, O(help="Pool size for all levels, or one per level: 2,4.")]
Filters = Annotated[str, O(help="Base filters (doubling) or one per level+bottleneck.")]
Kernel = Annotated[int, O(min=1, help="Convolution kernel size (odd).")]
Epochs = Annotated[int, O(min=1, help="Maximum epochs per training.")]
Batch = Annotated[int, O(min=1, help="Batch size.")]
Precision = Annotated[str, O(help="auto, float32, mixed_float16 or mixed_bfloat16.")]
AugmentOn = Annotated[
    str,
    O(help="Where dihedral augmentation runs: host (feeder), device (compiled step), auto (GPU: device)."),
]
Seed = Annotated[int, O(min=0, help="Random seed (repeats use seed, seed+1, ...).")]
Repeats = Annotated[int, O(min=1, help="Seeds per configuration; mean and sd are reported.")]
Patience = Annotated[int, O(min=1, help="Stop after this many epochs without val Dice gain.")]


@app.callback()
def _main(
    debug: Annotated[bool, O("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _backend() -> None:
    """Start Keras (quietly unless --debug); only commands that need it call this."""
    from temtool.backend import start_backend

    start_backend(quiet=not _state["debug"])


def _arch(depth: int, pool: str, filters: str, kernel: int, boundary: bool = False):
    from temtool.model.architecture import Architecture

    try:
        return Architecture.create(
            depth=depth, pool=pool, filters=filters, kernel_size=kernel, n_classes=3 if boundary else 2
        )
    except ArchitectureError as e:
        raise TemtoolError(f"--depth/--pool/--filters/--kernel: {e}") from None


def _train_config(epochs, batch, lr, loss, precision, seed, patience, augment_on):
    from temtool.study.train import TrainConfig

    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        loss=loss,
        precision=precision,
        seed=seed,
        patience=patience,
        augment_on=augment_on,
    )
    cfg.validate()
    return cfg


def _render(result: dict, tables, as_json: bool) -> None:
    """``--json``: the result as JSON on stdout; else its rich tables."""

    if as_json:
        print(json.dumps(result, indent=2))
        return
    for table in tables(result):
        console.print(table, highlight=False)


def _builtin_data(data: str, quiet: bool) -> None:
    """Generate a built-in dataset on first use with a progress bar (it takes seconds)."""
    from temtool.data.dataset import BUILTIN, builtin_path, ensure_builtin

    name = data[4:] if data.startswith("sim:") else None
    if name in BUILTIN and not (builtin_path(name) / "dataset.json").is_file():
        with Progress(enabled=not quiet) as bar:
            task = bar.task(f"simulating built-in {data} (first use)", BUILTIN[name]["n"])
            ensure_builtin(name, progress=lambda i: bar.update(task, completed=i))


# --------------------------------------------------------------------------------------- rf
@app.command()
def rf(
    depth: Depth = 2,
    pool: Pool = "2",
    filters: Filters = "4",
    kernel: Kernel = 3,
    pixel_size: PixelSize = None,
    model: Annotated[Optional[Path], O(help="A model bundle: its architecture and pixel size.")] = None,
    exact: Annotated[bool, O("--exact", help="Also measure the exact RF on the built model.")] = False,
    effective: Annotated[
        bool, O("--effective", help="With --model: effective RF from gradients (Luo et al. 2016).")
    ] = False,
    data: Annotated[Optional[str], O(help="With --effective: images (folder or sim:NAME).")] = None,
    cover: Annotated[Optional[float], O(help="Pool sequences whose RF covers this many nm.")] = None,
    breakdown: Annotated[bool, O(help="Print the layer-by-layer table.")] = False,
    as_json: AsJson = False,
) -> None:
    """Receptive field of an architecture, in pixels and nm."""
    _backend()
    from temtool.study.rf_report import rf_report

    _state["flags"] = {"effective": "--effective", "model": "--model"}
    arch = None if model is not None else _arch(depth, pool, filters, kernel)
    result = rf_report(
        arch,
        model=model,
        pixel_size_nm=pixel_size,
        exact=exact,
        effective=effective,
        data=data,
        cover_nm=cover,
        breakdown=breakdown,
    )
    _render(result, rf_summary, as_json)


# --------------------------------------------------------------------------------- simulate
@app.command()
def simulate(
    out_dir: Annotated[Path, A(help="Folder to write the dataset into.")],
    regime: Annotated[
        str,
        O(
            help="standard (amplitude contrast), hrtem (lattice fringes) or haadf "
            "(Z-contrast STEM: bright particles)."
        ),
    ] = "hrtem",
    n: Annotated[int, O("--n", help="Number of micrographs.")] = 300,
    size: Annotated[int, O(help="Side length in px.")] = 512,
    pixel_size: PixelSize = None,
    seed: Seed = 0,
    workers: Annotated[int, O(help="Worker processes.")] = min(2, os.cpu_count() or 1),
    overwrite: Overwrite = False,
    set_: Annotated[
        Optional[list[str]],
        O("--set", help="Override a simulation parameter: NAME=VALUE or NAME=LO,HI (repeatable)."),
    ] = None,
) -> None:
    """Simulate micrographs with exact masks (bright-field TEM, HRTEM or HAADF-STEM)."""
    from temtool.data.dataset import write_simulated_dataset
    from temtool.data.simulate import parse_overrides

    _state["flags"] = {"n": "--n", "size": "--size", "workers": "--workers", "regime": "--regime"}
    try:
        overrides = parse_overrides(set_ or [])
    except ValueError as e:
        raise TemtoolError(f"--set {e}") from None
    if check_positive("pixel_size_nm", pixel_size) is not None:
        overrides["pixel_size_nm"] = pixel_size
    t0 = time.perf_counter()
    with Progress() as bar:
        task = bar.task("simulating", n)
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
    meta = json.loads((path / "dataset.json").read_text())
    console.print(simulated_summary({**meta, "path": str(path)}, time.perf_counter() - t0, workers))


# ---------------------------------------------------------------------------------- prepare
@app.command()
def prepare(
    raw_dir: Annotated[Path, A(help="Folder with images/ and masks/ (or labels/), or HDF5 files.")],
    out_dir: Annotated[Path, A(help="Dataset folder to write.")],
    patch: Annotated[int, O(help="Patch side in px.")] = 512,
    min_particle_px: Annotated[int, O(help="Drop patches with fewer particle pixels.")] = 400,
    split: Annotated[str, O(help="train,val,test shares by micrograph, e.g. 70,10,20.")] = "70,10,20",
    seed: Annotated[int, O(help="Seed of the split.")] = 0,
    xray_threshold: Annotated[float, O(help="X-ray outliers: robust std above the median.")] = 8.0,
    pixel_size: PixelSize = None,
    channel: Annotated[Optional[int], O(help="Channel of coloured images to use.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """The study's preprocessing: x-rays out, standardise, patches, split by micrograph."""
    from temtool.data.prepare import prepare as run_prepare

    _state["flags"] = {"patch": "--patch", "split": "--split"}
    summary = run_prepare(
        raw_dir,
        out_dir,
        patch=patch,
        min_particle_px=min_particle_px,
        split=split.split(","),
        seed=seed,
        xray_threshold=xray_threshold,
        pixel_size_nm=pixel_size,
        overwrite=overwrite,
        channel=channel,
    )
    console.print(prepared_summary(summary))


# ------------------------------------------------------------------------------------ train
@app.command()
def train(
    data: Data = "sim:standard",
    depth: Depth = 2,
    pool: Pool = "2",
    filters: Filters = "4",
    kernel: Kernel = 3,
    epochs: Annotated[
        Optional[int], O(min=1, help="Maximum epochs per training (default 100; 60 with --start-from).")
    ] = None,
    batch: Annotated[Optional[int], O(min=1, help="Batch size (default 32; 8 with --start-from).")] = None,
    lr: Annotated[
        Optional[float], O(help="Adam learning rate (default 1e-4; 5e-5 with --start-from).")
    ] = None,
    loss: Annotated[str, O(help="ce, dice or ce+dice.")] = "ce",
    precision: Precision = "auto",
    augment_on: AugmentOn = "auto",
    seed: Seed = 0,
    repeats: Repeats = 1,
    patience: Annotated[
        Optional[int],
        O(
            min=1,
            help="Stop after this many epochs without val Dice gain (default 20; 10 with --start-from).",
        ),
    ] = None,
    pixel_size: PixelSize = None,
    boundary: Annotated[
        bool,
        O(
            "--boundary",
            help="Instance-aware: a third output class for particle boundaries, learned from the "
            "dataset's instances/ (else its masks' components); segment parts touching particles there.",
        ),
    ] = False,
    start_from: Annotated[
        Optional[str],
        O(
            help="Fine-tune instead of training from scratch: a shipped model (standard, hrtem) or a "
            "bundle folder. Its architecture is kept (--boundary adds the boundary output, starting "
            "from its particle map); test Dice and object F1 before and after are reported."
        ),
    ] = None,
    out: Annotated[Optional[Path], O(help="Bundle folder to write (default models/DATA-ARCH).")] = None,
    as_json: AsJson = False,
) -> None:
    """Train the residual UNet (or fine-tune one) and write a self-describing model bundle."""
    if start_from is not None and (depth, pool, filters, kernel) != (2, "2", "4", 3):
        raise TemtoolError(
            "--start-from keeps the starting model's architecture (--boundary may add the boundary "
            "output): leave out --depth/--pool/--filters/--kernel"
        )
    _backend()
    from temtool.study.finetune import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS, finetune_and_save
    from temtool.study.train import train_and_save

    _state["flags"] = {"out_dir": "--out"}
    arch = _arch(depth, pool, filters, kernel, boundary)
    defaults = FINETUNE_DEFAULTS if start_from else SCRATCH_DEFAULTS
    epochs = epochs or defaults["epochs"]
    cfg = _train_config(
        epochs,
        batch or defaults["batch_size"],
        lr or defaults["lr"],
        loss,
        precision,
        seed,
        patience or defaults["patience"],
        augment_on,
    )
    _builtin_data(data, as_json)
    with Progress(enabled=not as_json) as bar:
        callbacks = training_callbacks(bar, epochs, repeats)
        kw = {"repeats": repeats, "pixel_size_nm": pixel_size, **callbacks}
        if start_from:
            meta, _ = finetune_and_save(start_from, data, cfg, out, boundary=boundary, **kw)
        else:
            meta, _ = train_and_save(arch, data, cfg, out, **kw)
    _render(meta, training_summary, as_json)


# --------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    model: Annotated[Path, A(help="A model bundle folder (from temtool train).")],
    data: Data = "sim:standard",
    split: Annotated[str, O(help="Split to score: train, val or test.")] = "test",
    pixel_size: PixelSize = None,
    as_json: AsJson = False,
) -> None:
    """Score a model on a dataset split, next to a Gaussian + Otsu baseline."""
    _backend()
    from temtool.study.evaluate import evaluate as run_eval

    _state["flags"] = {"split": "--split"}
    _builtin_data(data, as_json)
    res = run_eval(model, data, split=split, pixel_size_nm=pixel_size)
    _render(res, evaluation_tables, as_json)


# ------------------------------------------------------------------------------------- tune
@app.command()
def tune(
    data: Data = "sim:randomised",
    tuner: Annotated[str, O(help="grid (the study's sweep), random, bayesian or hyperband.")] = "grid",
    depths: Annotated[str, O(help="Depth choices, e.g. 2,3,4.")] = "2",
    pools: Annotated[str, O(help="Pool-size choices per level, e.g. 2,4,8.")] = "2,4,8",
    filters: Annotated[str, O(help="Base-filter choices, e.g. 4,8,16,32.")] = "4",
    lrs: Annotated[Optional[str], O(help="Also search learning rates, e.g. 1e-3,1e-4.")] = None,
    losses: Annotated[Optional[str], O(help="Also search losses, e.g. ce,ce+dice.")] = None,
    max_params: Annotated[Optional[int], O(help="Skip networks with more parameters.")] = None,
    max_trials: Annotated[Optional[int], O(help="Stop after this many trials (grid: all).")] = None,
    repeats: Repeats = 1,
    epochs: Epochs = 8,
    batch: Batch = 8,
    lr: Annotated[float, O(help="Learning rate (when --lrs is not given).")] = 1e-3,
    loss: Annotated[str, O(help="Loss (when --losses is not given).")] = "ce",
    patience: Patience = 10,
    precision: Precision = "auto",
    seed: Seed = 0,
    pixel_size: PixelSize = None,
    augment_on: AugmentOn = "auto",
    project: Annotated[Optional[str], O(help="Project name under --directory (default DATA-search).")] = None,
    directory: Annotated[str, O(help="Folder of search projects.")] = "tuner_logs",
    overwrite: Annotated[bool, O("--overwrite", help="Start the project over (default: resume).")] = False,
    report: Annotated[Optional[str], O(help="Print a project's table and plot, without training.")] = None,
    chief: Annotated[
        Optional[str], O(help="Run the chief oracle of a distributed search at HOST:PORT.")
    ] = None,
    worker: Annotated[Optional[str], O(help="Run a worker whose chief is at HOST:PORT.")] = None,
    worker_id: Annotated[int, O(help="With --worker: this worker's number.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Search pooling sizes, filters and depth with KerasTuner; table of RF, parameters, val and
    test Dice, with the tuned baselines (Otsu, Fourier) as rows."""

    _state["flags"] = {"depths": "--depths", "pools": "--pools", "directory": "--directory"}
    _backend()
    from temtool.study import tune as tuning

    if report:
        res = tuning.load_results(report, directory)
        png = tuning.plot_dice_vs_rf(res, Path(res["project"]) / "dice_vs_rf.png")
        verdict = otsu_verdict(res["trials"])
        _render(res, lambda r: [trials_table(r), *([verdict] if verdict else []), f"plot: {png}"], as_json)
        return
    os.environ.update(tuning.distributed_env(chief, worker, worker_id))
    space = tuning.SearchSpace.parse(depths, pools, filters, lrs, losses, max_params)
    cfg = tuning.TuneConfig(
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
        train=_train_config(epochs, batch, lr, loss, precision, seed, patience, augment_on),
    )
    _builtin_data(data, as_json)
    with Progress(enabled=not as_json) as bar:
        res = tuning.tune(cfg, **tune_callbacks(bar))
    _render(res, tune_summary, as_json)


# ---------------------------------------------------------------------------------- segment
@app.command()
def segment(
    paths: Annotated[list[str], A(help="Micrographs: files, folders or globs.")],
    model: Annotated[Optional[Path], O(help="Model bundle (default: last trained, else shipped).")] = None,
    out: Annotated[Path, O(help="Output folder.")] = Path("segmented"),
    pixel_size: PixelSize = None,
    tta: Annotated[bool, O("--tta", help="8-fold dihedral test-time augmentation.")] = False,
    overlap: Annotated[
        Optional[int],
        O(help="Context kept around each tile in px (default: the model's RF reach)."),
    ] = None,
    threshold: Annotated[float, O(help="Probability threshold for the mask.")] = 0.5,
    smooth: Annotated[float, O(help="Gaussian sigma (px) on the probability map; 0: none.")] = 1.0,
    fill_holes: Annotated[bool, O(help="Fill holes smaller than a typical particle.")] = True,
    min_area: Annotated[
        Optional[float], O(help="Drop smaller objects: nm^2 (px without a pixel size); default auto.")
    ] = None,
    batch: Annotated[int, O(help="Tiles per batch.")] = 4,
    workers: Annotated[
        int, O(help="Threads that post-process and write while the next file is read and segmented.")
    ] = 2,
    runtime: Annotated[
        str,
        O(help="What runs the network: auto (ONNX Runtime for bundles with a graph), onnx, keras."),
    ] = "auto",
    method: Annotated[str, O(help="model, or fourier (Bragg-filter baseline, no model).")] = "model",
    d_spacing: Annotated[str, O(help="With --method fourier: lattice spacings in nm.")] = "0.2355,0.2039",
    channel: Annotated[Optional[int], O(help="Channel of coloured images.")] = None,
    frame: Annotated[Optional[int], O(help="Frame of image stacks (in-situ series, MRC stacks).")] = None,
    annotations: Annotated[
        bool,
        O(
            "--ignore-annotations/--keep-annotations",
            help="Find burned-in scale bars, labels and data bars and keep them out of the mask.",
        ),
    ] = True,
    polarity: Annotated[
        str,
        O(
            help="auto: decided per image; dark: particles darker than the background (bright-field "
            "TEM); bright: brighter (HAADF-STEM, dark field, most SEM)."
        ),
    ] = "auto",
    lattice: Annotated[
        Optional[str],
        O(
            help="HRTEM: check the pixel size against this lattice's Bragg spots, or set it where "
            "nothing else does: a metal (au, ag, pt, pd, cu, al) or d-spacings in nm."
        ),
    ] = None,
    scale_bar: Annotated[
        bool,
        O(
            "--scale-bar/--no-scale-bar",
            help="Where the file has no pixel size (and --pixel-size is not given), read it from a "
            "burned-in scale bar (OCR of its label, its length in px); where it has one, check it.",
        ),
    ] = True,
    as_json: AsJson = False,
) -> None:
    """Segment whole micrographs of any size and measure the particles."""
    from temtool.inference.choice import ModelChooser
    from temtool.inference.measure import PostProcessing
    from temtool.inference.pipeline import SegmentOptions, segment_files
    from temtool.model.onnx_graph import RUNTIMES

    _state["flags"] = {
        "out_dir": "--out",
        "margin_px": "--overlap",
        "model": "--model",
        "workers": "--workers",
    }
    check_positive("pixel_size_nm", pixel_size)
    if method not in ("model", "fourier"):
        raise TemtoolError(f"--method must be 'model' or 'fourier', got {method!r}")
    try:
        spacings = tuple(
            check_positive("d_spacing_nm", float(v), allow_none=False) for v in d_spacing.split(",")
        )
    except ValueError:
        raise TemtoolError(f"--d-spacing {d_spacing!r}: expected numbers in nm, e.g. 0.2355,0.2039") from None
    options = SegmentOptions(
        pixel_size_nm=pixel_size,
        post=PostProcessing(threshold, smooth, fill_holes, min_area),
        method=method,
        d_spacing_nm=spacings,
        channel=channel,
        frame=frame,
        ignore_annotations=annotations,
        polarity=polarity,
        lattice=lattice,
        scale_bar=scale_bar,
    )
    if runtime not in RUNTIMES:
        raise TemtoolError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    chooser = None
    if method == "model":
        if runtime == "keras":
            _backend()  # otherwise Keras starts only if a bundle needs it (no ONNX graph)

        on_load = None if as_json else lambda why: console.print(f"model: {why}", highlight=False)
        chooser = ModelChooser(
            model, on_load=on_load, batch_size=batch, tta=tta, margin_px=overlap, runtime=runtime
        )
    with Progress(enabled=not as_json) as bar:
        on_file = segment_callback(bar)
        res = segment_files(paths, out, chooser, options, on_file=on_file, workers=workers)
    _render(res, lambda r: segment_summary(r, method, str(out)), as_json)
    if res["failed"]:
        err_console.print(styled(f"{len(res['failed'])} of {res['n_inputs']} inputs failed:", "red"))
        for f in res["failed"]:
            err_console.print(f"  {f['file']}: {f['error']}", highlight=False)
        raise typer.Exit(2)


# ----------------------------------------------------------------------------------- export
@app.command()
def export(
    bundles: Annotated[
        list[str], A(help="Model bundles: folders, or the shipped models' names (standard, hrtem).")
    ],
    out: Annotated[
        Path,
        A(help="The package: a .zip, or a folder. With several bundles a folder of NAME.zip packages."),
    ],
    overwrite: Overwrite = False,
    as_json: AsJson = False,
) -> None:
    """Write BioImage.IO model packages (Fiji/deepImageJ, ilastik, QuPath, napari), tested by bioimageio."""
    from temtool.inference.zoo import export_packages

    _state["flags"] = {"out": "OUT:"}
    results = export_packages(bundles, out, overwrite=overwrite)
    _render({"packages": [dataclasses.asdict(r) for r in results]}, export_summary, as_json)


# ------------------------------------------------------------------------------ entry point
def _error(message: str) -> None:

    err_console.print(styled("error:", "bold red", f" {message}"), highlight=False, soft_wrap=True)


def _flag_names(e: ParameterError) -> str:
    """The error with library parameter names spelled as this command's options."""
    import re

    names = {**FLAGS, **_state["flags"]}

    def flag(name: str) -> str:
        return names.get(name) or f"--{name.replace('_', '-')}"

    problem = re.sub(r"\b[a-z]+(?:_[a-z0-9]+)+\b", lambda m: names.get(m.group(0), m.group(0)), e.problem)
    return f"{flag(e.param)} {problem}"


def _click_error(e: Exception) -> str | None:
    """The kind of a Click/Typer exception by class name (Typer may vendor its own Click):
    "usage", "abort", or None for anything else."""
    names = {c.__name__ for c in type(e).__mro__}
    for name, kind in (("UsageError", "usage"), ("Abort", "abort")):
        if name in names:
            return kind
    return None


def _interrupted() -> int:
    """Exit code of an interrupt: 143 for SIGTERM (:func:`terminated`), 130 for Ctrl-C."""
    return 143 if terminated() else 130


def _stdout_closed() -> int:
    """stdout was closed by its reader (``temtool ... | head -1``): say so once, and send the
    rest of the output nowhere, so the interpreter's last flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    err_console.print("temtool: stdout was closed before all output was printed (e.g. by head)")
    return 141  # as a process ended by SIGPIPE


def _exit_code(args: list[str]) -> int:
    """Run the app; the exit code, with one line on stderr for what went wrong."""
    try:
        code = app(args=args, prog_name="temtool", standalone_mode=False)
    except TemtoolError as e:
        if _state["debug"]:
            raise
        _error(_flag_names(e) if isinstance(e, ParameterError) else str(e))
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as e:  # a full disk, a read-only folder: the file system said no
        if _state["debug"]:
            raise
        _error(f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e))
        return 2
    except Exception as e:
        kind = _click_error(e)
        if kind == "usage":
            ctx = getattr(e, "ctx", None)
            hint = f" (see 'temtool {ctx.info_name} --help')" if ctx and ctx.parent else ""
            _error(f"{e.format_message()}{hint}")
            return 2
        if kind != "abort":
            raise
        return _interrupted()
    code = code if isinstance(code, int) else 0
    return _interrupted() if code == 130 else code  # Typer returns 130 for any interrupt


def main(argv: list[str] | None = None) -> None:
    """The command line (``argv``: its arguments, default ``sys.argv[1:]``), for in-process
    callers; the console script is :func:`temtool.cli.run`. One line and exit code 2 for bad
    input or a file system that refuses (a traceback only with ``--debug``), exit code 130
    on Ctrl-C and 143 on SIGTERM (the console script), 141 when stdout is closed early."""
    code = _exit_code((sys.argv[1:] if argv is None else list(argv)) or ["--help"])
    if code in (130, 143):  # Ctrl-C, SIGTERM (Typer turns Ctrl-C into exit code 130)
        err_console.print(styled("interrupted" if code == 130 else "terminated", "yellow"))
    if code != 141:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            code = _stdout_closed()
    sys.exit(code)
