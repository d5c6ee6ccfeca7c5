"""What ``temtool rf`` reports: the receptive fields of an architecture or a trained bundle
(study convention, exact, effective), parameter counts, and pool sequences that cover a size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temtool.data.dataset import load_dataset
from temtool.data.io import atomic_write
from temtool.errors import ParameterError, check_positive
from temtool.image.resample import pixel_size_scale, resample
from temtool.model.architecture import Architecture, count_params, count_trainable_params
from temtool.model.bundle import load_bundle
from temtool.model.effective_rf import effective_rf
from temtool.model.receptive_field import (
    exact_reach_px,
    exact_rf_px,
    rf_breakdown,
    rf_recommendation,
    theoretical_rf_px,
)


def effective_rf_for_bundle(
    model_path, data: str | None = None, n_images: int = 16, png: str | Path | None = None
) -> dict:
    """Effective RF of a bundle over images of ``data`` (val, else test split; resampled to
    the bundle's pixel size when the dataset's differs by more than 10%), or of white noise
    when no data are given. Writes the map as a PNG beside the bundle."""

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


def rf_report(
    arch: Architecture | None = None,
    model: str | None = None,
    pixel_size_nm: float | None = None,
    exact: bool = False,
    effective: bool = False,
    data: str | None = None,
    cover_nm: float | None = None,
    breakdown: bool = False,
) -> dict:
    """Everything ``temtool rf`` reports, as a dict: of ``arch``, or of the bundle ``model``
    (its architecture and, unless ``pixel_size_nm`` is given, its pixel size).

    ``exact`` adds the probe's worst-case field and one-sided reach; ``effective`` (needs
    ``model``) the gradient field over ``data``; ``cover_nm`` the pool sequences of this depth
    whose field covers that many nm; ``breakdown`` the layer-by-layer walk.
    """

    check_positive("pixel_size_nm", pixel_size_nm)
    if model is not None:
        bundle = load_bundle(model)
        arch = bundle.arch
        pixel_size_nm = pixel_size_nm or bundle.pixel_size_nm
    elif effective:
        raise ParameterError("effective", "needs model (a trained bundle)")
    if arch is None:
        raise ParameterError("arch", "give an architecture or a model bundle")
    px = pixel_size_nm
    rf = theoretical_rf_px(arch)
    result: dict = {
        "architecture": arch.to_dict(),
        "params": count_params(arch),
        "trainable_params": count_trainable_params(arch),
        "pixel_size_nm": px,
        "rf_px": rf,
        "rf_nm": round(rf * px, 4) if px else None,
        "rf_convention": "Sytwu et al. 2022 (cumulative-stride walk)",
    }
    if exact:
        result["exact_rf_px"] = exact_rf_px(arch)
        result["exact_rf_nm"] = round(result["exact_rf_px"] * px, 4) if px else None
        result["exact_reach_px"] = exact_reach_px(arch)
    if effective:
        result["effective"] = effective_rf_for_bundle(model, data=data)
    if cover_nm is not None:
        check_positive("cover_nm", cover_nm, allow_none=False)
        if px is None:
            raise ParameterError("cover_nm", "needs pixel_size_nm (nm per pixel) to convert nm to px")
        result["cover_nm"] = cover_nm
        result["recommendations"] = [
            {"pools": list(p), "rf_px": r, "rf_nm": round(n, 3)}
            for p, r, n in rf_recommendation(cover_nm, px, depth=arch.depth, kernel_size=arch.kernel_size)
        ]
    if breakdown:
        result["breakdown"] = [vars(r) for r in rf_breakdown(arch)]
    return result
