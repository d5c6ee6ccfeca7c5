"""Segmenting micrographs: files, folders and globs in, per micrograph a set of outputs and a
summary out.

Each micrograph goes through three stages that pass typed records: :func:`read_micrograph`
(a :class:`temtool.data.io.Micrograph`), :func:`infer` (an :class:`Inferred`: the probability
map and what was done to get it) and :func:`finish` (mask, measurement, outputs; the summary).
:func:`segment_files` overlaps the stages across files with bounded memory and reports a
failing file without stopping the rest. :class:`SegmentOptions` holds every option but the
model; the segmenter (:class:`temtool.inference.segmenter.Segmenter`, or a
:class:`temtool.inference.choice.ModelChooser`) is passed beside it.
"""

from __future__ import annotations

import glob
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temtool.data.io import (
    IMAGE_SUFFIXES,
    PLAUSIBLE_PIXEL_NM,
    Micrograph,
    check_writable,
    clean_stale_staged_files,
    read_image,
)
from temtool.errors import ParameterError, TemtoolError
from temtool.image.filters import gaussian_filter
from temtool.inference.annotations import mask_annotations, text_or_drawing
from temtool.inference.batch import pooled_paths, write_batch_outputs
from temtool.inference.classical import fourier_segment
from temtool.inference.lattice import d_spacings_nm, lattice_scale
from temtool.inference.measure import (
    PostProcessing,
    interior_diameters,
    measure_particles,
    particle_columns,
)
from temtool.inference.outputs import (
    OutputSet,
    check_replaceable,
    output_paths,
    overlay_grey,
    write_labels_tiff,
    write_mask_png,
    write_overlay_png,
    write_particles_csv,
    write_probability_tiff,
    write_size_histogram,
)
from temtool.inference.polarity import decide_polarity, invert
from temtool.inference.scalebar import read_scale_bar
from temtool.inference.segmenter import Segmenter

__all__ = [
    "POLARITIES",
    "METHODS",
    "SegmentOptions",
    "Inferred",
    "expand_inputs",
    "output_stems",
    "read_micrograph",
    "infer",
    "finish",
    "particles_of",
    "segment_file",
    "segment_files",
]

# decided per image (temtool.inference.polarity), or particles darker (bright-field TEM) or
# brighter (HAADF-STEM, dark field, most SEM figures) than the background
POLARITIES = ("auto", "dark", "bright")
UNSURE_POLARITY = 0.75  # a decided polarity less probable than this is called unsure in the notes
METHODS = ("model", "fourier")  # the network, or the Bragg-filter baseline (no model)
AU_D_SPACINGS_NM = (0.2355, 0.2039)  # Au {111} and {200}


