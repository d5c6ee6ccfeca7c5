"""Simulated TEM and STEM micrographs of Au nanoparticles on amorphous carbon, with exact masks.

Three regimes; the first two after ``shared/docs/simulation.md``:

``standard``
    Bright-field TEM at ~0.12 nm/px, ~20 nm Au: amplitude (absorption / diffraction) contrast
    decides, plus Fresnel fringes from defocus.
``hrtem``
    Phase-contrast HRTEM at ~0.02 nm/px, ~5 nm Au with lattice fringes: particles on a zone
    axis ([110], [100], [111]), with one fringe set ({111} or {200}), or off-zone (no fringes),
    on an atomistic amorphous-carbon film, with an amplitude-contrast scale that can be made
    small so that fringes and weak texture must carry the decision.

    Calibrated (generator 2.0) against the study's real HRTEM patches
    (``benchmarks/hrtem_calibration.py``; real: particles 0.2-0.8 background sd darker,
    Gaussian + Otsu Dice 0.37-0.86): the carbon film's thickness varies over nm (it changes
    the atom count per column and the absorption), the illumination is non-uniform (a
    gradient and a smooth random field), fringe visibility is continuous (lattice strength
    drawn log-uniform, so many particles show weak fringes; per particle ``fringe_class`` is
    ``fringed``, ``weak_fringe`` or ``off_zone``), a third of the crystalline particles have a
    second domain across a twin plane with its own orientation and visibility (partial
    fringes), and a disordered surface shell (0.15-0.6 nm) without fringes means the lattice
    does not end at the mask edge.

``haadf``
    HAADF-STEM (Z-contrast, :class:`HAADFConfig`): bright particles on a dark support, the
    signal rising with projected thickness and atomic number and saturating, probe blur,
    counting noise, read noise, scan-line jitter and per-line gain. No wave optics.

Image formation (``standard`` and ``hrtem``): exit wave
``psi = exp(-0.5 * a * sum(t / Lambda)) * exp(i * sigma * V * t + i * phi_carbon)``,
image ``|IFFT(FFT(psi) * exp(-i chi) * E_t * E_s * A)|^2``, illumination non-uniformity,
Poisson noise at the dose, then the detector blur (so the shot noise is correlated over
neighbouring pixels, as on a real camera), normalised to the incident intensity (flat vacuum
= 1). ``a`` is the amplitude scale
(HRTEM only, 1 for standard): low values mean minimal amplitude contrast.

Every random quantity is drawn from a range held in a config dataclass; the drawn values of
each image are returned with it. Images are deterministic for a seed and an image index,
whatever the number of worker processes.

Units: lengths in nm unless the name says otherwise (``_A`` for Angstrom, ``_mm``, ``_um``),
angles in mrad, voltages in kV or V, dose in electrons per square Angstrom.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

__all__ = [
    "GENERATOR_VERSION",
    "StandardConfig",
    "HRTEMConfig",
    "HAADFConfig",
    "SimulatedImage",
    "config_for",
    "parse_overrides",
    "simulate_image",
    "simulate_batch",
    "wavelength_nm",
    "interaction_constant",
    "AU_LATTICE_NM",
]

GENERATOR_VERSION = "2.0"
AU_LATTICE_NM = 0.4078
Range = tuple[float, float]


def wavelength_nm(kv: float) -> float:
    """Relativistic electron wavelength in nm for an accelerating voltage in kV."""
    v = kv * 1e3
    return 1.226426 / math.sqrt(v * (1 + 0.97848e-6 * v))  # nm


def interaction_constant(kv: float) -> float:
    """Interaction constant sigma in rad / (V nm) (Kirkland)."""
    v = kv * 1e3
    lam_a = wavelength_nm(kv) * 10  # Angstrom
    m0c2 = 510998.95  # eV
    sigma_a = 2 * math.pi / (lam_a * v) * (m0c2 + v) / (2 * m0c2 + v)  # rad/(V A)
    return sigma_a * 10


@dataclass(frozen=True)
class _Common:
    """Fields shared by both regimes. A range ``(lo, hi)`` is drawn per image; give
    ``(x, x)`` to fix a value."""

    pixel_size_nm: float = 0.12
    voltage_kv: float = 200.0
    diameter_nm: float = 20.0
    diameter_cv: Range = (0.06, 0.15)
    particles_per_256px2: Range = (1, 4)
    aspect_ratio: Range = (1.0, 1.25)
    ellipse_fraction: float = 0.6
    polygon_sides: tuple[int, ...] = (5, 6, 8)
    touching_fraction: float = 0.33
    touching_distance: Range = (0.8, 1.0)  # centre distance / sum of radii
    outside_fraction_of_d: float = 0.3  # centres may lie this far outside the field
    mtf_sigma_px: Range = (0.6, 1.3)
    dose_e_per_A2: Range = (20.0, 400.0)  # drawn log-uniform
    pad_px: int = 64
    au_inner_potential_v: Range = (22.0, 30.0)
    focal_spread_nm: Range = (2.0, 5.0)  # chromatic: defocus spread
    illumination_mrad: Range = (0.1, 0.3)  # beam convergence semi-angle


@dataclass(frozen=True)
class StandardConfig(_Common):
    """Bright-field TEM of ~20 nm Au (amplitude contrast)."""

    regime: str = "standard"
    au_absorption_nm: Range = (10.0, 20.0)
    au_absorption_factor: Range = (0.6, 2.5)  # per particle (orientation-dependent)
    carbon_thickness_nm: Range = (10.0, 25.0)
    carbon_thickness_variation: Range = (0.03, 0.12)
    carbon_correlation_nm: float = 15.0
    carbon_absorption_nm: Range = (120.0, 250.0)
    carbon_inner_potential_v: Range = (8.0, 11.0)
    carbon_phase_rad: Range = (0.02, 0.08)
    carbon_phase_correlation_nm: Range = (0.15, 0.3)
    defocus_nm: Range = (-800.0, -50.0)
    cs_mm: Range = (1.0, 2.5)
    aperture_mrad: Range = (5.0, 15.0)
    illumination_gradient: Range = (0.0, 0.08)


@dataclass(frozen=True)
class HRTEMConfig(_Common):
    """Phase-contrast HRTEM of ~5 nm Au with lattice fringes."""

    regime: str = "hrtem"
    pixel_size_nm: float = 0.02
    voltage_kv: float = 300.0
    diameter_nm: float = 5.0
    diameter_cv: Range = (0.10, 0.25)
    particles_per_256px2: Range = (0.25, 0.75)  # 1 to 3 per 512x512
    # state probabilities: on-zone [110], [100], [111]; one fringe set {111}, {200}; off-zone
    state_weights: tuple[float, ...] = (0.225, 0.1125, 0.1125, 0.1667, 0.0833, 0.30)
    lattice_strength: Range = (0.05, 0.7)  # log-uniform: fringe visibility is continuous
    weak_fringe_below: float = 0.2  # lattice strength under which fringes count as weak
    twin_fraction: float = 0.35  # particles with a second crystal domain (twin / partial fringes)
    disordered_shell_nm: Range = (0.15, 0.6)  # surface layer without fringes
    debye_waller_A2: float = 0.6
    absorption_on_zone_nm: Range = (15.0, 50.0)
    absorption_one_set_nm: Range = (20.0, 60.0)
    absorption_off_zone_nm: Range = (25.0, 70.0)
    amplitude_scale: Range = (0.2, 1.0)  # log-uniform; multiplies t / Lambda
    carbon_thickness_nm: Range = (3.0, 12.0)
    carbon_thickness_variation: Range = (0.1, 0.4)  # long-range, relative
    carbon_correlation_nm: Range = (2.0, 8.0)
    carbon_absorption_nm: Range = (80.0, 200.0)
    illumination_gradient: Range = (0.0, 0.12)
    illumination_variation: Range = (0.0, 0.06)  # smooth random field, relative
    illumination_correlation_nm: Range = (2.0, 6.0)
    carbon_density_per_A3: float = 0.1
    carbon_atom_sigma_A: float = 0.4
    carbon_fe0_A: float = 2.5
    corrected_fraction: float = 0.3
    cs_uncorrected_mm: Range = (0.5, 1.3)
    defocus_from_scherzer_nm: Range = (-30.0, 25.0)
    cs_corrected_um: Range = (-40.0, 10.0)
    defocus_corrected_nm: Range = (-10.0, 12.0)
    aperture_mrad: Range = (18.0, 40.0)
    dose_e_per_A2: Range = (150.0, 2500.0)
    mtf_sigma_px: Range = (0.4, 1.0)


@dataclass(frozen=True)
class HAADFConfig(_Common):
    """HAADF-STEM (Z-contrast) of ~10 nm Au on amorphous carbon: bright particles on a dark
    support. Each pixel's signal is the fraction of probe electrons scattered to the annular
    detector, rising with projected thickness and atomic number (about Z^n per atom, n drawn
    per image) and saturating for thick columns; the probe blurs it, the electrons are counted
    (Poisson at the dose), the detector adds read noise, and the scan adds line jitter (each
    row shifted sideways) and a per-row gain."""

    regime: str = "haadf"
    pixel_size_nm: float = 0.2
    diameter_nm: float = 10.0
    particles_per_256px2: Range = (2.0, 8.0)
    z_exponent: Range = (1.6, 1.9)
    # scattered fraction per nm of Au and of carbon (Au: 59 atoms/nm^3 of Z 79; amorphous
    # carbon ~100 atoms/nm^3 of Z 6): the ratio of the two is (59 / 100) * (79 / 6)^n
    au_scatter_per_nm: Range = (0.01, 0.04)
    au_orientation_factor: Range = (0.7, 1.4)  # per particle: channelling on or off a zone axis
    carbon_thickness_nm: Range = (3.0, 30.0)
    carbon_thickness_variation: Range = (0.02, 0.3)
    carbon_correlation_nm: Range = (2.0, 40.0)
    probe_sigma_nm: Range = (0.05, 0.4)
    dose_e_per_A2: Range = (5.0, 500.0)  # drawn log-uniform: probe electrons per pixel area
    detector_efficiency: Range = (0.3, 1.0)
    read_noise: Range = (0.0, 3.0)  # detected-electron units per pixel
    line_jitter_px: Range = (0.0, 1.0)  # sd of each row's sideways shift
    line_gain_sd: Range = (0.0, 0.05)  # sd of each row's relative gain
    mtf_sigma_px: Range = (0.0, 0.0)  # the probe blurs instead (probe_sigma_nm)


HRTEM_STATES = ("zone110", "zone100", "zone111", "fringes111", "fringes200", "off_zone")


_SIGNED = {
    "defocus_nm",
    "defocus_from_scherzer_nm",
    "defocus_corrected_nm",
    "cs_corrected_um",
    "outside_fraction_of_d",  # negative: centres kept inside the field
}
_MAY_BE_ZERO = {
    "diameter_cv",
    "particles_per_256px2",
    "touching_distance",
    "mtf_sigma_px",
    "carbon_thickness_variation",
    "carbon_phase_rad",
    "illumination_gradient",
    "illumination_variation",
    "disordered_shell_nm",
    "lattice_strength",
    "debye_waller_A2",
    "focal_spread_nm",
    "illumination_mrad",
    "carbon_thickness_nm",
    "read_noise",
    "line_jitter_px",
    "line_gain_sd",
    "au_inner_potential_v",
    "carbon_inner_potential_v",
    "pad_px",
}
_FRACTIONS = {
    "ellipse_fraction",
    "touching_fraction",
    "corrected_fraction",
    "twin_fraction",
    "weak_fringe_below",
}


def _coerce(k: str, v, default) -> tuple:
    """An override in the shape of its field (a range, a tuple or a scalar) and as numbers;
    returns (value, tuple of its numbers)."""
    if isinstance(default, tuple) and k != "polygon_sides" and len(default) == 2:  # a range
        v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
        if len(v) != 2:
            raise ValueError(f"{k}: give one value or a range LO,HI, got {len(v)} values")
    elif isinstance(default, tuple):  # state_weights, polygon_sides
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        if k == "state_weights" and len(v) != len(default):
            raise ValueError(f"{k}: needs {len(default)} weights ({', '.join(HRTEM_STATES)}), got {len(v)}")
    values = v if isinstance(v, tuple) else (v,)
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in values):
        raise ValueError(f"{k}: values must be finite numbers, got {v}")
    if isinstance(default, int) or k == "polygon_sides":
        if not all(float(x).is_integer() for x in values):
            raise ValueError(f"{k}: must be an integer, got {v}")
        values = tuple(int(x) for x in values)
        v = values if isinstance(v, tuple) else values[0]
    if isinstance(default, tuple) and k != "polygon_sides" and len(default) == 2 and v[0] > v[1]:
        raise ValueError(f"{k}: range LO,HI must have LO <= HI, got {v[0]:g},{v[1]:g}")
    return v, values


def _check_value(k: str, v, default) -> object:
    """One override, checked against the field's default (its type and shape) and its sign;
    ``ValueError`` naming the parameter otherwise."""
    v, values = _coerce(k, v, default)
    problem = None
    if k in _FRACTIONS and not all(0 <= x <= 1 for x in values):
        problem = "a fraction between 0 and 1"
    elif k == "polygon_sides" and min(values) < 3:
        problem = "polygons need at least 3 sides"
    elif k == "state_weights" and (min(values) < 0 or sum(values) <= 0):
        problem = "weights must be >= 0 with a positive sum"
    elif k in _MAY_BE_ZERO and min(values) < 0:
        problem = "must be >= 0"
    elif k not in _SIGNED | _MAY_BE_ZERO | _FRACTIONS | {"state_weights"} and min(values) <= 0:
        problem = "must be > 0"
    if problem:
        raise ValueError(f"{k}: {problem}, got {v}")
    return v


def config_for(regime: str, **overrides) -> StandardConfig | HRTEMConfig:
    """The default config of a regime with some fields replaced (ranges or fixed values).

    A scalar given for a range field fixes it: ``config_for("hrtem", amplitude_scale=0.2)``.
    Values are checked (type, range order, sign); ``ValueError`` names the parameter.
    """
    cls = {"standard": StandardConfig, "hrtem": HRTEMConfig, "haadf": HAADFConfig}.get(regime)
    if cls is None:
        raise ValueError(f"unknown regime {regime!r}: choose 'standard', 'hrtem' or 'haadf'")
    fields = {f.name for f in dataclasses.fields(cls)} - {"regime"}
    clean = {}
    for k, v in overrides.items():
        if k not in fields:
            raise ValueError(f"unknown simulation parameter {k!r} for regime {regime!r}")
        clean[k] = _check_value(k, v, getattr(cls, k))
    return cls(**clean)


def parse_overrides(items: list[str]) -> dict:
    """``["NAME=VALUE", "NAME=LO,HI"]`` (as typed after ``--set``) to config overrides."""
    out: dict = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"{item!r}: expected NAME=VALUE or NAME=LO,HI")
        try:
            vals = [float(x) for x in v.split(",")]
        except ValueError:
            raise ValueError(f"{item!r}: values must be numbers") from None
        out[k.strip()] = tuple(vals) if len(vals) > 1 else vals[0]
    return out


@dataclass
class SimulatedImage:
    """One simulated micrograph and its exact ground truth."""

    image: np.ndarray  # (H, W) float32, incident intensity = 1
    mask: np.ndarray  # (H, W) uint8, 1 inside a particle outline
    instances: np.ndarray  # (H, W) uint16, particle id (1..n), 0 background
    particles: list[dict]  # per particle: id, centre_px, diameter_nm, shape, state, ...
    params: dict = field(default_factory=dict)  # every drawn value of this image
    counts_per_px: float = 0.0  # expected electron counts per pixel in vacuum


# ----------------------------------------------------------------------------- helpers
def _u(rng, r: Range) -> float:
    lo, hi = r
    return float(lo if lo == hi else rng.uniform(lo, hi))


def _logu(rng, r: Range) -> float:
    lo, hi = r
    return float(lo if lo == hi else math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _fft_size(n: int) -> int:
    return sfft.next_fast_len(n, real=False)


def _correlated_noise(rng, shape, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with a Gaussian correlation length."""
    z = rng.standard_normal(shape).astype(np.float32)
    if sigma_px > 0.3:
        z = sfft.ifft2(ndi.fourier_gaussian(sfft.fft2(z), sigma_px)).real.astype(np.float32)
    z -= z.mean()  # a correlation length near the field size leaves mostly the mean: remove it
    s = z.std()
    return z / s if s > 0 else z


