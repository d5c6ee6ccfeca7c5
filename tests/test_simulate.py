"""Physics and bookkeeping of the simulator, checked against independent computations."""

import json
import math

import numpy as np
import pytest

from temtool.baselines import otsu_segment
from temtool.data.simulate import (
    AU_LATTICE_NM,
    config_for,
    interaction_constant,
    simulate_batch,
    simulate_image,
    wavelength_nm,
)
from temtool.metrics import dice_np

D111 = AU_LATTICE_NM / math.sqrt(3)  # 0.2355 nm
D200 = AU_LATTICE_NM / 2  # 0.2039 nm
D220 = AU_LATTICE_NM / math.sqrt(8)  # 0.1442 nm


def test_electron_optics_constants():
    assert wavelength_nm(300) == pytest.approx(0.001969, rel=1e-3)
    assert wavelength_nm(200) == pytest.approx(0.002508, rel=1e-3)
    assert interaction_constant(300) == pytest.approx(6.53e-3, rel=1e-2)  # rad/(V nm)


def _single_zone110_particle(size=512, seed=0, **kw):
    cfg = config_for(
        "hrtem",
        state_weights=(1, 0, 0, 0, 0, 0),  # all on the [110] zone axis
        particles_per_256px2=0.25,
        diameter_nm=7.0,
        diameter_cv=0.0,
        dose_e_per_A2=1e5,
        carbon_thickness_nm=0.5,
        corrected_fraction=1.0,
        focal_spread_nm=2.0,
        **kw,
    )
    return cfg, simulate_image(cfg, size, seed)


def _peak_frequency(power, freqs, g_expected, angle_range=None):
    """Sub-bin position (1/nm) of the strongest FFT peak within 6% of g_expected."""
    k = np.hypot(freqs[:, None], freqs[None, :])
    sel = np.abs(k - g_expected) < 0.06 * g_expected
    p = np.where(sel, power, 0)
    iy, ix = np.unravel_index(np.argmax(p), p.shape)
    win = p[iy - 2 : iy + 3, ix - 2 : ix + 3]
    fy = freqs[iy - 2 : iy + 3][:, None]
    fx = freqs[ix - 2 : ix + 3][None, :]
    cy = float((win * fy).sum() / win.sum())
    cx = float((win * fx).sum() / win.sum())
    return math.hypot(cy, cx), math.atan2(cy, cx)


def test_bragg_spots_of_a_zone_axis_particle():
    cfg, sim = _single_zone110_particle()
    img = sim.image - sim.image.mean()
    n = img.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    m = 4 * n  # zero padding for fine frequency sampling
    power = np.abs(np.fft.fftshift(np.fft.fft2(img * win, s=(m, m)))) ** 2
    freqs = np.fft.fftshift(np.fft.fftfreq(m, d=cfg.pixel_size_nm))
    g111, a1 = _peak_frequency(power, freqs, 1 / D111)
    g200, _ = _peak_frequency(power, freqs, 1 / D200)
    g220, _ = _peak_frequency(power, freqs, 1 / D220)
    assert 1 / g111 == pytest.approx(0.2355, rel=0.02)
    assert 1 / g200 == pytest.approx(0.2039, rel=0.02)
    assert 1 / g220 == pytest.approx(0.1442, rel=0.02)
    # the two {111} spot pairs of [110] are 70.5 degrees apart
    k = np.hypot(freqs[:, None], freqs[None, :])
    ang = np.arctan2(freqs[:, None] + 0 * freqs[None, :], freqs[None, :] + 0 * freqs[:, None])
    dang = np.angle(np.exp(1j * (ang - a1)))
    ring = (
        (np.abs(k - g111) < 0.03 * g111)
        & (np.abs(np.abs(dang) - 0) > 0.3)
        & (np.abs(np.abs(dang) - np.pi) > 0.3)
    )
    iy, ix = np.unravel_index(np.argmax(np.where(ring, power, 0)), power.shape)
    other = math.degrees(abs(float(dang[iy, ix])))
    other = min(other, 180 - other)
    assert other == pytest.approx(70.53, abs=3.0)


