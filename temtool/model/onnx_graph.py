"""A light inference runtime for bundles: the trained ResUNet as an ONNX graph run by ONNX
Runtime, so that ``temtool segment`` starts without importing Keras and its backend (most of a
CPU command's start-up; ``benchmarks/startup.py`` measures it).

The graph is written from the one architecture description (:class:`temtool.model.architecture.Architecture`)
and the Keras model's weights, with each batch normalisation folded into the convolution before
it (inference statistics); :func:`export_onnx` checks the graph against the Keras model on a
probe image before a bundle keeps it. :class:`OnnxModel` has the one method the
:class:`temtool.inference.segmenter.Segmenter` uses, ``predict_on_batch``: ``(N, H, W, 1)`` images to
``(N, H, W, n_classes)`` float32 logits, as the Keras model.

Training, tuning and every other command use Keras; only inference has this second path, and it
is chosen only when a bundle carries a checked ``model.onnx`` (``--runtime keras`` forces Keras).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from temtool.model.architecture import Architecture, build_resunet

__all__ = [
    "RUNTIMES",
    "ONNX_FILE",
    "export_onnx",
    "onnx_available",
    "gpu_visible",
    "OnnxModel",
    "probability_graph",
]

RUNTIMES = ("auto", "onnx", "keras")
ARCH_KEY = "temtool_architecture"
ONNX_FILE = "model.onnx"
OPSET = 17
CHECK_TOLERANCE = 1e-3  # largest logit difference accepted between the graph and the Keras model


def onnx_available() -> bool:
    """Whether ONNX Runtime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU is visible to this process, without importing a backend: then
    ``auto`` keeps Keras (its backend runs on the GPU; ONNX Runtime here is the CPU build)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or any(Path("/dev").glob("nvidia[0-9]*"))


# ----------------------------------------------------------------------------- export
class _Graph:
    """A small builder over :mod:`onnx.helper` that names nodes and keeps the weights."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, layer, name: str, bn=None) -> str:
        """A Keras Conv2D ("same" padding, stride 1), its batch normalisation folded in."""
        kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
        if bn is not None:
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel, bias = kernel * scale, (bias - mean) * scale + beta
        kh, kw = kernel.shape[:2]
        pads = [
            (kh - 1) // 2,
            (kw - 1) // 2,
            kh - 1 - (kh - 1) // 2,
            kw - 1 - (kw - 1) // 2,
        ]  # as Keras "same"
        w = self.const(f"{name}_W", kernel.transpose(3, 2, 0, 1).astype(np.float32))
        b = self.const(f"{name}_B", bias.astype(np.float32))
        return self.node("Conv", [x, w, b], name, kernel_shape=[kh, kw], pads=pads)

    def block(self, model, x: str, name: str) -> str:
        """The residual block of :func:`temtool.model.architecture._residual_block`."""
        skip = self.conv(x, model.get_layer(f"{name}_skip"), f"{name}_skip")
        y = self.conv(x, model.get_layer(f"{name}_conv1"), f"{name}_c1", model.get_layer(f"{name}_bn1"))
        y = self.node("Relu", [y], f"{name}_r1")
        y = self.conv(y, model.get_layer(f"{name}_conv2"), f"{name}_c2", model.get_layer(f"{name}_bn2"))
        y = self.node("Add", [y, skip], f"{name}_add")
        return self.node("Relu", [y], f"{name}_out")


def _build_graph(model, arch: Architecture):
    from onnx import TensorProto, helper

    g = _Graph()
    x = g.node("Transpose", ["image"], "to_nchw", perm=[0, 3, 1, 2])
    skips = []
    for level in range(arch.depth):
        x = g.block(model, x, f"enc{level}")
        skips.append(x)
        p = arch.pools[level]
        x = g.node("MaxPool", [x], f"pool{level}", kernel_shape=[p, p], strides=[p, p])
    x = g.block(model, x, "bottleneck")
    for level in reversed(range(arch.depth)):
        p = arch.pools[level]
        scales = g.const(f"up{level}_scales", np.array([1, 1, p, p], np.float32))
        x = g.node(
            "Resize",
            [x, "", scales],
            f"up{level}",
            mode="nearest",
            nearest_mode="floor",
            coordinate_transformation_mode="asymmetric",
        )
        x = g.node("Concat", [x, skips[level]], f"concat{level}", axis=1)
        x = g.block(model, x, f"dec{level}")
    x = g.conv(x, model.get_layer("logits"), "logits_nchw")
    g.node("Transpose", [x], "logits", perm=[0, 2, 3, 1])
    graph = helper.make_graph(
        g.nodes,
        "temtool_resunet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", "h", "w", 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", "h", "w", arch.n_classes])],
        initializer=g.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    helper.set_model_props(onnx_model, {ARCH_KEY: json.dumps(arch.to_dict())})  # the graph says what it is
    onnx_model.ir_version = min(onnx_model.ir_version, 8)  # readable by older ONNX Runtimes
    return onnx_model


def export_onnx(model, arch: Architecture, path: str | os.PathLike, check_px: int = 64) -> float | None:
    """Write ``model`` (a Keras ResUNet of architecture ``arch``) as an ONNX graph at ``path``
    and return the largest logit difference from Keras on a random ``check_px`` square image.
    Writes nothing and returns None when ``onnx``/``onnxruntime`` are missing or the graph
    disagrees with the model by more than :data:`CHECK_TOLERANCE`."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    if not onnx_available():
        return None
    proto = _build_graph(model, arch)
    data = proto.SerializeToString()
    size = max(check_px, arch.pool_product) // arch.pool_product * arch.pool_product
    x = np.random.default_rng(0).standard_normal((2, size, size, 1)).astype(np.float32)
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:  # the graph computes in float32: check it against a float32 copy (mixed-precision models)
        reference_model = build_resunet(arch)
        reference_model.set_weights(model.get_weights())
    finally:
        keras.config.set_dtype_policy(previous)
    reference = keras.ops.convert_to_numpy(reference_model(x, training=False)).astype(np.float32)
    diff = float(np.abs(OnnxModel(data).predict_on_batch(x) - reference).max())
    if not diff <= CHECK_TOLERANCE:
        return None
    Path(path).write_bytes(data)
    return diff


