"""The ONNX inference runtime: the graph computes what the Keras model computes, bundles keep
it only when it matches their model.keras, and `temtool segment` runs without Keras."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from temtool.data.io import read_mask, write_tiff
from temtool.data.simulate import config_for, simulate_image
from temtool.errors import TemtoolError
from temtool.inference.segmenter import Segmenter
from temtool.model.architecture import Architecture, build_resunet
from temtool.model.bundle import add_onnx, load_bundle, write_bundle
from temtool.model.onnx_graph import OnnxModel, export_onnx
from tests.helpers import ROOT


def _trained_like(arch: Architecture) -> keras.Model:
    """A model with non-trivial batch-norm statistics (as after training), so that folding
    them into the convolutions is really tested."""
    keras.utils.set_random_seed(1)
    model = build_resunet(arch)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.2, 3, var.shape),
                ]
            )
    return model


@pytest.mark.parametrize(
    "depth, pool, filters, kernel",
    [
        pytest.param(2, "2,4", 4, 3, marks=pytest.mark.jax),
        (3, "2,2,2", 2, 5),
        (1, "4", 3, 1),
        (2, "3,2", 2, 3),
    ],
)
def test_onnx_graph_computes_the_keras_model(tmp_path, depth, pool, filters, kernel):
    arch = Architecture.create(depth=depth, pool=pool, filters=filters, kernel_size=kernel)
    model = _trained_like(arch)
    diff = export_onnx(model, arch, tmp_path / "m.onnx")
    assert diff is not None and diff < 1e-3
    p = arch.pool_product
    x = np.random.default_rng(2).standard_normal((3, 5 * p, 7 * p, 1)).astype(np.float32)  # not square
    want = keras.ops.convert_to_numpy(model(x, training=False))
    got = OnnxModel(tmp_path / "m.onnx").predict_on_batch(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_segmentation_is_the_same_on_both_runtimes(tmp_path):
    arch = Architecture.create(depth=2, pool="2,2", filters=4)
    bundle = write_bundle(tmp_path / "m", _trained_like(arch), arch, pixel_size_nm=0.5)
    assert (bundle / "model.onnx").is_file() and load_bundle(bundle).metadata["onnx"]["max_logit_diff"] < 1e-3
    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 200, 3).image
    onnx = Segmenter.from_bundle(bundle, runtime="auto", max_tile_px=128, tta=True)
    ref = Segmenter.from_bundle(bundle, runtime="keras", max_tile_px=128, tta=True)
    assert (onnx.runtime, ref.runtime) == ("onnx", "keras")
    a, b = onnx.probability(img, 0.5), ref.probability(img, 0.5)
    assert a.tiling["tiles"] > 1
    assert np.abs(a.prob - b.prob).max() < 1e-4
    assert np.abs(a.spread - b.spread).max() < 1e-3  # a sqrt of a variance: rounding grows near 0


def test_a_trained_bundle_runs_on_the_keras_runtime(tmp_path):
    """A model that was compiled (as after `temtool train`) is saved without its optimizer;
    the copy must keep one input and one output tensor (a one-element list of outputs broke
    the Keras runtime's probability stage)."""
    arch = Architecture.create(depth=1, pool="2", filters=2)
    model = _trained_like(arch)
    model.compile(optimizer="adam", loss="mse")
    bundle = write_bundle(tmp_path / "m", model, arch, pixel_size_nm=0.5)
    saved = load_bundle(bundle).model
    assert not isinstance(saved.output, list)
    img = simulate_image(config_for("standard", pixel_size_nm=0.5), 96, 3).image
    ref = Segmenter.from_bundle(bundle, runtime="keras", tta=True).probability(img, 0.5)
    onnx = Segmenter.from_bundle(bundle, runtime="onnx", tta=True).probability(img, 0.5)
    assert np.abs(ref.prob - onnx.prob).max() < 1e-4


def test_a_graph_that_does_not_belong_to_model_keras_is_not_used(tmp_path):
    arch = Architecture.create(depth=1, pool="2", filters=2)
    bundle = write_bundle(tmp_path / "m", _trained_like(arch), arch, pixel_size_nm=0.5)
    other = write_bundle(tmp_path / "o", build_resunet(arch), arch, pixel_size_nm=0.5)
    (bundle / "model.keras").write_bytes((other / "model.keras").read_bytes())  # retrained in place
    b = load_bundle(bundle)
    assert b.inference_model("auto")[1] == "keras"
    with pytest.raises(TemtoolError, match="another model.keras"):
        b.inference_model("onnx")
    assert add_onnx(bundle) is not None  # repaired: a graph of the model that is there now
    assert load_bundle(bundle).inference_model("auto")[1] == "onnx"
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_graph_the_bundle_does_not_record_is_never_run(tmp_path):
    """The bundle records its graph's hash: a model.onnx from another training of the same
    architecture, a truncated one, one named outside the bundle, or one recorded without a
    hash is not run; `auto` falls back to model.keras (and says why), `onnx` refuses in one
    line."""
    import json

    arch = Architecture.create(depth=1, pool="2", filters=2)
    bundle = write_bundle(tmp_path / "m", _trained_like(arch), arch, pixel_size_nm=0.5)
    other = write_bundle(tmp_path / "o", build_resunet(arch), arch, pixel_size_nm=0.5)
    assert load_bundle(bundle).inference_model("auto")[1] == "onnx"
    graph, meta_file = bundle / "model.onnx", bundle / "bundle.json"
    own, meta = graph.read_bytes(), json.loads(meta_file.read_text())

    def refused(why):
        b = load_bundle(bundle)
        assert why in b.onnx_problem()
        assert b.inference_model("auto")[1] == "keras"
        with pytest.raises(TemtoolError, match="cannot run with ONNX Runtime"):
            b.inference_model("onnx")

    graph.write_bytes((other / "model.onnx").read_bytes())  # another training's graph
    refused("not the graph bundle.json records")
    graph.write_bytes(own[: len(own) // 2])  # truncated
    refused("replaced or truncated")
    graph.write_bytes(own)
    meta_file.write_text(json.dumps({**meta, "onnx": {**meta["onnx"], "file": "/etc/passwd"}}))
    refused("names the graph '/etc/passwd'")
    legacy = {k: v for k, v in meta["onnx"].items() if k != "sha256"}
    meta_file.write_text(json.dumps({**meta, "onnx": legacy}))
    refused("records no hash")
    assert add_onnx(bundle) is not None  # gives the bundle a graph it records
    assert load_bundle(bundle).inference_model("auto")[1] == "onnx"


def test_shipped_bundles_carry_a_checked_graph():
    for name in ("standard", "hrtem"):
        b = load_bundle(ROOT / "temtool" / "pretrained" / name)
        model, runtime = b.inference_model("auto")
        assert runtime == "onnx", name
        x = np.random.default_rng(0).standard_normal((1, 64, 64, 1)).astype(np.float32)
        want = keras.ops.convert_to_numpy(b.model(x, training=False))
        assert np.abs(model.predict_on_batch(x) - want).max() < 1e-3
        # the Keras runtime (the default where a GPU is visible) runs it too
        img = np.random.default_rng(1).standard_normal((96, 96)).astype(np.float32)
        ref = Segmenter.from_bundle(b.path, runtime="keras").probability(img, normalised=True).prob
        got = Segmenter.from_bundle(b.path, runtime="onnx").probability(img, normalised=True).prob
        assert np.abs(ref - got).max() < 1e-4, name


def test_segment_from_the_prompt_never_imports_keras(tmp_path):
    """With the shipped model, `temtool segment` runs on ONNX Runtime: Keras and its backend
    (seconds of start-up) are not imported at all; the mask equals the Keras runtime's."""
    sim = simulate_image(config_for("standard", pixel_size_nm=0.5), 160, 5)
    write_tiff(tmp_path / "a.tif", sim.image, 0.5)
    # the console script's own path (temtool.cli:run); report what it imported
    probe = (
        "import sys\n"
        "from temtool.cli import run\n"
        "sys.argv = ['temtool'] + sys.argv[1:]\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as e:\n"
        "    code = e.code or 0\n"
        "print('KERAS_IMPORTED' if 'keras' in sys.modules else 'NO_KERAS', code, flush=True)\n"
    )
    env = dict(os.environ, TEMTOOL_CACHE=str(tmp_path / "cache"))  # no last-trained model
    outs = {}
    for runtime in ("auto", "keras"):
        cmd = [sys.executable, "-c", probe, "segment", str(tmp_path / "a.tif")]
        cmd += ["--out", str(tmp_path / runtime)]
        r = subprocess.run([*cmd, "--runtime", runtime, "--json"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[runtime] = r.stdout.strip().splitlines()[-1]
        summary = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
        assert summary["results"][0]["runtime"] == ("onnx" if runtime == "auto" else "keras"), r.stderr
    assert outs == {"auto": "NO_KERAS 0", "keras": "KERAS_IMPORTED 0"}
    a, b = (read_mask(tmp_path / rt / "a_mask.png") for rt in ("auto", "keras"))
    assert a.sum() > 0 and (a != b).mean() < 1e-3


def test_unknown_runtime_is_a_clear_error(run_cli, tmp_path):
    code, _, err = run_cli("segment", tmp_path / "x.tif", "--runtime", "tflite")
    assert code == 2 and "--runtime" in err and "Traceback" not in err


def test_jax_keeps_its_compiled_programs_in_temtools_cache(tmp_path):
    pytest.importorskip("jax")
    code = (
        "from temtool.backend import start_backend; start_backend()\n"
        "import jax, keras; x = keras.ops.ones((4, 4)); jax.jit(lambda a: a @ a + 1)(x).block_until_ready()\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TEMTOOL_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "jax")
    off = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "TEMTOOL_JAX_CACHE": "0"}
    )
    assert off.stdout.strip().splitlines()[-1] != str(tmp_path / "jax")


def test_auto_keeps_keras_where_a_gpu_is_visible(monkeypatch):
    """ONNX Runtime here is the CPU build: with a GPU the Keras backend runs the network."""
    import temtool.model.bundle
    import temtool.model.onnx_graph

    b = load_bundle(ROOT / "temtool" / "pretrained" / "standard")
    monkeypatch.setattr(temtool.model.bundle, "gpu_visible", lambda: True)
    assert b.inference_model("auto")[1] == "keras"
    assert b.inference_model("onnx")[1] == "onnx"  # asked for explicitly
    monkeypatch.undo()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert temtool.model.onnx_graph.gpu_visible() is False


@pytest.mark.jax
@pytest.mark.parametrize("tta", [False, True])
def test_compiled_forward_equals_the_host_computation(tta):
    """The Keras runtime's compiled model stage (transforms, network, probability, TTA mean and
    spread on the device) gives what the host loop over predict_on_batch gives."""
    from temtool.image.dihedral import dihedral
    from temtool.inference.compiled import CompiledForward

    arch = Architecture.create(depth=2, pool="2,2", filters=4)
    model = _trained_like(arch)
    tiles = np.random.default_rng(4).standard_normal((2, 32, 32)).astype(np.float32)
    got = CompiledForward(model, tta=tta)(tiles)
    ps = []
    for k in range(8) if tta else (0,):
        logits = keras.ops.convert_to_numpy(
            model(dihedral(tiles, k, axes=(-2, -1))[..., None], training=False)
        )
        ps.append(
            dihedral(1 / (1 + np.exp(-(logits[..., 1] - logits[..., 0]))), k, axes=(-2, -1), inverse=True)
        )
    want = np.mean(ps, 0) if not tta else np.stack([np.mean(ps, 0), np.std(ps, 0)], axis=1)
    assert got.shape == want.shape
    if tta:  # the spread is a sqrt of a variance: float32 rounding grows near 0
        assert np.abs(got[:, 0] - want[:, 0]).max() < 1e-4 and np.abs(got[:, 1] - want[:, 1]).max() < 2e-3
    else:
        assert np.abs(got - want).max() < 1e-4
