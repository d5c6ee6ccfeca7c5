"""The compiled model stage of the Keras runtime: tiles, network, class probability, TTA
mean and spread, and the blending of tiles, all on the backend's device (``keras.ops``).

This is inference's one seam to Keras: every function here imports it when called, so
``temtool segment`` on ONNX Runtime (the CPU default) never loads it. Nothing else under
:mod:`temtool.inference` imports Keras (import-linter holds this in CI)."""

from __future__ import annotations

import numpy as np

from temtool.image.dihedral import dihedral_ops, tta_members
from temtool.inference.tiling import TileGeometry, tile_plan

__all__ = ["CompiledForward", "is_keras_model", "predict_tiled_on_device"]


def is_keras_model(model) -> bool:
    """Whether ``model`` is a Keras model (imports Keras: call it only on the Keras runtime)."""
    import keras

    return isinstance(model, keras.Model)


class CompiledForward:
    """The model stage of :class:`temtool.inference.segmenter.Segmenter` for the Keras runtime, compiled
    once per tile shape: a batch of standardised tiles goes to the backend's device once; the
    TTA transforms, the network, the class probability (sigmoid of the logit difference) and
    the TTA mean and spread all run there; only the probabilities come back (one or two
    channels, not eight sets of logits). Uses ``keras.ops`` inside; compiled by ``jax.jit`` of
    the stateless call on JAX (the GPU machine: tiles and results stay on the device), and by
    Keras itself (``predict_on_batch`` of a model wrapping the same graph) on the other
    backends, behind this one adapter.

    Call it with ``(N, h, w)`` float32 tiles; returns ``(N, h, w)`` or, with several
    channels (TTA spread, an instance-aware network's boundary), ``(N, C, h, w)`` in the
    order of ``Segmenter.channels``, as ``Segmenter.forward`` does.
    """

    def __init__(self, model, tta: bool = False):
        import keras

        self.model, self.tta = model, tta
        self.backend = keras.backend.backend()
        self._fn = self._compile()

    def _probability(self, x, run):
        """keras.ops graph: tiles ``(N, h, w)`` -> mean (and spread) of the members."""
        from keras import ops

        x = ops.expand_dims(x, -1)
        total = square = boundary = None
        members = tta_members(self.tta)
        for k in members:
            logits = ops.cast(run(dihedral_ops(x, k)), "float32")
            if logits.shape[-1] == 3:  # instance-aware: particle = 1 - P(background), and the boundary
                soft = ops.softmax(logits, axis=-1)
                pb = dihedral_ops(
                    ops.concatenate([1.0 - soft[..., 0:1], soft[..., 2:3]], -1), k, inverse=True
                )
                p, b = pb[..., 0], pb[..., 1]
                boundary = b if boundary is None else boundary + b
            else:
                p = ops.sigmoid(ops.clip(logits[..., 1:2] - logits[..., 0:1], -80.0, 80.0))
                p = dihedral_ops(p, k, inverse=True)[..., 0]
            total = p if total is None else total + p
            square = p * p if square is None else square + p * p
        mean = total / len(members)
        channels = [mean]
        if self.tta:
            channels.append(ops.sqrt(ops.maximum(square / len(members) - mean * mean, 0.0)))
        if boundary is not None:
            channels.append(boundary / len(members))
        return channels[0] if len(channels) == 1 else ops.stack(channels, axis=1)

    def _compile(self):
        model = self.model
        if self.backend == "jax":
            import jax

            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]

            def fn(tv, ntv, x):
                return self._probability(x, lambda t: model.stateless_call(tv, ntv, t, training=False)[0])

            jitted = jax.jit(fn)
            return lambda x: jitted(trainable, non_trainable, x)
        # other backends: Keras compiles the same graph itself (predict_on_batch: a traced
        # function on TensorFlow, no autograd on PyTorch); no backend module imported here
        import keras

        tiles = keras.Input((None, None), name="tiles")
        stage = keras.Model(tiles, self._probability(tiles, lambda t: model(t, training=False)))
        return lambda x: keras.ops.convert_to_tensor(stage.predict_on_batch(x))

    def on_device(self, tiles):
        """A batch of tiles already on the device -> probabilities left on the device."""
        return self._fn(tiles)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import keras

        out = self._fn(keras.ops.convert_to_tensor(np.ascontiguousarray(tiles, np.float32)))
        return np.asarray(keras.ops.convert_to_numpy(out), np.float32)


def predict_tiled_on_device(
    forward, image: np.ndarray, geometry: TileGeometry, batch_size: int = 4
) -> tuple[np.ndarray, dict]:
    """:func:`predict_tiled` with the canvas, the tiles, the weighting and the blended sum on
    the Keras backend's device (``keras.ops``): the image goes there once, the blended
    probabilities come back once. ``forward`` maps a device batch of tiles to a device batch
    of probabilities (:meth:`temtool.inference.compiled.CompiledForward.on_device`)."""
    from keras import ops

    canvas, (ty, tx), batches, wy, wx, norm, info = tile_plan(image, geometry, batch_size)
    canvas = ops.convert_to_tensor(canvas)
    acc = None
    for chunk in batches:
        probs = forward(ops.stack([ops.slice(canvas, (y, x), (ty, tx)) for y, x in chunk]))
        if acc is None:
            acc = ops.zeros((*probs.shape[1:-2], *canvas.shape), "float32")
        lead = (0,) * (len(acc.shape) - 2)
        for j, (y, x) in enumerate(chunk):
            w2 = ops.outer(ops.convert_to_tensor(wy[y]), ops.convert_to_tensor(wx[x]))
            start = (*lead, y, x)
            here = ops.slice(acc, start, tuple(probs.shape[1:]))
            acc = ops.slice_update(acc, start, here + probs[j] * w2)
    out = ops.convert_to_numpy(acc / ops.convert_to_tensor(np.outer(*norm)))
    return geometry.crop(np.asarray(out, np.float32), image.shape), info
