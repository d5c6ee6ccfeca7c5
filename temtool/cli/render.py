"""Rendering of temtool results for the terminal: rich tables, summaries and progress. No
science here: every function takes a result that a library function returned."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from temtool.model.architecture import Architecture
from temtool.model.receptive_field import RFLayer

if TYPE_CHECKING:
    from temtool.model.receptive_field import RFLayer

# user text (paths, option values, file contents) is never parsed as rich markup: the consoles
# read none, and temtool's own styling goes through `styled`
console = Console(markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style``, then ``rest`` as plain text (never read as markup)."""
    return Text.assemble((label, style), rest)


def fmt_nm(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(mean: float, sd: float | None, n: int, sep: str = " +- ") -> str:
    return f"{mean:.3f}{sep}{sd:.3f}" if n > 1 and sd is not None else f"{mean:.3f}"


def fmt_seeds(summary: dict | None) -> str:
    """``0.742 +- 0.021 [0.690, 0.794] (3 seeds)`` from :func:`temtool.study.protocol.seed_summary`."""
    if not summary or summary.get("mean") is None:
        return "-"
    if summary["n"] < 2:
        return f"{summary['mean']:.3f} (1 seed)"
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f} +- {summary['sd']:.3f} [{lo:.3f}, {hi:.3f}] ({summary['n']} seeds)"


def baseline_label(name: str, b: dict) -> str:
    """``Gaussian + Otsu (sigma 0.34 nm, chosen on val)`` / ``Fourier filter (...)``."""
    if name == "otsu":
        sigma = f"{b['sigma_nm']:.3g} nm" if b.get("sigma_nm") is not None else f"{b['sigma_px']:g} px"
        return f"Gaussian + Otsu (sigma {sigma}, chosen on {b.get('chosen_on', 'val')})"
    if name == "fourier":
        return f"Fourier filter (smoothing {b['smooth_nm']:g} nm, chosen on {b.get('chosen_on', 'val')})"
    return name


def test_table(title: str, network: dict, baselines: dict) -> Table:
    """Test-split hard Dice of a network (over seeds) beside the tuned baselines, with the
    per-class Dice where the data record particle classes, and below, where the data have
    instance maps, object F1 of each after the same post-processing and splitting."""
    classes = sorted(
        set(network.get("by_class", {})) | {c for b in baselines.values() for c in b.get("dice_by_class", {})}
    )
    t = Table(title=title)
    t.add_column("method", overflow="fold")
    t.add_column("test hard Dice", justify="right")
    for c in classes:
        t.add_column(c.replace("_", " "), justify="right")
    t.add_row(
        network["label"],
        fmt_seeds(network["dice"]),
        *(
            f"{network['by_class'][c]['mean']:.3f}" if c in network.get("by_class", {}) else "-"
            for c in classes
        ),
    )
    for name, b in baselines.items():
        by = b.get("dice_by_class", {})
        t.add_row(
            baseline_label(name, b),
            f"{b['dice']:.3f}",
            *(f"{by[c]:.3f}" if c in by else "-" for c in classes),
        )
    if network.get("object_f1"):  # in the caption: the table stays as narrow as before
        lines = [f"object F1 (IoU 0.5, segment's post-processing): network {fmt_seeds(network['object_f1'])}"]
        lines += [
            f"{name}: {b['objects']['f1']:.3f}"
            for name, b in baselines.items()
            if b.get("objects", {}).get("f1") is not None
        ]
        t.caption = "; ".join(lines)
    return t


