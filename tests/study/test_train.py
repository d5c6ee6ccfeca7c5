import json

import keras
import numpy as np
import pytest

from temtool.image.dihedral import dihedral
from temtool.model.architecture import Architecture, build_resunet
from temtool.study.train import DihedralFeeder, resolve_precision


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A 64x64 built-in dataset generated into a private cache."""
    import temtool.data.dataset as dsm

    monkeypatch.setenv("TEMTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        dsm.BUILTIN,
        "tiny",
        {
            **dsm.BUILTIN["standard"],
            "n": 20,
            "size": 64,
            "overrides": {"pixel_size_nm": 0.5, "particles_per_256px2": (16.0, 24.0), "diameter_nm": 10.0},
        },
    )
    return "sim:tiny"


def test_dihedral_group_is_complete_and_consistent():
    x = np.arange(16.0).reshape(4, 4)
    outs = {dihedral(x, k).tobytes() for k in range(8)}
    assert len(outs) == 8
    batch = np.stack([x, x])[..., None]
    for k in range(8):
        assert np.array_equal(dihedral(batch, k)[0, ..., 0], dihedral(x, k))


def test_feeder_transforms_image_and_mask_together():
    rng = np.random.default_rng(0)
    y = (rng.random((10, 16, 16)) > 0.7).astype("uint8")
    x = (y * 2.0 - 1.0 + 0.01 * np.arange(16)[None, :, None]).astype("float32")[..., None]
    f = DihedralFeeder(x, y, batch_size=4, seed=1)
    variants = {dihedral(xi, k).tobytes(): k for xi in x for k in range(8)}
    seen, ks = set(), set()
    assert len(f) == 3
    for _ in range(4):  # epochs
        for i in range(len(f)):
            xb, yb = f[i]
            assert np.array_equal(xb[..., 0] > 0, yb.astype(bool))
            for xi in xb:
                assert xi.tobytes() in variants  # a dihedral transform of a training image
                ks.add(variants[xi.tobytes()])
                seen.add(xi.tobytes())
        f.on_epoch_end()
    assert len(seen) > len(x)  # images come back transformed differently across epochs
    assert len(ks) >= 6  # and the transforms are drawn from the whole group


def test_auto_precision_follows_the_device(monkeypatch):
    """float32 without a GPU; bfloat16 from compute capability 8.0, float16 before; an explicit
    choice is kept. The device is replaced, so the test means the same on any host."""
    import temtool.study.train as train_mod

    for gpu, expected in (
        (None, "float32"),
        ({"name": "V100", "compute_capability": "7.0"}, "mixed_float16"),
        ({"name": "H100", "compute_capability": "9.0"}, "mixed_bfloat16"),
    ):
        monkeypatch.setattr(train_mod, "gpu_info", lambda gpu=gpu: gpu)
        assert resolve_precision("auto") == expected
        assert resolve_precision("float32") == "float32"


def test_train_evaluate_rf_end_to_end(run_cli, tiny_data, tmp_path):
    out = tmp_path / "m"
    code, stdout, err = run_cli(
        "train", "--data", tiny_data, "--epochs", 2, "--batch", 8, "--lr", 3e-3, "--repeats", 2, "--out", out
    )
    assert code == 0, err
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["architecture"]["pools"] == [2, 2] and meta["rf_px"] == 44
    assert meta["rf_nm"] == pytest.approx(22.0)
    assert meta["pixel_size_nm"] == pytest.approx(0.5)
    assert meta["normalisation"] == "per_image_standardize"
    assert meta["backend"] == keras.backend.backend() and meta["keras_version"]
    assert meta["training"]["precision_used"] == "float32"
    assert [r["seed"] for r in meta["metrics"]["repeats"]] == [0, 1]
    assert meta["params"] == 8234
    hist = (out / "history.csv").read_text().splitlines()
    assert hist[0].startswith("epoch") and len(hist) == 3
    code, stdout, err = run_cli("evaluate", out, "--data", tiny_data, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["n_images"] == 4 and len(res["per_image"]) == 4
    for who in ("model", "otsu"):
        per_image = [r[who]["dice"] for r in res["per_image"]]
        assert res["mean"][who]["dice"] == pytest.approx(np.mean(per_image))
    # the baseline's Dice, recomputed here from the mask and the baseline itself
    from temtool.data.dataset import load_dataset
    from temtool.inference.classical import otsu_segment

    ds = load_dataset(tiny_data)
    stem = res["per_image"][0]["image"]
    assert res["otsu_sigma_chosen_on"] == "val"
    sigma = res["otsu_sigma_px"]
    truth, pred = ds.masks[stem].astype(bool), otsu_segment(ds.images[stem], sigma).astype(bool)
    dice = (2 * (truth & pred).sum() + 1) / (truth.sum() + pred.sum() + 1)  # Dice with smoothing 1
    assert res["per_image"][0]["otsu"]["dice"] == pytest.approx(dice, abs=1e-6)
    assert res["mean"]["otsu"]["dice"] > 0.8  # the classical baseline works on standard TEM
    # object scores against the simulator's instances/, the baseline through segment's post-processing
    from temtool.study.protocol import instance_truth, object_scores

    truth_labels = instance_truth(ds, stem)
    assert truth_labels is not None and truth_labels.max() >= 1
    assert res["per_image"][0]["otsu_objects"] == object_scores(
        truth_labels, pred.astype(np.float32), ds.pixel_size_nm
    )
    f1 = [r["otsu_objects"]["f1"] for r in res["per_image"]]
    assert res["objects"]["otsu"]["f1"] == pytest.approx(np.mean(f1)) and res["objects"]["otsu"]["f1"] > 0.3
    assert set(res["objects"]["model"]) >= {"precision", "recall", "f1", "ap", "median_abs_count_error"}
    code, stdout, err = run_cli("rf", "--model", out, "--json")
    assert code == 0 and json.loads(stdout)["rf_px"] == 44


def test_bad_bundle_is_a_clear_error(run_cli, tmp_path):
    code, _, err = run_cli("evaluate", tmp_path / "nothing")
    assert code == 2 and "no such model bundle" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bundle.json").write_text("{not json")
    (bad / "model.keras").write_text("junk")
    code, _, err = run_cli("rf", "--model", bad)
    assert code == 2 and "corrupt" in err and "Traceback" not in err
    (bad / "bundle.json").write_text(
        json.dumps({"format": "temtool-bundle/1", "architecture": Architecture().to_dict()})
    )
    code, _, err = run_cli("evaluate", bad)
    assert code == 2 and "missing 'rf_px'" in err
    meta = {
        "format": "temtool-bundle/1",
        "architecture": Architecture().to_dict(),
        "rf_px": 44,
        "normalisation": "per_image_standardize",
    }
    (bad / "bundle.json").write_text(json.dumps(meta))
    code, _, err = run_cli("evaluate", bad)
    assert code == 2 and "cannot load the model" in err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pixel_size_nm": "abc"}, "'pixel_size_nm' must be a positive number"),
        ({"pixel_size_nm": -1}, "'pixel_size_nm' must be a positive number"),
        ({"rf_px": "44"}, "'rf_px' must be an integer"),
        ({"architecture": [2, 2]}, "'architecture' must be an object"),
        (
            {"architecture": {"depth": "2", "pools": [2, 2], "filters": [4, 8, 16]}},
            "depth must be an integer",
        ),
        ({"normalisation": "none"}, "'normalisation' must be one of"),
    ],
)
def test_bundle_json_is_validated(tmp_path, change, message):
    from temtool.errors import TemtoolError
    from temtool.model.bundle import load_bundle, write_bundle

    arch = Architecture.create(depth=2, pool=2, filters=2)
    path = write_bundle(tmp_path / "m", build_resunet(arch), arch, pixel_size_nm=0.5)
    meta = json.loads((path / "bundle.json").read_text())
    (path / "bundle.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(TemtoolError, match=message):
        load_bundle(path)


def test_bundle_whose_architecture_disagrees_with_its_model_is_refused(tmp_path, run_cli):
    from temtool.model.bundle import write_bundle

    arch = Architecture.create(depth=2, pool=2, filters=2)
    path = write_bundle(tmp_path / "m", build_resunet(arch), arch, pixel_size_nm=0.5)
    meta = json.loads((path / "bundle.json").read_text())
    meta["architecture"]["pools"] = [4, 4]  # the tiling would use the wrong pool grid
    (path / "bundle.json").write_text(json.dumps(meta))
    img = tmp_path / "i.npy"
    np.save(img, np.random.default_rng(0).standard_normal((64, 64)).astype("float32"))
    for runtime, graph in (("auto", "model.onnx"), ("keras", "model.keras")):  # each reads its own file
        code, _, err = run_cli("segment", img, "--model", path, "--out", tmp_path / "o", "--runtime", runtime)
        assert code == 2 and "describes d2 p4,4" in err and f"{graph} is d2 p2,2" in err
        assert "Traceback" not in err


@pytest.mark.jax
def test_effective_rf_stays_inside_the_exact_field():
    from temtool.model.effective_rf import effective_rf
    from temtool.model.receptive_field import exact_rf_px

    keras.utils.set_random_seed(0)
    arch = Architecture.create(depth=2, pool="2,2", filters=2)
    model = build_resunet(arch)
    x = np.random.default_rng(0).standard_normal((2, 96, 96, 1)).astype("float32")
    gmap, radius = effective_rf(model, x, arch.pool_product)
    half = exact_rf_px(arch) // 2 + 1
    c = 48
    outside = gmap.copy()
    outside[c - half : c + half + 1, c - half : c + half + 1] = 0
    assert gmap.sum() > 0 and outside.max() == 0
    assert 0 < radius <= half * np.sqrt(2)


@pytest.mark.jax
def test_mixed_bfloat16_trains_and_returns_float32_logits(tiny_data, tmp_path):
    from temtool.data.dataset import load_dataset
    from temtool.study.train import TrainConfig, fit

    ds = load_dataset(tiny_data)
    r = fit(
        Architecture.create(depth=2, pool=2, filters=2),
        ds,
        TrainConfig(epochs=1, batch_size=8, precision="mixed_bfloat16"),
    )
    assert r.precision == "mixed_bfloat16"
    assert r.model.get_layer("enc0_conv1").compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(r.model.outputs[0].dtype) == "float32"
    assert np.isfinite(r.history["loss"]).all()
    from temtool.model.bundle import load_bundle, write_bundle

    bundle = write_bundle(tmp_path / "mixed-bundle", r.model, r.arch, pixel_size_nm=0.5)
    b = load_bundle(bundle)
    assert b.metadata["onnx"] is not None  # the float32 graph of a mixed-precision model
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 1)).astype(np.float32)
    got = b.inference_model("onnx")[0].predict_on_batch(x)
    want = keras.ops.convert_to_numpy(b.model([x], training=False))  # bfloat16 inside; [x]: its input list
    assert np.abs(got - want).max() < 0.1 * max(1.0, np.abs(want).max())


@pytest.mark.jax
def test_ctrl_c_during_fit_stops_at_a_batch_boundary(tiny_data):
    """SIGINT during fit only sets a flag; the next batch boundary raises KeyboardInterrupt
    from Python (never from inside a compiled step), and the old handler comes back."""
    import os
    import signal

    from temtool.data.dataset import load_dataset
    from temtool.study.train import TrainConfig, fit

    batches, models = [], []

    class SendCtrlC(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            batches.append(batch)
            models.append(self.model)
            if len(batches) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # arrives before the step runs

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        fit(
            Architecture.create(depth=2, pool=2, filters=2),
            load_dataset(tiny_data),
            TrainConfig(epochs=5, batch_size=2, augment=False),
            extra_callbacks=[SendCtrlC()],
        )
    assert len(batches) == 2  # stopped right after the batch during which Ctrl-C came...
    assert int(models[0].optimizer.iterations.numpy()) == 2  # ...which ran to its end
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.jax
@pytest.mark.parametrize("shape", [(16, 16), (16, 24)])
def test_device_augmentation_is_the_dihedral_group_inside_the_step(shape):
    """For each image the network sees one dihedral transform of it (one of 8, or of the 4
    that keep a non-square shape) and its logits come back in the original orientation: the
    wrapper's training output equals the host computation for the drawn members."""
    from temtool.image.dihedral import dihedral
    from temtool.study.train import DeviceDihedral

    arch = Architecture.create(depth=1, pool=2, filters=2)
    keras.utils.set_random_seed(0)
    net = build_resunet(arch)
    wrapper = DeviceDihedral(net, square=shape[0] == shape[1], seed=3)
    x = np.random.default_rng(0).standard_normal((12, *shape, 1)).astype(np.float32)
    seen = {}

    class Spy(keras.layers.Layer):  # records what the network was given
        def call(self, t):
            seen["x"] = t
            return t

    spy = Spy()
    original_net = wrapper.net
    wrapper.net = lambda t, training=False: original_net(spy(t), training=False)  # BN in inference mode
    out = keras.ops.convert_to_numpy(wrapper(x, training=True))
    given = keras.ops.convert_to_numpy(seen["x"])
    members = []
    for i in range(len(x)):
        match = [k for k in wrapper.members if np.array_equal(dihedral(x[i : i + 1], k), given[i : i + 1])]
        assert match, f"image {i} was not given a dihedral transform of itself"
        members.append(match[0])
        want = dihedral(
            keras.ops.convert_to_numpy(original_net(given[i : i + 1], training=False)), match[0], inverse=True
        )
        assert np.abs(out[i : i + 1] - want).max() < 1e-5
    assert len(set(members)) > 2  # really random per image
    assert (
        np.abs(keras.ops.convert_to_numpy(wrapper(x)) - keras.ops.convert_to_numpy(original_net(x))).max()
        == 0
    )


