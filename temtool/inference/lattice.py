"""The pixel size from the lattice: Bragg spots of a known crystal in the power spectrum of an
HRTEM micrograph give its sampling (``segment --lattice au``), to check a calibration or to
set one where the file has none.

A spot at ``k`` cycles per px from a lattice plane of spacing ``d`` nm means ``d * k`` nm per
px. One family of spots alone cannot tell which plane it is (Au {111} and {200} are 15% apart),
so a pixel size is only *set* when spots of two or more families agree on one value (the
ratios of fcc spacings, 1 : 1.155 : 1.633 for {111} : {200} : {220}, fix the assignment). With a
known calibration, one family is enough to *check* it: the plane closest to the calibration is
taken, and the check says so.

Spots of the 8x8 block grid that JPEG compression leaves in exported figures, and spots on
the image's axes (where resampling and scanning leave theirs), are ignored, and a pair of
families counts only when one of them is as strong as lattice fringes are
(:data:`temtool.inference.regime.FRINGE_THRESHOLD`): superlattices of packed particles give
weaker spots.
Spots are found per window (:func:`temtool.inference.regime.spectrum_windows`) as local maxima
of the power spectrum standing well above its radial median, their radius refined by the
centroid of their 3x3 neighbourhood, and pooled over windows into families of radii within
:data:`MATCH_TOLERANCE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from temtool.errors import ParameterError
from temtool.inference.regime import (
    FRINGE_THRESHOLD,
    SPOT_MIN_POWER_FRACTION,
    power_spectrum,
    spectrum_windows,
)

__all__ = [
    "LATTICE_CONSTANTS_NM",
    "LatticeScale",
    "Spot",
    "d_spacings_nm",
    "find_spots",
    "spot_families",
    "lattice_scale",
]

# fcc metals (nm, room temperature): their {111}, {200} and {220} planes
LATTICE_CONSTANTS_NM = {"au": 0.4078, "ag": 0.4086, "pt": 0.3924, "pd": 0.3891, "cu": 0.3615, "al": 0.4050}
FCC_FAMILIES = ("111", "200", "220")
SPOT_RATIO = 30.0  # a spot stands this far above its ring's median (noise: about 7-10)
MATCH_TOLERANCE = 0.02  # relative: radii of one family, and a spot against a predicted one
WINDOW_PX = 256
ANGLE_TOLERANCE_DEG = 3.0
JPEG_BLOCK_PX = 8
AXIS_TOLERANCE_DEG = 1.5  # spots this close to the image's axes are not trusted (artifacts)
# angles (folded to 0-90 degrees) between spots of two fcc families on one particle, in the
# zones that show both: [110] (111/200 54.7, 111/220 35.3 and 90, 200/220 90), [100]
# (200/220 45), [112] (111/220 90)
FCC_ANGLES_DEG = {
    frozenset(("{111}", "{200}")): (54.74,),
    frozenset(("{111}", "{220}")): (35.26, 90.0),
    frozenset(("{200}", "{220}")): (45.0, 90.0),
}


@dataclass(frozen=True)
class LatticeScale:
    """What :func:`lattice_scale` found: the pixel size (None: not set) and why."""

    pixel_size_nm: float | None
    families: tuple[str, ...]  # the planes the spots were assigned to
    spots_k: tuple[float, ...]  # the families' radii, cycles per px
    reason: str


def d_spacings_nm(lattice: str) -> dict[str, float]:
    """Plane spacings of ``lattice``: an fcc metal's symbol (``au``, ``ag``, ``pt``, ``pd``,
    ``cu``, ``al``) or spacings in nm separated by commas (``0.2355,0.2039``)."""
    key = lattice.strip().lower()
    if key in LATTICE_CONSTANTS_NM:
        a = LATTICE_CONSTANTS_NM[key]
        return {f"{key} {{{hkl}}}": a / math.sqrt(sum(int(c) ** 2 for c in hkl)) for hkl in FCC_FAMILIES}
    try:
        values = [float(v) for v in key.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0.05 <= v <= 2.0 for v in values):
        raise ParameterError(
            "lattice",
            f"{lattice!r}: expected a metal ({', '.join(LATTICE_CONSTANTS_NM)}) or spacings in nm "
            "between 0.05 and 2, e.g. 0.2355,0.2039",
        )
    return {f"d = {v:g} nm": v for v in values}


@dataclass(frozen=True)
class Spot:
    k: float  # radius, cycles per px
    strength: float  # against its ring's median
    window: int  # which window of the micrograph
    angle_deg: float  # direction of its lattice planes' normal, 0-180


def find_spots(image: np.ndarray, side: int = WINDOW_PX) -> list[Spot]:
    """Bragg spots of each window, one of each +-g pair (see the module doc)."""
    x = np.asarray(image, np.float32)
    side = min(side, *x.shape)
    if side < 64:
        return []
    spots = []
    for i, w in enumerate(spectrum_windows(x, side, most=6)):
        p = power_spectrum(w)
        n = p.shape[0]
        c = n // 2
        yy, xx = np.indices(p.shape)
        r = np.hypot(yy - c, xx - c)
        ri = np.round(r).astype(int)
        smooth = ndi.uniform_filter(p, 3)
        med = ndi.median(smooth, labels=ri, index=np.arange(ri.max() + 1))
        ratio = smooth / np.where(med > 0, med, np.inf)[ri]
        peak = (smooth == ndi.maximum_filter(smooth, 5)) & (ratio >= SPOT_RATIO)
        peak &= (ri >= 6) & (r <= 0.46 * n) & (yy <= c)  # one of each +-g pair; not the centre
        peak &= 9 * smooth >= SPOT_MIN_POWER_FRACTION * p.sum()
        for y, xpos in zip(*np.nonzero(peak), strict=True):
            ys, xs = slice(y - 1, y + 2), slice(xpos - 1, xpos + 2)
            wgt = p[ys, xs]
            cy = (yy[ys, xs] * wgt).sum() / wgt.sum() - c
            cx = (xx[ys, xs] * wgt).sum() / wgt.sum() - c
            angle = math.degrees(math.atan2(-cy, cx)) % 180
            if _on_block_grid(cy / n, cx / n) or min(angle % 90, 90 - angle % 90) <= AXIS_TOLERANCE_DEG:
                continue  # compression and resampling artifacts lie on the image's axes
            spots.append(Spot(math.hypot(cy, cx) / n, float(ratio[y, xpos]), i, angle))
    return spots


def _on_block_grid(ky: float, kx: float) -> bool:
    """A spot of the 8x8 block grid that JPEG compression leaves (at multiples of 1/8 cycle per
    px along both axes; the square grid's spots look like {200}/{220} at 45 degrees)."""
    return all(
        abs(k * JPEG_BLOCK_PX - round(k * JPEG_BLOCK_PX)) * (1 / JPEG_BLOCK_PX) <= 0.004 for k in (ky, kx)
    )


def spot_families(spots: list[Spot]) -> list[list[Spot]]:
    """Spots grouped by radius (within :data:`MATCH_TOLERANCE`), strongest family first."""
    families: list[list[Spot]] = []
    for sp in sorted(spots, key=lambda t: t.k):
        if families and sp.k <= families[-1][0].k * (1 + MATCH_TOLERANCE):
            families[-1].append(sp)
        else:
            families.append([sp])
    return sorted(families, key=lambda f: -max(sp.strength for sp in f))


def _k(family: list[Spot]) -> float:
    return float(np.average([sp.k for sp in family], weights=[sp.strength for sp in family]))


def _fold(angle_deg: float) -> float:
    a = angle_deg % 180
    return min(a, 180 - a)


def _consistent(fa: list[Spot], fb: list[Spot], allowed: tuple[float, ...] | None) -> bool:
    """Spots of both families in one window (one particle), at an angle the zone axes allow
    (``allowed``, folded to 0-90 degrees; None: any)."""
    for a in fa:
        for b in fb:
            if a.window == b.window and (
                allowed is None
                or any(abs(_fold(a.angle_deg - b.angle_deg) - t) <= ANGLE_TOLERANCE_DEG for t in allowed)
            ):
                return True
    return False


def _assign(ks, found, spacings, px, fcc) -> tuple[dict[int, str], set[int]]:
    """The plane of each family at pixel size ``px`` (family index -> plane), and the families
    that agree: pairs seen together on one particle at a zone's angle."""
    match: dict[int, str] = {}
    for i, k in enumerate(ks):
        for name, d in spacings.items():
            if abs(d * k / px - 1) <= MATCH_TOLERANCE and name not in match.values():
                match[i] = name
                break
    agreed = set()
    for i in match:
        for j in match:
            pair = frozenset((match[i].split()[-1], match[j].split()[-1]))
            allowed = FCC_ANGLES_DEG.get(pair, ()) if fcc else None
            strong = max(max(sp.strength for sp in found[m]) for m in (i, j)) >= FRINGE_THRESHOLD
            if i < j and strong and _consistent(found[i], found[j], allowed):
                agreed |= {i, j}
    return match, agreed


def lattice_scale(
    image: np.ndarray, lattice: str, known_pixel_size_nm: float | None = None, most_families: int = 4
) -> LatticeScale:
    """The pixel size the lattice gives (see the module doc), or None with the reason.
    ``known_pixel_size_nm``: a calibration to check; one family of spots then suffices."""
    spacings = d_spacings_nm(lattice)
    fcc = lattice.strip().lower() in LATTICE_CONSTANTS_NM
    found = spot_families(find_spots(image))[:most_families]
    if not found:
        return LatticeScale(None, (), (), f"no Bragg spots of {lattice} found (no lattice fringes)")
    ks = [_k(f) for f in found]
    best = None
    for k0 in ks:  # every (family, plane) pair proposes a pixel size
        for d0 in spacings.values():
            px = d0 * k0
            match, agreed = _assign(ks, found, spacings, px, fcc)
            if not agreed and known_pixel_size_nm:
                agreed = {min(match, key=lambda i: abs(spacings[match[i]] * ks[i] / known_pixel_size_nm - 1))}
            if not agreed:
                continue
            est = float(np.mean([spacings[match[i]] * ks[i] for i in agreed]))
            key = (len(agreed), -abs(est / known_pixel_size_nm - 1) if known_pixel_size_nm else 0.0)
            if best is None or key > best[0]:
                best = (key, est, {i: match[i] for i in agreed})
    if best is None:
        periods = ", ".join(f"{1 / k:.2f}" for k in ks)
        return LatticeScale(
            None,
            (),
            tuple(ks),
            f"spots with periods {periods} px, but no two families of {lattice} planes seen together on "
            "one particle: which plane each is cannot be told, so the pixel size stays unknown",
        )
    _, est, match = best
    names = tuple(match[i] for i in sorted(match, key=lambda i: ks[i]))
    if len(match) >= 2:
        why = f"{len(match)} families of spots agree on one particle ({', '.join(names)})"
    else:
        why = f"one family of spots, taken as {names[0]}, the plane closest to the calibration"
    return LatticeScale(est, names, tuple(sorted(ks[i] for i in match)), why)
