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
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from temtool.arch import Architecture
from temtool.data.dataset import standardize
from temtool.errors import ParameterError, TemtoolError
from temtool.measure import measure_particles, particle_columns
from temtool.tiling import TileGeometry, predict_tiled, predict_whole
from temtool.train import dihedral

__all__ = [
    "Segmenter",
    "ModelChooser",
    "default_model",
    "expand_inputs",
    "segment_file",
    "segment_files",
    "resample",
]

RESAMPLE_TOLERANCE = 0.10  # relative pixel-size difference tolerated without resampling


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (anti-aliased when shrinking). float32."""
    from skimage.transform import resize

    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    return resize(image, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)


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
    max_tile_px: int = 1024
    name: str = ""
    info: dict = field(default_factory=dict)

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
            self.arch.pool_product, self.reach_px, self.margin_px, self.max_tile_px
        )

    @classmethod
    def from_bundle(cls, bundle, **kw) -> Segmenter:
        """A segmenter for a bundle (a :class:`~temtool.bundle.Bundle` or its folder)."""
        from temtool.bundle import Bundle, load_bundle

        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        return cls(
            b.model,
            b.arch,
            b.reach_px,
            b.pixel_size_nm,
            normalisation=b.normalisation,
            name=str(b.path),
            **kw,
        )

    # ----------------------------------------------------------------- network passes
    def forward(self, tiles: np.ndarray) -> np.ndarray:
        """Particle probability of a batch of standardised tiles ``(N, h, w)``: the sigmoid of
        the logit difference (the softmax of two classes), averaged over TTA transforms."""
        ks = range(8) if self.tta else (0,)
        out = np.zeros(tiles.shape, np.float32)
        for k in ks:
            x = np.ascontiguousarray(dihedral(tiles, k, axes=(-2, -1))[..., None], np.float32)
            logits = np.asarray(self.model.predict_on_batch(x), np.float32)
            d = np.clip(logits[..., 1] - logits[..., 0], -80, 80)
            out += dihedral(1.0 / (1.0 + np.exp(-d)), k, axes=(-2, -1), inverse=True)
        return out / len(ks)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probability ``(H, W)`` float32 of a standardised image at the model's scale, tiled;
        equal to :meth:`predict_whole` everywhere."""
        prob, self.info = predict_tiled(self.forward, image, self.geometry, self.batch_size)
        return prob

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """The same in one pass over the whole padded image (the reference for tiling)."""
        return predict_whole(self.forward, image, self.geometry)

    # ----------------------------------------------------------------- micrographs
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The bundle's normalisation."""
        if self.normalisation != "per_image_standardize":
            raise TemtoolError(f"{self.name}: unknown normalisation {self.normalisation!r}")
        return standardize(image)

    def probability(
        self, image: np.ndarray, pixel_size_nm: float | None = None, normalised: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """Particle probability of a micrograph on its own pixel grid, and notes on what was
        done: normalised as in training (unless ``normalised``), resampled to the model's
        pixel size and back when they differ by more than 10%."""
        notes = []
        x = image if normalised else self.preprocess(image)
        model_px = self.pixel_size_nm
        if pixel_size_nm and model_px and abs(pixel_size_nm / model_px - 1) > RESAMPLE_TOLERANCE:
            scale = pixel_size_nm / model_px
            shape = (max(8, round(x.shape[0] * scale)), max(8, round(x.shape[1] * scale)))
            if shape[0] * shape[1] > 2**31:
                raise TemtoolError(
                    f"resampling {x.shape[1]}x{x.shape[0]} px at {pixel_size_nm:g} nm/px to the model's "
                    f"{model_px:g} nm/px would make {shape[1]}x{shape[0]} px; check the pixel size"
                )
            prob = resample(self.predict(resample(x, shape)), image.shape)
            notes.append(f"resampled x{scale:.3g} to the model's {model_px:g} nm/px and back")
        else:
            if pixel_size_nm is None and model_px:
                notes.append("pixel size unknown: no resampling (pass --pixel-size)")
            prob = self.predict(x)
        return prob, notes


# ------------------------------------------------------------------------ model choice
def _pretrained_dir() -> Path:
    return Path(__file__).resolve().parent / "pretrained"


def default_model(pixel_size_nm: float | None) -> tuple[Path, str]:
    """The model to use without ``--model``: the last trained or tuned one, else the shipped
    pretrained model whose training pixel size is closest (log scale) to the image's."""
    import json

    from temtool.data.dataset import cache_dir

    last = cache_dir() / "last_model.txt"
    if last.is_file():
        p = Path(last.read_text().strip())
        if (p / "bundle.json").is_file():
            return p, f"the most recent trained model ({p})"
    shipped = sorted(p for p in _pretrained_dir().glob("*") if (p / "bundle.json").is_file())
    if not shipped:
        raise TemtoolError("no model given and none trained yet: pass --model MODEL or run 'temtool train'")
    if pixel_size_nm is None:
        p = next((q for q in shipped if q.name == "standard"), shipped[0])
        return p, f"the shipped '{p.name}' model (image pixel size unknown; pass --pixel-size)"
    best = min(
        shipped,
        key=lambda q: abs(
            math.log(pixel_size_nm / json.loads((q / "bundle.json").read_text())["pixel_size_nm"])
        ),
    )
    return best, f"the shipped '{best.name}' model (closest training pixel size)"


class ModelChooser:
    """The :class:`Segmenter` for an image: the given bundle (loaded at once, so a bad
    ``model`` fails before any file), else :func:`default_model` by the image's pixel size.
    Each bundle is loaded once; ``on_load(why)`` is called when one is."""

    def __init__(
        self, model: str | os.PathLike | None = None, on_load: Callable | None = None, **segmenter_kw
    ):
        self.model, self.on_load, self.kw = model, on_load, segmenter_kw
        self.loaded: dict[str, Segmenter] = {}
        if model is not None:
            self._load(Path(model), str(model))

    def _load(self, path: Path, why: str) -> Segmenter:
        key = str(path)
        if key not in self.loaded:
            self.loaded[key] = Segmenter.from_bundle(path, **self.kw)
            if self.on_load:
                self.on_load(why)
        return self.loaded[key]

    def __call__(self, pixel_size_nm: float | None) -> Segmenter:
        if self.model is not None:
            return self.loaded[str(self.model)]
        return self._load(*default_model(pixel_size_nm))


# ------------------------------------------------------------------------ outputs
def _overlay_png(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from temtool.data.io import atomic_write

    lo, hi = np.percentile(
        image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)], [0.5, 99.5]
    )
    g = np.clip((image - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([g, g, g], -1)
    rgb[find_boundaries(labels, mode="inner")] = (255, 60, 0)
    atomic_write(path, lambda p: Image.fromarray(rgb).save(p, format="PNG", compress_level=1))


def _histogram_png(path: Path, diameters: list[float], unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from temtool.data.io import atomic_write

    fig, ax = plt.subplots(figsize=(4, 3))
    if diameters:
        ax.hist(diameters, bins=min(30, max(5, len(diameters) // 2)), color="tab:orange")
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title(f"n = {len(diameters)}")
    fig.tight_layout()
    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    finally:
        plt.close(fig)


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


def segment_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable[[float | None], Segmenter] | None = None,
    pixel_size_nm: float | None = None,
    threshold: float = 0.5,
    method: str = "model",
    d_spacing_nm: tuple[float, ...] = (0.2355, 0.2039),
    channel: int | None = None,
    frame: int | None = None,
    stem: str | None = None,
) -> dict:
    """Segment one micrograph and write mask, probability, overlay, particle table and
    size histogram into ``out_dir`` (each written atomically, named ``stem`` + suffix).

    ``segmenter`` is a :class:`Segmenter`, or a function of the image's pixel size (nm, or
    None) returning one (a :class:`ModelChooser`), so a model can be chosen by pixel size
    without reading the file twice. Returns a summary.
    """
    from temtool.baselines import fourier_segment
    from temtool.data.io import read_image, write_png, write_tiff

    t0 = time.perf_counter()
    path = Path(path)
    mg = read_image(path, channel=channel, frame=frame)
    px = pixel_size_nm or mg.pixel_size_nm
    image = mg.data
    notes: list[str] = []
    seg = None
    if method == "fourier":
        if px is None:
            raise TemtoolError(f"{path}: --method fourier needs the pixel size; pass --pixel-size")
        prob = fourier_segment(image, px, d_spacing_nm).astype(np.float32)
    else:
        seg = segmenter if isinstance(segmenter, Segmenter) else segmenter(px)
        prob, notes = seg.probability(image, px)
    mask = (prob > threshold).astype(np.uint8)
    labels, rows = measure_particles(mask, px)
    unit = "nm" if px else "px"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or path.stem
    write_png(out / f"{stem}_mask.png", mask)
    write_tiff(out / f"{stem}_prob.tif", prob, px)
    _overlay_png(out / f"{stem}_overlay.png", image, labels)
    _write_csv(out / f"{stem}_particles.csv", rows, particle_columns(unit))
    d = [r[f"equivalent_diameter_{unit}"] for r in rows if not r["touches_border"]]
    _histogram_png(out / f"{stem}_sizes.png", d, unit)
    return {
        "file": str(path),
        "output_stem": stem,
        "pixel_size_nm": px,
        "model": seg.name if seg else None,
        "particles": len(rows),
        "particles_not_touching_border": len(d),
        "diameter_mean": float(np.mean(d)) if d else None,
        "diameter_sd": float(np.std(d)) if d else None,
        "diameter_median": float(np.median(d)) if d else None,
        "diameter_unit": unit,
        "area_fraction": float(mask.mean()),
        "time_s": time.perf_counter() - t0,
        "notes": notes,
        "tiling": dict(seg.info) if seg else None,
        "outputs": str(out),
    }


def segment_files(
    paths: list[str],
    out_dir: str | os.PathLike,
    segmenter: Segmenter | Callable | None = None,
    on_file: Callable | None = None,
    **kw,
) -> dict:
    """:func:`segment_file` over files, folders and globs. A file that fails (unreadable,
    corrupt, anything) is recorded with its reason and the rest go on. ``on_file(i, n, result
    or None, error or None)`` is called after each. Returns ``{"results", "failed": [{"file", "error"}],
    "n_inputs"}``.
    """
    files, missing = expand_inputs(paths)
    failed = [{"file": f, "error": why} for f, why in missing]
    n_inputs = len(files) + len(failed)
    from temtool.data.io import check_writable

    out = check_writable(out_dir)  # created with the first result, so a bad option leaves nothing
    results = []
    for i, (f, stem) in enumerate(zip(files, output_stems(files))):
        try:
            r = segment_file(f, out, segmenter, stem=stem, **kw)
        except ParameterError:
            raise  # a bad option is wrong for every file: stop with one line
        except TemtoolError as e:
            msg = str(e)
            error = msg[len(str(f)) + 2 :] if msg.startswith(f"{f}: ") else msg
        except MemoryError:
            error = "not enough memory for this image"
        except Exception as e:  # one bad file must not end the batch
            error = f"{type(e).__name__}: {e}"
        else:
            if stem != f.stem:
                r["notes"].append(f"outputs named {stem}_* (another input has the stem {f.stem!r})")
            results.append(r)
            if on_file:
                on_file(i + 1, len(files), r, None)
            continue
        failed.append({"file": str(f), "error": error})
        if on_file:
            on_file(i + 1, len(files), None, failed[-1])
    return {"results": results, "failed": failed, "n_inputs": n_inputs}
