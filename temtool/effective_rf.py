"""Effective receptive field (Luo et al. 2016): where a trained network actually looks.

The gradient of the centre pixel's particle-vs-background logit with respect to the input,
in absolute value, averaged over images. Its radius holding 95% of the gradient mass is
reported. Keras 3 has no backend-neutral gradient call, so this one analysis dispatches to the
active backend's autodiff (TensorFlow, JAX or PyTorch); the model itself is unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

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


def effective_rf_for_bundle(
    model_path, data: str | None = None, n_images: int = 16, png: str | Path | None = None
) -> dict:
    """Effective RF of a bundle over images of ``data`` (val, else test split; resampled to
    the bundle's pixel size when the dataset's differs by more than 10%), or of white noise
    when no data are given. Writes the map as a PNG beside the bundle."""
    from temtool.bundle import load_bundle
    from temtool.data.dataset import load_dataset
    from temtool.data.io import atomic_write
    from temtool.segment import pixel_size_scale, resample

    bundle = load_bundle(model_path)
    arch, px = bundle.arch, bundle.pixel_size_nm
    if data:
        ds = load_dataset(data)
        split = "val" if ds.splits.get("val") else "test" if ds.splits.get("test") else "train"
        stems = ds.splits[split][:n_images]
        images = [ds.images[s] for s in stems]
        note = ""
        scale = pixel_size_scale(ds.pixel_size_nm, px)
        if scale != 1.0:
            images = [resample(im, (round(im.shape[0] * scale), round(im.shape[1] * scale))) for im in images]
            note = f", resampled x{scale:.3g} to {px:g} nm/px"
        h = min(im.shape[0] for im in images)
        w = min(im.shape[1] for im in images)
        x = np.stack([im[:h, :w] for im in images])[..., None]
        source = f"{ds.path} ({split}, {len(x)} images{note})"
    else:
        size = max(128, arch.pool_product * 2)
        size = -(-size // arch.pool_product) * arch.pool_product
        x = np.random.default_rng(0).standard_normal((n_images, size, size, 1)).astype(np.float32)
        source = f"white noise ({n_images} images)"
    gmap, radius = effective_rf(bundle.model, x, arch.pool_product)
    png = Path(png) if png else bundle.path / "effective_rf.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(gmap, cmap="inferno")
    ax.add_patch(plt.Circle((gmap.shape[1] // 2, gmap.shape[0] // 2), radius, fill=False, color="c"))
    ax.set_title(f"effective RF: 95% within r = {radius:.0f} px")
    fig.colorbar(im, ax=ax, shrink=0.8)
    try:
        atomic_write(png, lambda p: fig.savefig(p, dpi=80, format="png"))
    finally:
        plt.close(fig)
    return {
        "radius95_px": radius,
        "radius95_nm": radius * px if px else None,
        "images": source,
        "png": str(png),
    }
