"""Physics and bookkeeping of the simulator, checked against independent computations."""

import json
import math

import numpy as np
import pytest

from temtool.data.simulate import (
    AU_LATTICE_NM,
    config_for,
    interaction_constant,
    simulate_batch,
    simulate_image,
    wavelength_nm,
)
from temtool.inference.classical import otsu_segment
from temtool.study.metrics import dice_np

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


def test_shot_noise_matches_dose_and_is_correlated_by_the_detector():
    """Flat regions: the mean is the incident intensity; the variance is that of Poisson noise
    at the dose, reduced by the detector blur applied after it (sum of the squared blur
    weights), and neighbouring pixels are correlated as the blur predicts."""
    from scipy import ndimage as ndi

    mtf = 0.8
    cfg = config_for(
        "hrtem",
        particles_per_256px2=0.25,
        diameter_nm=1.0,
        diameter_cv=0.0,
        carbon_thickness_nm=0.0,
        illumination_gradient=0.0,
        illumination_variation=0.0,
        dose_e_per_A2=500.0,
        mtf_sigma_px=mtf,
    )
    sim = simulate_image(cfg, 256, 3)
    counts = 500.0 * (cfg.pixel_size_nm * 10) ** 2
    assert sim.counts_per_px == pytest.approx(counts)
    delta = np.zeros((33, 33))
    delta[16, 16] = 1
    kernel = ndi.gaussian_filter(delta, mtf)
    far = ndi.distance_transform_edt(sim.mask == 0) > 80
    far[:16], far[-16:], far[:, :16], far[:, -16:] = False, False, False, False
    assert far.sum() > 5000
    x = sim.image * counts
    assert x[far].mean() == pytest.approx(counts, rel=0.05)
    assert x[far].var() / x[far].mean() == pytest.approx((kernel**2).sum(), rel=0.1)
    d = x - x[far].mean()
    both = far[:, :-1] & far[:, 1:]
    lag1 = (d[:, :-1] * d[:, 1:])[both].mean() / d[far].var()
    expected = (kernel[:, :-1] * kernel[:, 1:]).sum() / (kernel**2).sum()
    assert lag1 == pytest.approx(expected, abs=0.05)
    assert lag1 > 0.3  # correlated, not white


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


def test_worker_processes_are_not_forks_of_this_process():
    """Workers come from a fork server (or are spawned), never from forking this process,
    whose other threads may hold locks the child would then wait on for ever."""
    import multiprocessing as mp

    from temtool.data.simulate import _process_context

    assert _process_context().get_start_method() in ("forkserver", "spawn")
    if "forkserver" in mp.get_all_start_methods():
        assert _process_context().get_start_method() == "forkserver"


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
    d_nm = {"111": 0.2355, "200": 0.2039, "220": 0.1442}  # Au planes
    for s in sims:
        for key in ("defocus_nm", "cs_mm", "dose_e_per_A2", "amplitude_scale", "pixel_size_nm"):
            assert key in s.params
        for p in s.particles:  # what is recorded is what was drawn: a particle where it says,
            y, x = (int(round(c)) for c in p["centre_px"])
            if 0 <= y < s.mask.shape[0] and 0 <= x < s.mask.shape[1]:
                assert s.mask[y, x] == 1
            for r in p["reflections"]:  # and reflections of Au planes
                assert 1 / np.hypot(*r["g_per_nm"]) == pytest.approx(d_nm[r["hkl"]], rel=0.01)
    json.dumps([s.params for s in sims])
    json.dumps([s.particles for s in sims])


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown simulation parameter"):
        config_for("hrtem", no_such_thing=1)


def test_thon_ring_minima_sit_at_the_zeros_of_sin_chi():
    """The power spectrum of amorphous carbon shows Thon rings: its radial minima lie where the
    phase-contrast transfer sin(chi) vanishes for the drawn defocus and Cs."""
    from temtool.data.simulate import wavelength_nm

    cfg = config_for(
        "hrtem",
        particles_per_256px2=0.25,
        diameter_nm=0.3,  # one negligible particle: the field is carbon
        carbon_thickness_nm=10.0,
        carbon_thickness_variation=0.0,
        illumination_gradient=0.0,
        illumination_variation=0.0,
        corrected_fraction=0.0,
        cs_uncorrected_mm=1.0,
        defocus_from_scherzer_nm=-50.0,
        focal_spread_nm=1.0,
        illumination_mrad=0.05,
        aperture_mrad=40.0,
        dose_e_per_A2=20000.0,
        mtf_sigma_px=0.4,
    )
    n = 512
    power = np.zeros((n, n))
    for seed in range(3):
        sim = simulate_image(cfg, n, seed)
        x = sim.image - sim.image.mean()
        power += np.abs(np.fft.fft2(x)) ** 2
    df, cs_nm = sim.params["defocus_nm"], sim.params["cs_mm"] * 1e6
    lam, px = wavelength_nm(300.0), cfg.pixel_size_nm
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n, px), np.fft.fftfreq(n, px)))
    dk = 1 / (n * px)
    bins = np.round(k / dk).astype(int)
    radial = np.bincount(bins.ravel(), power.ravel()) / np.bincount(bins.ravel())
    k_bins = np.arange(radial.size) * dk
    k_fine = np.linspace(0.5, 9.0, 20000)
    chi = np.pi * lam * df * k_fine**2 + 0.5 * np.pi * cs_nm * lam**3 * k_fine**4
    zeros = k_fine[np.nonzero(np.diff(np.floor(chi / np.pi)))[0]]  # chi crosses n pi
    assert len(zeros) >= 3
    smooth = np.convolve(radial, np.ones(3) / 3, mode="same")
    is_min = (smooth[1:-1] < smooth[:-2]) & (smooth[1:-1] < smooth[2:])
    minima = k_bins[1:-1][is_min]
    for kz in zeros[:4]:
        k_min = minima[np.argmin(np.abs(minima - kz))]
        assert k_min == pytest.approx(kz, abs=1.5 * dk), (kz, k_min)


