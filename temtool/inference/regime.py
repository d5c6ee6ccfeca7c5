"""What kind of micrograph is this? Lattice fringes (HRTEM) show as Bragg spots or rings in the
power spectrum; amplitude contrast (standard bright-field TEM) does not, and its Thon rings
are radially symmetric. :func:`fringe_score` measures the strongest spot against the
spectrum's own radial background (per window of the size of a particle or two), so neither
contrast nor noise level matters.

Fringes alone do not make an HRTEM micrograph: bright-field images of crystalline particles
often show a few Bragg spots too, while their particles stand out by amplitude contrast.
:func:`classify` therefore calls a micrograph HRTEM only when its amplitude contrast is weak
(:func:`amplitude_separability`) and it has fringes, or its known pixel size is one only
lattice imaging uses (weakly fringed, off-zone or twinned particles show no spot); never when
its known pixel size is too coarse for lattice imaging.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "power_spectrum",
    "spectrum_windows",
    "fringe_score",
    "has_lattice_fringes",
    "amplitude_separability",
    "classify",
    "FRINGE_THRESHOLD",
    "LATTICE_BAND_NM",
]

LATTICE_BAND_NM = (0.10, 0.30)  # metal lattice spacings (Au 111: 0.2355 nm, 200: 0.204 nm)
# windows of noise score about 7-10, straight particle edges (streaks) up to about 200 on
# hard simulated bright-field images, Bragg spots of on-zone particles 100 to several 1000
FRINGE_THRESHOLD = 100.0
# a smooth unimodal image gives about 2/pi = 0.64; clear dark particles on carbon 0.75 or more
AMPLITUDE_THRESHOLD = 0.72
HRTEM_MAX_PIXEL_NM = 0.08  # coarser sampling cannot resolve the 0.2 nm Au fringes usefully
# a spot must carry this share of the window's power: lattice fringes carry 0.4-3% (a few
# fringed particles in real bright field) to 5-25% (HRTEM); a heavily blurred image's
# spectrum near Nyquist is a numerical floor (1e-12 to 1e-8 of the power) whose ratio to its
# own radial median can still be in the thousands
SPOT_MIN_POWER_FRACTION = 1e-4


def power_spectrum(x: np.ndarray) -> np.ndarray:
    """Centred, Hann-windowed power spectrum of a square crop."""
    n = x.shape[0]
    x = (x - x.mean()) / (x.std() or 1.0)
    w = np.hanning(n).astype(np.float32)
    f = np.fft.fftshift(np.fft.fft2(x * np.outer(w, w)))
    return (f.real**2 + f.imag**2).astype(np.float64)


def spectrum_windows(image: np.ndarray, side: int, most: int = 8):
    """Square crops of ``side`` px on an even grid (at most ``most`` x ``most``), overlapping
    by half where the image is small: fringes of one particle dominate a small window."""
    h, w = image.shape
    ys = np.unique(np.linspace(0, h - side, min(most, max(1, 2 * h // side - 1))).astype(int))
    xs = np.unique(np.linspace(0, w - side, min(most, max(1, 2 * w // side - 1))).astype(int))
    for y in ys:
        for x in xs:
            yield image[y : y + side, x : x + side]


def _spot_score(p: np.ndarray, k_lo: float, k_hi: float) -> float:
    """Strongest spot of one power spectrum against its radial background (median per ring),
    among those that carry a visible share of the power (:data:`SPOT_MIN_POWER_FRACTION`)."""
    n = p.shape[0]
    c = n // 2
    yy, xx = np.indices(p.shape)
    ri = np.round(np.hypot(yy - c, xx - c)).astype(int)  # in bins; k = r / n cycles per px
    smooth = ndi.uniform_filter(p, 3)  # averages 9 exponential bins: tames the noise tail
    nbins = ri.max() + 1
    order = np.argsort(ri, axis=None)
    rs, vs = ri.ravel()[order], smooth.ravel()[order]
    starts = np.searchsorted(rs, np.arange(nbins))
    ends = np.append(starts[1:], rs.size)
    med = np.array([np.median(vs[a:b]) if b > a else np.nan for a, b in zip(starts, ends)])
    lo, hi = max(2, int(k_lo * n)), int(k_hi * n)
    band = (ri >= lo) & (ri <= hi)
    if not band.any() or hi <= lo:
        return 0.0
    # Thon rings are rings too, so only spots count: within a window of one or two particles
    # even a polycrystalline aggregate gives spots
    ratio = smooth / np.where(med > 0, med, np.inf)[ri]
    band &= 9 * smooth >= SPOT_MIN_POWER_FRACTION * p.sum()  # 9: the 3x3 average's bins
    return float(ratio[band].max()) if band.any() else 0.0


def fringe_score(image: np.ndarray, pixel_size_nm: float | None = None, side: int = 128) -> float:
    """How far the strongest Bragg spot stands above the radial background of the power
    spectrum (a ratio; about 7-10 for noise, 100 to several 1000 for lattice fringes), the best
    of the windows of ``side`` px (fringes of one particle stand out in a window its size).

    Searched within the band of lattice spacings (:data:`LATTICE_BAND_NM`) when the pixel size
    is known, else between periods of 2.2 and 12.5 px. Returns 0 when the band cannot be seen
    at this sampling (fringes finer than 2 px).
    """
    x = np.asarray(image, np.float32)
    side = min(side, *x.shape)
    if side < 32:
        return 0.0
    if pixel_size_nm:
        k_lo, k_hi = pixel_size_nm / LATTICE_BAND_NM[1], min(0.46, pixel_size_nm / LATTICE_BAND_NM[0])
    else:
        k_lo, k_hi = 0.08, 0.46
    if k_lo >= k_hi:
        return 0.0
    return max(_spot_score(power_spectrum(w), k_lo, k_hi) for w in spectrum_windows(x, side))


def has_lattice_fringes(image: np.ndarray, pixel_size_nm: float | None = None) -> bool:
    """True when the power spectrum shows Bragg spots or rings (:func:`fringe_score`)."""
    return fringe_score(image, pixel_size_nm) > FRINGE_THRESHOLD


def amplitude_separability(image: np.ndarray) -> float:
    """Otsu's separability (between-class / total variance, 0 to 1) of the image smoothed
    at a 256 px scale: how clearly two intensity classes (particles, support) stand apart."""
    from skimage.filters import threshold_otsu
    from skimage.transform import resize

    x = np.asarray(image, np.float32)
    f = 256 / max(x.shape)
    if f < 1:
        x = resize(x, (max(2, round(x.shape[0] * f)), max(2, round(x.shape[1] * f))), anti_aliasing=True)
    x = ndi.gaussian_filter(x, 2)
    if x.std() == 0:
        return 0.0
    t = threshold_otsu(x)
    a, b = x[x <= t], x[x > t]
    if a.size == 0 or b.size == 0:
        return 0.0
    w = a.size / x.size
    return float(w * (1 - w) * (a.mean() - b.mean()) ** 2 / x.var())


def classify(image: np.ndarray, pixel_size_nm: float | None = None) -> tuple[str, str]:
    """``("hrtem" | "standard", why)``: HRTEM when the amplitude contrast is weak and either
    lattice fringes are present or the known pixel size is one only lattice imaging uses
    (weakly fringed, off-zone or twinned particles show no Bragg spot, yet such a micrograph
    is HRTEM all the same); standard bright-field TEM otherwise, and always when the known
    pixel size is too coarse for lattice fringes."""
    if pixel_size_nm and pixel_size_nm > HRTEM_MAX_PIXEL_NM:
        return "standard", f"{pixel_size_nm:g} nm/px is too coarse for lattice fringes"
    score = fringe_score(image, pixel_size_nm)
    fringes = score > FRINGE_THRESHOLD
    what = f"lattice fringes (score {score:.0f})" if fringes else f"no lattice fringes (score {score:.0f})"
    sep = amplitude_separability(image)
    if sep >= AMPLITUDE_THRESHOLD:
        return "standard", f"{what} and strong amplitude contrast ({sep:.2f})"
    if fringes:
        return "hrtem", f"{what} and weak amplitude contrast ({sep:.2f})"
    if pixel_size_nm:
        return "hrtem", (
            f"{what}, but {pixel_size_nm:g} nm/px is lattice-imaging sampling "
            f"and the amplitude contrast is weak ({sep:.2f})"
        )
    return "standard", f"{what} in the power spectrum"
