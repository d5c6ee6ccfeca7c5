"""Particle measurements from a binary mask: touching particles split where an instance-aware
network saw their boundaries, else by a distance-transform watershed; then size and shape per
particle, in nm where the pixel size is known, else in px
(the column names say which)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from temtool.errors import ParameterError
from temtool.image.filters import gaussian_filter, thread_map

__all__ = [
    "particle_columns",
    "measure_particles",
    "split_by_boundary",
    "interior_diameters",
    "PostProcessing",
    "typical_area_px",
    "typical_diameter_px",
    "remove_small",
    "region_properties",
    "gaussian_filter",
]


def remove_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 4-connected objects of at most ``max_size`` px (as
    ``skimage.morphology.remove_small_objects``; ``~remove_small(~m, k)`` fills holes as
    ``remove_small_holes``), from one labelling and a bincount."""
    return _Objects(mask).without_small(max_size)


class _Objects:
    """The 4-connected objects of a mask, labelled and counted once (:func:`remove_small`)."""

    def __init__(self, mask: np.ndarray):
        self.mask = np.asarray(mask, bool)
        self.labels, self.sizes = None, None
        if self.mask.any():
            self.labels, _ = ndi.label(self.mask)
            self.sizes = np.bincount(self.labels.ravel())

    def without_small(self, max_size: int) -> np.ndarray:
        """The mask without the objects of at most ``max_size`` px (a new array)."""
        if max_size <= 0 or self.labels is None:
            return self.mask.copy()
        keep = self.sizes > max_size
        if keep[1:].all():  # nothing to remove: no pass over the labels
            return self.mask.copy()
        keep[0] = False
        return keep[self.labels]


def particle_columns(unit: str) -> tuple[str, ...]:
    """Columns of the particle table; lengths and areas in ``unit`` ("nm" or "px")."""
    return (
        "id",
        f"area_{unit}2",
        f"equivalent_diameter_{unit}",
        "centroid_y_px",
        "centroid_x_px",
        f"major_axis_{unit}",
        f"minor_axis_{unit}",
        "eccentricity",
        f"feret_max_{unit}",
        f"feret_min_{unit}",
        f"perimeter_{unit}",
        "circularity",
        "solidity",
        "touches_border",
    )


def _split_touching(mask: np.ndarray) -> np.ndarray:
    """Instance labels ``(H, W)`` int32: connected components, each split at necks by a
    watershed of its inverted distance transform from h-maxima markers (per component, on its
    bounding box, so large sparse micrographs stay fast), numbered in component order."""
    return _split(mask)[0]


def _split(mask: np.ndarray) -> tuple[np.ndarray, list]:
    """:func:`_split_touching`'s labels, and for each label ``i`` a box (a pair of slices) at
    ``[i - 1]`` that holds it: its component's box (for :func:`region_properties`)."""
    from skimage.measure import label

    comp = label(mask)
    labels = np.zeros(mask.shape, np.int32)
    if comp.max() == 0:
        return labels, []
    boxes = ndi.find_objects(comp)
    H, W = mask.shape
    parts = []
    for k, sl in enumerate(boxes):
        # a background margin, except at the image border (as for the whole image)
        (t, b), (lft, r) = pads = (
            (int(sl[0].start > 0), int(sl[0].stop < H)),
            (int(sl[1].start > 0), int(sl[1].stop < W)),
        )
        own = np.pad(comp[sl] == k + 1, pads)
        parts.append(
            (own, ndi.distance_transform_edt(own), (slice(t, own.shape[0] - b), slice(lft, own.shape[1] - r)))
        )
    h = max(1.0, SPLIT_DEPTH * float(np.median([dist.max() for _, dist, _ in parts])))
    n, boxes_out = 0, []
    for sl, (own, dist, crop) in zip(boxes, parts):
        # one connected set of local maxima: one regional maximum, so at most one h-maximum
        # and nothing to split (the same result, without h-maxima)
        peaks = (dist == ndi.maximum_filter(dist, size=3)) & own
        sub = None
        if np.count_nonzero(peaks) > 1:
            sets, n_sets = ndi.label(peaks, structure=_EIGHT)
            if n_sets > 1:
                sub = _watershed_split(dist, own, h, crop, sets, n_sets)
        if sub is None:
            labels[sl][own[crop]] = n + 1
            n += 1
            boxes_out.append(sl)
            continue
        inside = sub > 0
        labels[sl][inside] = sub[inside] + n
        n += int(sub.max())
        boxes_out += [sl] * int(sub.max())
    return labels, boxes_out