# --------------------------------------------------------------------------- geometry
def _draw_particles(rng, cfg: _Common, n_field: int, pad: int) -> list[dict]:
    """Particle outlines in canvas pixel coordinates (field starts at ``pad``)."""
    px = cfg.pixel_size_nm
    density = _u(rng, cfg.particles_per_256px2)
    n_target = max(1, int(round(density * (n_field / 256) ** 2)))
    cv = _u(rng, cfg.diameter_cv)
    sigma = math.sqrt(math.log(1 + cv**2))
    mu = math.log(cfg.diameter_nm) - sigma**2 / 2
    placed: list[dict] = []
    attempts = 0
    while len(placed) < n_target and attempts < 60 * n_target:
        attempts += 1
        d_nm = float(rng.lognormal(mu, sigma))
        r_px = d_nm / px / 2
        ar = _u(rng, cfg.aspect_ratio)
        is_ellipse = rng.random() < cfg.ellipse_fraction
        sides = 0 if is_ellipse else int(rng.choice(cfg.polygon_sides))
        angle = float(rng.uniform(0, 2 * math.pi))
        # semi-axes (circumscribed for polygons) such that the area equals pi r^2
        if sides:
            unit_area = sides / 2 * math.sin(2 * math.pi / sides)
        else:
            unit_area = math.pi
        scale = r_px * math.sqrt(math.pi / unit_area)
        a, b = scale * math.sqrt(ar), scale / math.sqrt(ar)
        reach = max(a, b)
        touching = placed and rng.random() < cfg.touching_fraction
        if touching:
            other = placed[int(rng.integers(len(placed)))]
            dist = _u(rng, cfg.touching_distance) * (r_px + other["_r_px"])
            phi = rng.uniform(0, 2 * math.pi)
            cy = other["centre_px"][0] + dist * math.sin(phi)
            cx = other["centre_px"][1] + dist * math.cos(phi)
        else:
            out = cfg.outside_fraction_of_d * 2 * r_px
            cy = pad + rng.uniform(-out, n_field + out)
            cx = pad + rng.uniform(-out, n_field + out)
        lo, hi = (
            pad - cfg.outside_fraction_of_d * 2 * r_px,
            pad + n_field + cfg.outside_fraction_of_d * 2 * r_px,
        )
        if not (lo <= cy <= hi and lo <= cx <= hi):
            continue
        if not touching:
            if any(
                math.hypot(cy - p["centre_px"][0], cx - p["centre_px"][1]) < 1.05 * (reach + p["_reach"])
                for p in placed
            ):
                continue
        placed.append(
            {
                "id": len(placed) + 1,
                "centre_px": (float(cy), float(cx)),
                "diameter_nm": d_nm,
                "shape": "ellipse" if not sides else f"{sides}-gon",
                "sides": sides,
                "semi_axes_px": (float(a), float(b)),
                "angle_rad": angle,
                "touching": bool(touching),
                "_r_px": r_px,
                "_reach": reach,
            }
        )
    return placed


