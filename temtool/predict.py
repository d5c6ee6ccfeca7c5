"""Whole-image inference helpers shared by evaluation, analysis and segmentation."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the image axes of ``(N, H, W, C)`` up to a multiple; returns (padded, (H, W))."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "symmetric"
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
    return x, (h, w)


def predict_proba(model, images: np.ndarray, pool_product: int, batch_size: int = 8) -> np.ndarray:
    """Particle probability ``(N, H, W)`` float32 for standardised images ``(N, H, W, 1)``."""
    xp, (h, w) = pad_to_multiple(np.asarray(images, np.float32), pool_product)
    logits = np.asarray(model.predict(xp, batch_size=batch_size, verbose=0), np.float32)
    logits = logits[:, :h, :w]
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e[..., 1] / e.sum(axis=-1)).astype(np.float32)
