"""Classical segmenters that need no network: Gaussian + Otsu for amplitude contrast, and the
Fourier (Bragg-annulus) filter for lattice fringes. ``segment --method fourier`` runs the
latter; the study tunes both as baselines (:mod:`temtool.study.baselines`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from temtool.image.filters import gaussian_filter


def otsu_segment(image: np.ndarray, sigma_px: float = 2.0, dark_particles: bool = True) -> np.ndarray:
    """Gaussian smoothing then Otsu's threshold; particles are the darker class by default.

    Returns a ``(H, W)`` uint8 mask.
    """
    from skimage.filters import threshold_otsu

    x = np.asarray(image, np.float32)
    smooth = gaussian_filter(x, sigma_px) if sigma_px > 0 else x
    thr = threshold_otsu(smooth)
    out = smooth < thr if dark_particles else smooth > thr
    return out.astype(np.uint8)


def fourier_segment(
    image: np.ndarray,
    pixel_size_nm: float,
    d_spacing_nm: float | tuple[float, ...] = (0.2355, 0.2039),
    rel_width: float = 0.08,
    smooth_nm: float | None = None,
) -> np.ndarray:
    """Bragg-filter baseline: keep an annulus of the FFT around the lattice spacings, transform
    back, smooth the local fringe amplitude and threshold it (Otsu). ``(H, W)`` uint8 mask.
    """
    from skimage.filters import threshold_otsu

    x = np.asarray(image, np.float32)
    x = x - x.mean()
    h, w = x.shape
    ky = np.fft.fftfreq(h, d=pixel_size_nm)[:, None]
    kx = np.fft.fftfreq(w, d=pixel_size_nm)[None, :]
    k = np.hypot(ky, kx)
    spacings = (d_spacing_nm,) if np.isscalar(d_spacing_nm) else tuple(d_spacing_nm)
    keep = np.zeros_like(k, bool)
    for d in spacings:
        g = 1.0 / d
        keep |= np.abs(k - g) <= rel_width * g
    filtered = np.fft.ifft2(np.fft.fft2(x) * keep)
    amp = np.abs(filtered)
    smooth_nm = smooth_nm or 2.5 * max(spacings)
    amp = ndi.gaussian_filter(amp, smooth_nm / pixel_size_nm)
    return (amp > threshold_otsu(amp)).astype(np.uint8)