def particle_rho(p: dict, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Normalised radius of a particle at pixel centres (``< 1`` inside the outline)."""
    cy, cx = p["centre_px"]
    a, b = p["semi_axes_px"]
    c, s = math.cos(p["angle_rad"]), math.sin(p["angle_rad"])
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / a
    v = (-s * dx + c * dy) / b
    r = np.hypot(u, v)
    n = p["sides"]
    if not n:
        return r
    theta = np.arctan2(v, u)
    sector = 2 * math.pi / n
    local = np.mod(theta, sector) - sector / 2
    return r * np.cos(local) / math.cos(math.pi / n)


def _bbox(p: dict, shape: tuple[int, int]):
    cy, cx = p["centre_px"]
    reach = p["_reach"] + 2
    y0, y1 = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _thickness(part: dict, shape, px_nm: float):
    """Projected thickness (nm) of one particle on its bounding box, with the box, the pixel
    coordinates and the inside mask; None when the particle lies off the canvas."""
    box = _bbox(part, shape)
    if box is None:
        return None
    yy, xx = np.mgrid[box[0], box[1]].astype(np.float32)
    rho = particle_rho(part, yy, xx)
    inside = rho < 1
    a_nm, b_nm = (q * px_nm for q in part["semi_axes_px"])
    t = np.where(inside, (a_nm + b_nm) * np.clip(1 - rho**2, 0, None) ** 0.3, 0).astype(np.float32)
    return box, yy, xx, t, inside, rho


# ----------------------------------------------------------------------------- optics
def _transfer(shape, px_nm, lam, df, cs_nm, focal_spread, alpha_mrad, aperture_mrad):
    """Coherent transfer with partial-coherence envelopes and a soft aperture."""
    ky = sfft.fftfreq(shape[0], d=px_nm).astype(np.float32)
    kx = sfft.fftfreq(shape[1], d=px_nm).astype(np.float32)
    lam, df, cs_nm, focal_spread = (np.float32(v) for v in (lam, df, cs_nm, focal_spread))
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    k = np.sqrt(k2)
    chi = np.pi * lam * df * k2 + 0.5 * np.pi * cs_nm * lam**3 * k2**2
    e_t = np.exp(-0.5 * (np.pi * lam * focal_spread) ** 2 * k2**2)
    alpha = alpha_mrad * 1e-3
    e_s = np.exp(-((np.pi * alpha) ** 2) * (df * k + cs_nm * lam**2 * k**3) ** 2)
    k_ap = aperture_mrad * 1e-3 / lam
    edge = 0.02 * k_ap + 1e-6
    aperture = 0.5 * (1 - np.tanh((k - k_ap) / edge))
    env = (e_t * e_s * aperture).astype(np.float32)
    chi = chi.astype(np.float32)
    h = np.empty(shape, np.complex64)
    h.real = np.cos(chi) * env
    h.imag = -np.sin(chi) * env
    return h


def _exit_wave(absorb: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``exp(-0.5 * absorb) * exp(i * phase)`` in complex64."""
    amp = np.exp(np.float32(-0.5) * absorb.astype(np.float32))
    phase = phase.astype(np.float32)
    psi = np.empty(phase.shape, np.complex64)
    psi.real = amp * np.cos(phase)
    psi.imag = amp * np.sin(phase)
    return psi


def _form_image(rng, psi, params, px_nm, lam, field_slice):
    h = _transfer(
        psi.shape,
        px_nm,
        lam,
        params["defocus_nm"],
        params["cs_mm"] * 1e6,
        params["focal_spread_nm"],
        params["illumination_mrad"],
        params["aperture_mrad"],
    )
    wave = sfft.ifft2(sfft.fft2(psi) * h)[field_slice]
    img = (wave.real**2 + wave.imag**2).astype(np.float32)
    if params.get("illumination_variation"):  # smooth non-uniform illumination
        corr_px = params["illumination_correlation_nm"] / px_nm
        field = _correlated_noise(rng, img.shape, corr_px)
        img = img * np.maximum(1 + params["illumination_variation"] * field, 0.05).astype(np.float32)
    if params.get("illumination_gradient"):
        g = params["illumination_gradient"]
        n0, n1 = img.shape
        phi = params["illumination_direction_rad"]
        ramp = (
            np.cos(phi) * np.linspace(-0.5, 0.5, n1)[None, :]
            + np.sin(phi) * np.linspace(-0.5, 0.5, n0)[:, None]
        )
        img = img * (1 + g * ramp).astype(np.float32)
    counts = params["dose_e_per_A2"] * (px_nm * 10) ** 2
    noisy = rng.poisson(np.maximum(img, 0) * counts).astype(np.float32) / np.float32(counts)
    # the detector spreads each detected electron (its MTF) after the shot noise, so the
    # noise is correlated over neighbouring pixels as on a real camera
    noisy = ndi.gaussian_filter(noisy, params["mtf_sigma_px"], mode="reflect")
    return noisy, counts


# ------------------------------------------------------------------------- the regimes
def _lattice_g(state: str, rot: float, a_nm: float) -> list[tuple[float, float, str]]:
    """In-plane reciprocal vectors (1/nm), one of each +-g pair, for a particle state."""
    s2 = math.sqrt(2)
    if state == "zone110":
        gs = [
            (s2 / a_nm, 1 / a_nm, "111"),
            (s2 / a_nm, -1 / a_nm, "111"),
            (0.0, 2 / a_nm, "200"),
            (2 * s2 / a_nm, 0.0, "220"),
        ]
    elif state == "zone100":
        gs = [
            (2 / a_nm, 0.0, "200"),
            (0.0, 2 / a_nm, "200"),
            (2 / a_nm, 2 / a_nm, "220"),
            (2 / a_nm, -2 / a_nm, "220"),
        ]
    elif state == "zone111":
        g = 2 * s2 / a_nm
        gs = [(g * math.cos(t), g * math.sin(t), "220") for t in (0, math.pi / 3, 2 * math.pi / 3)]
    elif state == "fringes111":
        gs = [(math.sqrt(3) / a_nm, 0.0, "111")]
    elif state == "fringes200":
        gs = [(2 / a_nm, 0.0, "200")]
    else:
        gs = []
    c, s = math.cos(rot), math.sin(rot)
    return [(c * gx - s * gy, s * gx + c * gy, name) for gx, gy, name in gs]


_VG = {"111": 15.0, "200": 13.5, "220": 10.0}


def _geometry(cfg, size: int) -> tuple[int, int, float, float, float]:
    """Padding px, FFT field side px, pixel size nm, wavelength nm, interaction constant."""
    pad = cfg.pad_px
    return (
        pad,
        _fft_size(size + 2 * pad),
        cfg.pixel_size_nm,
        wavelength_nm(cfg.voltage_kv),
        interaction_constant(cfg.voltage_kv),
    )


def _simulate_standard(rng, cfg: StandardConfig, size: int) -> SimulatedImage:
    pad, m, px, lam, sigma = _geometry(cfg, size)
    p = {
        "defocus_nm": _u(rng, cfg.defocus_nm),
        "cs_mm": _u(rng, cfg.cs_mm),
        "aperture_mrad": _u(rng, cfg.aperture_mrad),
        "focal_spread_nm": _u(rng, cfg.focal_spread_nm),
        "illumination_mrad": _u(rng, cfg.illumination_mrad),
        "mtf_sigma_px": _u(rng, cfg.mtf_sigma_px),
        "dose_e_per_A2": _logu(rng, cfg.dose_e_per_A2),
        "illumination_gradient": _u(rng, cfg.illumination_gradient),
        "illumination_direction_rad": float(rng.uniform(0, 2 * math.pi)),
        "carbon_thickness_nm": _u(rng, cfg.carbon_thickness_nm),
        "carbon_thickness_variation": _u(rng, cfg.carbon_thickness_variation),
        "carbon_absorption_nm": _u(rng, cfg.carbon_absorption_nm),
        "carbon_inner_potential_v": _u(rng, cfg.carbon_inner_potential_v),
        "carbon_phase_rad": _u(rng, cfg.carbon_phase_rad),
        "carbon_phase_correlation_nm": _u(rng, cfg.carbon_phase_correlation_nm),
        "au_absorption_nm": _u(rng, cfg.au_absorption_nm),
        "au_inner_potential_v": _u(rng, cfg.au_inner_potential_v),
    }
    shape = (m, m)
    t_c = p["carbon_thickness_nm"] * np.maximum(  # a film is never thinner than nothing
        1 + p["carbon_thickness_variation"] * _correlated_noise(rng, shape, cfg.carbon_correlation_nm / px), 0
    )
    phase = sigma * p["carbon_inner_potential_v"] * t_c
    phase += p["carbon_phase_rad"] * _correlated_noise(rng, shape, p["carbon_phase_correlation_nm"] / px)
    absorb = t_c / p["carbon_absorption_nm"]
    particles = _draw_particles(rng, cfg, size, pad)
    inst = np.zeros(shape, np.uint16)  # particle ids; the mask is where they are
    for part in particles:
        part["state"] = "amplitude"
        part["absorption_factor"] = _u(rng, cfg.au_absorption_factor)
        geom = _thickness(part, shape, px)
        if geom is None:
            continue
        box, _, _, t, inside, _ = geom
        phase[box] += sigma * p["au_inner_potential_v"] * t
        absorb[box] += t / (p["au_absorption_nm"] * part["absorption_factor"])
        inst[box][inside & (inst[box] == 0)] = part["id"]
    psi = _exit_wave(absorb, phase)
    return _finish(rng, cfg, p, psi, inst, particles, size, pad, lam)


def _hrtem_optics(rng, cfg: HRTEMConfig, lam: float) -> dict:
    """Per-image optics, dose, illumination and carbon of an HRTEM micrograph."""
    corrected = bool(rng.random() < cfg.corrected_fraction)
    if corrected:
        cs_mm = _u(rng, cfg.cs_corrected_um) * 1e-3
        df = _u(rng, cfg.defocus_corrected_nm)
    else:
        cs_mm = _u(rng, cfg.cs_uncorrected_mm)
        df = -1.2 * math.sqrt(cs_mm * 1e6 * lam) + _u(rng, cfg.defocus_from_scherzer_nm)
    return {
        "corrected": corrected,
        "cs_mm": cs_mm,
        "defocus_nm": df,
        "aperture_mrad": _u(rng, cfg.aperture_mrad),
        "focal_spread_nm": _u(rng, cfg.focal_spread_nm),
        "illumination_mrad": _u(rng, cfg.illumination_mrad),
        "mtf_sigma_px": _u(rng, cfg.mtf_sigma_px),
        "dose_e_per_A2": _logu(rng, cfg.dose_e_per_A2),
        "amplitude_scale": _logu(rng, cfg.amplitude_scale),
        "carbon_thickness_nm": _u(rng, cfg.carbon_thickness_nm),
        "carbon_thickness_variation": _u(rng, cfg.carbon_thickness_variation),
        "carbon_correlation_nm": _u(rng, cfg.carbon_correlation_nm),
        "carbon_absorption_nm": _u(rng, cfg.carbon_absorption_nm),
        "illumination_gradient": _u(rng, cfg.illumination_gradient),
        "illumination_direction_rad": float(rng.uniform(0, 2 * math.pi)),
        "illumination_variation": _u(rng, cfg.illumination_variation),
        "illumination_correlation_nm": _u(rng, cfg.illumination_correlation_nm),
        "au_inner_potential_v": _u(rng, cfg.au_inner_potential_v),
    }


def _amorphous_carbon(rng, cfg: HRTEMConfig, p: dict, shape) -> tuple[np.ndarray, np.ndarray]:
    """Phase and absorption of an amorphous carbon film whose thickness varies over nm:
    a Poisson number of C atoms per pixel column (mean set by the local thickness), each a
    Gaussian blob of projected potential."""
    px = cfg.pixel_size_nm
    px_a = px * 10
    t_c = p["carbon_thickness_nm"] * np.maximum(
        1 + p["carbon_thickness_variation"] * _correlated_noise(rng, shape, p["carbon_correlation_nm"] / px),
        0,
    )
    atoms = rng.poisson(cfg.carbon_density_per_A3 * t_c * 10 * px_a**2)
    # integrated projected potential of one atom: 2 pi a0 e f_e(0) = 47.878 V A^2 * f(0)[A]
    atom_phase_a2 = interaction_constant(cfg.voltage_kv) / 10 * 47.878 * cfg.carbon_fe0_A  # rad A^2
    phase = ndi.gaussian_filter(atoms.astype(np.float32), cfg.carbon_atom_sigma_A / px_a, mode="wrap")
    phase *= np.float32(atom_phase_a2 / px_a**2)
    return phase, (t_c / p["carbon_absorption_nm"]).astype(np.float32)


def _fringe_class(part: dict, cfg: HRTEMConfig) -> str:
    """``fringed``, ``weak_fringe`` or ``off_zone``: how visible the particle's lattice is."""
    if not part["reflections"]:
        return "off_zone"
    return "weak_fringe" if part["lattice_strength"] < cfg.weak_fringe_below else "fringed"


def _lattice_potential(rng, cfg: HRTEMConfig, part: dict, yy, xx, rho) -> np.ndarray:
    """The fringe part of a particle's projected potential (V) on its box: one crystal domain,
    or two split by a twin plane (the second with its own orientation and visibility, often
    fringe-free: partial fringes); fading to nothing over a disordered surface shell."""
    px = cfg.pixel_size_nm
    b_nm2 = cfg.debye_waller_A2 / 100
    y_nm, x_nm = yy * px, xx * px

    def domain(gs, strength):
        out = np.zeros(yy.shape, np.float32)
        r0 = rng.uniform(0, AU_LATTICE_NM, size=2)
        for gx, gy, name in gs:
            amp = strength * 2 * _VG[name] * math.exp(-b_nm2 * (gx * gx + gy * gy) / 4)
            out += np.float32(amp) * np.cos(2 * np.pi * (gx * (x_nm - r0[1]) + gy * (y_nm - r0[0])))
        return out

    gs = [(r["g_per_nm"][0], r["g_per_nm"][1], r["hkl"]) for r in part["reflections"]]
    lattice = domain(gs, part["lattice_strength"])
    if gs and rng.random() < cfg.twin_fraction:
        cy, cx = part["centre_px"]
        normal = rng.uniform(0, 2 * math.pi)
        offset = rng.uniform(-0.5, 0.5) * min(part["semi_axes_px"])
        side = (math.cos(normal) * (xx - cx) + math.sin(normal) * (yy - cy)) > offset
        state2 = HRTEM_STATES[int(rng.integers(len(HRTEM_STATES)))]
        strength2 = part["lattice_strength"] * float(rng.uniform(0, 1))
        gs2 = _lattice_g(state2, float(rng.uniform(0, 2 * math.pi)), AU_LATTICE_NM)
        lattice = np.where(side, domain(gs2, strength2), lattice)
        part["twin"] = {"state": state2, "lattice_strength": strength2}
    shell_px = part["disordered_shell_nm"] / px
    depth_px = (1 - rho) * min(part["semi_axes_px"])  # approximate distance inside the outline
    return lattice * np.clip(depth_px / max(shell_px, 1e-6), 0, 1).astype(np.float32)


def _simulate_hrtem(rng, cfg: HRTEMConfig, size: int) -> SimulatedImage:
    pad, m, px, lam, sigma = _geometry(cfg, size)
    p = _hrtem_optics(rng, cfg, lam)
    shape = (m, m)
    phase, absorb = _amorphous_carbon(rng, cfg, p, shape)
    particles = _draw_particles(rng, cfg, size, pad)
    weights = np.asarray(cfg.state_weights, float)
    weights /= weights.sum()
    inst = np.zeros(shape, np.uint16)  # particle ids; the mask is where they are
    for part in particles:
        state = HRTEM_STATES[int(rng.choice(len(HRTEM_STATES), p=weights))]
        part["state"] = state
        rot = float(rng.uniform(0, 2 * math.pi))
        part["lattice_rotation_rad"] = rot
        draw = _logu if cfg.lattice_strength[0] > 0 else _u  # log-uniform unless it may be 0
        part["lattice_strength"] = draw(rng, cfg.lattice_strength)
        part["disordered_shell_nm"] = _u(rng, cfg.disordered_shell_nm)
        lam_key = (
            "absorption_on_zone_nm"
            if state.startswith("zone")
            else "absorption_one_set_nm"
            if state.startswith("fringes")
            else "absorption_off_zone_nm"
        )
        part["absorption_nm"] = _u(rng, getattr(cfg, lam_key))
        gs = _lattice_g(state, rot, AU_LATTICE_NM)
        part["reflections"] = [{"g_per_nm": [gx, gy], "hkl": n} for gx, gy, n in gs]
        part["fringe_class"] = _fringe_class(part, cfg)
        geom = _thickness(part, shape, px)
        if geom is None:
            continue
        box, yy, xx, t, inside, rho = geom
        pot = p["au_inner_potential_v"] + _lattice_potential(rng, cfg, part, yy, xx, rho)
        phase[box] += sigma * pot * t
        absorb[box] += p["amplitude_scale"] * t / part["absorption_nm"]
        inst[box][inside & (inst[box] == 0)] = part["id"]
    psi = _exit_wave(absorb, phase)
    return _finish(rng, cfg, p, psi, inst, particles, size, pad, lam)


def _simulate_haadf(rng, cfg: HAADFConfig, size: int) -> SimulatedImage:
    """HAADF-STEM: see :class:`HAADFConfig`."""
    pad, m, px, _, _ = _geometry(cfg, size)
    p = {
        "z_exponent": _u(rng, cfg.z_exponent),
        "au_scatter_per_nm": _logu(rng, cfg.au_scatter_per_nm),
        "carbon_thickness_nm": _u(rng, cfg.carbon_thickness_nm),
        "carbon_thickness_variation": _u(rng, cfg.carbon_thickness_variation),
        "carbon_correlation_nm": _logu(rng, cfg.carbon_correlation_nm),
        "probe_sigma_nm": _logu(rng, cfg.probe_sigma_nm),
        "dose_e_per_A2": _logu(rng, cfg.dose_e_per_A2),
        "detector_efficiency": _u(rng, cfg.detector_efficiency),
        "read_noise": _u(rng, cfg.read_noise),
        "line_jitter_px": _u(rng, cfg.line_jitter_px),
        "line_gain_sd": _u(rng, cfg.line_gain_sd),
    }
    # scattering per nm of carbon relative to Au: atom density ratio times the Z^n ratio
    carbon_per_nm = p["au_scatter_per_nm"] * (100 / 59) * (6 / 79) ** p["z_exponent"]
    shape = (m, m)
    t_c = p["carbon_thickness_nm"] * np.maximum(
        1 + p["carbon_thickness_variation"] * _correlated_noise(rng, shape, p["carbon_correlation_nm"] / px),
        0,
    )
    optical = (carbon_per_nm * t_c).astype(np.float32)  # -ln(unscattered fraction)
    particles = _draw_particles(rng, cfg, size, pad)
    inst = np.zeros(shape, np.uint16)  # particle ids; the mask is where they are
    for part in particles:
        part["state"] = "z_contrast"
        part["orientation_factor"] = _u(rng, cfg.au_orientation_factor)
        geom = _thickness(part, shape, px)
        if geom is None:
            continue
        box, _, _, t, inside, _ = geom
        optical[box] += p["au_scatter_per_nm"] * part["orientation_factor"] * t
        inst[box][inside & (inst[box] == 0)] = part["id"]
    scattered = 1 - np.exp(-optical)  # saturates for thick columns
    scattered = ndi.gaussian_filter(scattered, p["probe_sigma_nm"] / px, mode="reflect")
    fs = (slice(pad, pad + size), slice(pad, pad + size))
    signal = scattered[fs]
    counts = p["dose_e_per_A2"] * (px * 10) ** 2 * p["detector_efficiency"]
    img = rng.poisson(np.maximum(signal, 0) * counts).astype(np.float32)
    img += np.float32(p["read_noise"]) * rng.standard_normal(img.shape).astype(np.float32)
    img *= (1 + p["line_gain_sd"] * rng.standard_normal((size, 1))).astype(np.float32)
    if p["line_jitter_px"] > 0:  # each scan line lands a little sideways (image only: masks are truth)
        shifts = p["line_jitter_px"] * rng.standard_normal(size)
        img = np.stack([ndi.shift(row, sh, order=1, mode="nearest") for row, sh in zip(img, shifts)])
    img = (img / np.float32(counts)).astype(np.float32)  # scattered fraction of the probe
    return _result(cfg, p, img, counts, inst, particles, size, pad)


def _finish(rng, cfg, p, psi, inst, particles, size, pad, lam) -> SimulatedImage:
    fs = (slice(pad, pad + size), slice(pad, pad + size))
    img, counts = _form_image(rng, psi, p, cfg.pixel_size_nm, lam, fs)
    return _result(cfg, p, img, counts, inst, particles, size, pad)


def _result(cfg, p, img, counts, inst, particles, size, pad) -> SimulatedImage:
    """The field's image, mask, instances and particles (those present, in field coordinates)."""
    fs = (slice(pad, pad + size), slice(pad, pad + size))
    inst_f = inst[fs]
    mask_f = (inst_f > 0).astype(np.uint8)  # every pixel inside an outline holds an id
    present = set(np.unique(inst_f).tolist()) - {0}
    out = []
    for part in particles:
        if part["id"] not in present:
            continue
        q = {k: v for k, v in part.items() if not k.startswith("_")}
        q["centre_px"] = (part["centre_px"][0] - pad, part["centre_px"][1] - pad)
        ys, xs = np.nonzero(inst_f == part["id"])
        q["touches_border"] = bool(
            ys.min() == 0 or xs.min() == 0 or ys.max() == size - 1 or xs.max() == size - 1
        )
        out.append(q)
    params = {
        "regime": cfg.regime,
        "pixel_size_nm": cfg.pixel_size_nm,
        "voltage_kv": cfg.voltage_kv,
        **p,
    }
    return SimulatedImage(img, mask_f, inst_f, out, params, counts)


def simulate_image(
    cfg: StandardConfig | HRTEMConfig | HAADFConfig, size: int = 512, seed: int | np.random.SeedSequence = 0
) -> SimulatedImage:
    """Simulate one ``size x size`` micrograph with its exact mask (see module docstring)."""
    if size < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    rng = np.random.default_rng(seed)
    if cfg.regime == "standard":
        return _simulate_standard(rng, cfg, size)
    if cfg.regime == "haadf":
        return _simulate_haadf(rng, cfg, size)
    return _simulate_hrtem(rng, cfg, size)


def image_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    """Per-image seeds: image ``i`` is the same whatever the number of workers."""
    return np.random.SeedSequence(seed).spawn(n)


def _worker(args):
    cfg, size, ss = args
    return simulate_image(cfg, size, ss)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which stops them (no worker tracebacks)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_context():
    """Where worker processes come from: a fork server where there is one (Linux, macOS), a
    clean process that imported the simulator once and forks the workers, else spawned
    interpreters. Never a fork of this process: it may run other threads (TensorFlow's,
    ONNX Runtime's, a writer pool's), and a child forked while one of them held a lock waits
    on it for ever (seen in CI: a worker stuck in ``threading._after_fork``)."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["temtool.data.simulate", "temtool.data.randomise"])
        return ctx
    return mp.get_context("spawn")


def ordered_map(fn, jobs: list, workers: int = 1, chunksize: int = 1):
    """Yield ``fn(job)`` for each job, in order, using ``workers`` processes. On Ctrl-C (or
    any error, or when the consumer stops early) the worker processes are terminated at once;
    workers leave SIGINT to the parent, so no worker tracebacks are printed."""
    if workers <= 1:
        for job in jobs:
            yield fn(job)
        return
    pool = _process_context().Pool(workers, initializer=_ignore_sigint)
    try:
        yield from pool.imap(fn, jobs, chunksize=chunksize)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def simulate_batch(cfg, n: int, size: int = 512, seed: int = 0, workers: int = 1):
    """Yield ``n`` simulated images in order, using ``workers`` processes (the images do not
    depend on ``workers``)."""
    jobs = [(cfg, size, s) for s in image_seeds(seed, n)]
    yield from ordered_map(_worker, jobs, workers, chunksize=max(1, min(8, n // (4 * workers) or 1)))
