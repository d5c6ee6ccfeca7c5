"""Real micrographs out of the box: what the image is, its scale, clean masks, instance labels
and uncertainty, and the shipped model on held-out real micrographs (examples/data)."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile

from temtool.data.io import read_image, read_mask, write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.inference.measure import PostProcessing, measure_particles, typical_area_px, typical_diameter_px
from temtool.inference.regime import classify, fringe_score
from temtool.model.architecture import Architecture, build_resunet
from tests.helpers import ROOT

HELD_OUT = ROOT / "examples" / "data" / "real-tem"


def _held_out():
    for p in sorted((HELD_OUT / "images").glob("*.png")):
        yield p.stem, read_image(p).data, read_mask(HELD_OUT / "labels" / p.name.replace("image_", "label_"))


# ------------------------------------------------------------------------ what the image is
@pytest.mark.parametrize("px", [0.12, 0.25, 0.5, 1.0])
def test_standard_tem_is_never_called_hrtem(px):
    img = simulate_image(config_for("standard", pixel_size_nm=px), 256, seed=3).image
    assert classify(img, px)[0] == "standard"
    assert classify(img, None)[0] == "standard"  # without a calibration too


@pytest.mark.parametrize("dose", [5, 500])
def test_heavily_blurred_bright_field_is_not_called_hrtem(dose, monkeypatch):
    """A strongly blurred camera leaves only a numerical floor near Nyquist, whose pixels can
    stand thousands of times above their ring's median: not a lattice fringe (it carries no
    power). Before the power floor, 8.5% of 200 domain-randomised micrographs got the HRTEM
    model this way."""
    import temtool.inference.regime as regime

    cfg = config_for(
        "standard",
        pixel_size_nm=0.2,
        diameter_nm=5.0,
        mtf_sigma_px=(2.8, 2.8),
        dose_e_per_A2=(dose, dose),
        carbon_thickness_nm=(30, 30),
    )
    imgs = [simulate_image(cfg, 256, seed).image for seed in range(3)]
    assert [classify(im)[0] for im in imgs] == ["standard"] * 3
    assert max(fringe_score(im) for im in imgs) < 20
    monkeypatch.setattr(regime, "SPOT_MIN_POWER_FRACTION", 0.0)  # the floor is what decides
    assert min(fringe_score(im) for im in imgs) > 1000


def test_real_bright_field_micrographs_are_standard_even_with_a_few_bragg_spots():
    kinds = [classify(img)[0] for _, img, _ in _held_out()]
    assert kinds == ["standard"] * 4
    scores = {name: fringe_score(img) for name, img, _ in _held_out()}
    assert scores["image_8"] > 100  # it does show lattice fringes in one particle


def test_hrtem_with_fringes_is_recognised_with_and_without_pixel_size():
    cfg = config_for(  # clearly fringed [110] particles (no weak lattice, no twin domain)
        "hrtem",
        state_weights=(1, 0, 0, 0, 0, 0),
        amplitude_scale=0.3,
        lattice_strength=(0.3, 0.7),
        twin_fraction=0,
    )
    with_px, without = [], []
    for seed in range(6):
        img = simulate_image(cfg, 512, seed).image
        with_px.append(classify(img, 0.02)[0] == "hrtem")
        without.append(classify(img, None)[0] == "hrtem")
    # a [110] particle half outside the field, or a weak lattice under noise, can go unseen
    assert sum(with_px) >= 4 and sum(without) >= 4


def test_weakly_fringed_hrtem_at_lattice_sampling_gets_the_hrtem_model():
    """Off-zone and weakly fringed particles show no Bragg spot: with a pixel size only lattice
    imaging uses and weak amplitude contrast, the micrograph is HRTEM all the same; the same
    images without a calibration fall back to standard (nothing says they are HRTEM)."""
    cfg = config_for("hrtem", state_weights=(0, 0, 0, 0, 0, 1))  # off zone only: no lattice
    kinds = []
    for seed in range(3):
        img = simulate_image(cfg, 512, seed).image
        assert fringe_score(img, 0.02152) <= 100
        kinds.append((classify(img, 0.02152)[0], classify(img, None)[0], classify(img, 0.5)[0]))
    assert kinds == [("hrtem", "standard", "standard")] * 3


def test_fringe_score_ignores_contrast_and_noise_level():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((256, 256))
    assert fringe_score(noise) < 20 and fringe_score(100 + 50 * noise) < 20
    yy, xx = np.mgrid[:256, :256]
    fringes = noise + 0.5 * np.sin(2 * np.pi * (xx * 0.8 + yy * 0.6) / 6.0)  # a 6 px lattice
    assert fringe_score(fringes) > 100


# ------------------------------------------------------------------------ masks
def test_typical_area_is_not_moved_by_many_specks():
    m = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[:200, :200]
    for cy, cx in [(40, 40), (40, 140), (140, 60), (150, 150)]:
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < 20**2
    area = typical_area_px(m)
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, 200, (60, 2)):
        m[y, x] = True  # 60 single-pixel specks
    assert typical_area_px(m) == pytest.approx(area, rel=0.05)
    assert typical_diameter_px(m) == pytest.approx(40, rel=0.05)


def test_postprocessing_drops_specks_fills_holes_and_says_what_it_did():
    prob = np.zeros((200, 200), np.float32)
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 30**2
    prob[disc] = 0.9
    prob[(yy - 100) ** 2 + (xx - 100) ** 2 < 5**2] = 0.1  # a hole in the particle
    prob[10:13, 10:13] = 0.9  # a speck of 9 px
    mask, info = PostProcessing(smooth_px=0).apply(prob)
    assert mask[100, 100] == 1 and mask[11, 11] == 0
    assert info["min_area_px"] >= 10 and info["filled_holes_up_to_px"] > 0
    raw, _ = PostProcessing(smooth_px=0, fill_holes=False, min_area=0).apply(prob)
    assert raw[100, 100] == 0 and raw[11, 11] == 1
    labels, _ = measure_particles(raw, None, min_area_px=1, pinhole_px=0)
    assert np.array_equal(labels > 0, raw > 0)  # without hole filling the labels keep the hole
    # min_area in nm^2 with a pixel size: 9 px at 0.5 nm/px is 2.25 nm^2
    kept, _ = PostProcessing(smooth_px=0, min_area=2.0).apply(prob, pixel_size_nm=0.5)
    assert kept[11, 11] == 1


# ------------------------------------------------------------------------ outputs
@pytest.fixture
def tiny_bundle(tmp_path):
    from temtool.model.bundle import write_bundle

    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=2, pool=2, filters=2)
    return write_bundle(tmp_path / "m", build_resunet(arch), arch, pixel_size_nm=0.5)


def test_labels_tif_has_the_ids_of_the_particle_table_and_tta_writes_uncertainty(
    run_cli, tiny_bundle, tmp_path
):
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 128, 0)
    write_tiff(tmp_path / "a.tif", sim.image, 0.5)
    out = tmp_path / "o"
    code, stdout, err = run_cli(
        "segment", tmp_path / "a.tif", "--model", tiny_bundle, "--out", out, "--tta", "--threshold", 0.3,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)["results"][0]
    assert res["postprocessing"]["threshold"] == 0.3
    labels = tifffile.imread(out / "a_labels.tif")
    assert labels.dtype == np.uint16
    rows = (out / "a_particles.csv").read_text().splitlines()[1:]
    ids = sorted(int(r.split(",")[0]) for r in rows)
    assert ids == sorted(set(np.unique(labels).tolist()) - {0})
    mask = np.asarray(read_mask(out / "a_mask.png"))
    assert np.array_equal(labels > 0, mask > 0)
    spread = tifffile.imread(out / "a_uncertainty.tif")
    assert spread.shape == (128, 128) and spread.min() >= 0 and spread.max() > 0
    assert res["particles"] == len(ids)


def test_spread_is_the_standard_deviation_of_the_tta_members(tiny_bundle):
    from temtool.image.dihedral import dihedral
    from temtool.inference.segmenter import Segmenter

    seg = Segmenter.from_bundle(tiny_bundle, tta=True)
    img = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    mean, sd = seg.predict_whole(img)
    plain = Segmenter.from_bundle(tiny_bundle)
    members = [
        dihedral(plain.predict_whole(dihedral(img, k, axes=(-2, -1))), k, axes=(-2, -1), inverse=True)
        for k in range(8)
    ]
    assert np.abs(mean - np.mean(members, 0)).max() < 1e-4
    assert np.abs(sd - np.std(members, 0)).max() < 1e-4


# ------------------------------------------------------------------------ scale
def test_scale_is_estimated_from_the_particles_when_the_pixel_size_is_unknown(tiny_bundle):
    """A model trained over a range of particle sizes in px is matched by the particles: a
    first pass finds them, their typical size sets the resampling (Cellpose's size model)."""
    from temtool.inference.segmenter import Segmenter

    class Disc:  # a stand-in network that returns the dark pixels: the mask itself
        def predict_on_batch(self, x):
            p = (x[..., 0] < -0.5).astype(np.float32)
            return np.stack([1 - p, p], -1) * 20 - 10

    arch = Architecture.create(depth=2, pool=2, filters=2)
    seg = Segmenter(Disc(), arch, 23, diameter_range_px=(10.0, 40.0))
    yy, xx = np.mgrid[:512, :512]
    img = np.ones((512, 512), np.float32)
    for cy, cx in [(128, 128), (128, 384), (384, 128), (384, 384)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 50**2] = 0  # 100 px particles
    r = seg.probability(img)
    assert r.scale == pytest.approx(20 / 100, rel=0.1)  # to the middle of the range: sqrt(10*40)
    found = re.match(r"particles ~(\d+) px across: resampled x([0-9.]+)", r.notes[0])
    assert found and abs(int(found[1]) - 100) <= 10 and float(found[2]) == pytest.approx(r.scale, rel=0.01)
    assert r.prob.shape == img.shape
    _, rows = measure_particles(r.prob > 0.5, None)
    assert len(rows) == 4
    small = img[::4, ::4]  # 25 px particles: already in range, no resampling
    assert seg.probability(small).scale == 1.0


# ------------------------------------------------------------------------ the shipped model
def test_shipped_model_on_held_out_real_micrographs(run_cli, tmp_path):
    """The default `temtool segment` (no options) on real micrographs it never saw: Dice and
    particle counts against the hand-drawn masks."""
    out = tmp_path / "o"
    code, stdout, err = run_cli("segment", HELD_OUT / "images", "--out", out, "--json")
    assert code == 0, err
    res = {Path(r["file"]).stem: r for r in json.loads(stdout)["results"]}
    dice, count_err = [], []
    for name, _img, truth in _held_out():
        assert "standard" in res[name]["model_choice"]
        mask = np.asarray(read_mask(out / f"{name}_mask.png")) > 0
        t = truth > 0
        dice.append(2 * (mask & t).sum() / (mask.sum() + t.sum()))
        n_true = len(measure_particles(truth, None, min_area_px=1)[1])
        count_err.append(abs(res[name]["particles"] - n_true) / n_true)
    # measured 0.973 and 3% (benchmarks/RESULTS.md); Gaussian + Otsu tuned on the training
    # micrographs reaches 0.989 on these four: the network does not beat it here yet
    assert np.mean(dice) > 0.95, dice
    assert np.mean(count_err) < 0.10, count_err


def test_shipped_model_on_crowded_fields_of_large_overlapping_particles():
    """The study's standard-TEM sampling (20 nm Au at 0.12 nm/px: particles of about 167 px,
    here the two most crowded test fields, 69-71% particle, stacked three and four deep), no
    pixel size given: the scale look resamples them and the model must still find the single
    particles beside the darker stacks. The model trained without jammed fields reached 0.780
    and 0.788 on these two (it took the single particles for background); the one trained with
    them 0.936 and 0.960, 0.965 and 0.957 with the 16 px canvas border (RESULTS.md: 11 such
    fields, 0.972 +- 0.013 against Otsu's 0.969)."""
    from temtool.inference.choice import ModelChooser

    chooser, post, dice = ModelChooser(), PostProcessing(), []
    for seed in (3, 10):
        sim = simulate_image(config_for("standard", pixel_size_nm=0.12), 1024, seed=seed)
        seg = chooser(None, sim.image)
        assert seg.name.endswith("standard")
        pred, _ = post.apply(seg.probability(sim.image).prob)
        t = sim.mask > 0
        assert t.mean() > 0.65
        dice.append(2 * (pred.astype(bool) & t).sum() / (pred.astype(bool).sum() + t.sum()))
    assert np.mean(dice) > 0.92, dice