def summary_table(title: str, data: dict[str, object]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("", style="bold", no_wrap=True)
    t.add_column("", overflow="fold")
    for k, v in data.items():
        t.add_row(k, str(v))
    return t


# ------------------------------------------------------------------------------ progress
class Progress:
    """A rich progress bar on a terminal; on anything else (a pipe, a log file) plain lines:
    one per ``every`` steps and one at the end, so logs stay readable.

    ``bar.task(description, total)`` adds a bar and returns its id; ``bar.advance(id, n)``,
    ``bar.update(id, completed=..., total=..., description=...)``, ``bar.log(text)`` prints a
    line above the bars.
    """

    def __init__(self, out: Console | None = None, enabled: bool = True, every_fraction: float = 0.25):
        self.out = out or err_console
        self.enabled = enabled
        self.live = enabled and self.out.is_terminal
        self.every = every_fraction
        self._plain: dict[int, dict] = {}
        self._bar = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.out,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int | None) -> int:
        if self._bar is not None:
            return self._bar.add_task(description, total=total)
        i = len(self._plain)
        self._plain[i] = {"d": description, "n": total, "done": 0, "said": 0, "t0": time.perf_counter()}
        return i

    def update(self, task: int, completed: int | None = None, total: int | None = None, description=None):
        if self._bar is not None:
            kw = {k: v for k, v in (("completed", completed), ("total", total), ("description", description))}
            self._bar.update(task, **{k: v for k, v in kw.items() if v is not None})
            return
        s = self._plain[task]
        if total is not None:
            s["n"] = total
        if description is not None:
            s["d"] = description
        if completed is not None:
            s["done"] = completed
            self._maybe_say(s)

    def advance(self, task: int, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(task, n)
            return
        s = self._plain[task]
        s["done"] += n
        self._maybe_say(s)

    def _maybe_say(self, s: dict) -> None:
        if not self.enabled or not s["n"]:
            return
        step = max(1, int(s["n"] * self.every))
        if s["done"] >= s["n"] or s["done"] - s["said"] >= step:
            s["said"] = s["done"]
            dt = time.perf_counter() - s["t0"]
            self.out.print(f"{s['d']}: {s['done']}/{s['n']} ({dt:.0f} s)", highlight=False)

    def log(self, text: str) -> None:
        if self.enabled:
            (self._bar.console if self._bar is not None else console).print(text, highlight=False)


# ------------------------------------------------------------------------------ rf
def rf_table(rows: list[RFLayer], pixel_size_nm: float | None) -> Table:
    t = Table(title="Receptive field, layer by layer (study convention)")
    t.add_column("layer")
    t.add_column("stride px", justify="right")
    t.add_column("RF px", justify="right")
    if pixel_size_nm:
        t.add_column("RF nm", justify="right")
    for r in rows:
        cells = [r.layer, f"{r.stride_px:g}", str(r.rf_px)]
        if pixel_size_nm:
            cells.append(fmt_nm(r.rf_px * pixel_size_nm))
        t.add_row(*cells)
    return t


def rf_summary(result: dict) -> list[Table]:
    """Tables for :func:`temtool.model.receptive_field.describe`'s result."""

    px = result["pixel_size_nm"]
    out = []
    if "breakdown" in result:
        out.append(rf_table([RFLayer(**r) for r in result["breakdown"]], px))

    def nm(v):
        return f"= {v * px:.2f} nm" if px else "(give --pixel-size for nm)"

    rows = {
        "architecture": Architecture.from_dict(result["architecture"]).label(),
        "parameters": f"{result['params']:,} ({result['trainable_params']:,} trainable)",
        "RF (study convention)": f"{result['rf_px']} px {nm(result['rf_px'])}",
    }
    if "exact_rf_px" in result:
        rows["RF (exact worst case)"] = f"{result['exact_rf_px']} px {nm(result['exact_rf_px'])}"
        rows["reach (one side, exact)"] = f"{result['exact_reach_px']} px {nm(result['exact_reach_px'])}"
    if "effective" in result:
        eff = result["effective"]
        rows["RF (effective, 95% of gradient)"] = (
            f"radius {eff['radius95_px']:.1f} px {nm(eff['radius95_px'])}; map: {eff['png']}"
        )
    out.append(summary_table("Receptive field", rows))
    if "recommendations" in result:
        t = Table(title=f"Pool sequences whose RF covers {result['cover_nm']} nm")
        for c in ("pools", "RF px", "RF nm"):
            t.add_column(c, justify="right")
        for r in result["recommendations"]:
            t.add_row(",".join(map(str, r["pools"])), str(r["rf_px"]), f"{r['rf_nm']:.2f}")
        if not result["recommendations"]:
            t.caption = "none: use more depth or larger pool choices"
        out.append(t)
    return out


# ------------------------------------------------------------------------------ data
def simulated_summary(meta: dict, seconds: float, workers: int) -> Table:
    n = meta["n_images"]
    n_particles = sum(len(r["particles"]) for r in meta["images"])
    size = meta["size_px"]
    return summary_table(
        f"Simulated {meta['regime']} dataset",
        {
            "folder": meta["path"],
            "images": f"{n} x {size}x{size} px at {meta['pixel_size_nm']} nm/px",
            "particles": f"{n_particles} ({n_particles / n:.1f} per image)",
            "splits": ", ".join(f"{k} {len(v)}" for k, v in meta["splits"].items()),
            "time": f"{seconds:.1f} s ({n / seconds:.1f} images/s, {workers} workers)",
        },
    )


def prepared_summary(s: dict) -> Table:
    patch = f"{s['patch_px']} px"
    if s["pixel_size_nm"]:
        patch += f" = {s['patch_px'] * s['pixel_size_nm']:.1f} nm"
    return summary_table(
        "Prepared dataset",
        {
            "folder": s["path"],
            "micrographs": ", ".join(f"{k} {v}" for k, v in s["micrographs"].items()),
            "patches": ", ".join(f"{k} {v}" for k, v in s["patches"].items())
            + f" ({s['patches_dropped']} dropped)",
            "patch size": patch,
            "particle fraction": f"{s['particle_fraction']:.3f}",
            "x-rays replaced": str(s["xrays_replaced"]),
        },
    )


# ------------------------------------------------------------------------------ train
def epoch_line(epoch: int, epochs: int, logs: dict, ips: float) -> str:
    nan = float("nan")
    return (
        f"epoch {epoch + 1:3d}/{epochs}  loss {logs.get('loss', nan):.4f}  "
        f"dice {logs.get('soft_dice', nan):.3f}  hard {logs.get('hard_dice', nan):.3f}  "
        f"val hard {logs.get('val_hard_dice', nan):.3f}  {ips:6.1f} img/s"
    )


def training_summary(meta: dict) -> list[Table]:
    """Tables for a saved training bundle's metadata."""

    m = meta["metrics"]
    reps = m.get("repeats", [])
    out = []
    if len(reps) > 1:
        t = Table(title="Repeats")
        for c in ("seed", "val hard Dice", "test hard Dice", "best epoch", "epochs"):
            t.add_column(c, justify="right")
        for r in reps:
            test = r.get("test_hard_dice")
            t.add_row(
                str(r["seed"]),
                f"{r['val_hard_dice']:.3f}",
                "-" if test is None else f"{test:.3f}",
                str(r["best_epoch"]),
                str(r["epochs_run"]),
            )
        out.append(t)
    rf = f"{meta['rf_px']} px" + (f" = {meta['rf_nm']:.2f} nm" if meta.get("rf_nm") else "")
    dice = (
        f"{m['val_hard_dice_mean']:.3f} +- {m['val_hard_dice_std']:.3f} over {len(reps)} seeds"
        if len(reps) > 1
        else f"{m['val_hard_dice']:.3f} (epoch {m['best_epoch']})"
    )
    out.append(
        summary_table(
            "Training finished",
            {
                "bundle": meta["path"],
                "architecture": Architecture.from_dict(meta["architecture"]).label(),
                "parameters": f"{meta['params']:,}",
                "RF": rf,
                "precision": meta["training"]["precision_used"],
                "val hard Dice": dice + " (chose epoch and seed)",
                "test hard Dice": fmt_seeds(m.get("test_hard_dice")),
                "epochs run": str(m["epochs_run"]),
                "speed": f"{m['images_per_s']:.1f} images/s",
            },
        )
    )
    if m.get("test_hard_dice"):
        network = {
            "label": f"network ({Architecture.from_dict(meta['architecture']).label()})",
            "dice": m["test_hard_dice"],
            "by_class": m.get("test_dice_by_class", {}),
            "object_f1": m.get("test_object_f1"),
        }
        out.append(test_table("Test split, beside the tuned baselines", network, m.get("baselines", {})))
    if meta.get("finetune"):
        out.append(finetune_table(meta["finetune"]))
    return out


def finetune_table(record: dict) -> Table:
    """Test scores of the starting model, the fine-tuned one and the tuned threshold, and the
    paired intervals of after minus before."""
    t = Table(title=f"Fine-tuned from {record['start_from']}: test split")
    for c in ("", "Dice", "object F1"):
        t.add_column(c, justify="right" if c else "left")
    before, after = record["before"], record["after"]
    t.add_row("before (starting model)", _fmt(before["dice"]), _fmt(before["object_f1"]))
    t.add_row("after (fine-tuned)", _fmt(after["dice"]), _fmt(after["object_f1"]))
    t.add_row(
        f"Gaussian + Otsu (sigma {after['otsu_sigma_px']:g} px, chosen on val)",
        _fmt(after["otsu_dice"]),
        _fmt(after["otsu_object_f1"]),
    )
    lines = _paired_lines(record["after_minus_before"], "after - before")
    lines += _paired_lines(after["minus_otsu"], "fine-tuned - Otsu")
    if record.get("scale_note"):
        lines.append(record["scale_note"])
    if after.get("instance_truth"):
        lines.append(f"object F1 at IoU 0.5 against the {after['instance_truth']}")
    t.caption = "\n".join(lines)
    return t


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _paired_lines(paired: dict, label: str = "network - Otsu") -> list[str]:
    """One paired difference (``label``: the network against the threshold by default) per
    line and score, with the interval's verdict."""
    return [
        f"{label}, {metric.replace('_', ' ')}: {d['mean']:+.3f}, 95% CI [{d['ci95'][0]:+.3f}, "
        f"{d['ci95'][1]:+.3f}] (paired bootstrap over {d['n_images']} images): {d['verdict']}"
        for metric, d in paired.items()
        if d
    ]


def _objects_table(objects: dict) -> Table:
    """Object scores of the network and the baseline, after the same post-processing."""
    o = Table(title="Particles (instances/ as truth; both after segment's post-processing and splitting)")
    o.add_column("method")
    for c in ("precision", "recall", "F1 @ IoU 0.5", "AP 0.5:0.95", "median |count error|", "size distance"):
        o.add_column(c, justify="right")
    for who, label in (("model", "network"), ("otsu", "Gaussian + Otsu")):
        m = objects[who]
        o.add_row(
            label,
            *(_fmt(m[k]) for k in ("precision", "recall", "f1", "ap")),
            "" if m["median_abs_count_error"] is None else f"{100 * m['median_abs_count_error']:.0f}%",
            _fmt(m["size_distance"]),
        )
    return o


def evaluation_tables(res: dict) -> list:
    t = Table(title=f"Per image ({res['split']} split of {Path(res['data']).name})")
    t.add_column("image", overflow="fold")
    for c in ("model Dice", "model IoU", "Otsu Dice"):
        t.add_column(c, justify="right")
    for r in res["per_image"]:
        t.add_row(
            r["image"], f"{r['model']['dice']:.3f}", f"{r['model']['iou']:.3f}", f"{r['otsu']['dice']:.3f}"
        )
    s = Table(title=f"Mean over {res['n_images']} images")
    s.add_column("method")
    for c in ("soft Dice", "hard Dice", "IoU", "precision", "recall"):
        s.add_column(c, justify="right")
    sigma = res.get("otsu_sigma_px")
    otsu = "Gaussian + Otsu" + (
        f" (sigma {sigma:g} px, chosen on {res.get('otsu_sigma_chosen_on')})" if sigma is not None else ""
    )
    for who, label in (("model", "network"), ("otsu", otsu)):
        m = res["mean"][who]
        s.add_row(
            label,
            f"{m['soft_dice']:.3f}",
            f"{m['dice']:.3f} +- {m['dice_std']:.3f}",
            f"{m['iou']:.3f}",
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
        )
    f = res.get("fourier")
    if f:
        s.add_row(
            baseline_label("fourier", f),
            "",
            f"{f['dice']:.3f}",
            "",
            "",
            "",
        )
    out = [t, s]
    out += _paired_lines(res.get("model_minus_otsu") or {})
    if res.get("objects"):
        out.append(_objects_table(res["objects"]))
    by_class = res.get("dice_by_class") or {}
    if by_class:
        classes = sorted({c for v in by_class.values() for c in v})
        c = Table(title="Hard Dice per particle class (pooled over the split)")
        c.add_column("method")
        for name in classes:
            c.add_column(name.replace("_", " "), justify="right")
        for who, v in by_class.items():
            c.add_row(
                {"model": "network", "otsu": "Gaussian + Otsu", "fourier": "Fourier filter"}.get(who, who),
                *(f"{v[n]:.3f}" if n in v else "-" for n in classes),
            )
        out.append(c)
    return [*out, *(f"note: {n}" for n in res.get("notes", []))]


# ------------------------------------------------------------------------------ tune
def _trial_test(r: dict) -> str:
    if r.get("test_hard_dice_mean") is None:
        return "-"
    return _pm(r["test_hard_dice_mean"], r.get("test_hard_dice_sd"), len(r.get("repeats", [])), "+-")


def trial_line(r: dict) -> str:
    return (
        f"trial {r['trial_id']}: depth {r['depth']} pools {','.join(map(str, r['pools']))} "
        f"filters {r['filters'][0]}  params {r['params']:,}  RF {r['rf_px']} px  "
        f"val Dice {_pm(r['val_hard_dice_mean'], r['val_hard_dice_std'], len(r.get('repeats', [])))}  "
        f"test Dice {_trial_test(r)}  ({r['time_s']:.0f} s)"
    )


def trials_table(results: dict) -> Table:
    """Every trial, best (by validation) first, with its test-split Dice; the tuned classical
    baselines as rows of the same table (test split)."""
    from rich import box

    t = Table(
        title=f"{Path(results['project']).name}: {results['n_trials']} trials, best on val first",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0),  # the box's own column gap is one space: 80 columns hold the table
    )
    t.add_column("network", no_wrap=True)
    paired = any(r.get("test_minus_otsu_ci95") for r in results["trials"])
    for c in (
        "params",
        "RF px",
        "RF nm",
        "val Dice",
        "test Dice",
        *(["test-Otsu 95% CI"] if paired else []),
    ):
        t.add_column(c, justify="right", no_wrap=True)
    for r in results["trials"]:
        nm = r.get("rf_nm")
        t.add_row(
            f"d{r['depth']} p{','.join(map(str, r['pools']))} f{r['filters'][0]}",
            f"{r['params']:,}",
            str(r["rf_px"]),
            fmt_nm(nm),
            _pm(r["val_hard_dice_mean"], r["val_hard_dice_std"], len(r.get("repeats", [])), "+-"),
            _trial_test(r),
            *([_paired(r.get("test_minus_otsu_ci95"))] if paired else []),
        )
    baselines = results.get("baselines") or {}
    if baselines:
        t.add_section()
    for name, b in baselines.items():
        if name == "otsu":
            sigma = f"{b['sigma_nm']:.2f} nm" if b.get("sigma_nm") is not None else f"{b['sigma_px']:g} px"
            label = f"Otsu s={sigma}"
        else:
            label = f"Fourier {b['smooth_nm']:g} nm"
        t.add_row(label, "", "", "", "", f"{b['dice']:.3f}", *([""] if paired else []))
    return t