@pytest.mark.jax
def test_training_with_device_augmentation_learns_and_returns_the_bare_network(tiny_data):
    from temtool.data.dataset import load_dataset
    from temtool.study.train import TrainConfig, fit

    r = fit(
        Architecture.create(depth=2, pool=2, filters=4),
        load_dataset(tiny_data),
        TrainConfig(epochs=3, batch_size=4, lr=3e-3, augment_on="device"),
    )
    assert r.model.name == "resunet" and len(r.model.inputs) == 1  # what the bundle saves
    assert np.isfinite(r.history["loss"]).all() and r.history["loss"][-1] < r.history["loss"][0]


def test_an_instance_aware_network_trains_and_segment_parts_particles_at_its_boundaries(
    run_cli, tiny_data, tmp_path
):
    """``train --boundary``: a 3-class bundle trained from the simulator's instance maps; its
    boundary channel rises on the true boundaries of test images it never saw; ``segment``
    splits particles there and says so; ``evaluate`` scores it; a dataset read with binary
    targets is refused by ``fit``; ``--start-from`` keeps the starting architecture."""
    from temtool.data.dataset import load_dataset
    from temtool.errors import TemtoolError
    from temtool.image.labels import BOUNDARY, INTERIOR
    from temtool.inference.segmenter import Segmenter
    from temtool.study.train import TrainConfig, fit

    out = tmp_path / "m3"
    code, stdout, err = run_cli(
        "train", "--data", tiny_data, "--boundary", "--epochs", 12, "--batch", 4, "--lr", 3e-3, "--out", out
    )
    assert code == 0, err
    assert "object F1 (IoU 0.5" in stdout and "otsu: " in stdout  # the table's caption
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["architecture"]["n_classes"] == 3
    # object scores in the bundle, for the network and for Otsu with the same post-processing
    metrics = meta["metrics"]
    assert metrics["test_object_f1"]["n"] == 1
    assert metrics["test_object_f1"]["mean"] == metrics["test_objects_kept"]["f1"]
    assert 0.3 < metrics["baselines"]["otsu"]["objects"]["f1"] <= 1
    ds = load_dataset(tiny_data, targets="boundary")
    seg = Segmenter.from_bundle(out)
    on_boundary, inside = [], []
    for stem in ds.splits["test"]:
        b = seg.probability(ds.images[stem], ds.pixel_size_nm, normalised=True).boundary
        on_boundary.append(b[ds.boundary[stem] == BOUNDARY].mean())
        inside.append(b[ds.boundary[stem] == INTERIOR].mean())
    # a few epochs on 16 images: far from calibrated, but clearly on the boundaries (a swapped
    # or misread channel gives the particle probability, higher inside than on the outline)
    assert np.mean(on_boundary) > max(1e-3, 5 * np.mean(inside))

    image = next((ds.path / "images").glob(f"{ds.splits['test'][0]}.*"))
    code, stdout, err = run_cli("segment", image, "--model", out, "--out", tmp_path / "seg", "--json")
    assert code == 0, err
    assert json.loads(stdout)["results"][0]["postprocessing"]["instances"] == "network boundaries"
    code, stdout, err = run_cli("evaluate", out, "--data", tiny_data, "--json")
    assert code == 0, err
    assert set(json.loads(stdout)["objects"]["model"]) >= {"f1", "ap"}

    arch = Architecture.create(n_classes=3)
    with pytest.raises(TemtoolError, match="'mask' targets"):
        fit(arch, load_dataset(tiny_data), TrainConfig(epochs=1))
    code, _, err = run_cli("train", "--data", tiny_data, "--boundary", "--start-from", out, "--depth", 3)
    assert code == 2 and "--depth" in err
