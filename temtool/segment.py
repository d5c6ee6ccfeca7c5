"""Whole-micrograph segmentation: the one inference path of temtool.

A :class:`Segmenter` is made from a model bundle (:meth:`Segmenter.from_bundle`) and reads
everything it needs from it: the normalisation, the training pixel size (images are resampled
to it and back) and the one-sided reach of the receptive field (the context each tile keeps,
:mod:`temtool.tiling`). ``evaluate``, the effective RF, ``segment`` and the benchmarks all go
through it. :func:`segment_files` runs it over files, folders and globs, writes per image a
mask, probability map, overlay, particle table (:mod:`temtool.measure`) and size histogram,
and reports a failing file without stopping the rest.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from temtool.arch import Architecture
from temtool.data.dataset import standardize
from temtool.errors import ParameterError, TemtoolError
from temtool.measure import PostProcessing, measure_particles, particle_columns
from temtool.tiling import DEFAULT_BORDER_PX, TileGeometry, dihedral, predict_tiled, predict_whole

__all__ = [
    "Segmenter",
    "ModelChooser",
    "default_model",
    "expand_inputs",
    "segment_file",
    "segment_files",
    "resample",
    "pixel_size_scale",
]

RESAMPLE_TOLERANCE = 0.10  # relative pixel-size difference tolerated without resampling


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (anti-aliased when shrinking). float32. Shrinking by
    the same whole factor on both axes is binning (the mean of each k x k block, as a
    camera bins): exact area averaging, and ten times faster than filtering."""
    h, w = image.shape[:2]
    k = h // shape[0] if shape[0] else 0
    if k > 1 and shape[0] * k == h and shape[1] * k == w:
        x = np.asarray(image, np.float32)
        return x.reshape(shape[0], k, shape[1], k, *x.shape[2:]).mean((1, 3), dtype=np.float32)
    from skimage.transform import resize  # not imported for binning: 0.1 s of a cold start

    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    return resize(image, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def pixel_size_scale(image_px_nm: float | None, model_px_nm: float | None) -> float:
    """Factor that resamples an image at ``image_px_nm`` to a model's ``model_px_nm``: 1 when
    either is unknown or they differ by at most :data:`RESAMPLE_TOLERANCE`."""
    if image_px_nm and model_px_nm and abs(image_px_nm / model_px_nm - 1) > RESAMPLE_TOLERANCE:
        return image_px_nm / model_px_nm
    return 1.0


def _is_keras_model(model) -> bool:
    import keras

    return isinstance(model, keras.Model)


@dataclass
class Segmenter:
    """Particle probability maps for micrographs of any size from a trained ResUNet.

    Build it with :meth:`from_bundle`. ``margin_px`` enlarges the context each tile keeps (it
    can never go below the model's one-sided reach); ``tta`` averages the 8 dihedral
    transforms.
    """

    model: object
    arch: Architecture
    reach_px: int
    pixel_size_nm: float | None = None  # the model's training pixel size
    normalisation: str = "per_image_standardize"
    batch_size: int = 4
    tta: bool = False
    margin_px: int | None = None
    # at most 1280x1280 px a tile: a 2048x2048 micrograph goes in four 1104x1104 tiles, whose
    # network needs about 0.5 GB (two 1104-row strips under 1536x1536 px took 1.2 GB, one
    # pass 2 GB: fresh memory is slow to fault in); as fast from the prompt, 3-4% slower in a folder
    max_tile_px: int = 1280
    border_px: int = DEFAULT_BORDER_PX  # reflected border around the image (temtool.tiling)
    diameter_range_px: tuple[float, float] | None = None  # particle sizes the model was trained on
    name: str = ""
    info: dict = field(default_factory=dict)
    runtime: str = "keras"  # what runs the network: "keras", or "onnx" (temtool.runtime)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ParameterError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.margin_px is not None and self.margin_px < self.reach_px:
            raise ParameterError(
                "margin_px",
                f"{self.margin_px} is smaller than the model's one-sided receptive-field reach "
                f"({self.reach_px} px): tiles would see less context than the model needs",
            )
        self.geometry = TileGeometry.for_model(
            self.arch.pool_product, self.reach_px, self.margin_px, self.max_tile_px, self.border_px
        )

    @classmethod
    def from_bundle(cls, bundle, runtime: str = "auto", **kw) -> Segmenter:
        """A segmenter for a bundle (a :class:`~temtool.bundle.Bundle` or its folder);
        ``runtime``: see :meth:`~temtool.bundle.Bundle.inference_model`."""
        from temtool.bundle import Bundle, load_bundle

        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        model, runtime = b.inference_model(runtime)
        return cls(
            model,
            b.arch,
            b.reach_px,
            b.pixel_size_nm,
            normalisation=b.normalisation,
            diameter_range_px=b.diameter_range_px,
            name=str(b.path),
            runtime=runtime,
            **kw,
        )

    # ----------------------------------------------------------------- network passes
    def forward(self, tiles: np.ndarray) -> np.ndarray:
        """Particle probability of a batch of standardised tiles ``(N, h, w)``: the sigmoid of
        the logit difference (the softmax of two classes). With TTA, the mean over the 8
        dihedral transforms and their standard deviation: ``(N, 2, h, w)``. On the Keras
        runtime all of it runs compiled on the backend's device
        (:class:`temtool.runtime.CompiledForward`); on ONNX Runtime the transforms are host
        array views around each network call (so is any object with a Keras-like
        ``predict_on_batch``)."""
        stage = self._device_stage()
        if stage is not None:
            return stage(tiles)
        if not self.tta:
            return self._probability(tiles)
        from temtool.runtime import tta_members

        ks = tta_members(self.tta)
        total = np.zeros(tiles.shape, np.float32)
        square = np.zeros(tiles.shape, np.float32)
        for k in ks:
            p = dihedral(self._probability(dihedral(tiles, k, axes=(-2, -1))), k, axes=(-2, -1), inverse=True)
            total += p
            square += p * p
        mean = total / len(ks)
        sd = np.sqrt(np.maximum(square / len(ks) - mean * mean, 0))
        return np.stack([mean, sd], axis=1)

    def _probability(self, tiles: np.ndarray) -> np.ndarray:
        """The network's particle probability of ``(N, h, w)`` tiles on the host runtime: the
        sigmoid of the logit difference, computed in place (no temporary per step)."""
        x = np.ascontiguousarray(tiles[..., None], np.float32)
        logits = np.asarray(self.model.predict_on_batch(x), np.float32)
        d = np.subtract(logits[..., 1], logits[..., 0])
        np.clip(d, -80, 80, out=d)
        np.negative(d, out=d)
        np.exp(d, out=d)
        d += 1
        return np.reciprocal(d, out=d)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probability ``(H, W)`` float32 of a standardised image at the model's scale, tiled;
        equal to :meth:`predict_whole` everywhere. With TTA ``(2, H, W)``: mean and spread.
        On the Keras runtime tiles are cut, run and blended on the backend's device."""
        stage = self._device_stage()
        if stage is not None:
            from temtool.tiling import predict_tiled_on_device

            prob, self.info = predict_tiled_on_device(stage.on_device, image, self.geometry, self.batch_size)
            return prob
        prob, self.info = predict_tiled(self.forward, image, self.geometry, self.batch_size)
        return prob

    def _device_stage(self):
        """The compiled model stage of a Keras model on the Keras runtime (built once per TTA
        setting), or None: ONNX Runtime and stand-ins with ``predict_on_batch`` use the host."""
        if self.runtime != "keras" or not _is_keras_model(self.model):
            return None
        if getattr(self, "_compiled", None) is None or self._compiled.tta != self.tta:
            from temtool.runtime import CompiledForward

            self._compiled = CompiledForward(self.model, self.tta)
        return self._compiled

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """The same in one pass over the whole padded image (the reference for tiling)."""
        return predict_whole(self.forward, image, self.geometry)

    # ----------------------------------------------------------------- micrographs
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The bundle's normalisation."""
        if self.normalisation != "per_image_standardize":
            raise TemtoolError(f"{self.name}: unknown normalisation {self.normalisation!r}")
        return standardize(image)

    def _resampled(self, x: np.ndarray, scale: float) -> np.ndarray:
        """:meth:`predict` of ``x`` resampled by ``scale`` (on the resampled grid)."""
        if scale == 1:
            return self.predict(x)
        shape = (max(8, round(x.shape[0] * scale)), max(8, round(x.shape[1] * scale)))
        if shape[0] * shape[1] > 2**31:
            raise TemtoolError(
                f"resampling {x.shape[1]}x{x.shape[0]} px by x{scale:.3g} would make "
                f"{shape[1]}x{shape[0]} px; check the pixel size"
            )
        return self.predict(resample(x, shape))

    def _at_scale(self, x: np.ndarray, scale: float, made: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict` of ``x`` resampled by ``scale`` (or ``made``, that prediction
        already made), back on ``x``'s grid."""
        out = self._resampled(x, scale) if made is None else made
        if scale == 1:
            return out
        if out.ndim == 3:
            return np.stack([resample(o, x.shape) for o in out])
        return resample(out, x.shape)

    def _scale_by_particles(self, x: np.ndarray) -> tuple[float, np.ndarray | None, str | None]:
        """Resampling factor from the particles' typical size (see :meth:`scale_for`), the
        prediction at that factor (on the resampled grid) if it was already made, and a note."""
        from temtool.measure import typical_diameter_px

        lo, hi = self.diameter_range_px
        target = float(np.sqrt(lo * hi))
        look = min(1.0, 512 / max(x.shape))  # a quick first look at large images
        made: dict[float, np.ndarray] = {}
        d, want = None, 1.0
        for _ in range(4):
            if look not in made:
                made[look] = self._resampled(x, look)
            p = made[look]
            d_here = typical_diameter_px((p[0] if p.ndim == 3 else p) > 0.5)
            if d_here is None and look < 1:  # too small to see at this scale: look closer
                look = min(1.0, 4 * look)
                continue
            if d_here is None:
                break
            d = d_here / look  # in px of x
            want = 1.0 if lo <= d <= hi else target / d  # native when the model knows the size
            if abs(want / look - 1) <= RESAMPLE_TOLERANCE or want == 1.0:
                break
            look = want  # predict there and check the size again
        if d is None:
            return 1.0, made.get(1.0), "no particles found to estimate their size: no resampling"
        scale = 1.0 if abs(want - 1) <= RESAMPLE_TOLERANCE else want
        note = None
        if scale != 1.0:
            note = f"particles ~{d:.0f} px across: resampled x{scale:.3g} to the model's {target:.0f} px"
        return scale, made.get(scale), note

    def scale_for(
        self, x: np.ndarray, pixel_size_nm: float | None
    ) -> tuple[float, np.ndarray | None, str | None]:
        """The resampling factor that brings a (normalised) micrograph to the model's scale,
        the prediction at that factor if choosing it already made one (on the resampled
        grid), and a note saying how it was chosen.

        A model trained at one pixel size (``pixel_size_nm`` in its bundle) is matched by
        pixel size. A model trained over a range of particle sizes in px
        (``particle_diameter_px``) is matched by the particles themselves, as Cellpose's size
        model does: a first pass finds them and their typical diameter
        (:func:`temtool.measure.typical_diameter_px`) decides; inside the trained range the
        image is used as it is, outside it is resampled to the middle of the range.
        """
        if self.diameter_range_px:
            return self._scale_by_particles(x)
        scale = pixel_size_scale(pixel_size_nm, self.pixel_size_nm)
        if scale != 1.0:
            return scale, None, f"resampled x{scale:.3g} to the model's {self.pixel_size_nm:g} nm/px"
        if pixel_size_nm is None and self.pixel_size_nm:
            return 1.0, None, "pixel size unknown: no resampling (pass --pixel-size)"
        return 1.0, None, None

    def probability(
        self, image: np.ndarray, pixel_size_nm: float | None = None, normalised: bool = False
    ) -> Probability:
        """Particle probability of a micrograph on its own pixel grid (normalised as in
        training unless ``normalised``, resampled to the model's scale and back, see
        :meth:`scale_for`), the TTA spread (with ``tta``), and notes on what was done."""
        x = image if normalised else self.preprocess(image)
        scale, made, note = self.scale_for(x, pixel_size_nm)
        p = self._at_scale(x, scale, made)
        prob, spread = (p[0], p[1]) if p.ndim == 3 else (p, None)
        return Probability(prob, spread, [note] if note else [], scale)


class Probability(NamedTuple):
    """What :meth:`Segmenter.probability` returns."""

    prob: np.ndarray  # (H, W) float32, particle probability
    spread: np.ndarray | None  # (H, W) float32, standard deviation over TTA members, or None
    notes: list[str]
    scale: float  # resampling factor used (1: none)


# ------------------------------------------------------------------------ model choice
def _pretrained_dir() -> Path:
    return Path(__file__).resolve().parent / "pretrained"


def default_model(pixel_size_nm: float | None, image: np.ndarray | None = None) -> tuple[Path, str]:
    """The model to use without ``--model``: the last trained or tuned one, else the shipped
    model for what the image is (:func:`temtool.regime.classify`: HRTEM only with lattice
    fringes and weak amplitude contrast; standard bright-field TEM otherwise)."""
    from temtool.data.dataset import cache_dir
    from temtool.regime import classify

    last = cache_dir() / "last_model.txt"
    if last.is_file():
        p = Path(last.read_text().strip())
        if (p / "bundle.json").is_file():
            return p, f"the most recent trained model ({p})"
    shipped = {p.name: p for p in _pretrained_dir().glob("*") if (p / "bundle.json").is_file()}
    if not shipped:
        raise TemtoolError("no model given and none trained yet: pass --model MODEL or run 'temtool train'")
    if image is None:
        kind, why = "standard", "no image to look at"
    else:
        kind, why = classify(image, pixel_size_nm)
    p = shipped.get(kind) or shipped.get("standard") or next(iter(shipped.values()))
    return p, f"the shipped '{p.name}' model ({why})"


class ModelChooser:
    """The :class:`Segmenter` for an image: the given bundle (loaded at once, so a bad
    ``model`` fails before any file), else :func:`default_model` for that image.
    Each bundle is loaded once; ``on_load(why)`` is called when one is."""

    def __init__(
        self, model: str | os.PathLike | None = None, on_load: Callable | None = None, **segmenter_kw
    ):
        self.model, self.on_load, self.kw = model, on_load, segmenter_kw
        self.loaded: dict[str, Segmenter] = {}
        self.reason = str(model) if model is not None else ""
        if model is not None:
            self._load(Path(model), str(model))

    def _load(self, path: Path, why: str) -> Segmenter:
        key = str(path)
        self.reason = why
        if key not in self.loaded:
            self.loaded[key] = Segmenter.from_bundle(path, **self.kw)
            if self.on_load:
                self.on_load(f"{why} (runs on {self.loaded[key].runtime})")
        return self.loaded[key]

    def __call__(self, pixel_size_nm: float | None, image: np.ndarray | None = None) -> Segmenter:
        if self.model is not None:
            return self.loaded[str(self.model)]
        return self._load(*default_model(pixel_size_nm, image))


# ------------------------------------------------------------------------ outputs
OUTLINE_RGB = (255, 60, 0)


def _overlay_grey(image: np.ndarray) -> np.ndarray:
    """The micrograph in 255 grey levels (0.5 to 99.5 percentiles), uint8: the overlay's
    background, which needs no result, so it is made while the mask is post-processed. In
    float32 in place (NumPy scalars would make it float64: twice the memory, 6x the time)."""
    step = (max(1, image.shape[0] // 512), max(1, image.shape[1] // 512))
    lo, hi = (float(v) for v in np.percentile(image[:: step[0], :: step[1]], [0.5, 99.5]))
    g = np.subtract(image, np.float32(lo), dtype=np.float32)
    g *= np.float32(254 / max(hi - lo, 1e-9))
    np.clip(g, 0, 254, out=g)
    return g.astype(np.uint8)


def _overlay_png(path: Path, grey, labels: np.ndarray) -> None:
    """``grey`` (:func:`_overlay_grey`, or a future of it) with particle outlines in orange,
    as a palette PNG (a third of the bytes of RGB), stored without compression: a
    micrograph's noise leaves zlib little to gain (2.9 MB instead of 4.2 MB at 2048x2048) for
    0.09 s that were the last output to finish."""
    from PIL import Image

    from temtool.data.io import atomic_write
    from temtool.measure import inner_boundaries

    g = grey.result() if hasattr(grey, "result") else grey
    g[inner_boundaries(labels)] = 255
    im = Image.fromarray(g, mode="P")
    im.putpalette([v for i in range(255) for v in (i * 255 // 254,) * 3] + list(OUTLINE_RGB))
    atomic_write(path, lambda p: im.save(p, format="PNG", compress_level=0))


def _histogram_png(path: Path, diameters: list[float], unit: str) -> None:
    from temtool.histogram import histogram_png

    histogram_png(path, diameters, f"equivalent diameter ({unit})", "particles", f"n = {len(diameters)}")


def _write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    import csv
    import io

    from temtool.data.io import atomic_write

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(path, lambda p: p.write_text(buf.getvalue()))


# ------------------------------------------------------------------------ files
def expand_inputs(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files from files, folders (their images) and globs; and (input, why) for those that
    name nothing."""
    from temtool.data.io import IMAGE_SUFFIXES

    files, failed = [], []
    for p in paths:
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
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


def _write_labels(path: Path, labels: np.ndarray, pixel_size_nm: float | None) -> None:
    """Instance ids as uint16 (uint32 beyond 65,535 particles) TIFF, the Cellpose/StarDist
    convention; the ids are those of the particle table."""
    import tifffile

    from temtool.data.io import atomic_write

    dtype = np.uint16 if labels.max() < 2**16 else np.uint32
    kw = {}
    if pixel_size_nm:
        kw = {
            "resolution": (1 / pixel_size_nm, 1 / pixel_size_nm),
            "imagej": True,
            "metadata": {"unit": "nm"},
        }
        if dtype == np.uint32:
            kw = {}  # ImageJ TIFFs hold at most 16-bit integers
    atomic_write(path, lambda p: tifffile.imwrite(p, labels.astype(dtype), **kw))


def segment_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable | None = None,
    pixel_size_nm: float | None = None,
    post: PostProcessing | None = None,
    method: str = "model",
    d_spacing_nm: tuple[float, ...] = (0.2355, 0.2039),
    channel: int | None = None,
    frame: int | None = None,
    stem: str | None = None,
    ignore_annotations: bool = True,
    polarity: str = "dark",
) -> dict:
    """Segment one micrograph and write into ``out_dir`` (each atomically, named ``stem`` +
    suffix): mask, probability, instance labels, overlay, particle table, size histogram and,
    with TTA, the per-pixel uncertainty (spread of the TTA members).

    ``segmenter`` is a :class:`Segmenter`, or a function of the image's pixel size (nm, or
    None) and the image returning one (a :class:`ModelChooser`), so the model is chosen by
    what the image is without reading it twice. ``post`` turns probabilities into the mask
    (:class:`temtool.measure.PostProcessing`). ``ignore_annotations``: find burned-in scale
    bars, labels and data bars (:mod:`temtool.annotations`), hide them from the model and
    keep them out of the mask (the summary's ``annotation_px`` and notes say so). Returns a
    summary. ``polarity``: ``dark`` (particles darker than the background: bright-field TEM,
    what the models learned) or ``bright`` (HAADF-STEM, dark field: the contrast is inverted
    first).

    The three stages (:func:`_read`, :func:`_infer`, :func:`_finish`) are what
    :func:`segment_files` overlaps across files.
    """
    t0 = time.perf_counter()
    path = Path(path)
    read = _read(path, channel, frame)
    inferred = _infer(
        path, read, segmenter, pixel_size_nm, method, d_spacing_nm, ignore_annotations, polarity
    )
    return _finish(path, inferred, out_dir, post, stem, t0)


def _read(path: Path, channel: int | None = None, frame: int | None = None):
    from temtool.data.io import read_image

    return read_image(path, channel=channel, frame=frame)


POLARITIES = ("dark", "bright")  # particles darker (bright-field TEM) or brighter (HAADF, dark field)


def _check_polarity(polarity: str) -> None:
    if polarity not in POLARITIES:
        raise ParameterError("polarity", f"must be one of {', '.join(POLARITIES)}, got {polarity!r}")


def _infer(
    path: Path,
    mg,
    segmenter,
    pixel_size_nm: float | None = None,
    method: str = "model",
    d_spacing_nm: tuple[float, ...] = (0.2355, 0.2039),
    ignore_annotations: bool = True,
    polarity: str = "dark",
) -> dict:
    """The probability map of a read micrograph (the model stage); burned-in annotations
    (:mod:`temtool.annotations`) are filled before and set to background after, unless
    ``ignore_annotations`` is False; ``polarity="bright"`` inverts the contrast first."""
    from temtool.annotations import mask_annotations
    from temtool.baselines import fourier_segment

    _check_polarity(polarity)
    px = pixel_size_nm or mg.pixel_size_nm
    image = mg.data
    notes: list[str] = []
    drawn = None
    if ignore_annotations:
        image, drawn = mask_annotations(image)
        if drawn.any():
            notes.append(
                f"burned-in annotation (scale bar, label or data bar) of {int(drawn.sum())} px ignored"
            )
        else:
            drawn = None
    if polarity == "bright":  # the models and the threshold look for darker particles
        image = np.float32(np.max(image)) + np.float32(np.min(image)) - np.asarray(image, np.float32)
        notes.append("particles brighter than the background (--polarity bright): contrast inverted")
    seg, spread, why = None, None, None
    if method == "fourier":
        if px is None:
            raise TemtoolError(f"{path}: --method fourier needs the pixel size; pass --pixel-size")
        prob = fourier_segment(image, px, d_spacing_nm).astype(np.float32)
    else:
        seg = segmenter if isinstance(segmenter, Segmenter) else segmenter(px, image)
        why = getattr(segmenter, "reason", None)
        prob, spread, seg_notes, _ = seg.probability(image, px)
        notes += seg_notes
    if drawn is not None:
        prob = np.where(drawn, np.float32(0), prob)
        spread = None if spread is None else np.where(drawn, np.float32(0), spread)
    tiling = dict(seg.info) if seg else None  # now: the segmenter goes on to the next file
    return {
        "image": mg.data,
        "annotation_px": 0 if drawn is None else int(drawn.sum()),
        "px": px,
        "prob": prob,
        "spread": spread,
        "notes": notes,
        "seg": seg,
        "why": why,
        "tiling": tiling,
    }


def _finish(path: Path, r: dict, out_dir, post: PostProcessing | None, stem: str | None, t0: float) -> dict:
    """Mask, measurement and every output of an inferred micrograph; its summary."""
    from temtool.data.io import write_png, write_tiff

    post = post or PostProcessing()
    image, px, prob, spread, seg = r["image"], r["px"], r["prob"], r["spread"], r["seg"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or path.stem
    unit = "nm" if px else "px"
    with _Writes() as w:  # each output starts as soon as what it shows is ready
        w.submit(write_tiff, out / f"{stem}_prob.tif", prob, px)
        grey = w.compute(_overlay_grey, image)
        if spread is not None:
            w.submit(write_tiff, out / f"{stem}_uncertainty.tif", spread, px)
        mask, post_info = post.apply(prob, px)
        w.submit(write_png, out / f"{stem}_mask.png", mask)
        labels, rows = measure_particles(mask, px, min_area_px=1, pinhole_px=0)  # holes: `post` decided
        d = [r[f"equivalent_diameter_{unit}"] for r in rows if not r["touches_border"]]
        w.submit(_write_labels, out / f"{stem}_labels.tif", labels, px)
        w.submit(_overlay_png, out / f"{stem}_overlay.png", grey, labels)
        w.submit(_write_csv, out / f"{stem}_particles.csv", rows, particle_columns(unit))
        w.submit(_histogram_png, out / f"{stem}_sizes.png", d, unit)
    return {
        "file": str(path),
        "output_stem": stem,
        "pixel_size_nm": px,
        "model": seg.name if seg else None,
        "runtime": seg.runtime if seg else None,
        "model_choice": r["why"],
        "particles": len(rows),
        "particles_not_touching_border": len(d),
        "diameter_mean": float(np.mean(d)) if d else None,
        "diameter_sd": float(np.std(d)) if d else None,
        "diameter_median": float(np.median(d)) if d else None,
        "diameter_unit": unit,
        "area_fraction": float(mask.mean()),
        "annotation_px": r["annotation_px"],
        "postprocessing": post_info,
        "time_s": time.perf_counter() - t0,
        "notes": r["notes"],
        "tiling": r["tiling"],
        "outputs": str(out),
    }


class _Writes:
    """Outputs written side by side in threads, each submitted as ``(function, path, *args)``
    as soon as its data is ready, so the probability map is written (and the overlay's grey
    image made, :meth:`compute`) while post-processing runs and the mask while particles are
    measured (PNG and TIFF encoding, zlib and NumPy release the GIL). Each output is written
    under a temporary name next to ``path``; leaving the ``with`` block waits for every write
    and, only if all of them and the block succeeded, renames them into place. So a
    micrograph's outputs are one whole set: after a failure (a write error, an error in
    measuring, Ctrl-C) the temporaries are removed and the outputs of an earlier run, if any,
    are left as they were. The first write error is raised after the others finished.
    """

    def __enter__(self) -> _Writes:
        from concurrent.futures import ThreadPoolExecutor

        _import_writers()  # before the threads: two threads importing one package can collide
        self._pool = ThreadPoolExecutor(3, thread_name_prefix="temtool-out")
        self._jobs, self._staged = [], []
        return self

    def compute(self, fn, *args):
        """A future of ``fn(*args)`` from the same threads, for a later output to use (it is
        queued before that output, so it never waits on a thread it holds)."""
        return self._pool.submit(fn, *args)

    def submit(self, fn, path: Path, *args) -> None:
        path = Path(path)
        staged = path.with_name(f".{path.name}.part-{os.getpid()}{path.suffix}")  # suffix: the format
        self._staged.append((staged, path))
        self._jobs.append(self._pool.submit(_write_staged, fn, staged, *args))

    def __exit__(self, exc_type, *_) -> None:
        self._pool.shutdown(wait=True)
        try:
            if exc_type is None:
                for j in self._jobs:
                    j.result()
                for staged, path in self._staged:
                    os.replace(staged, path)
        finally:
            for staged, _ in self._staged:
                staged.unlink(missing_ok=True)


def _write_staged(fn, path: Path, *args) -> None:
    """``fn(path, *args)`` writing straight to ``path``, a temporary name :class:`_Writes`
    renames (:func:`temtool.data.io.staged_writes`)."""
    from temtool.data.io import staged_writes

    with staged_writes():
        fn(path, *args)


def _failure(f: Path, e: BaseException) -> str:
    """The reason a file failed, for the summary (without the file name it already carries)."""
    if isinstance(e, TemtoolError):
        msg = str(e)
        return msg[len(str(f)) + 2 :] if msg.startswith(f"{f}: ") else msg
    if isinstance(e, MemoryError):
        return "not enough memory for this image"
    return f"{type(e).__name__}: {e}"


def _import_writers() -> None:
    """Import what the writers use, once, before they run in threads (two threads importing
    the same package at once can see it half initialised)."""
    import tifffile  # noqa: F401
    from PIL import Image, ImageDraw, ImageFont  # noqa: F401

    import temtool.data.io  # noqa: F401
    import temtool.histogram  # noqa: F401


def _import_stages() -> None:
    """:func:`_import_writers`, and what the read and finish stages use, for the pipeline of
    :func:`segment_files` (whose stages run in threads)."""
    _import_writers()
    import skimage.measure  # noqa: F401
    import skimage.morphology  # noqa: F401
    import skimage.segmentation  # noqa: F401
    import skimage.transform  # noqa: F401

    import temtool.baselines  # noqa: F401
    import temtool.regime  # noqa: F401


def segment_files(
    paths: list[str],
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable | None = None,
    on_file: Callable | None = None,
    workers: int = 2,
    **kw,
) -> dict:
    """:func:`segment_file` over files, folders and globs. A file that fails (unreadable,
    corrupt, anything) is recorded with its reason and the rest go on. ``on_file(i, n, result
    or None, error or None)`` is called after each (``i`` files done so far). Returns
    ``{"results", "failed": [{"file", "error"}], "n_inputs"}``, results in input order.

    With several files and ``workers`` > 0 the stages overlap: one reader thread reads ahead
    (at most two micrographs waiting), the model runs in this thread, and ``workers`` threads
    post-process, measure and write (at most ``workers + 1`` micrographs in flight), so memory
    stays bounded for any number of files. ONNX Runtime, NumPy, SciPy and the image writers
    release the GIL for their heavy parts. ``workers=0``: one file after the other.
    """
    files, missing = expand_inputs(paths)
    failed = [{"file": f, "error": why} for f, why in missing]
    n_inputs = len(files) + len(failed)
    from temtool.data.io import check_writable

    out = check_writable(out_dir)  # created with the first result, so a bad option leaves nothing
    if workers < 0:
        raise ParameterError("workers", f"must be >= 0, got {workers}")
    _check_polarity(kw.get("polarity", "dark"))  # before any file, not once per file
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

    read_kw = {k: kw.pop(k) for k in ("channel", "frame") if k in kw}
    post = kw.pop("post", None)
    if workers == 0 or len(files) < 2:
        for i, f in enumerate(files):
            try:
                r = segment_file(f, out, segmenter, stem=stems[i], post=post, **read_kw, **kw)
            except Exception as e:  # one bad file must not end the batch
                record(i, f, None, e)
            else:
                record(i, f, r, None)
    else:
        _pipeline(files, stems, out, segmenter, post, read_kw, kw, workers, record)
    order = {str(f): i for i, f in enumerate(files)}
    results = [done[i] for i in sorted(done)]
    failed += sorted((errors[i] for i in errors), key=lambda e: order[e["file"]])
    return {"results": results, "failed": failed, "n_inputs": n_inputs}


def _pipeline(files, stems, out, segmenter, post, read_kw, kw, workers, record) -> None:
    """Read ahead / infer here / finish in a pool (see :func:`segment_files`)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

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
        reads = deque(reader.submit(_read, files[i], **read_kw) for i in range(min(2, len(files))))
        try:
            for i, f in enumerate(files):
                t0 = time.perf_counter()
                read = reads.popleft()
                if i + 2 < len(files):
                    reads.append(reader.submit(_read, files[i + 2], **read_kw))
                try:
                    inferred = _infer(f, read.result(), segmenter, **kw)
                except Exception as e:
                    record(i, f, None, e)
                    continue
                pending.append((i, f, writers.submit(_finish, f, inferred, out, post, stems[i], t0)))
                collect(block_until=workers)
            collect(block_until=0)
        except BaseException:  # Ctrl-C or a bad option: drop what has not started
            for fut in reads:
                fut.cancel()
            for *_, fut in pending:
                fut.cancel()
            raise