def test_shot_noise_variance_matches_dose_in_flat_regions():
    cfg = config_for(
        "hrtem",
        particles_per_256px2=0.25,
        diameter_nm=1.0,
        diameter_cv=0.0,
        carbon_thickness_nm=0.0,
        dose_e_per_A2=500.0,
        mtf_sigma_px=0.4,
    )
    sim = simulate_image(cfg, 256, 3)
    counts = 500.0 * (cfg.pixel_size_nm * 10) ** 2
    assert sim.counts_per_px == pytest.approx(counts)
    from scipy import ndimage as ndi

    far = ndi.distance_transform_edt(sim.mask == 0) > 80
    far[:16], far[-16:], far[:, :16], far[:, -16:] = False, False, False, False
    assert far.sum() > 5000
    x = sim.image[far] * counts
    assert x.mean() == pytest.approx(counts, rel=0.05)
    assert x.var() / x.mean() == pytest.approx(1.0, abs=0.1)


def _ellipse_mask(p, shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    cy, cx = p["centre_px"]
    a, b = p["semi_axes_px"]
    t = p["angle_rad"]
    u = (math.cos(t) * (xx - cx) + math.sin(t) * (yy - cy)) / a
    v = (-math.sin(t) * (xx - cx) + math.cos(t) * (yy - cy)) / b
    return u**2 + v**2 < 1


@pytest.mark.parametrize("regime", ["standard", "hrtem"])
def test_mask_equals_analytic_outline(regime):
    over = {"ellipse_fraction": 1.0}
    if regime == "standard":
        over["pixel_size_nm"] = 0.5
    cfg = config_for(regime, **over)
    sim = simulate_image(cfg, 192, 11)
    assert sim.particles
    expected = np.zeros(sim.mask.shape, bool)
    for p in sim.particles:
        expected |= _ellipse_mask(p, sim.mask.shape)
    assert np.array_equal(sim.mask.astype(bool), expected)
    assert set(np.unique(sim.instances)) - {0} == {p["id"] for p in sim.particles}
    assert np.array_equal(sim.instances > 0, sim.mask.astype(bool))


def test_polygon_area_matches_its_diameter():
    cfg = config_for(
        "standard",
        pixel_size_nm=0.5,
        ellipse_fraction=0.0,
        touching_fraction=0.0,
        outside_fraction_of_d=-0.6,
        particles_per_256px2=2.0,
    )
    sim = simulate_image(cfg, 256, 5)
    for p in sim.particles:
        area_px = (sim.instances == p["id"]).sum()
        d_px = p["diameter_nm"] / 0.5
        assert area_px == pytest.approx(math.pi * d_px**2 / 4, rel=0.03)


def test_deterministic_by_seed_and_independent_of_workers():
    cfg = config_for("hrtem", pixel_size_nm=0.04, diameter_nm=3.0)
    a = [s.image for s in simulate_batch(cfg, 4, size=64, seed=7, workers=1)]
    b = [s.image for s in simulate_batch(cfg, 4, size=64, seed=7, workers=2)]
    c = [s.image for s in simulate_batch(cfg, 4, size=64, seed=8, workers=1)]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_regimes_differ_for_a_classical_baseline():
    std = config_for("standard", pixel_size_nm=0.5, particles_per_256px2=(4.0, 12.0))
    hr = config_for(
        "hrtem",
        pixel_size_nm=0.04,
        diameter_nm=3.0,
        amplitude_scale=0.2,
        particles_per_256px2=(4.0, 8.0),
    )
    d_std = [dice_np(s.mask, otsu_segment(s.image)) for s in simulate_batch(std, 8, 128, seed=1)]
    d_hr = [dice_np(s.mask, otsu_segment(s.image)) for s in simulate_batch(hr, 8, 128, seed=1)]
    assert np.mean(d_std) >= 0.9
    assert np.mean(d_hr) < 0.75


def test_hrtem_states_and_parameters_recorded():
    cfg = config_for("hrtem", pixel_size_nm=0.04, diameter_nm=3.0, particles_per_256px2=8.0)
    sims = list(simulate_batch(cfg, 16, 128, seed=2))
    states = {p["state"] for s in sims for p in s.particles}
    assert "off_zone" in states and any(s.startswith("zone") for s in states)
    for s in sims:
        for key in ("defocus_nm", "cs_mm", "dose_e_per_A2", "amplitude_scale", "pixel_size_nm"):
            assert key in s.params
    json.dumps([s.params for s in sims])
    json.dumps([s.particles for s in sims])


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown simulation parameter"):
        config_for("hrtem", no_such_thing=1)
