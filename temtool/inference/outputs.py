"""What ``temtool segment`` writes for a micrograph, and how: each output written to the path
it is given, and :class:`OutputSet`, which writes a micrograph's outputs side by side in
threads under temporary names and renames them into place only when all succeeded."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile  # noqa: F401 - imported here, before the writer threads start (two threads
from PIL import Image, ImageDraw, ImageFont  # noqa: F401 - importing one package at once can collide)

from temtool.data.io import atomic_write, write_png, write_tiff
from temtool.errors import TemtoolError
from temtool.image.labels import inner_boundaries
from temtool.inference.histogram import histogram_png

__all__ = [
    "OUTLINE_RGB",
    "RECORD_FILE",
    "OutputSet",
    "output_paths",
    "check_replaceable",
    "overlay_grey",
    "write_overlay_png",
    "write_size_histogram",
    "write_particles_csv",
    "write_labels_tiff",
    "write_probability_tiff",
    "write_mask_png",
]

OUTLINE_RGB = (255, 60, 0)

# in an output folder: the names of the files temtool runs wrote there, the only files a later
# run may replace (never a file of the user's, whatever its name)
RECORD_FILE = ".temtool-outputs.json"
_RECORD_LOCK = threading.Lock()  # the finishing threads of one run record one after the other
SUFFIXES = {
    "prob": "_prob.tif",
    "uncertainty": "_uncertainty.tif",
    "mask": "_mask.png",
    "labels": "_labels.tif",
    "overlay": "_overlay.png",
    "particles": "_particles.csv",
    "sizes": "_sizes.png",
}


def output_paths(out: Path, stem: str, uncertainty: bool) -> dict[str, Path]:
    """Where a micrograph's outputs go, by kind (``uncertainty``: with TTA's spread)."""
    return {k: out / f"{stem}{v}" for k, v in SUFFIXES.items() if uncertainty or k != "uncertainty"}


def recorded_outputs(out: Path) -> set[str]:
    """The names temtool runs recorded as theirs in ``out``."""
    try:
        return set(json.loads((out / RECORD_FILE).read_text())["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def check_replaceable(out: Path, paths, inputs=()) -> None:
    """Refuse (:class:`TemtoolError`) outputs that would replace an input or a file no
    temtool run recorded writing in ``out``: a user's own file is never overwritten."""
    recorded = recorded_outputs(out)
    sources = {Path(i).resolve() for i in inputs}
    for p in paths:
        if Path(p).resolve() in sources:
            raise TemtoolError(f"{p}: this output would replace the input; choose another --out")
        if os.path.lexists(p) and Path(p).name not in recorded:
            raise TemtoolError(
                f"{p}: exists and was not written by temtool, so it is not replaced; "
                "choose another --out, or move the file"
            )


def _record(out: Path, names) -> None:
    with _RECORD_LOCK:
        record = sorted(recorded_outputs(out) | set(names))
        atomic_write(out / RECORD_FILE, lambda t: t.write_text(json.dumps({"outputs": record}, indent=0)))


def overlay_grey(image: np.ndarray) -> np.ndarray:
    """The micrograph in 255 grey levels (0.5 to 99.5 percentiles), uint8: the overlay's
    background, which needs no result, so it is made while the mask is post-processed. In
    float32 in place (NumPy scalars would make it float64: twice the memory)."""
    step = (max(1, image.shape[0] // 512), max(1, image.shape[1] // 512))
    lo, hi = (float(v) for v in np.percentile(image[:: step[0], :: step[1]], [0.5, 99.5]))
    g = np.subtract(image, np.float32(lo), dtype=np.float32)
    g *= np.float32(254 / max(hi - lo, 1e-9))
    np.clip(g, 0, 254, out=g)
    return g.astype(np.uint8)


def write_overlay_png(path: Path, grey, labels: np.ndarray) -> None:
    """``grey`` (:func:`overlay_grey`, or a future of it) with particle outlines in orange,
    as a palette PNG (a third of the bytes of RGB), stored without compression: a
    micrograph's noise leaves zlib little to gain for the time it takes."""
    g = grey.result() if hasattr(grey, "result") else grey
    g[inner_boundaries(labels)] = 255
    im = Image.fromarray(g, mode="P")
    im.putpalette([v for i in range(255) for v in (i * 255 // 254,) * 3] + list(OUTLINE_RGB))
    im.save(path, format="PNG", compress_level=0)


def write_size_histogram(path: Path, diameters: list[float], unit: str) -> None:
    """The histogram of equivalent diameters in ``unit``."""
    histogram_png(path, diameters, f"equivalent diameter ({unit})", "particles", f"n = {len(diameters)}")


def write_particles_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    """The particle table (:func:`temtool.inference.measure.measure_particles`), 4 significant digits."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    path.write_text(buf.getvalue())


def write_labels_tiff(path: Path, labels: np.ndarray, pixel_size_nm: float | None) -> None:
    """Instance ids as uint16 (uint32 beyond 65,535 particles) TIFF, the Cellpose/StarDist
    convention; the ids are those of the particle table."""
    dtype = np.uint16 if labels.max() < 2**16 else np.uint32
    write_tiff(path, labels.astype(dtype), pixel_size_nm, atomic=False)


def write_probability_tiff(path: Path, prob: np.ndarray, pixel_size_nm: float | None) -> None:
    """A float32 map (probability, TTA spread) with the pixel size in its ImageJ tags."""
    write_tiff(path, prob, pixel_size_nm, atomic=False)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """The binary mask, 0/1 uint8 PNG."""
    write_png(path, mask, atomic=False)


class OutputSet:
    """Outputs written side by side in threads, each submitted as ``(writer, path, *args)``
    as soon as its data is ready, so the probability map is written (and the overlay's grey
    image made, :meth:`compute`) while post-processing runs and the mask while particles are
    measured (PNG and TIFF encoding, zlib and NumPy release the GIL). Each output is written
    (by ``writer(temporary_path, *args)``) under a temporary name next to ``path``; leaving
    the ``with`` block waits for every write and, only if all of them and the block
    succeeded, renames them into place. So a
    micrograph's outputs are one whole set: after a failure (a write error, an error in
    measuring, Ctrl-C) the temporaries are removed and the outputs of an earlier run, if any,
    are left as they were. The first write error is raised after the others finished.
    """

    def __init__(self, out: Path):
        self.out = Path(out)  # the folder, whose record of temtool's outputs the set joins

    def __enter__(self) -> OutputSet:
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
        self._jobs.append(self._pool.submit(fn, staged, *args))

    def __exit__(self, exc_type, *_) -> None:
        self._pool.shutdown(wait=True)
        try:
            if exc_type is None:
                for j in self._jobs:
                    j.result()
                _record(
                    self.out, [path.name for _, path in self._staged]
                )  # before: a crash leaves no unrecorded output
                for staged, path in self._staged:
                    os.replace(staged, path)
        finally:
            for staged, _ in self._staged:
                staged.unlink(missing_ok=True)