def _watershed_split(
    dist: np.ndarray, own: np.ndarray, h: float, crop, sets: np.ndarray, n_sets: int
) -> np.ndarray:
    """One component's labels on its bounding box: a watershed of ``-dist`` from its
    h-maxima, or the component whole if it has only one. ``sets``: its ``n_sets`` connected
    sets of local maxima (:func:`_h_maxima`)."""
    from skimage.measure import label
    from skimage.segmentation import watershed

    markers = label(_h_maxima(dist, h, sets, n_sets) & own)
    if markers.max() > 1:
        return watershed(-dist, markers, mask=own)[crop]
    return own[crop].astype(np.int32)


_EIGHT = np.ones((3, 3), bool)
# the h of the h-maxima that seed the neck watershed, as a fraction of the median component's
# largest inscribed radius: a neck shallower than this does not split
SPLIT_DEPTH = 0.05
MAX_LEVELS = 64  # more distinct peak values than this: scikit-image's h_maxima (one sort) is cheaper


def _h_maxima(dist: np.ndarray, h: float, sets: np.ndarray, n_sets: int) -> np.ndarray:
    """``skimage.morphology.h_maxima(dist, h)`` (uint8, its 3x3 footprint) of a distance map,
    the same pixels, found from ``sets``, the ``n_sets`` 8-connected sets of pixels equal to
    their 3x3 maximum (labels 1..n_sets), without sorting the image.

    scikit-image reconstructs ``dist - h - resolution`` by dilation under ``dist`` and keeps
    the pixels whose residue is at least ``h``. So a pixel of value ``v`` is kept unless the
    8-connected component of ``{z: v - dist(z) < h}`` that holds it also holds a pixel ``y``
    with ``v - (dist(y) - h - resolution) < h`` (one that rises above it, in the same floating
    arithmetic). A kept pixel is therefore a local maximum, and each set of local maxima
    shares one value and one such component: each set is tested at once, one labelling per
    distinct value. The distinct values of a distance map (square roots of integers) differ
    by far more than the resolution, which this relies on; with more than ``MAX_LEVELS``
    distinct values scikit-image's one sort is cheaper and is used."""
    dist = np.asarray(dist, np.float64)
    if h > np.ptp(dist):
        return np.zeros(dist.shape, np.uint8)
    flat = sets.ravel()
    at = np.flatnonzero(flat)
    _, first = np.unique(flat[at], return_index=True)
    rep = at[first]  # one pixel of each set, in label order
    values = dist.ravel()[rep]
    levels = np.unique(values)
    if levels.size > MAX_LEVELS:
        from skimage.morphology import h_maxima

        return h_maxima(dist, h)
    shifted = dist - h - 2 * np.finfo(dist.dtype).resolution * np.abs(dist)  # scikit-image's seed
    keep = np.zeros(n_sets + 1, bool)
    for v in levels:
        here = np.flatnonzero(values == v)
        above = (v - shifted) < h
        if not above.any():  # nothing rises above this level (the highest): its sets are kept
            keep[here + 1] = True
            continue
        comp, n = ndi.label((v - dist) < h, structure=_EIGHT)
        rises = np.zeros(n + 1, bool)
        rises[comp[above]] = True
        keep[here + 1] = ~rises[comp.ravel()[rep[here]]]
    return keep[sets].astype(np.uint8)


def interior_diameters(rows: list[dict], unit: str) -> list[float]:
    """The equivalent diameters (in ``unit``, "nm" or "px") of the particles of
    :func:`measure_particles` that do not touch the image border: the sizes every summary uses."""
    return [row[f"equivalent_diameter_{unit}"] for row in rows if not row["touches_border"]]


MIN_SEED_PX = 4  # interior seeds smaller than this are noise on a boundary, not a particle
MIN_SEED_FRACTION = 0.1  # nor are seeds under this fraction of the median seed