# --------------------------------------------------------------- calibration to real difficulty
STUDY_SIGMAS_PX = (0, 1, 2, 3, 4, 6, 8, 12, 16)


def _study_set(regime: str, n: int = 24, size: int = 512, seed: int = 11):
    from temtool.data.dataset import STUDY_HRTEM_NM_PER_PX, STUDY_STANDARD_NM_PER_PX

    if regime == "hrtem":
        cfg = config_for("hrtem", pixel_size_nm=STUDY_HRTEM_NM_PER_PX, diameter_nm=5.0)
    else:
        cfg = config_for("standard", pixel_size_nm=STUDY_STANDARD_NM_PER_PX, diameter_nm=20.0)
    sims = [s for s in simulate_batch(cfg, n, size, seed=seed, workers=2) if s.mask.sum() >= 400]
    return cfg, sims


def test_study_scale_hrtem_is_as_hard_for_a_threshold_as_real_hrtem():
    """Calibrated against the study's real HRTEM patches (shared/docs/real-hrtem-statistics.md):
    particles 0.2-0.8 background sd darker at ~0.05 nm/px, and Gaussian + Otsu at the best
    smoothing for the set reaching Dice 0.37-0.86 (median about 0.5)."""
    from temtool.study.baselines import contrast_sd, otsu_sweep

    cfg, sims = _study_set("hrtem")
    assert len(sims) >= 20
    block = round(0.05 / cfg.pixel_size_nm)
    contrast = np.nanmedian([contrast_sd(s.image, s.mask, block) for s in sims])
    assert 0.2 <= contrast <= 0.8
    sweep = otsu_sweep([s.image for s in sims], [s.mask for s in sims], STUDY_SIGMAS_PX)
    assert 0.45 <= max(sweep.values()) <= 0.75
    classes = {p["fringe_class"] for s in sims for p in s.particles}
    assert classes == {"fringed", "weak_fringe", "off_zone"}


def test_study_scale_standard_tem_stays_easy_for_a_threshold():
    from temtool.study.baselines import contrast_sd, otsu_sweep

    _, sims = _study_set("standard", n=16)
    sweep = otsu_sweep([s.image for s in sims], [s.mask for s in sims], STUDY_SIGMAS_PX)
    assert max(sweep.values()) >= 0.9
    assert np.nanmedian([contrast_sd(s.image, s.mask) for s in sims]) > 2  # real patch: 4.8 sd


def test_fringes_fade_over_a_disordered_shell():
    """The lattice does not end exactly at the mask edge: with a 0.6 nm disordered shell the
    fringe contrast just inside the outline, relative to the core, is well below that of the
    same particle (same seed) without a shell."""
    from scipy import ndimage as ndi

    def shell_to_core(shell_nm):
        cfg = config_for(
            "hrtem",
            particles_per_256px2=0.25,
            diameter_nm=4.0,
            diameter_cv=0.0,
            aspect_ratio=1.0,
            ellipse_fraction=1.0,
            outside_fraction_of_d=-0.6,
            state_weights=(1, 0, 0, 0, 0, 0),
            lattice_strength=0.7,
            twin_fraction=0.0,
            disordered_shell_nm=shell_nm,
            carbon_thickness_nm=0.0,
            amplitude_scale=0.2,
            dose_e_per_A2=1e5,
            illumination_gradient=0.0,
            illumination_variation=0.0,
        )
        sim = simulate_image(cfg, 512, 1)
        depth_nm = ndi.distance_transform_edt(sim.mask) * cfg.pixel_size_nm
        x = sim.image
        local_sd = np.sqrt(np.maximum(ndi.uniform_filter(x**2, 9) - ndi.uniform_filter(x, 9) ** 2, 0))
        return local_sd[(depth_nm > 0.2) & (depth_nm < 0.4)].mean() / local_sd[depth_nm > 1.0].mean()

    assert shell_to_core(0.6) < 0.7 * shell_to_core(0.0)


def test_haadf_particles_are_bright_and_their_signal_follows_thickness():
    """Z-contrast: particles brighter than the carbon in every drawn image; without noise,
    jitter or blur, a particle's centre (thickest) outshines its rim, which outshines the carbon;
    the scan's line jitter moves the image, never the mask."""
    from temtool.data.simulate import config_for, simulate_image

    for seed in range(6):
        s = simulate_image(config_for("haadf"), 128, seed)
        m = s.mask.astype(bool)
        if m.any() and (~m).any():
            assert np.median(s.image[m]) > np.median(s.image[~m]) + 3 * s.image[~m].std() / 4
    quiet = dict(
        dose_e_per_A2=1e8,
        read_noise=0.0,
        line_jitter_px=0.0,
        line_gain_sd=0.0,
        probe_sigma_nm=0.001,
        carbon_thickness_variation=0.0,
        touching_fraction=0.0,
    )
    s = simulate_image(config_for("haadf", **quiet), 128, 3)
    bg = np.median(s.image[s.mask == 0])
    for part in s.particles:
        if part["touches_border"]:
            continue
        cy, cx = (int(round(v)) for v in part["centre_px"])
        ys, xs = np.nonzero(s.instances == part["id"])
        rim = s.image[ys, xs].min()
        assert s.image[cy, cx] > rim > bg
    jittered = simulate_image(config_for("haadf", **{**quiet, "line_jitter_px": 2.0}), 128, 3)
    assert np.array_equal(jittered.mask, s.mask) and not np.allclose(jittered.image, s.image)
