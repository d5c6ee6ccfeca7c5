"""The evaluation protocol: test split over seeds with a 95% interval, baselines tuned on
validation, Dice per particle class."""

import json

import numpy as np
import pytest

from temtool.study import protocol


def test_seed_summary_mean_sd_and_t_interval():
    from scipy.stats import t

    s = protocol.seed_summary([0.70, 0.75, 0.72])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.72333, abs=1e-4)
    sd = np.std([0.70, 0.75, 0.72], ddof=1)
    assert s["sd"] == pytest.approx(sd)
    half = t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert s["ci95"] == pytest.approx([s["mean"] - half, s["mean"] + half])
    one = protocol.seed_summary([0.8])
    assert one["sd"] == 0 and one["ci95"] is None
    assert protocol.seed_summary([])["mean"] is None


def test_class_dice_ignores_the_other_classes_particles():
    truth = np.zeros((10, 10), np.uint8)
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:3, :3] = True  # 9 px
    b[6:, 6:] = True  # 16 px
    truth[a | b] = 1
    pred = a.copy()
    pred[0, 9] = True  # one false positive on the background
    d = protocol.class_dice([truth], [pred], [{"fringed": a, "off_zone": b}])
    assert d["fringed"] == pytest.approx(2 * 9 / (9 + 10))
    assert d["off_zone"] == pytest.approx(0.0)
    # predicting class b's pixels does not hurt class a (they are ignored for a)
    d2 = protocol.class_dice([truth], [a | b], [{"fringed": a, "off_zone": b}])
    assert d2 == {"fringed": 1.0, "off_zone": 1.0}


@pytest.fixture(scope="module")
def hrtem_data(tmp_path_factory):
    from temtool.data.dataset import write_simulated_dataset

    d = tmp_path_factory.mktemp("hr") / "hr"
    write_simulated_dataset(
        d,
        regime="hrtem",
        n=16,
        size=96,
        seed=2,
        overrides={"pixel_size_nm": 0.03, "diameter_nm": 1.8, "particles_per_256px2": (6.0, 10.0)},
        split=(0.5, 0.25, 0.25),
    )
    return d


def test_baselines_are_tuned_on_val_and_scored_on_test_with_classes(hrtem_data):
    from temtool.data.dataset import load_dataset
    from temtool.inference.classical import otsu_segment
    from temtool.study.baselines import best_otsu_sigma

    ds = load_dataset(hrtem_data)
    b = protocol.baselines(ds, "test")
    val = ds.splits["val"]
    sigma = best_otsu_sigma([ds.images[s] for s in val], [ds.masks[s] for s in val])
    assert b["otsu"]["sigma_px"] == sigma and b["otsu"]["chosen_on"] == "val"
    assert b["otsu"]["sigma_nm"] == pytest.approx(sigma * 0.03)
    test = ds.splits["test"]
    expected = np.mean([protocol.hard_dice(ds.masks[s], otsu_segment(ds.images[s], sigma)) for s in test])
    assert b["otsu"]["dice"] == pytest.approx(expected)
    assert "fourier" in b and b["fourier"]["smooth_nm"] in protocol.FOURIER_SMOOTH_NM
    classes = protocol.particle_classes(ds, test)
    assert classes is not None
    for stem in test:  # the class maps partition the mask
        union = np.zeros_like(ds.masks[stem], bool)
        for region in classes[stem].values():
            assert not (union & region).any()
            union |= region
        assert np.array_equal(union, ds.masks[stem] > 0)
    assert set(b["otsu"]["dice_by_class"]) <= {"fringed", "weak_fringe", "off_zone"}


def test_standard_tem_has_no_classes_and_no_fourier(small_data):
    from temtool.data.dataset import load_dataset

    ds = load_dataset(small_data)
    b = protocol.baselines(ds, "test")
    assert "fourier" not in b and "dice_by_class" not in b["otsu"]


def test_bundle_reports_test_dice_over_seeds_beside_the_baselines(hrtem_data, tmp_path):
    from temtool.data.dataset import load_dataset
    from temtool.inference.segmenter import Segmenter
    from temtool.model.architecture import Architecture
    from temtool.model.bundle import load_bundle
    from temtool.study.train import TrainConfig, train_and_save

    arch = Architecture.create(depth=2, pool="2,2", filters=4)
    meta, runs = train_and_save(
        arch, str(hrtem_data), TrainConfig(epochs=2, lr=3e-3, batch_size=4), tmp_path / "m", repeats=2
    )
    m = json.loads((tmp_path / "m" / "bundle.json").read_text())["metrics"]
    per_seed = [r["test_hard_dice"] for r in m["repeats"]]
    assert m["test_hard_dice"]["n"] == 2
    assert m["test_hard_dice"]["mean"] == pytest.approx(np.mean(per_seed))
    from scipy.stats import t

    half = t.ppf(0.975, 1) * np.std(per_seed, ddof=1) / np.sqrt(2)  # Student's t, 2 seeds
    assert m["test_hard_dice"]["ci95"] == pytest.approx([np.mean(per_seed) - half, np.mean(per_seed) + half])
    assert set(m["baselines"]) == {"otsu", "fourier"} and "per_image_scores" not in m["baselines"]["otsu"]
    # each test image's Dice (mean over seeds) and the baseline's: what the paired intervals compare
    test_stems = sorted(load_dataset(hrtem_data).splits["test"])
    assert sorted(m["test_dice_per_image"]) == sorted(m["baselines"]["otsu"]["per_image"]) == test_stems
    assert np.mean(list(m["test_dice_per_image"].values())) == pytest.approx(m["test_hard_dice"]["mean"])
    # the kept seed's test Dice is that of the saved model on the test split, through the
    # segmenter that `segment` and `evaluate` use
    ds = load_dataset(hrtem_data)
    seg = Segmenter.from_bundle(load_bundle(tmp_path / "m"), runtime="keras")
    again = protocol.model_scores(seg, ds, "test")
    assert m["test_hard_dice_kept"] == pytest.approx(again["dice"], abs=1e-6)
    assert set(m.get("test_dice_by_class", {})) <= {"fringed", "weak_fringe", "off_zone"}