def split_by_boundary(mask: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, list]:
    """Instance labels ``(H, W)`` int32 of a mask from an instance-aware network's boundary
    probability: the particle interiors (mask pixels with boundary probability < 0.5) are the
    seeds, each split at its necks as a mask is (:func:`_split`: interiors the boundaries
    did not wholly part still separate there); seeds under :data:`MIN_SEED_PX` px or
    :data:`MIN_SEED_FRACTION` of the median seed are dropped. The seeds grow over the boundary
    pixels by a watershed of the boundary probability, within the mask. A component of the
    mask with no seed (a particle too small for an interior) is one particle. Also returns
    each label's box at ``[i - 1]`` (for :func:`region_properties`), as :func:`_split` does."""
    from skimage.segmentation import watershed

    m = np.asarray(mask, bool)
    seeds = _split(m & (np.asarray(boundary) < 0.5))[0]
    n = int(seeds.max())
    if n:
        sizes = np.bincount(seeds.ravel())
        keep = sizes >= max(MIN_SEED_PX, MIN_SEED_FRACTION * float(np.median(sizes[1:])))
        keep[0] = False
        renumber = np.zeros(n + 1, np.int32)
        renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        seeds, n = renumber[seeds], int(keep.sum())
    labels = watershed(np.asarray(boundary, np.float32), seeds, mask=m) if n else np.zeros(m.shape, np.int32)
    labels = labels.astype(np.int32)
    rest, n_rest = ndi.label(m & (labels == 0))  # components no seed reached
    if n_rest:
        labels[rest > 0] = rest[rest > 0] + n
    return labels, list(ndi.find_objects(labels))


