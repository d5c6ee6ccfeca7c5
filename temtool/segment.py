"""Whole-micrograph segmentation: tiled inference with seamless blending, optional dihedral
test-time augmentation, resampling to the model's pixel size, and particle measurements.

Tiling. Each tile keeps a context margin ``m`` of at least half the model's exact receptive
field where its weight is zero, then a raised-cosine ramp of ``b`` px up to weight 1, so every
blended pixel is predicted only by tiles that saw its whole receptive field; tile origins are
multiples of the pool product, so pooling grids line up with a whole-image pass. The tiled
result therefore equals a whole-image prediction away from the image border (tested), while
memory stays bounded for micrographs of any size.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from temtool.arch import Architecture
from temtool.data.dataset import standardize
from temtool.errors import TemtoolError
from temtool.train import dihedral

__all__ = [
    "Segmenter",
    "plan_tiles",
    "measure_particles",
    "segment_file",
    "default_model",
    "PARTICLE_COLUMNS",
]

PARTICLE_COLUMNS = (
    "id",
    "area_nm2",
    "equivalent_diameter_nm",
    "centroid_y_px",
    "centroid_x_px",
    "major_axis_nm",
    "minor_axis_nm",
    "eccentricity",
    "touches_border",
)


def _ramp(n: int, margin: int, blend: int) -> np.ndarray:
    """1-D tile weight: 0 over the margin, raised cosine over ``blend`` px, then 1."""
    w = np.ones(n, np.float32)
    w[:margin] = 0
    t = (np.arange(blend, dtype=np.float32) + 0.5) / blend
    r = 0.5 - 0.5 * np.cos(np.pi * t)
    w[margin : margin + blend] = r
    w[n - margin - blend : n - margin] = r[::-1]
    w[n - margin :] = 0
    return w


def plan_tiles(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``[0, length)`` with the given tile size and overlap."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


@dataclass
class Segmenter:
    """Probability maps for micrographs of any size from a trained ResUNet."""

    model: object
    arch: Architecture
    rf_px: int
    pixel_size_nm: float | None = None  # the model's training pixel size
    max_tile: int = 1024
    batch_size: int = 4
    tta: bool = False
    margin_px: int | None = None  # context kept around each tile; default half the exact RF
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        P = self.arch.pool_product
        half = int(math.ceil(self.rf_px / 2))
        if self.margin_px is not None and self.margin_px < half:
            raise TemtoolError(
                f"--overlap {self.margin_px}: must be at least half the model's receptive field "
                f"({half} px) or tiles would see less context than the model needs"
            )
        self.margin = int(math.ceil(max(half, self.margin_px or 0) / P) * P)
        self.blend = max(P, int(math.ceil(16 / P) * P))
        self.overlap = 2 * self.margin + self.blend
        self._predict = None

    def _tile_size(self, length: int) -> int:
        """Smallest tile (multiple of P) covering ``length`` with few tiles, at most max_tile."""
        P = self.arch.pool_product
        minimum = self.overlap + P
        best = None
        for n in range(1, 64):
            t = int(math.ceil((length + (n - 1) * self.overlap) / n / P) * P)
            t = max(t, int(math.ceil(minimum / P) * P))
            if t > max(self.max_tile, minimum):
                continue
            cost = len(plan_tiles(length, t, self.overlap)) * t
            if best is None or cost < best[0]:
                best = (cost, t)
            if n > 1 and t <= minimum:
                break
        return best[1] if best else int(math.ceil(max(self.max_tile, minimum) / P) * P)

    def _forward(self, tiles: np.ndarray) -> np.ndarray:
        """Particle probability of a batch of square tiles ``(N, T, T)``."""
        outs = np.zeros(tiles.shape, np.float32)
        ks = range(8) if self.tta else (0,)
        for k in ks:
            x = np.ascontiguousarray(dihedral(tiles[..., None], k))
            logits = np.asarray(self.model.predict_on_batch(x), np.float32)
            d = logits[..., 1] - logits[..., 0]
            p = 1.0 / (1.0 + np.exp(-d))
            # inverse of transform k: rotate back (and flip back first)
            p = p[..., None]
            if k >= 4:
                p = np.flip(p, axis=-2)
            p = np.rot90(p, -(k % 4), axes=(-3, -2))
            outs += p[..., 0]
        return outs / len(ks)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Particle probability ``(H, W)`` float32 of a standardised image at the model's scale."""
        h, w = image.shape
        pad = self.margin + self.blend
        P = self.arch.pool_product
        hp, wp = h + 2 * pad, w + 2 * pad
        T = self._tile_size(max(hp, wp))
        # pad to at least one tile and to a multiple of P
        H = max(T, int(math.ceil(hp / P) * P))
        W = max(T, int(math.ceil(wp / P) * P))
        mode = "reflect" if pad < min(h, w) else "symmetric"
        x = np.pad(image, ((pad, H - h - pad), (pad, W - w - pad)), mode=mode).astype(np.float32)
        ys, xs = plan_tiles(H, T, self.overlap), plan_tiles(W, T, self.overlap)
        wt = _ramp(T, self.margin, self.blend)
        acc = np.zeros((H, W), np.float32)
        norm = np.zeros((H, W), np.float32)
        coords = [(y, xx) for y in ys for xx in xs]
        for i in range(0, len(coords), self.batch_size):
            chunk = coords[i : i + self.batch_size]
            tiles = np.stack([x[y : y + T, xx : xx + T] for y, xx in chunk])
            probs = self._forward(tiles)
            for (y, xx), p in zip(chunk, probs):
                wy = wt if 0 < y < H - T else _edge_weight(wt, y == 0, y + T == H)
                wx = wt if 0 < xx < W - T else _edge_weight(wt, xx == 0, xx + T == W)
                w2 = np.outer(wy, wx)
                acc[y : y + T, xx : xx + T] += p * w2
                norm[y : y + T, xx : xx + T] += w2
        self.info = {"tile_px": T, "tiles": len(coords), "overlap_px": self.overlap, "margin_px": self.margin}
        out = acc / np.maximum(norm, 1e-12)
        return out[pad : pad + h, pad : pad + w]