@dataclass(frozen=True)
class SegmentOptions:
    """Every option of a segmentation run but the model.

    ``pixel_size_nm``: overrides what the file says. ``post`` turns probabilities into the
    mask (:class:`temtool.inference.measure.PostProcessing`). ``method``: ``model`` or
    ``fourier`` (with ``d_spacing_nm``). ``channel``/``frame``: which plane of a colour image
    or a stack. ``ignore_annotations``: find burned-in scale bars, labels and data bars
    (:mod:`temtool.inference.annotations`), hide them from the model and keep them out of the
    mask. ``polarity``: ``auto`` (decided per image by :mod:`temtool.inference.polarity`,
    except for an HRTEM model, which sees the contrast as recorded), ``dark`` (particles darker
    than the background: bright-field TEM, what the models learned) or ``bright`` (HAADF-STEM,
    dark field: the contrast is inverted first). ``scale_bar``: where neither the option nor
    the file gives the pixel size, read it from a burned-in scale bar
    (:mod:`temtool.inference.scalebar`); where the file gives one and annotations are burned
    in, check it against the bar (a disagreement beyond 5% is said; the file's value is kept).
    """

    pixel_size_nm: float | None = None
    post: PostProcessing = field(default_factory=PostProcessing)
    method: str = "model"
    d_spacing_nm: tuple[float, ...] = AU_D_SPACINGS_NM
    channel: int | None = None
    frame: int | None = None
    ignore_annotations: bool = True
    polarity: str = "auto"
    lattice: str | None = None  # a metal (au, ...) or d-spacings: the pixel size from the lattice
    scale_bar: bool = True  # read a burned-in scale bar where the file has no pixel size

    def __post_init__(self):
        if self.lattice is not None:
            d_spacings_nm(self.lattice)  # a ParameterError naming --lattice
        lo, hi = PLAUSIBLE_PIXEL_NM
        if self.pixel_size_nm is not None and not lo <= self.pixel_size_nm <= hi:
            raise ParameterError(
                "pixel_size_nm",
                f"{self.pixel_size_nm:g} is outside what electron microscopes record "
                f"({lo:g} to {hi:g} nm/px)",
            )
        if self.polarity not in POLARITIES:
            raise ParameterError("polarity", f"must be one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        if self.method not in METHODS:
            raise ParameterError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")


@dataclass(frozen=True)
class Inferred:
    """What the model stage (:func:`infer`) hands to :func:`finish`."""

    image: np.ndarray  # the micrograph as read, (H, W)
    pixel_size_nm: float | None
    prob: np.ndarray  # (H, W) float32 particle probability
    spread: np.ndarray | None  # (H, W) float32 TTA spread, or None
    notes: tuple[str, ...]
    annotation_px: int  # pixels of burned-in annotations kept out of the mask
    model: str | None  # the bundle that ran (None: no model, --method fourier)
    runtime: str | None
    model_choice: str | None  # why that model
    tiling: dict | None
    polarity: dict | None = None  # {"value", "source": option / decided / hrtem, "p_dark"}
    pixel_size_source: str | None = None  # "option", "metadata" (the file's), "scale bar", "lattice", or None
    scale_bar: dict | None = None  # what the scale bar gave (temtool.inference.scalebar.ScaleBar.as_dict)
    lattice: dict | None = None  # with options.lattice: what the lattice said (pixel size, planes, why)
    boundary: np.ndarray | None = None  # (H, W) float32, an instance-aware network's boundary probability


def expand_inputs(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files from files, folders (their images) and globs; and (input, why) for those that
    name nothing. A path that exists is that file or folder, whatever characters its name
    holds (``a[1].png``); only a path that does not exist is expanded as a glob."""
    files, failed = [], []
    for p in paths:
        is_pattern = any(c in p for c in "*?[") and not os.path.lexists(p)
        matches = sorted(glob.glob(p)) if is_pattern else [p]
        if not matches:
            failed.append((p, "no file matches this pattern"))
        for m in matches:
            q = Path(m)
            if q.is_dir():
                found = sorted(
                    f
                    for f in q.iterdir()
                    if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
                )
                if not found:
                    failed.append((m, "folder holds no images"))
                files.extend(found)
            elif q.exists():
                files.append(q)
            else:
                failed.append((m, "no such file"))
    return files, failed


def output_stems(files: list[Path]) -> list[str]:
    """A distinct output name per input: the file stem, with the suffix (and then a number)
    added where two inputs share a stem, so no result overwrites another."""
    stems = [f.stem for f in files]
    taken: set[str] = set()
    out = []
    for f, stem in zip(files, stems):
        name = stem
        if stems.count(stem) > 1:
            name = f"{stem}_{f.suffix.lstrip('.').lower()}" if f.suffix else stem
        base, i = name, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        out.append(name)
    return out


def segment_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable | None = None,
    options: SegmentOptions | None = None,
    stem: str | None = None,
) -> dict:
    """Segment one micrograph and write into ``out_dir`` (as one set, named ``stem`` + suffix,
    default the file's stem): mask, probability, instance labels, overlay, particle table,
    size histogram and, with TTA, the per-pixel uncertainty (spread of the TTA members).
    Returns its summary.

    ``segmenter`` is a :class:`Segmenter`, or a function of the image's pixel size (nm, or
    None) and the image returning one (a :class:`temtool.inference.choice.ModelChooser`), so
    the model is chosen by what the image is without reading it twice; it may be None with
    ``method="fourier"``. ``options``: :class:`SegmentOptions` (default: the defaults).
    """
    options = options or SegmentOptions()
    t0 = time.perf_counter()
    path = Path(path)
    inferred = infer(path, read_micrograph(path, options), segmenter, options)
    return finish(path, inferred, out_dir, options.post, stem, t0)


def read_micrograph(path: Path, options: SegmentOptions) -> Micrograph:
    """The read stage: the image plane the options select, and its pixel size if the file has one."""
    return read_image(path, channel=options.channel, frame=options.frame)


def infer(path: Path, mg: Micrograph, segmenter, options: SegmentOptions) -> Inferred:
    """The model stage: the probability map of a read micrograph. Burned-in annotations
    (:mod:`temtool.inference.annotations`) are filled before and set to background after,
    and a page of text or a line drawing is refused, unless ``options.ignore_annotations``
    is False. The model is chosen on the contrast as
    recorded; an image whose particles are brighter (``options.polarity``, decided per image
    by default) is then inverted for it."""
    px = options.pixel_size_nm or mg.pixel_size_nm
    px_source = "option" if options.pixel_size_nm else ("metadata" if mg.pixel_size_nm else None)
    image = mg.data
    notes: list[str] = [] if options.pixel_size_nm else list(mg.notes)
    drawn = None
    if options.ignore_annotations:
        why = text_or_drawing(image)
        if why:
            raise TemtoolError(
                f"{path}: looks like text or a line drawing, not a micrograph ({why}); not "
                "segmented. If it is a micrograph, pass --keep-annotations"
            )
        image, drawn = mask_annotations(image)
        if drawn.any():
            notes.append(
                f"burned-in annotation (scale bar, label or data bar) of {int(drawn.sum())} px ignored"
            )
        else:
            drawn = None
    bar = None
    if options.scale_bar and not options.pixel_size_nm and (px is None or drawn is not None):
        px, px_source, bar, note = _scale_bar(mg.data, px, px_source)
        notes += [note] if note else []
    lattice = None
    if options.lattice:
        px, px_source, lattice, note = _lattice(image, options.lattice, px, px_source)
        notes.append(note)
    seg, spread, why, tiling, boundary = None, None, None, None, None
    if options.method != "fourier":  # chosen on the contrast as recorded (the regime does not depend on it)
        seg = segmenter if isinstance(segmenter, Segmenter) else segmenter(px, image)
        why = getattr(segmenter, "reason", None)
    polarity, result = _polarity(image, drawn, options, seg, px)
    if polarity["value"] == "bright":  # the models and the threshold look for darker particles
        image = invert(image)
    note = polarity.pop("note")
    if note:
        notes.append(note)
    if options.method == "fourier":
        if px is None:
            raise TemtoolError(f"{path}: --method fourier needs the pixel size; pass --pixel-size")
        prob = fourier_segment(image, px, options.d_spacing_nm).astype(np.float32)
    else:
        result = result or seg.probability(image, px)
        prob, spread, tiling, boundary = result.prob, result.spread, result.tiling, result.boundary
        notes += result.notes
    if drawn is not None:
        prob = np.where(drawn, np.float32(0), prob)
        spread = None if spread is None else np.where(drawn, np.float32(0), spread)
    return Inferred(
        image=mg.data,
        pixel_size_nm=px,
        prob=prob,
        spread=spread,
        notes=tuple(notes),
        annotation_px=0 if drawn is None else int(drawn.sum()),
        model=seg.name if seg else None,
        runtime=seg.runtime if seg else None,
        model_choice=why,
        tiling=tiling,
        polarity=polarity,
        pixel_size_source=px_source,
        scale_bar=bar,
        lattice=lattice,
        boundary=boundary,
    )


CALIBRATION_DISAGREEMENT = 0.05  # beyond this a scale bar or the lattice and a calibration disagree


def _scale_bar(image, px: float | None, source: str | None):
    """The pixel size, its source, the scale bar's record and a note: the bar sets the pixel
    size where nothing did, and checks the file's calibration where there is one."""
    found = read_scale_bar(image)
    record = found.as_dict()
    from_bar = found.pixel_size_nm
    lo, hi = PLAUSIBLE_PIXEL_NM
    if from_bar is not None and not lo <= from_bar <= hi:
        record.update(
            pixel_size_nm=None, reason=f"{found.reason} gives {from_bar:.4g} nm/px, outside {lo:g}-{hi:g}"
        )
        from_bar = None
    if from_bar is None:
        note = f"no pixel size from a scale bar: {record['reason']}" if px is None else None
        return px, source, record, note
    if px is None:
        return from_bar, "scale bar", record, f"pixel size {from_bar:.4g} nm/px from the {found.reason}"
    dev = from_bar / px - 1
    if abs(dev) > CALIBRATION_DISAGREEMENT:
        note = (
            f"the {found.reason} gives {from_bar:.4g} nm/px, {dev:+.0%} from the file's "
            f"calibration ({px:.4g} nm/px): the file's is used; check which is right"
        )
    else:
        note = f"the {found.reason} confirms the file's calibration ({dev:+.1%})"
    return px, source, record, note


def _lattice(image, lattice: str, px: float | None, source: str | None):
    """The pixel size, its source, the lattice's record and a note: the lattice sets the pixel
    size where nothing else does, and checks it where the file or --pixel-size gives one."""
    found = lattice_scale(image, lattice, known_pixel_size_nm=px)
    record = {"pixel_size_nm": found.pixel_size_nm, "planes": list(found.families), "reason": found.reason}
    if found.pixel_size_nm is None:
        return px, source, record, f"lattice: {found.reason}"
    if px is None:
        note = f"pixel size {found.pixel_size_nm:.5g} nm/px from the {lattice} lattice: {found.reason}"
        return found.pixel_size_nm, "lattice", record, note
    dev = found.pixel_size_nm / px - 1
    record["deviation_from_calibration"] = dev
    given = "--pixel-size" if source == "option" else "the file's calibration"
    if abs(dev) > CALIBRATION_DISAGREEMENT:
        note = (
            f"the {lattice} lattice gives {found.pixel_size_nm:.5g} nm/px, {dev:+.1%} from {given} "
            f"({px:.5g}): {given} is kept; check it ({found.reason})"
        )
    else:
        note = f"the {lattice} lattice confirms {given} ({found.pixel_size_nm:.5g} nm/px, {dev:+.1%})"
    return px, source, record, note


def _polarity(image: np.ndarray, drawn, options: SegmentOptions, seg, px) -> tuple[dict, object]:
    """Which way round the contrast is, where that came from and a note for the summary; and
    the network's result for the image the right way round where deciding already made it."""
    if options.polarity != "auto":
        note = (
            "particles brighter than the background (--polarity bright): contrast inverted"
            if options.polarity == "bright"
            else None
        )
        return {"value": options.polarity, "source": "option", "p_dark": None, "note": note}, None
    if options.method == "fourier" or getattr(seg, "regime", None) == "hrtem":
        return {
            "value": "dark",
            "source": "hrtem model: contrast as recorded",
            "p_dark": None,
            "note": None,
        }, None
    passes = []  # the network on the image as recorded, then inverted (when asked)

    def network(x):
        passes.append(seg.probability(x, px))
        return passes[-1].prob

    d = decide_polarity(image, drawn, network)
    note = None
    if d.polarity == "bright":
        note = f"particles brighter than the background (decided, P {d.confidence:.2f}): contrast inverted"
    if d.confidence < UNSURE_POLARITY:
        note = (
            f"particles taken as {'brighter' if d.polarity == 'bright' else 'darker'} than the background, "
            f"but unsure (P {d.confidence:.2f}): pass --polarity dark or bright if that is wrong"
        )
    value = {
        "value": d.polarity,
        "source": f"decided ({d.rule} cues)",
        "p_dark": round(d.p_dark, 4),
        "note": note,
    }
    return value, (passes[d.polarity == "bright"] if passes else None)


def particles_of(
    prob: np.ndarray, pixel_size_nm: float | None, post: PostProcessing, boundary: np.ndarray | None = None
):
    """The mask of a probability map (``post``), what post-processing did, and its particles:
    instance labels and one measured row each (:func:`temtool.inference.measure.measure_particles`),
    parted where an instance-aware network's ``boundary`` probability (smoothed as the
    probability is) says, else by the distance watershed."""
    mask, post_info = post.apply(prob, pixel_size_nm)
    if boundary is not None and post.smooth_px > 0:
        boundary = gaussian_filter(boundary, post.smooth_px)
    post_info["instances"] = "network boundaries" if boundary is not None else "distance watershed"
    labels, rows = measure_particles(
        mask, pixel_size_nm, min_area_px=1, pinhole_px=0, boundary=boundary
    )  # holes: `post` decided
    return mask, post_info, labels, rows


def finish(
    path: Path,
    r: Inferred,
    out_dir,
    post: PostProcessing | None = None,
    stem: str | None = None,
    t0: float = 0.0,
) -> dict:
    """The finish stage: mask, measurement and every output of an inferred micrograph; its
    summary (``time_s`` counted from ``t0``, a :func:`time.perf_counter` value)."""
    post = post or PostProcessing()
    px, prob = r.pixel_size_nm, r.prob
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or path.stem
    unit = "nm" if px else "px"
    paths = output_paths(out, stem, uncertainty=r.spread is not None)
    check_replaceable(out, paths.values(), inputs=[path])
    with OutputSet(out) as w:  # each output starts as soon as what it shows is ready
        w.submit(write_probability_tiff, paths["prob"], prob, px)
        grey = w.compute(overlay_grey, r.image)
        if r.spread is not None:
            w.submit(write_probability_tiff, paths["uncertainty"], r.spread, px)
        mask, post_info, labels, rows = particles_of(prob, px, post, r.boundary)
        w.submit(write_mask_png, paths["mask"], mask)
        d = interior_diameters(rows, unit)
        w.submit(write_labels_tiff, paths["labels"], labels, px)
        w.submit(write_overlay_png, paths["overlay"], grey, labels)
        w.submit(write_particles_csv, paths["particles"], rows, particle_columns(unit))
        w.submit(write_size_histogram, paths["sizes"], d, unit)
    return {
        "file": str(path),
        "output_stem": stem,
        "pixel_size_nm": px,
        "pixel_size_source": r.pixel_size_source,
        "scale_bar": r.scale_bar,
        "lattice": r.lattice,
        "model": r.model,
        "runtime": r.runtime,
        "model_choice": r.model_choice,
        "polarity": r.polarity,
        "particles": len(rows),
        "particles_not_touching_border": len(d),
        "diameter_mean": float(np.mean(d)) if d else None,
        "diameter_sd": float(np.std(d)) if d else None,
        "diameter_median": float(np.median(d)) if d else None,
        "diameter_unit": unit,
        "area_fraction": float(mask.mean()),
        "annotation_px": r.annotation_px,
        "postprocessing": post_info,
        "time_s": time.perf_counter() - t0,
        "notes": list(r.notes),
        "tiling": r.tiling,
        "outputs": str(out),
    }


def _failure(f: Path, e: BaseException) -> str:
    """The reason a file failed, for the summary (without the file name it already carries)."""
    if isinstance(e, TemtoolError):
        msg = str(e)
        return msg[len(str(f)) + 2 :] if msg.startswith(f"{f}: ") else msg
    if isinstance(e, MemoryError):
        return "not enough memory for this image"
    return f"{type(e).__name__}: {e}"


def _import_stages() -> None:
    """Import the third-party modules the stages import when first used, once, before the
    stages run in threads (two threads importing one package at once can see it half
    initialised)."""
    import skimage.measure  # noqa: F401
    import skimage.morphology  # noqa: F401
    import skimage.segmentation  # noqa: F401
    import skimage.transform  # noqa: F401


def segment_files(
    paths: list[str],
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable | None = None,
    options: SegmentOptions | None = None,
    on_file: Callable | None = None,
    workers: int = 2,
) -> dict:
    """:func:`segment_file` over files, folders and globs. A file that fails (unreadable,
    corrupt, anything) is recorded with its reason and the rest go on. ``on_file(i, n, result
    or None, error or None)`` is called after each (``i`` files done so far). Returns
    ``{"results", "failed": [{"file", "error"}], "n_inputs", "batch"}``, results in input
    order; with two or more micrographs segmented, the pooled outputs
    (:func:`temtool.inference.batch.write_batch_outputs`) are written too and ``batch`` holds
    their statistics (else None).

    With several files and ``workers`` > 0 the stages overlap: one reader thread reads ahead
    (at most two micrographs waiting), the model runs in this thread, and ``workers`` threads
    post-process, measure and write (at most ``workers + 1`` micrographs in flight), so memory
    stays bounded for any number of files. ONNX Runtime, NumPy, SciPy and the image writers
    release the GIL for their heavy parts. ``workers=0``: one file after the other.
    ``options``: :class:`SegmentOptions` (default: the defaults), checked before any file.
    """
    files, missing = expand_inputs(paths)
    failed = [{"file": f, "error": why} for f, why in missing]
    n_inputs = len(files) + len(failed)
    out = check_writable(out_dir)  # created with the first result, so a bad option leaves nothing
    if workers < 0:
        raise ParameterError("workers", f"must be >= 0, got {workers}")
    options = options or SegmentOptions()
    clean_stale_staged_files(out)  # what killed runs left under temporary names
    if len(files) > 1:  # before any file: a user's own summary.csv is never replaced
        check_replaceable(out, pooled_paths(out).values())
    stems = output_stems(files)
    done: dict[int, dict] = {}
    errors: dict[int, dict] = {}

    def record(i: int, f: Path, result: dict | None, e: BaseException | None) -> None:
        if isinstance(e, ParameterError):
            raise e  # a bad option is wrong for every file: stop with one line
        if e is not None:
            errors[i] = {"file": str(f), "error": _failure(f, e)}
        else:
            if stems[i] != f.stem:
                result["notes"].append(f"outputs named {stems[i]}_* (another input has the stem {f.stem!r})")
            done[i] = result
        if on_file:
            on_file(len(done) + len(errors), len(files), result, errors.get(i))

    if workers == 0 or len(files) < 2:
        for i, f in enumerate(files):
            try:
                r = segment_file(f, out, segmenter, options, stems[i])
            except Exception as e:  # one bad file must not end the batch
                record(i, f, None, e)
            else:
                record(i, f, r, None)
    else:
        _pipeline(files, stems, out, segmenter, options, workers, record)
    order = {str(f): i for i, f in enumerate(files)}
    results = [done[i] for i in sorted(done)]
    failed += sorted((errors[i] for i in errors), key=lambda e: order[e["file"]])
    batch = write_batch_outputs(out, results) if len(results) > 1 else None
    return {"results": results, "failed": failed, "n_inputs": n_inputs, "batch": batch}


def _pipeline(files, stems, out, segmenter, options: SegmentOptions, workers: int, record) -> None:
    """Read ahead / infer here / finish in a pool (see :func:`segment_files`)."""
    _import_stages()
    pending = deque()  # (i, file, future of its finish), oldest first

    def collect(block_until: int) -> None:
        while len(pending) > block_until or (pending and pending[0][2].done()):
            i, f, fut = pending.popleft()
            try:
                r = fut.result()
            except Exception as e:
                record(i, f, None, e)
            else:
                record(i, f, r, None)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="temtool-read") as reader,
        ThreadPoolExecutor(workers, thread_name_prefix="temtool-write") as writers,
    ):
        reads = deque(reader.submit(read_micrograph, files[i], options) for i in range(min(2, len(files))))
        try:
            for i, f in enumerate(files):
                t0 = time.perf_counter()
                read = reads.popleft()
                if i + 2 < len(files):
                    reads.append(reader.submit(read_micrograph, files[i + 2], options))
                try:
                    inferred = infer(f, read.result(), segmenter, options)
                except Exception as e:
                    record(i, f, None, e)
                    continue
                pending.append((i, f, writers.submit(finish, f, inferred, out, options.post, stems[i], t0)))
                collect(block_until=workers)
            collect(block_until=0)
        except BaseException:  # Ctrl-C or a bad option: drop what has not started
            for fut in reads:
                fut.cancel()
            for *_, fut in pending:
                fut.cancel()
            raise
