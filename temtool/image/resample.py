"""Resampling a micrograph to a model's pixel size and back."""

from __future__ import annotations

import numpy as np

RESAMPLE_TOLERANCE = 0.10  # relative pixel-size difference tolerated without resampling


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (anti-aliased when shrinking). float32. Shrinking by
    the same whole factor on both axes is binning (the mean of each k x k block, as a
    camera bins): exact area averaging, and much cheaper than filtering."""
    h, w = image.shape[:2]
    k = h // shape[0] if shape[0] else 0
    if k > 1 and shape[0] * k == h and shape[1] * k == w:
        x = np.asarray(image, np.float32)
        return x.reshape(shape[0], k, shape[1], k, *x.shape[2:]).mean((1, 3), dtype=np.float32)
    from skimage.transform import resize  # not imported for binning: it slows a cold start

    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    return resize(image, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def pixel_size_scale(image_px_nm: float | None, model_px_nm: float | None) -> float:
    """Factor that resamples an image at ``image_px_nm`` to a model's ``model_px_nm``: 1 when
    either is unknown or they differ by at most :data:`RESAMPLE_TOLERANCE`."""
    if image_px_nm and model_px_nm and abs(image_px_nm / model_px_nm - 1) > RESAMPLE_TOLERANCE:
        return image_px_nm / model_px_nm
    return 1.0
