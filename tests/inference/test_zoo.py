"""`temtool export`: BioImage.IO packages that bioimageio.core validates and runs, and whose
output is what temtool computes."""

import json
import shutil
import zipfile

import numpy as np
import pytest

from temtool.data.simulate import config_for, simulate_image
from temtool.image.normalise import standardize
from temtool.inference.segmenter import Segmenter
from temtool.model.registry import shipped_models


@pytest.fixture(scope="module")
def shipped_packages(tmp_path_factory):
    """Both shipped models exported by the one command the docs show."""
    from temtool.cli.app import main

    out = tmp_path_factory.mktemp("zoo") / "packages"
    with pytest.raises(SystemExit) as e:
        main(["export", "standard", "hrtem", str(out), "--json"])
    assert e.value.code == 0
    return out


@pytest.mark.parametrize("name", ["standard", "hrtem"])
def test_shipped_package_passes_bioimageio_test(shipped_packages, name):
    from bioimageio.core import test_model

    package = shipped_packages / f"{name}.zip"
    summary = test_model(package)  # validation, then the test input through the ONNX weights
    assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        rdf = z.read("rdf.yaml").decode()
    assert {"rdf.yaml", "model.onnx", "test_input.npy", "test_output.npy", "cover.png", "README.md"} <= names
    assert "zero_mean_unit_variance" in rdf and "2204.04250" in rdf and "license: MIT" in rdf
    assert ("10.69761/HDTA8338" in rdf) == (name == "standard")  # the real micrographs it saw


def _package_prediction(package, image):
    """bioimageio.core's blockwise prediction of ``image`` (its own preprocessing, weights and
    halo), as zoo programs tile a micrograph."""
    from bioimageio.core import load_model_description, predict

    model = load_model_description(package)
    sample = predict(model=model, inputs={"image": image[None, :, :, None]}, blocksize_parameter=0)
    return np.asarray(sample.members["probability"].data)[0, :, :, 0]


@pytest.mark.parametrize("name", ["standard", "hrtem"])
def test_package_output_is_temtools_probability_on_a_new_micrograph(shipped_packages, name):
    """On a micrograph the package never saw (another seed, another size), the zoo's tiled
    prediction is what segment's tiled inference gives at the model's scale beyond the halo:
    probabilities after the same standardisation, not logits. Within the halo of the image's
    edge the two pad differently (bioimageio.core's padding, temtool's reflection)."""
    regime, size = (("hrtem", 240), ("standard", 264))[name == "standard"]
    px = 0.02152 if regime == "hrtem" else 0.5
    image = simulate_image(config_for(regime, pixel_size_nm=px), size=size, seed=7).image.astype(np.float32)
    got = _package_prediction(shipped_packages / f"{name}.zip", image)
    seg = Segmenter.from_bundle(shipped_models()[name], runtime="onnx")
    tiled = seg.predict(standardize(image))  # what segment computes at the model's scale
    assert got.shape == image.shape
    assert 0 <= got.min() and got.max() <= 1
    h = seg.reach_px
    assert np.abs(got[h:-h, h:-h] - tiled[h:-h, h:-h]).max() < 1e-3
    assert np.abs(got - tiled).max() > 1e-3  # the edges: padding differs
    assert (got[h:-h, h:-h] > 0.5).any() and (got[h:-h, h:-h] < 0.5).any()  # particles and background


def test_a_trained_bundle_exports_as_a_folder(small_bundle, tmp_path, run_cli):
    out = tmp_path / "pkg"
    code, stdout, err = run_cli("export", small_bundle, out, "--json")
    assert code == 0, err
    res = json.loads(stdout)["packages"][0]
    assert res["status"] == "passed" and res["package"] == str(out)
    from bioimageio.core import test_model

    assert test_model(out / "rdf.yaml").status == "passed"


def test_a_bundle_without_an_onnx_graph_is_refused_and_nothing_written(small_bundle, tmp_path, run_cli):
    (small_bundle / "model.onnx").unlink()
    out = tmp_path / "pkg.zip"
    code, stdout, err = run_cli("export", small_bundle, out)
    assert code == 2 and "Traceback" not in err
    assert str(small_bundle) in err and "model.onnx" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_several_bundles_write_nothing_when_one_cannot_be_exported(small_bundle, tmp_path, run_cli):
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    (broken / "model.onnx").unlink()
    out = tmp_path / "packages"
    code, _, err = run_cli("export", small_bundle, broken, out)
    assert code == 2 and str(broken) in err
    assert not out.exists()


def test_an_existing_package_is_kept_without_overwrite(small_bundle, tmp_path, run_cli):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, err = run_cli("export", small_bundle, out)
    assert code == 2 and "--overwrite" in err and "OUT" in err
    assert (out / "mine.txt").read_text() == "keep"
    code, _, err = run_cli("export", small_bundle, out, "--overwrite")
    assert code == 0, err
    assert (out / "rdf.yaml").is_file() and not (out / "mine.txt").exists()
