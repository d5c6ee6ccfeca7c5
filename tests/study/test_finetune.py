"""``temtool train --start-from``: fine-tuning a shipped model or a bundle."""

import json
import shutil

import numpy as np
import pytest

from temtool.data.dataset import Dataset
from temtool.inference.measure import typical_diameter_px
from temtool.model.bundle import load_bundle
from temtool.model.registry import shipped_models


def _bundle(path):
    return json.loads((path / "bundle.json").read_text())


def test_fine_tuning_reports_before_and_after_as_evaluate_measures_them(run_cli, small_data, tmp_path):
    out = tmp_path / "ft"
    code, stdout, err = run_cli(
        "train", "--data", small_data, "--start-from", "standard", "--epochs", 2, "--out", out, "--json"
    )
    assert code == 0, err
    meta = json.loads(stdout)
    standard = _bundle(shipped_models()["standard"])
    assert meta["architecture"] == standard["architecture"]  # the starting model's, not the CLI default
    assert meta["particle_diameter_px"] == standard["particle_diameter_px"]  # its scale convention
    assert meta["training"]["lr"] == 5e-5 and meta["training"]["patience"] == 10  # the small-data schedule
    ft = meta["finetune"]
    assert ft["start_from"] == "standard" and ft["scale"] == 1.0  # 20 px particles: inside its range
    # "before" is what evaluate measures for the shipped model; "after" what it measures for the bundle
    for model, key in ((shipped_models()["standard"], "before"), (out, "after")):
        code, stdout, err = run_cli("evaluate", model, "--data", small_data, "--json")
        assert code == 0, err
        res = json.loads(stdout)
        assert ft[key]["dice"] == pytest.approx(res["mean"]["model"]["dice"], abs=2e-3)
        assert ft[key]["otsu_dice"] == pytest.approx(res["mean"]["otsu"]["dice"])
        assert ft[key]["object_f1"] == pytest.approx(res["objects"]["model"]["f1"], abs=0.02)
    assert ft["after_minus_before"]["dice"]["n_images"] == len(res["per_image"])
    # the rendered table says the same
    code, table, err = run_cli(
        "train", "--data", small_data, "--start-from", out, "--epochs", 1, "--out", tmp_path / "ft2"
    )
    assert code == 0, err
    assert "Fine-tuned from" in table and "after - before, dice" in " ".join(table.split())


def test_boundary_output_added_to_a_fine_tuned_two_class_model(run_cli, small_data, tmp_path):
    """``--start-from standard --boundary``: the fine-tuned bundle is instance-aware, says that it
    added the output, and segment parts its particles along the network's boundaries."""
    out = tmp_path / "ft-boundary"
    code, stdout, err = run_cli(
        "train", "--data", small_data, "--start-from", "standard", "--boundary", "--epochs", 1,
        "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads(stdout)
    assert meta["architecture"]["n_classes"] == 3
    assert meta["finetune"]["boundary_added"] is True
    image = next((small_data / "images").iterdir())
    code, stdout, err = run_cli("segment", image, "--model", out, "--out", tmp_path / "seg", "--json")
    assert code == 0, err
    assert json.loads(stdout)["results"][0]["postprocessing"]["instances"] == "network boundaries"


def test_the_starting_weights_are_kept_when_no_epoch_beats_them_on_val(run_cli, small_data, tmp_path):
    """A learning rate that wrecks the network: no epoch beats epoch 0, so the bundle holds the
    starting weights and scores exactly as the starting model."""
    out = tmp_path / "wrecked"
    code, stdout, err = run_cli(
        "train",
        "--data",
        small_data,
        "--start-from",
        "standard",
        "--lr",
        50,
        "--epochs",
        2,
        "--out",
        out,
        "--json",
    )
    assert code == 0, err
    meta = json.loads(stdout)
    assert meta["metrics"]["best_epoch"] == 0
    start = load_bundle(shipped_models()["standard"]).model.get_weights()
    tuned = load_bundle(out).model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(start, tuned, strict=True))
    assert meta["finetune"]["after"]["dice"] == pytest.approx(meta["finetune"]["before"]["dice"], abs=1e-6)


def test_particles_outside_the_models_range_are_brought_into_it():
    from temtool.study.finetune import _rescaled, finetune_scale

    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros((64, 64), np.uint8)
    for cy, cx in ((10, 10), (30, 40), (50, 20)):
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 4] = 1  # discs ~4 px across
    stems = ["a", "b", "c"]
    ds = Dataset(
        path=None,
        pixel_size_nm=1.0,
        regime=None,
        splits={"train": stems[:2], "val": stems[2:], "test": stems[2:]},
        images={s: mask.astype(np.float32) for s in stems},
        masks={s: mask.copy() for s in stems},
    )
    standard = load_bundle(shipped_models()["standard"])
    factor, note = finetune_scale(standard, ds)
    assert factor > 2 and "resampled" in note
    scaled = _rescaled(ds, factor, standard.arch.pool_product)
    lo, hi = standard.diameter_range_px
    assert lo <= typical_diameter_px(scaled.masks["a"]) <= hi
    assert scaled.masks["c"].shape[0] % standard.arch.pool_product == 0
    assert scaled.pixel_size_nm == pytest.approx(1.0 / factor)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "neither a shipped model"),
        ("no_keras", "expected model.keras"),
        ("architecture", "leave out --depth"),
        ("no_val", "needs a val split"),
    ],
)
def test_what_cannot_be_fine_tuned_is_one_line_and_writes_nothing(
    run_cli, small_data, tmp_path, case, message
):
    start = "standard"
    data = small_data
    extra = []
    if case == "missing":
        start = tmp_path / "nothing-here"
    elif case == "no_keras":
        start = tmp_path / "copy"
        shutil.copytree(shipped_models()["standard"], start)
        (start / "model.keras").unlink()
    elif case == "architecture":
        extra = ["--depth", 3]
    elif case == "no_val":
        data = tmp_path / "noval"
        shutil.copytree(small_data, data)
        meta = json.loads((data / "dataset.json").read_text())
        meta["splits"]["train"] += meta["splits"].pop("val")
        (data / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    code, _, err = run_cli(
        "train", "--data", data, "--start-from", start, "--epochs", 1, "--out", out, *extra
    )
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
