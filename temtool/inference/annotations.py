"""Burned-in annotations: scale bars, text boxes and data bars drawn into exported micrographs.

A micrograph exported as PNG/JPEG/TIFF from a microscope program or a paper often carries a
scale bar, a label box or a strip of acquisition data, drawn in one flat colour (usually
black or white). A network and a threshold both take such a box for a particle, it skews the
image's normalisation and its sharp edges look like lattice fringes to the power spectrum.
Measured on a held-out real micrograph (``examples/data/real-tem/image_3``): a black label
box took the default segmentation from Dice 0.980 to 0.804 (and the HRTEM model was chosen),
a data strip along the bottom to 0.408.

What counts as an annotation: a 4-connected region of one exact grey value that is an
extreme of the image (at or beyond its 0.5th or 99.5th percentile), at least
``min_area_px`` large, that fills at least ``RECTANGULARITY`` of its bounding box once its
holes (the text drawn on it) are filled. Recorded micrographs have noise, so only drawings,
padding and clipping are flat over many pixels, and clipped regions (saturated holes in the
carbon film, black particle cores) are not rectangles.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["find_annotations", "mask_annotations", "RECTANGULARITY"]

RECTANGULARITY = 0.9  # filled area / bounding-box area of a drawn box or bar


def find_annotations(image: np.ndarray, min_area_px: int = 64, max_values: int = 4) -> np.ndarray:
    """Mask ``(H, W)`` bool of the burned-in annotations of ``image`` (see the module doc);
    all False when there are none. ``max_values``: how many of the most frequent extreme grey
    values are examined."""
    x = np.asarray(image)
    if x.ndim != 2 or min(x.shape) < 2:
        return np.zeros(x.shape[:2], bool)
    step = max(1, int(np.sqrt(x.size / 2**18)))  # percentiles from at most ~260k pixels
    lo, hi = np.percentile(x[::step, ::step], [0.5, 99.5])
    out = np.zeros(x.shape, bool)
    H, W = x.shape
    flat = x.ravel()
    idx = np.flatnonzero((flat <= lo) | (flat >= hi))
    idx = idx[(idx % W < W - 1) & (idx < (H - 1) * W)]
    v = flat[idx]
    # a drawn box or bar at least 2 px wide has 2x2 blocks of one value; noise almost never does
    block = (flat[idx + 1] == v) & (flat[idx + W] == v) & (flat[idx + W + 1] == v)
    values, counts = np.unique(v[block], return_counts=True)
    for value in values[np.argsort(counts)[::-1][:max_values]]:
        lab, n = ndi.label(x == value)
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        big = np.flatnonzero(sizes >= min_area_px)
        if big.size == 0:
            continue
        boxes = ndi.find_objects(lab)
        for i in big:
            sl = boxes[i - 1]
            drawn = lab[sl] == i
            filled = ndi.binary_fill_holes(drawn)
            if filled.mean() >= RECTANGULARITY and min(filled.shape) >= 2:
                # a box with text on it: the box; a frame around the micrograph: the frame only
                out[sl] |= filled if (filled & ~drawn).sum() <= drawn.sum() else drawn
    return out


def mask_annotations(image: np.ndarray, min_area_px: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with its annotations (:func:`find_annotations`) replaced by the median of the
    rest, so that they count neither in the normalisation nor as particles, and their mask.
    The image is returned as it is (not copied) when there are none."""
    found = find_annotations(image, min_area_px)
    if not found.any() or found.all():
        return image, np.zeros(np.shape(image), bool)
    x = np.array(image, copy=True)
    x[found] = np.median(x[~found])
    return x, found
