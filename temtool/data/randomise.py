"""Domain-randomised bright-field TEM: a simulated distribution wide enough to contain real
micrographs from many labs (Tobin et al. 2017's domain randomisation, applied to TEM).

Each image draws its own microscope, specimen and detector from wide ranges, in units that
matter to a network: the particle diameter in *pixels* (8 to 64 px, log-uniform), the
electron counts per pixel (2 to 3,000: from barely visible to clean), the pixel size (0.1 to
2 nm/px, so Fresnel fringes and carbon texture scale as on real microscopes), defocus from
strong under- to slight over-focus, carbon thickness, texture strength and correlation
length, illumination gradients, detector blur (which also correlates the shot noise), weak to
strong particle contrast, and shapes: ellipses and rods (aspect ratio up to 2.5), triangles,
squares, pentagons, hexagons and octagons, sparse to crowded, isolated to touching.

What is not randomised: bright particles (dark-field or HAADF contrast), lattice fringes (the
HRTEM simulator covers those), and particles other than Au.
"""

from __future__ import annotations

import math

import numpy as np

from temtool.data.simulate import SimulatedImage, config_for, image_seeds, ordered_map, simulate_image

__all__ = ["RANGES", "CROWDED", "random_overrides", "randomised_image", "randomised_batch"]

RANGES = {
    "particle_diameter_px": (8.0, 64.0),  # log-uniform
    "pixel_size_nm": (0.1, 2.0),  # log-uniform
    "counts_per_px": (2.0, 3000.0),  # log-uniform; sets the dose for the pixel size
    "area_fraction": (0.02, 0.8),  # particles' share of the field (crowded, overlapping fields too)
    "defocus_nm": (-3000.0, 300.0),  # drawn as -3000 * u**2 + 300 * (1 - u)... see below
    "carbon_thickness_nm": (3.0, 40.0),
    "carbon_thickness_variation": (0.01, 0.4),
    "carbon_correlation_nm": (2.0, 60.0),  # log-uniform
    "carbon_phase_rad": (0.01, 0.5),
    "carbon_phase_correlation_nm": (0.15, 4.0),  # log-uniform
    "mtf_sigma_px": (0.4, 3.0),
    "illumination_gradient": (0.0, 0.5),
    "au_absorption_factor": (0.25, 3.0),
    "aspect_ratio_max": (1.0, 2.5),
    "touching_fraction": (0.0, 0.5),
}

# A crowded draw (``crowded=True``, for training): fields jammed with particles, many of them
# touching or overlapping in stacks (what large Au particles at fine sampling look like);
# these ranges replace RANGES' and the particle count asked for is 1-2 times the area
# fraction's (placement stops where the field is full). Particles of 20 px and more only: a
# jammed field of smaller ones looks like carbon speckle, and a model taught both calls the
# speckle of sparse fields particles (tried: randomised validation Dice 0.844 -> 0.827).
CROWDED = {
    "particle_diameter_px": (20.0, 64.0),
    "area_fraction": (0.5, 0.9),
    "touching_fraction": (0.3, 0.6),
}


def _logu(rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_overrides(
    rng: np.random.Generator, pixel_size_nm: float | None = None, crowded: bool = False
) -> dict:
    """One draw of the standard-TEM config overrides (see module docstring); with
    ``pixel_size_nm`` the sampling is fixed (particle size, dose and the rest still drawn, the
    same draws as without it); ``crowded``: a jammed field (:data:`CROWDED`)."""
    r = {**RANGES, **CROWDED} if crowded else RANGES
    d_px = _logu(rng, *r["particle_diameter_px"])
    px = _logu(rng, *r["pixel_size_nm"])
    px = float(pixel_size_nm) if pixel_size_nm else px
    counts = _logu(rng, *r["counts_per_px"])
    dose = counts / (px * 10) ** 2  # electrons per A^2
    frac = float(rng.uniform(*r["area_fraction"]))
    per_256 = frac * 256**2 / (math.pi * d_px**2 / 4) * (2.0 if crowded else 1.0)
    u = float(rng.random())
    defocus = -3000.0 * u**2 if rng.random() < 0.85 else float(rng.uniform(0, r["defocus_nm"][1]))
    thick = float(rng.uniform(*r["carbon_thickness_nm"]))
    ar = float(rng.uniform(*r["aspect_ratio_max"]))
    return {
        "pixel_size_nm": px,
        "diameter_nm": d_px * px,
        "diameter_cv": (0.05, 0.35),
        "particles_per_256px2": (0.5 * per_256, per_256),
        "aspect_ratio": (1.0, ar),
        "ellipse_fraction": float(rng.uniform(0.2, 0.8)),
        "polygon_sides": (3, 4, 5, 6, 8),
        "touching_fraction": float(rng.uniform(*r["touching_fraction"])),
        "touching_distance": (0.7, 1.0),
        "dose_e_per_A2": (dose, dose),
        "defocus_nm": (defocus, defocus),
        "carbon_thickness_nm": (thick, thick),
        "carbon_thickness_variation": (r["carbon_thickness_variation"][0], float(rng.uniform(0.02, 0.4))),
        "carbon_correlation_nm": _logu(rng, *r["carbon_correlation_nm"]),
        "carbon_phase_rad": (0.01, float(rng.uniform(0.02, r["carbon_phase_rad"][1]))),
        "carbon_phase_correlation_nm": (0.15, _logu(rng, 0.3, r["carbon_phase_correlation_nm"][1])),
        "mtf_sigma_px": (0.4, float(rng.uniform(0.6, r["mtf_sigma_px"][1]))),
        "illumination_gradient": (0.0, float(rng.uniform(0.0, r["illumination_gradient"][1]))),
        "au_absorption_factor": (r["au_absorption_factor"][0], float(rng.uniform(0.5, 3.0))),
        "pad_px": int(min(256, max(64, 1.5 * d_px))),
    }


def randomised_image(
    size: int, seed, pixel_size_nm: float | None = None, crowded: bool = False
) -> SimulatedImage:
    """One domain-randomised micrograph ``size x size`` with its exact mask; its drawn recipe
    is in ``params["randomised"]``. ``pixel_size_nm``: fixed sampling; ``crowded``: a jammed
    field (see :func:`random_overrides`)."""
    rng = np.random.default_rng(seed)
    overrides = random_overrides(rng, pixel_size_nm, crowded)
    sim = simulate_image(config_for("standard", **overrides), size, rng)
    sim.params["randomised"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()}
    sim.params["particle_diameter_px"] = overrides["diameter_nm"] / overrides["pixel_size_nm"]
    return sim


def _job(args):
    return randomised_image(*args)


def randomised_batch(
    n: int,
    size: int = 256,
    seed: int = 0,
    workers: int = 1,
    pixel_size_nm: float | None = None,
    crowded: bool = False,
):
    """Yield ``n`` domain-randomised micrographs in order (the same whatever ``workers``)."""
    jobs = [(size, s, pixel_size_nm, crowded) for s in image_seeds(seed, n)]
    yield from ordered_map(_job, jobs, workers, chunksize=4)