def _edge_weight(wt: np.ndarray, first: bool, last: bool) -> np.ndarray:
    """At the outer edges of the padded canvas there is no neighbour tile: weight 1 there."""
    w = wt.copy()
    half = len(w) // 2
    if first:
        w[:half] = 1
    if last:
        w[half:] = 1
    return w


# ------------------------------------------------------------------------ particles
def measure_particles(
    mask: np.ndarray, pixel_size_nm: float | None, min_area_px: int = 10
) -> tuple[np.ndarray, list[dict]]:
    """Split touching particles (distance-transform watershed) and measure each.

    Returns the label image and one row per particle (see :data:`PARTICLE_COLUMNS`; lengths in
    nm when the pixel size is known, else in px).
    """
    from skimage.measure import label, regionprops
    from skimage.morphology import h_maxima, remove_small_holes
    from skimage.segmentation import watershed

    # fill pinholes only: a ring of touching particles must not become one filled blob
    m = remove_small_holes(np.asarray(mask, bool), max_size=64)
    comp = label(m)
    if comp.max() == 0:
        return comp.astype(np.int32), []
    # per connected component, on its bounding box (fast on large, sparse micrographs):
    # distance transform, h-maxima markers, watershed of the inverted distance
    boxes = ndi.find_objects(comp)
    H, W = m.shape

    def pads(sl):  # background margin, except at the image border (as for the whole image)
        return ((int(sl[0].start > 0), int(sl[0].stop < H)), (int(sl[1].start > 0), int(sl[1].stop < W)))

    owns = [np.pad(comp[sl] == i, pads(sl)) for i, sl in enumerate(boxes, start=1)]
    dists = [ndi.distance_transform_edt(own) for own in owns]
    h = max(1.0, 0.05 * float(np.median([d.max() for d in dists])))
    labels = np.zeros(m.shape, np.int32)
    n = 0
    for sl, own, dist in zip(boxes, owns, dists):
        (t, b), (lft, r) = pads(sl)
        crop = (slice(t, own.shape[0] - b), slice(lft, own.shape[1] - r))
        markers = label(h_maxima(dist, h) & own)
        if markers.max() > 1:
            sub = watershed(-dist, markers, mask=own)[crop]
        else:
            sub = own[crop].astype(np.int32)
        inside = sub > 0
        labels[sl][inside] = sub[inside] + n
        n += int(sub.max())
    s = pixel_size_nm or 1.0
    rows = []
    for r in regionprops(labels):
        if r.area < min_area_px:
            continue
        y0, x0, y1, x1 = r.bbox
        rows.append(
            {
                "id": len(rows) + 1,
                "area_nm2": float(r.area) * s * s,
                "equivalent_diameter_nm": float(r.equivalent_diameter_area) * s,
                "centroid_y_px": float(r.centroid[0]),
                "centroid_x_px": float(r.centroid[1]),
                "major_axis_nm": float(r.axis_major_length) * s,
                "minor_axis_nm": float(r.axis_minor_length) * s,
                "eccentricity": float(r.eccentricity),
                "touches_border": bool(y0 == 0 or x0 == 0 or y1 == H or x1 == W),
            }
        )
    return labels.astype(np.int32), rows