def test_evaluate_and_train_show_test_dice_beside_both_baselines(hrtem_data, tmp_path, run_cli):
    code, out, err = run_cli(
        "train", "--data", hrtem_data, "--epochs", 1, "--batch", 4, "--filters", 4, "--out", tmp_path / "m"
    )
    assert code == 0, err
    assert "Test split, beside the tuned baselines" in out
    assert "Gaussian + Otsu (sigma" in out and "Fourier filter" in out
    code, out, err = run_cli("evaluate", tmp_path / "m", "--data", hrtem_data, "--json")
    assert code == 0, err
    res = json.loads(out)
    from temtool.data.dataset import load_dataset

    assert res["fourier"]["dice"] == pytest.approx(
        protocol.baselines(load_dataset(hrtem_data))["fourier"]["dice"]
    )
    assert res["fourier"]["chosen_on"] == "val"
    diff = [r["model"]["dice"] - r["otsu"]["dice"] for r in res["per_image"]]
    assert res["model_minus_otsu"]["dice"]["mean"] == pytest.approx(np.mean(diff))
    assert set(res["dice_by_class"]) == {"model", "otsu", "fourier"}
    assert set(res["dice_by_class"]["model"]) <= {"fringed", "weak_fringe", "off_zone"}
    code, out, err = run_cli("evaluate", tmp_path / "m", "--data", hrtem_data)
    assert code == 0, err
    assert "per particle class" in out and "Fourier filter" in out


def test_paired_difference_resamples_images_and_says_which_side():
    a = {f"i{k}": 0.8 + 0.01 * k for k in range(10)}
    shift = protocol.paired_difference(a, {k: v - 0.05 for k, v in a.items()})
    assert shift["mean"] == pytest.approx(0.05) and shift["ci95"] == pytest.approx([0.05, 0.05])
    assert shift["verdict"] == "above" and shift["n_images"] == 10
    noise = {k: v + (0.1 if i % 2 else -0.1) for i, (k, v) in enumerate(a.items())}
    d = protocol.paired_difference(a, noise)
    assert d["mean"] == pytest.approx(0.0, abs=1e-12) and d["verdict"] == "level"
    assert d["ci95"][0] < -0.02 and d["ci95"][1] > 0.02
    assert protocol.paired_difference(a, {k: v + 0.2 for k, v in a.items()})["verdict"] == "below"
    assert protocol.paired_difference({"x": 1.0}, {"x": 0.0}) is None  # one image: no interval


def test_the_test_split_never_chooses(small_data, tmp_path):
    """The same training on a copy of the data whose test masks are inverted (validation and
    test now disagree completely): the chosen epochs, the kept seed, the ranking of the seeds
    and the baseline's sigma are the same; only the test scores move."""
    import shutil

    from PIL import Image

    from temtool.data.dataset import load_dataset
    from temtool.model.architecture import Architecture
    from temtool.study.train import TrainConfig, metrics_from_runs, train

    flipped = tmp_path / "flipped"
    shutil.copytree(small_data, flipped)
    ds = load_dataset(small_data)
    for stem in ds.splits["test"]:
        f = next((flipped / "masks").glob(f"{stem}.*"))
        m = np.asarray(Image.open(f))
        Image.fromarray((m.max() - m).astype(m.dtype)).save(f)
    arch = Architecture.create(depth=2, pool="2,2", filters=4)
    cfg = TrainConfig(epochs=3, lr=3e-3, batch_size=4)
    out = {}
    for name, data in (("as is", small_data), ("flipped", flipped)):
        best, runs, d = train(arch, str(data), cfg, repeats=2)
        m = metrics_from_runs(best, runs)
        out[name] = {
            "epochs": [r["best_epoch"] for r in m["repeats"]],
            "kept": best.seed,
            "val": [r["val_hard_dice"] for r in m["repeats"]],
            "sigma": protocol.baselines(d, "test")["otsu"]["sigma_px"],
            "test": m["test_hard_dice"]["mean"],
        }
    a, b = out["as is"], out["flipped"]
    assert (a["epochs"], a["kept"], a["sigma"]) == (b["epochs"], b["kept"], b["sigma"])
    assert a["val"] == pytest.approx(b["val"])
    assert abs(a["test"] - b["test"]) > 0.2  # the test split itself did change
