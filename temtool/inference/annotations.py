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

from temtool.inference.measure import typical_diameter_px

__all__ = ["find_annotations", "mask_annotations", "text_or_drawing", "RECTANGULARITY"]

RECTANGULARITY = 0.9  # filled area / bounding-box area of a drawn box or bar

# a page of text or a line drawing (see :func:`text_or_drawing`)
FLAT_SHARE = 0.5  # at least this share of the image is one grey value (the paper)
STROKE_PX = 12.0  # what is drawn on it is at most this wide (typical width, px)
GLYPH_EXTENT = 0.75  # and its pieces fill less of their bounding boxes than solid particles do


def _sample(x: np.ndarray) -> np.ndarray:
    """An even subsample of ``x`` of at most ~260k pixels, for its statistics."""
    step = max(1, int(np.sqrt(x.size / 2**18)))
    return x[::step, ::step]


def find_annotations(image: np.ndarray, min_area_px: int = 64, max_values: int = 4) -> np.ndarray:
    """Mask ``(H, W)`` bool of the burned-in annotations of ``image`` (see the module doc);
    all False when there are none. ``max_values``: how many of the most frequent extreme grey
    values are examined."""
    x = np.asarray(image)
    if x.ndim != 2 or min(x.shape) < 2:
        return np.zeros(x.shape[:2], bool)
    lo, hi = np.percentile(_sample(x), [0.5, 99.5])
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


def text_or_drawing(image: np.ndarray) -> str | None:
    """Why ``image`` looks like a page of text, a plot or a line drawing rather than a
    micrograph, or None. Three cues, all needed: at least :data:`FLAT_SHARE` of the image is
    one exact grey value (the paper; a recorded micrograph has noise); what differs from it is
    drawn in strokes at most :data:`STROKE_PX` wide (particles on a flat, processed background
    are wider); and its pieces fill, on average by area, less than :data:`GLYPH_EXTENT` of
    their bounding boxes (letters ~0.6, the curves and axes of a plot far less, solid dots
    ~0.85), so a field of small atoms or clusters on flat vacuum is not taken for text."""
    x = np.asarray(image)
    if x.ndim != 2 or x.size == 0:
        return None
    values, counts = np.unique(_sample(x), return_counts=True)
    paper = values[np.argmax(counts)]
    if counts.max() / counts.sum() < FLAT_SHARE:  # the cheap test every micrograph fails
        return None
    ink = x != paper
    share = 1 - ink.mean()
    if share < FLAT_SHARE or not ink.any():
        return None
    width = typical_diameter_px(ink)
    if width is None or width > STROKE_PX:
        return None
    lab, _ = ndi.label(ink)
    areas = np.bincount(lab.ravel())[1:]
    boxes = np.array([[sl[0].stop - sl[0].start, sl[1].stop - sl[1].start] for sl in ndi.find_objects(lab)])
    pieces = areas >= 5  # specks of a pixel or two say nothing
    if not pieces.any():
        return None
    extent = areas[pieces] / boxes[pieces].prod(axis=1)
    if np.average(extent, weights=areas[pieces]) >= GLYPH_EXTENT:
        return None
    return (
        f"{share:.0%} of it is one flat grey and the rest is drawn in strokes ~{width:.0f} px wide "
        f"({pieces.sum()} pieces)"
    )
