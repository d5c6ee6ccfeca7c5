"""Instance label images: their inner boundaries, and the 3-class targets (background,
particle interior, particle boundary) that an instance-aware network learns from them."""

from __future__ import annotations

import numpy as np

__all__ = ["inner_boundaries", "boundary_classes", "BACKGROUND", "INTERIOR", "BOUNDARY"]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2  # the classes of an instance-aware network's output


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label image whose label is non-zero and differs from one of its four
    neighbours: ``skimage.segmentation.find_boundaries(labels, mode="inner")``, in
    comparisons of shifted views."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    d = lab[1:, :] != lab[:-1, :]
    edge[1:, :] |= d
    edge[:-1, :] |= d
    d = lab[:, 1:] != lab[:, :-1]
    edge[:, 1:] |= d
    edge[:, :-1] |= d
    return edge & (lab != 0)


def boundary_classes(instances: np.ndarray) -> np.ndarray:
    """The 3-class target ``(H, W)`` uint8 of an instance map (0 background, ids 1..n):
    :data:`BOUNDARY` on each particle's inner boundary (where it meets the background or
    another particle, so two touching particles are parted by two boundary pixels),
    :data:`INTERIOR` on the rest of the particle, :data:`BACKGROUND` elsewhere. The particle
    classes together are the binary mask, so the foreground is unchanged."""
    lab = np.asarray(instances)
    out = (lab != 0).astype(np.uint8)
    out[inner_boundaries(lab)] = BOUNDARY
    return out