def _paired(ci: list | None) -> str:
    """A paired interval of a difference (the difference itself is the columns beside it)."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""


def otsu_verdict(trials: list[dict]) -> str | None:
    """One sentence from the paired intervals of the networks against the tuned threshold."""
    verdicts = [r.get("test_vs_otsu") for r in trials if r.get("test_vs_otsu")]
    if not verdicts:
        return None
    n = len(verdicts)
    above, below = verdicts.count("above"), verdicts.count("below")
    level = n - above - below
    if above == n:
        head = f"every network ({n}) beats the tuned threshold"
    elif above == 0:
        head = f"no network of {n} beats the tuned threshold"
    else:
        head = f"{above} of {n} networks beat the tuned threshold"
    return (
        f"{head} on test beyond the noise (paired bootstrap over test images: {above} above, "
        f"{level} level, {below} below)"
    )


def tune_summary(res: dict) -> list:
    if "worker" in res:
        return [f"worker {res['worker']} finished; results are collected by the chief in {res['project']}"]
    verdict = otsu_verdict(res["trials"])
    return [
        trials_table(res),
        *([verdict] if verdict else []),
        "val Dice chose each trial's epoch and ranks the trials; test Dice is the held-out score "
        "(mean +- sd over seeds); baselines tuned on val, scored on test (Otsu s=: its Gaussian sigma); "
        "test-Otsu: a paired bootstrap interval over test images",
        f"results: {res['project']}/results.csv; best model: {res.get('best_model', '-')}",
        f"plot: temtool tune --report {res['project']}",
    ]


# ------------------------------------------------------------------------------- export
def export_summary(res: dict) -> list:
    """The BioImage.IO packages written by :func:`temtool.inference.zoo.export_packages`."""
    t = Table(title="BioImage.IO packages")
    for col in ("bundle", "package", "bioimageio test", "test input", "halo", "max diff"):
        t.add_column(col)
    for r in res["packages"]:
        h, w = r["input_px"]
        t.add_row(
            r["bundle"],
            r["package"],
            r["status"],
            f"{w}x{h} px",
            f"{r['halo_px']} px",
            f"{r['max_difference']:.1e}",
        )
    return [
        t,
        "max diff: the package's output against temtool's probability on the test input "
        "(preprocessing in the package, the network alone; segment also resamples, pads and post-processes)",
    ]


# ------------------------------------------------------------------------------ segment
def segment_summary(res: dict, method: str, out: str) -> list:
    """The table of :func:`temtool.inference.pipeline.segment_files`' results and each image's notes."""
    notes = [f"{Path(r['file']).name}: {n}" for r in res["results"] for n in r["notes"]]
    return [segmentation_table(res["results"], method, out), *notes, *batch_lines(res.get("batch"))]


def batch_lines(b: dict | None) -> list[str]:
    """The pooled statistics of a run over several micrographs, in a line or two."""
    if not b:
        return []
    if b["mean"] is None:
        line = f"pooled: no particle in {b['unit']} away from the border"
    else:
        lo, hi = b["ci95_over_particles"]
        line = (
            f"pooled: {b['n_particles']} particles from {b['n_micrographs']} micrographs (border particles "
            f"{b['border_particles']}): mean diameter {b['mean']:.2f} {b['unit']}, 95% CI {lo:.2f}-{hi:.2f} "
            "over particles"
        )
        if b["ci95_over_micrographs"]:
            lo, hi = b["ci95_over_micrographs"]
            line += f", {lo:.2f}-{hi:.2f} over micrographs"
    lines = [line]
    if b["micrographs_in_other_units"]:
        lines.append(
            f"pooled sizes leave out {b['micrographs_in_other_units']} micrographs without a pixel size "
            "(px, not nm)"
        )
    files = b.get("files", {})
    lines.append("pooled outputs: " + ", ".join(Path(p).name for p in files.values()))
    return lines


def segmentation_table(results: list[dict], method: str, out: str) -> Table:
    """Fits an 80-column terminal: the unit is in the header (or in the cells when the files
    differ), file names fold."""
    units = {r["diameter_unit"] for r in results}
    header_unit = units.pop() if len(units) == 1 else None
    t = Table(title=f"Segmentation ({method}) -> {out}")
    t.add_column("file", overflow="fold", ratio=1)
    for c in ("particles", f"d mean+-sd {header_unit or ''}".strip(), "median", "area", "nm/px", "s"):
        t.add_column(c, justify="right", no_wrap=True)
    for r in results:
        unit = "" if header_unit else f" {r['diameter_unit']}"
        d = (
            f"{r['diameter_mean']:.1f}+-{r['diameter_sd']:.1f}{unit}"
            if r["diameter_mean"] is not None
            else "-"
        )
        med = f"{r['diameter_median']:.1f}" if r["diameter_median"] is not None else "-"
        t.add_row(
            Path(r["file"]).name,
            str(r["particles"]),
            d,
            med,
            f"{r['area_fraction']:.3f}",
            _pixel_size_cell(r),
            f"{r['time_s']:.1f}",
        )
    return t


def _pixel_size_cell(r: dict) -> str:
    """The pixel size and where it came from (the file, the option, a scale bar, the lattice)."""
    if not r.get("pixel_size_nm"):
        return "-"
    source = {"metadata": "file", "option": "given", "lattice": "lattice", "scale bar": "scale bar"}.get(
        r.get("pixel_size_source"), ""
    )
    return f"{r['pixel_size_nm']:.4g} {source}".strip()


# ------------------------------------------------------------------------------ callbacks
def training_callbacks(bar: Progress, epochs: int, repeats: int) -> dict:
    """``on_epoch``/``on_repeat`` for :func:`temtool.study.train.train_and_save`: an epoch line each
    and a bar over all epochs of all seeds."""
    task = bar.task("training", epochs * repeats)

    def on_repeat(r, seed):
        if repeats > 1:
            bar.log(f"repeat {r + 1}/{repeats} (seed {seed})")
        bar.update(task, completed=r * epochs)

    def on_epoch(epoch, logs, ips):
        bar.log(epoch_line(epoch, epochs, logs, ips))
        bar.advance(task)

    return {"on_epoch": on_epoch, "on_repeat": on_repeat}


def tune_callbacks(bar: Progress) -> dict:
    """Callbacks for :func:`temtool.study.tune.tune`: a bar over trials, one over the epochs of the
    running trial (terminal only), and a line per finished trial."""
    ids: dict = {}

    def on_start(planned, done):
        ids["trials"] = bar.task("trials", planned)
        bar.update(ids["trials"], completed=done)
        if done:
            bar.log(f"resuming: {done} finished trials kept")

    def on_trial_start(trial_id, arch, n_epochs):
        label = f"trial {trial_id} ({arch.label()})"
        if not bar.live:  # a log: one line when a trial starts, one when it ends
            bar.log(f"{label}: training up to {n_epochs} epochs")
            return
        if "epochs" not in ids:
            ids["epochs"] = bar.task(label, n_epochs)
        bar.update(ids["epochs"], completed=0, total=n_epochs, description=label)

    def on_epoch(*_):
        if ids.get("epochs") is not None:
            bar.advance(ids["epochs"])

    def on_trial(record):
        bar.log(trial_line(record))
        bar.advance(ids["trials"])

    return {
        "on_start": on_start,
        "on_trial_start": on_trial_start,
        "on_epoch": on_epoch,
        "on_trial": on_trial,
    }


def segment_callback(bar: Progress):
    """``on_file`` for :func:`temtool.inference.pipeline.segment_files`: a bar over files, a red line per
    failure."""
    task = bar.task("segmenting", None)

    def on_file(i, n, result, failure):
        bar.update(task, completed=i, total=n)
        if failure:
            err_console.print(
                styled("failed:", "red", f" {failure['file']}: {failure['error']}"), highlight=False
            )

    return on_file
