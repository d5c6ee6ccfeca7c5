"""Classical baselines that need no network: they show whether a network earns its keep."""

from __future__ import annotations

import numpy as np

from temtool.inference.classical import otsu_segment
from temtool.study.metrics import binary_scores_np

__all__ = [
    "best_otsu_sigma",
    "otsu_sweep",
    "contrast_sd",
    "OTSU_SIGMAS_PX",
]

OTSU_SIGMAS_PX = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def best_otsu_sigma(
    images: list[np.ndarray],
    masks: list[np.ndarray],
    sigmas_px: tuple[float, ...] = OTSU_SIGMAS_PX,
    dark_particles: bool = True,
) -> float:
    """The Gaussian smoothing (px) at which :func:`otsu_segment` has the best mean hard Dice on
    the given (training or validation) images: the baseline tuned the way a network is."""

    def score(s):
        return np.mean(
            [binary_scores_np(m, otsu_segment(im, s, dark_particles))["dice"] for im, m in zip(images, masks)]
        )

    return float(max(sigmas_px, key=score))


def contrast_sd(image: np.ndarray, mask: np.ndarray, block: int = 1) -> float:
    """Particle-vs-background contrast in background standard deviations,
    ``(background mean - particle mean) / background sd``, after averaging ``block x block``
    pixels (so images of different sampling are compared at one pixel size). NaN when the
    image has no particle or no background pixel."""
    x = np.asarray(image, np.float64)
    m = np.asarray(mask) > 0
    if block > 1:
        h, w = (s // block * block for s in x.shape)
        x = x[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))
        m = m[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3)) > 0.5
    if m.all() or not m.any():
        return float("nan")
    bg = x[~m]
    return float((bg.mean() - x[m].mean()) / bg.std())


def otsu_sweep(
    images: list[np.ndarray],
    masks: list[np.ndarray],
    sigmas_px: tuple[float, ...] = OTSU_SIGMAS_PX,
    polarity: str = "dark",
) -> dict[float, float]:
    """Mean hard Dice of Gaussian + Otsu over a set of images for each smoothing (px).
    ``polarity``: ``dark`` (particles darker), or ``best`` (the better of the two per image:
    the generous reading used to measure how hard a dataset is, not a usable segmenter)."""

    if polarity not in ("dark", "best"):
        raise ValueError(f"polarity must be 'dark' or 'best', got {polarity!r}")
    out = {}
    for s in sigmas_px:
        scores = []
        for im, m in zip(images, masks):
            d = binary_scores_np(m, otsu_segment(im, s, True))["dice"]
            if polarity == "best":
                d = max(d, binary_scores_np(m, otsu_segment(im, s, False))["dice"])
            scores.append(d)
        out[float(s)] = float(np.mean(scores))
    return out
