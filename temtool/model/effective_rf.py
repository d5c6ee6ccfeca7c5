"""Effective receptive field (Luo et al. 2016): where a trained network actually looks.

The gradient of the centre pixel's particle-vs-background logit with respect to the input,
in absolute value, averaged over images. Its radius holding 95% of the gradient mass is
reported. Keras 3 has no backend-neutral gradient call, so this one analysis dispatches to the
active backend's autodiff (TensorFlow, JAX or PyTorch); the model itself is unchanged.
"""

from __future__ import annotations

import importlib

import keras
import numpy as np


def _centre_gradients(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """|d (logit_1 - logit_0)[centre] / d x| per image, ``(N, H, W)``."""
    n, h, w, _ = x.shape
    cy, cx = h // 2, w // 2
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")
        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = model(xt, training=False)
            score = tf.reduce_sum(y[:, cy, cx, 1] - y[:, cy, cx, 0])
        g = tape.gradient(score, xt).numpy()
    elif backend == "jax":
        jax = importlib.import_module("jax")

        def score(xx):
            y = model(xx, training=False)
            return (y[:, cy, cx, 1] - y[:, cy, cx, 0]).sum()

        g = np.asarray(jax.grad(score)(jax.numpy.asarray(x)))
    elif backend == "torch":
        torch = importlib.import_module("torch")
        xt = torch.tensor(x, requires_grad=True)
        y = model(xt, training=False)
        (y[:, cy, cx, 1] - y[:, cy, cx, 0]).sum().backward()
        g = xt.grad.detach().cpu().numpy()
    else:  # pragma: no cover
        raise RuntimeError(f"effective RF: unsupported backend {backend!r}")
    return np.abs(g[..., 0])


def effective_rf(
    model: keras.Model, images: np.ndarray, pool_product: int, mass: float = 0.95
) -> tuple[np.ndarray, float]:
    """Mean |gradient| map ``(H, W)`` and the radius (px) around the centre holding ``mass``."""
    h, w = images.shape[1:3]
    h, w = h // pool_product * pool_product, w // pool_product * pool_product
    x = np.ascontiguousarray(images[:, :h, :w].astype(np.float32))
    grads = np.concatenate([_centre_gradients(model, x[i : i + 4]) for i in range(0, len(x), 4)])
    gmap = grads.mean(axis=0)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h // 2, xx - w // 2).ravel()
    order = np.argsort(r)
    cum = np.cumsum(gmap.ravel()[order])
    total = cum[-1]
    if total <= 0:
        return gmap, 0.0
    radius = float(r[order][np.searchsorted(cum, mass * total)])
    return gmap, radius