def probability_graph(path: str | os.PathLike) -> bytes:
    """The bundle graph at ``path`` with its output turned from class logits into the particle
    probability: the softmax over the classes, its particle channel kept, as ``probability``
    ``(N, H, W, 1)``. This is what :meth:`temtool.inference.segmenter.Segmenter.forward`
    computes from the logits (the sigmoid of their difference), for programs that run the graph
    alone (the BioImage.IO package, :mod:`temtool.inference.zoo`)."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    graph = proto.graph
    logits = graph.output[0].name
    graph.node.append(helper.make_node("Softmax", [logits], ["class_probability"], axis=-1, name="softmax"))
    for name, value in (("particle_start", 1), ("particle_end", 2), ("channel_axis", 3)):
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([value], np.int64), name))
    graph.node.append(
        helper.make_node(
            "Slice",
            ["class_probability", "particle_start", "particle_end", "channel_axis"],
            ["probability"],
            name="particle",
        )
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["n", "h", "w", 1]))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


# -------------------------------------------------------------------------- inference
class OnnxModel:
    """An ONNX Runtime session with the Keras model's inference call."""

    def __init__(self, source: str | os.PathLike | bytes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # no memory pattern: it allocates (and faults in) a second arena on a shape's second
        # call, which made that call as slow as the first; warm calls are as fast without it
        opts.enable_mem_pattern = False
        # the worker threads stop spinning when a call returns: spinning on, they take a core
        # from the post-processing that follows; between the operators of one call they spin
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        src = source if isinstance(source, bytes) else str(source)
        self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])

    @property
    def architecture(self) -> Architecture | None:
        """The architecture the graph was written from (stored in the graph), or None."""
        text = self.session.get_modelmeta().custom_metadata_map.get(ARCH_KEY)
        return Architecture.from_dict(json.loads(text)) if text else None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"image": np.ascontiguousarray(x, np.float32)})[0]
