"""Per-image intensity normalisation: what every model in temtool sees."""

from __future__ import annotations

import numpy as np


def standardize(image: np.ndarray) -> np.ndarray:
    """Per-image (or per-micrograph) standardisation to mean 0, std 1, as in the study.
    float32 (statistics accumulated in float64); a constant image becomes zeros."""
    x = np.asarray(image, np.float32)
    mean = float(x.mean(dtype=np.float64))
    s = float(x.std(dtype=np.float64))
    return ((x - mean) / (s if s > 0 else 1.0)).astype(np.float32)