def measure_particles(
    mask: np.ndarray,
    pixel_size_nm: float | None,
    min_area_px: int = 10,
    pinhole_px: int = 64,
    boundary: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Split touching particles and measure each.

    Parameters
    ----------
    mask : (H, W) array
        Particle pixels non-zero.
    pixel_size_nm : float or None
        nm per pixel; None gives lengths in px (columns named ``..._px``).
    min_area_px : int
        Objects smaller than this are dropped (from the labels too).
    pinhole_px : int
        Holes up to this size are filled first (0: the mask is taken as it is, e.g. after
        :class:`PostProcessing` decided about holes), so labels cover exactly the mask.
    boundary : (H, W) array or None
        An instance-aware network's boundary probability: touching particles are parted
        where it learned their boundaries (:func:`split_by_boundary`); None: by a watershed
        of the distance transform, at necks.

    Returns
    -------
    labels : (H, W) int32
        Instance ids 1..n, the same ids as the rows.
    rows : list of dict
        One per particle, keys :func:`particle_columns`.
    """
    # fill pinholes only: a ring of touching particles must not become one filled blob
    m = np.asarray(mask, bool)
    if pinhole_px > 0:
        m = ~remove_small(~m, pinhole_px)
    labels, boxes = _split(m) if boundary is None else split_by_boundary(m, boundary)
    unit = "nm" if pixel_size_nm else "px"
    s = float(pixel_size_nm or 1.0)
    H, W = m.shape
    props = region_properties(labels, boxes)
    kept = np.flatnonzero(props["area"] >= min_area_px)
    if kept.size == props["label"].size and np.array_equal(props["label"], np.arange(1, kept.size + 1)):
        renumber = None  # every object kept, already numbered 1..n: no pass over the labels
    else:
        renumber = np.zeros(int(labels.max()) + 1, np.int32)  # dropped objects -> 0
        renumber[props["label"][kept]] = np.arange(1, kept.size + 1, dtype=np.int32)
    rows = []
    for rid, i in enumerate(kept, start=1):
        y0, x0, y1, x1 = props["bbox"][i]
        rows.append(
            {
                "id": rid,
                f"area_{unit}2": float(props["area"][i]) * s * s,
                f"equivalent_diameter_{unit}": float(props["equivalent_diameter"][i]) * s,
                "centroid_y_px": float(props["centroid"][i, 0]),
                "centroid_x_px": float(props["centroid"][i, 1]),
                f"major_axis_{unit}": float(props["axis_major_length"][i]) * s,
                f"minor_axis_{unit}": float(props["axis_minor_length"][i]) * s,
                "eccentricity": float(props["eccentricity"][i]),
                f"feret_max_{unit}": float(props["feret_max"][i]) * s,
                f"feret_min_{unit}": float(props["feret_min"][i]) * s,
                f"perimeter_{unit}": float(props["perimeter"][i]) * s,
                "circularity": float(props["circularity"][i]),
                "solidity": float(props["solidity"][i]),
                "touches_border": bool(y0 == 0 or x0 == 0 or y1 == H or x1 == W),
            }
        )
    return (labels if renumber is None else renumber[labels]), rows


def region_properties(labels: np.ndarray, boxes: list | None = None) -> dict[str, np.ndarray]:
    """Size and shape of every label of a 2-D label image at once, as
    ``skimage.measure.regionprops`` defines them (pixel units): ``label``, ``area``,
    ``centroid`` (row, col), ``bbox`` (min_row, min_col, max_row, max_col),
    ``equivalent_diameter``, ``axis_major_length``, ``axis_minor_length`` and ``eccentricity``
    (from the eigenvalues of the inertia tensor of the second central moments), and the outline
    measures of :func:`outline_properties` (``perimeter``, ``feret_max``, ``feret_min``,
    ``solidity``, ``circularity``), one entry per label present, in increasing label order.
    The moments are computed on each region's bounding box, with no Python object per region
    (equal to scikit-image's ``regionprops`` to rounding).
    ``boxes``: where known, for each label ``i`` at ``[i - 1]`` a pair of slices that holds
    it, not necessarily tightly (else found with ``ndi.find_objects``); the same results."""
    lab = np.asarray(labels)
    if boxes is None:
        boxes = ndi.find_objects(lab)
    present = np.array([i for i, sl in enumerate(boxes, start=1) if sl is not None], np.intp)
    k = present.size
    area, cy, cx, mu20, mu02, mu11 = (np.zeros(k) for _ in range(6))
    outline = np.zeros((k, 4))  # perimeter, feret max, feret min, convex hull area
    bbox = np.zeros((k, 4), np.intp)
    for j, i in enumerate(present):
        ys, xs = np.nonzero(lab[boxes[i - 1]] == i)
        y0, x0 = boxes[i - 1][0].start + ys.min(), boxes[i - 1][1].start + xs.min()
        ys, xs = ys - ys.min(), xs - xs.min()  # on the label's tight box
        sl = (slice(y0, y0 + ys.max() + 1), slice(x0, x0 + xs.max() + 1))
        area[j] = ys.size
        my, mx = ys.mean(), xs.mean()
        dy, dx = ys - my, xs - mx
        mu20[j], mu02[j], mu11[j] = dy @ dy / ys.size, dx @ dx / ys.size, dy @ dx / ys.size
        cy[j], cx[j] = my + sl[0].start, mx + sl[1].start
        bbox[j] = sl[0].start, sl[1].start, sl[0].stop, sl[1].stop
        own = np.zeros((ys.max() + 1, xs.max() + 1), bool)
        own[ys, xs] = True
        outline[j] = outline_properties(own)
    # eigenvalues of the inertia tensor [[mu02, -mu11], [-mu11, mu20]], largest first, >= 0
    half_sum = 0.5 * (mu02 + mu20)
    root = np.sqrt((0.5 * (mu02 - mu20)) ** 2 + mu11**2)
    l1 = np.maximum(half_sum + root, 0)
    l2 = np.maximum(half_sum - root, 0)
    ecc = np.sqrt(np.clip(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 > 0), 0, None))
    return {
        "label": present,
        "area": area,
        "centroid": np.stack([cy, cx], axis=1),
        "bbox": bbox,
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
        "axis_major_length": 4 * np.sqrt(l1),
        "axis_minor_length": 4 * np.sqrt(l2),
        "eccentricity": np.where(l1 > 0, ecc, 0.0),
        "perimeter": outline[:, 0],
        "feret_max": outline[:, 1],
        "feret_min": outline[:, 2],
        "solidity": np.minimum(np.divide(area, outline[:, 3], out=np.ones(k), where=outline[:, 3] > 0), 1.0),
        "circularity": np.divide(
            4 * np.pi * area, outline[:, 0] ** 2, out=np.ones(k), where=outline[:, 0] > 0
        ),
    }


def outline_properties(region: np.ndarray) -> tuple[float, float, float, float]:
    """``(perimeter, feret_max, feret_min, hull_area)`` of one region (a boolean image of it),
    in px: the perimeter as ``skimage.measure.perimeter`` estimates it (4-connected), and the
    maximum and minimum caliper (Feret) diameters and the area of the convex hull of the
    pixels' corners (so a region of whole pixels has solidity area / hull_area <= 1)."""
    from scipy.spatial import ConvexHull, QhullError
    from skimage.measure import perimeter

    inner = ndi.binary_erosion(region)
    ys, xs = np.nonzero(region & ~inner)  # the pixels on the outline carry the hull
    corners = np.concatenate(
        [np.stack([ys + dy, xs + dx], 1) for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)]
    ).astype(np.float64)
    try:
        hull = ConvexHull(corners)
    except QhullError:  # pragma: no cover - corners of whole pixels span an area
        return float(perimeter(region)), 1.0, 1.0, float(region.sum())
    v = corners[hull.vertices]
    d = v[:, None, :] - v[None, :, :]
    feret_max = float(np.sqrt((d**2).sum(-1).max()))
    edges = np.roll(v, -1, axis=0) - v  # hull vertices are in order around it
    normals = np.stack([-edges[:, 1], edges[:, 0]], 1) / np.linalg.norm(edges, axis=1)[:, None]
    widths = np.abs(
        (v[None, :, :] - v[:, None, :]) @ normals.T
    )  # [a, b, e]: b's distance from edge e through a
    feret_min = float(widths.max(axis=(0, 1)).min())
    return float(perimeter(region)), feret_max, feret_min, float(hull.volume)


# ------------------------------------------------------------------------ clean-up
def typical_diameter_px(mask: np.ndarray, max_side_px: int = 512) -> float | None:
    """The diameter (px) of a typical particle, from a granulometry of the mask: twice the
    median distance to the background along the medial axis, each value
    weighted by the area of its inscribed disc. Touching and
    overlapping particles keep their own width (an aggregate's medial axis runs through its
    particles), many specks of a few pixels barely count, and no segmentation into single
    particles is needed. Large masks are subsampled to ``max_side_px`` first. None if empty."""
    m = np.asarray(mask, bool)
    step = max(1, int(np.ceil(max(m.shape) / max_side_px)))
    m = m[::step, ::step]
    if not m.any():
        return None
    from skimage.morphology import medial_axis

    skeleton, dist = medial_axis(m, return_distance=True, rng=0)
    values = np.sort(dist[skeleton])
    if values.size == 0:
        return None
    # weighted by the inscribed disc's area, so specks of a pixel or two barely count
    cum = np.cumsum(values**2)
    return float(2 * values[np.searchsorted(cum, 0.5 * cum[-1])] * step)


def typical_area_px(mask: np.ndarray) -> float | None:
    """The area (px) of a disc of :func:`typical_diameter_px`, or None."""
    d = typical_diameter_px(mask)
    return None if d is None else float(np.pi * d * d / 4)


# automatic minimum object area, as a fraction of the typical particle's: a twentieth keeps the
# small real particles a tenth dropped, and lets no more carbon speckle through on
# domain-randomised simulations (chosen on the shared real micrographs)
MIN_AREA_FRACTION = 0.05


@dataclass(frozen=True)
class PostProcessing:
    """From a probability map to a particle mask.

    ``smooth_px``: Gaussian sigma applied to the probability map first (0: none).
    ``fill_holes``: fill holes smaller than a typical particle (a ring of touching particles
    keeps its larger hole). ``min_area``: drop objects smaller than this, in nm^2 when the
    pixel size is known, else in px; None: automatic, a twentieth of the typical particle area
    (:func:`typical_area_px`, from a granulometry) and at least 10 px.
    """

    threshold: float = 0.5
    smooth_px: float = 1.0
    fill_holes: bool = True
    min_area: float | None = None

    def __post_init__(self):

        if not 0 < self.threshold < 1:
            raise ParameterError("threshold", f"must be between 0 and 1, got {self.threshold}")
        if not (np.isfinite(self.smooth_px) and self.smooth_px >= 0):
            raise ParameterError("smooth_px", f"must be a finite number >= 0, got {self.smooth_px}")
        if self.min_area is not None and not (np.isfinite(self.min_area) and self.min_area >= 0):
            raise ParameterError("min_area", f"must be a finite number >= 0, got {self.min_area}")

    def apply(self, prob: np.ndarray, pixel_size_nm: float | None = None) -> tuple[np.ndarray, dict]:
        """The mask ``(H, W)`` uint8 and what was done (settings and the areas used)."""
        p = gaussian_filter(prob, self.smooth_px) if self.smooth_px > 0 else prob
        mask = p > self.threshold
        # the granulometry and the labelling and counting of the objects, side by side
        typical, objects = thread_map(lambda step: step(mask), [typical_area_px, _Objects], 2)
        if self.min_area is not None:
            min_px = self.min_area / (pixel_size_nm**2 if pixel_size_nm else 1.0)
        else:
            min_px = max(10.0, MIN_AREA_FRACTION * typical) if typical else 10.0
        mask = objects.without_small(max(0, int(np.ceil(min_px)) - 1))
        hole_px = 0
        if self.fill_holes and typical:
            hole_px = int(typical)
            mask = ~remove_small(~mask, hole_px)
        info = {
            "threshold": self.threshold,
            "smooth_px": self.smooth_px,
            "fill_holes": self.fill_holes,
            "filled_holes_up_to_px": hole_px,
            "min_area_px": float(min_px),
            "min_area": "auto" if self.min_area is None else self.min_area,
            "typical_particle_area_px": typical,
        }
        return mask.astype(np.uint8), info
