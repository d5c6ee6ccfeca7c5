"""The polarity of a micrograph is decided per image: bright-field stays as it is, the same
micrograph inverted (HAADF-like) is inverted back, the network can veto a bright call, and the
rules in the code are the ones the committed fit wrote."""

import json

import numpy as np
import pytest

from temtool.data.simulate import config_for, simulate_image
from temtool.inference import polarity
from temtool.inference.polarity import decide_polarity, invert, polarity_features, rule_decision
from tests.helpers import ROOT

FIT = ROOT / "benchmarks" / "results" / "polarity.json"


@pytest.fixture(scope="module")
def bright_field():
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 256, seed=3)
    return sim.image, sim.mask


def test_the_rules_in_the_code_are_the_committed_fit():
    fit = json.loads(FIT.read_text())
    for name, in_code in (("image_rule", polarity.IMAGE_RULE), ("full_rule", polarity.FULL_RULE)):
        assert fit[name] == {"weights": list(in_code["weights"]), "bias": in_code["bias"]}, name
    assert fit["features"] == list(polarity.FEATURES)
    assert fit["out_of_fold_accuracy"]["procedure"] > 0.85  # what the docs quote, from the file


def test_the_cues_change_sign_with_the_contrast(bright_field):
    img, _ = bright_field
    f, g = polarity_features(img), polarity_features(invert(img))
    assert f["border"] > 0.1  # a bright border: dark particles
    assert g["border"] == pytest.approx(-f["border"], abs=0.02)
    assert g["solidity"] == pytest.approx(-f["solidity"], abs=0.05)


def test_a_bright_field_micrograph_and_its_inversion_are_told_apart(bright_field):
    img, mask = bright_field
    assert decide_polarity(img).polarity == "dark"
    assert decide_polarity(invert(img)).polarity == "bright"

    def oracle_network(x):  # finds the true particles only the right way round
        return mask.astype(np.float32) if np.mean(x[mask > 0]) < np.mean(x[mask == 0]) else 1.0 - mask

    d = decide_polarity(invert(img), network=oracle_network)
    assert d.polarity == "bright" and d.rule == "full" and "network" in d.features
    sure = decide_polarity(img, network=oracle_network)
    assert sure.polarity == "dark" and sure.rule == "image" and "network" not in sure.features


def test_the_network_vetoes_a_bright_call():
    cues = {"border": -0.3, "solidity": -0.1, "network": polarity.NETWORK_MARGIN + 0.1}
    full = {"weights": (10.0, 10.0, 0.0), "bias": 0.0}
    image = {"weights": (10.0, 10.0), "bias": 0.0}
    assert (
        rule_decision(cues, image, full).polarity == "dark"
    )  # the network finds compact particles as recorded
    assert rule_decision({**cues, "network": -0.1}, image, full).polarity == "bright"
    sure = {"border": 1.0, "solidity": 1.0, "network": -1.0}
    d = rule_decision(sure, image, full)
    assert d.polarity == "dark" and d.rule == "image"  # sure of dark: the network is not asked


def test_segment_decides_the_polarity_without_options(run_cli, tmp_path, bright_field):
    """The HAADF-like inversion of a micrograph segments, without --polarity, to the mask of
    the original; --polarity dark is obeyed as given and recorded as an option."""
    from PIL import Image

    from temtool.data.io import read_mask

    img, truth = bright_field
    lo, hi = np.percentile(img, [0.1, 99.9])
    grey = np.clip((img - lo) / (hi - lo) * 255, 0, 255).round().astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "bf.png")
    Image.fromarray(255 - grey).save(tmp_path / "haadf.png")
    code, out, err = run_cli(
        "segment", tmp_path / "bf.png", tmp_path / "haadf.png", "--out", tmp_path / "o", "--json"
    )
    assert code == 0, err
    bf, haadf = json.loads(out)["results"]
    assert bf["polarity"]["value"] == "dark" and bf["polarity"]["source"].startswith("decided")
    assert haadf["polarity"]["value"] == "bright" and any("contrast inverted" in n for n in haadf["notes"])
    dark = read_mask(tmp_path / "o" / "bf_mask.png")
    assert 2 * (dark & truth).sum() / (dark.sum() + truth.sum()) > 0.8
    assert np.array_equal(read_mask(tmp_path / "o" / "haadf_mask.png"), dark)
    code, out, _ = run_cli(
        "segment", tmp_path / "haadf.png", "--out", tmp_path / "p", "--json", "--polarity", "dark"
    )
    r = json.loads(out)["results"][0]
    assert code == 0 and r["polarity"] == {"value": "dark", "source": "option", "p_dark": None}
    assert (read_mask(tmp_path / "p" / "haadf_mask.png") & dark).sum() < 0.2 * dark.sum()