# ------------------------------------------------------------------------ models
def _pretrained_dir() -> Path:
    return Path(__file__).resolve().parent / "pretrained"


def default_model(pixel_size_nm: float | None) -> tuple[Path, str]:
    """The model to use without ``--model``: the last trained or tuned one, else the shipped
    pretrained model whose training pixel size is closest (log scale) to the image's."""
    from temtool.data.dataset import cache_dir

    last = cache_dir() / "last_model.txt"
    if last.is_file():
        p = Path(last.read_text().strip())
        if (p / "bundle.json").is_file():
            return p, f"the most recent trained model ({p})"
    import json

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


# ------------------------------------------------------------------------ one file
def _overlay_png(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from temtool.data.io import atomic_write

    lo, hi = np.percentile(
        image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)], [0.5, 99.5]
    )
    g = np.clip((image - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([g, g, g], -1)
    edge = find_boundaries(labels, mode="inner")
    rgb[edge] = (255, 60, 0)
    atomic_write(path, lambda p: Image.fromarray(rgb).save(p, format="PNG", compress_level=1))


def _histogram_png(path: Path, diameters: list[float], unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    if diameters:
        ax.hist(diameters, bins=min(30, max(5, len(diameters) // 2)), color="tab:orange")
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title(f"n = {len(diameters)}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from temtool.data.io import atomic_write

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PARTICLE_COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(path, lambda p: p.write_text(buf.getvalue()))


def segment_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    segmenter=None,
    pixel_size_nm: float | None = None,
    threshold: float = 0.5,
    method: str = "model",
    d_spacing_nm: tuple[float, ...] = (0.2355, 0.2039),
    channel: int | None = None,
) -> dict:
    """Segment one micrograph and write mask, probability, overlay, particle table and
    size histogram into ``out_dir`` (each written atomically). Returns a summary.

    ``segmenter`` is a :class:`Segmenter`, or a function of the image's pixel size (nm, or
    None) returning one, so a model can be chosen by pixel size without reading the file twice.
    """
    from temtool.baselines import fourier_segment
    from temtool.data.io import read_image, write_png, write_tiff

    t0 = time.perf_counter()
    path = Path(path)
    mg = read_image(path, channel=channel)
    px = pixel_size_nm or mg.pixel_size_nm
    image = mg.data
    notes = []
    if method != "fourier" and not isinstance(segmenter, Segmenter):
        segmenter = segmenter(px)
    if method == "fourier":
        if px is None:
            raise TemtoolError(f"{path}: --method fourier needs the pixel size; pass --pixel-size")
        prob = fourier_segment(image, px, d_spacing_nm).astype(np.float32)
    else:
        x = standardize(image)
        model_px = segmenter.pixel_size_nm
        scale = None
        if px and model_px and abs(px / model_px - 1) > 0.10:
            from skimage.transform import resize

            scale = px / model_px
            shape = (max(8, round(image.shape[0] * scale)), max(8, round(image.shape[1] * scale)))
            x = resize(x, shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
            notes.append(f"resampled x{scale:.3g} to the model's {model_px:g} nm/px and back")
        elif px is None and model_px:
            notes.append("pixel size unknown: no resampling (pass --pixel-size)")
        prob = segmenter.predict(x)
        if scale is not None:
            from skimage.transform import resize

            prob = resize(prob, image.shape, order=1, preserve_range=True).astype(np.float32)
    mask = (prob > threshold).astype(np.uint8)
    labels, rows = measure_particles(mask, px)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    write_png(out / f"{stem}_mask.png", mask)
    write_tiff(out / f"{stem}_prob.tif", prob, px)
    _overlay_png(out / f"{stem}_overlay.png", image, labels)
    _write_csv(out / f"{stem}_particles.csv", rows)
    d = [r["equivalent_diameter_nm"] for r in rows if not r["touches_border"]]
    _histogram_png(out / f"{stem}_sizes.png", d, "nm" if px else "px")
    return {
        "file": str(path),
        "pixel_size_nm": px,
        "particles": len(rows),
        "particles_not_touching_border": len(d),
        "diameter_mean": float(np.mean(d)) if d else None,
        "diameter_sd": float(np.std(d)) if d else None,
        "diameter_median": float(np.median(d)) if d else None,
        "diameter_unit": "nm" if px else "px",
        "area_fraction": float(mask.mean()),
        "time_s": time.perf_counter() - t0,
        "notes": notes,
        "tiling": dict(segmenter.info) if segmenter and method != "fourier" else None,
        "outputs": str(out),
    }
