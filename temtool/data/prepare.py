"""The study's preprocessing as one function: micrographs and masks in, a dataset out.

Per micrograph: remove x-ray outliers (pixels far above the median, replaced by the mean of
their 8 neighbours), standardise (mean 0, std 1), cut non-overlapping square patches, drop
patches with fewer than ``min_particle_px`` particle pixels; then split train/val/test *by
micrograph*, so patches of one micrograph never straddle splits (the study split by patch,
which leaks). Dihedral augmentation happens at training time, not here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from temtool.data.dataset import check_split, split_stems
from temtool.data.io import (
    IMAGE_SUFFIXES,
    atomic_dir,
    binarize_mask,
    check_new_folder,
    read_h5_stack,
    read_image,
    read_mask,
    write_png,
    write_tiff,
)
from temtool.errors import ParameterError, TemtoolError, check_positive
from temtool.image.normalise import standardize

__all__ = ["Pair", "find_pairs", "remove_xrays", "prepare", "add_pair"]

_ROLE_WORDS = {"image", "images", "img", "label", "labels", "mask", "masks", "gt", "seg", "maps"}


def _key(stem: str) -> str:
    """Matching key of a file stem: role words removed, so image_3 and label_3 match."""
    parts = [p for p in re.split(r"[_\-. ]+", stem.lower()) if p and p not in _ROLE_WORDS]
    return "_".join(parts) or stem.lower()


@dataclass
class Pair:
    name: str
    image: np.ndarray
    mask: np.ndarray
    pixel_size_nm: float | None
    source: str


def _by_key(files: list[Path]) -> dict[str, Path]:
    """Files by matching key; two files with one key (``s_0`` and ``S-0``) are refused."""
    out: dict[str, Path] = {}
    for p in files:
        k = _key(p.stem)
        if k in out:
            raise TemtoolError(
                f"{p}: matches the same name as {out[k].name} (case, '-', '_' and role words are "
                "ignored when pairing images with masks); rename one of them"
            )
        out[k] = p
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def find_pairs(raw: str | os.PathLike, channel: int | None = None) -> list[Pair]:
    """Micrograph/mask pairs from ``RAW/images`` + ``RAW/masks`` (or ``labels``), matched by
    stem (role words such as image/label ignored), or from HDF5 files in the study's layout."""
    raw = Path(raw)
    if not raw.exists():
        raise TemtoolError(f"{raw}: no such folder")
    h5s = [raw] if raw.is_file() and raw.suffix.lower() in (".h5", ".hdf5") else []
    if raw.is_dir():
        h5s = sorted(p for p in raw.iterdir() if p.suffix.lower() in (".h5", ".hdf5"))
    pairs = [pair for h5 in h5s for pair in _h5_pairs(h5)]
    if not raw.is_dir():
        return pairs
    if (raw / "images").is_dir():
        return pairs + _folder_pairs(raw, channel)
    if not pairs:
        if not any(raw.iterdir()):
            raise TemtoolError(
                f"{raw}: folder is empty; put micrographs in {raw}/images and masks in {raw}/masks"
            )
        raise TemtoolError(
            f"{raw}: no images/ folder (and no HDF5 files); expected {raw}/images and {raw}/masks"
        )
    return pairs


def _h5_pairs(h5: Path) -> list[Pair]:
    imgs, masks = read_h5_stack(h5)
    if masks is None:
        raise TemtoolError(f"{h5}: has images but no 'labels', 'maps' or 'masks' dataset")
    return [
        Pair(
            f"{h5.stem}_{i:04d}",
            _check_image(im, f"{h5}[{i}]"),
            binarize_mask(m, f"{h5}[labels {i}]"),
            None,
            f"{h5}[{i}]",
        )
        for i, (im, m) in enumerate(zip(imgs, masks))
    ]


def _folder_pairs(raw: Path, channel: int | None) -> list[Pair]:
    img_dir = raw / "images"
    mask_dir = next((raw / n for n in ("masks", "labels") if (raw / n).is_dir()), None)
    if mask_dir is None:
        raise TemtoolError(f"{raw}: no masks/ (or labels/) folder beside images/")
    images = _by_key(_files(img_dir))
    masks = _by_key(_files(mask_dir))
    if not images:
        raise TemtoolError(f"{img_dir}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    for k in sorted(set(images) - set(masks)):
        raise TemtoolError(f"{images[k]}: no matching mask in {mask_dir}")
    for k in sorted(set(masks) - set(images)):
        raise TemtoolError(f"{masks[k]}: no matching image in {img_dir}")
    pairs = []
    for k in sorted(images):
        mg = read_image(images[k], channel=channel)
        m = read_mask(masks[k], channel=0 if channel is None else channel)
        if m.shape != mg.data.shape:
            raise TemtoolError(
                f"{masks[k]}: mask is {m.shape[0]}x{m.shape[1]} but {images[k].name} is "
                f"{mg.data.shape[0]}x{mg.data.shape[1]}"
            )
        pairs.append(Pair(images[k].stem, mg.data, m, mg.pixel_size_nm, str(images[k])))
    return pairs


def _check_image(im: np.ndarray, where: str) -> np.ndarray:
    im = np.asarray(im, np.float32)
    if im.ndim != 2:
        raise TemtoolError(f"{where}: expected a 2-D image, got shape {im.shape}")
    if not np.isfinite(im).all():
        raise TemtoolError(f"{where}: contains NaN or Inf pixels; fix or remove them before use")
    return im


def remove_xrays(image: np.ndarray, threshold: float = 8.0) -> tuple[np.ndarray, int]:
    """Replace pixels more than ``threshold`` robust standard deviations (1.4826 MAD) above the
    median with the mean of their 8 neighbours. Returns the cleaned image and the count."""
    x = np.asarray(image, np.float32)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * 1.4826
    if mad <= 0:
        mad = float(x.std()) or 1.0
    hot = x > med + threshold * mad
    n = int(hot.sum())
    if n == 0:
        return x, 0
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 0
    good = (~hot).astype(np.float32)
    num = ndi.convolve(np.where(hot, 0, x), kernel, mode="reflect")
    den = ndi.convolve(good, kernel, mode="reflect")
    fill = np.where(den > 0, num / np.maximum(den, 1e-9), med)
    out = x.copy()
    out[hot] = fill[hot]
    return out, n


def _common_pixel_size(pairs: list[Pair], pixel_size_nm: float | None) -> float | None:
    """The one pixel size of all micrographs (``pixel_size_nm`` overrides); mixed sizes are
    refused, naming two files that differ."""
    if pixel_size_nm is not None:
        return pixel_size_nm
    first: dict[float, str] = {}
    for p in pairs:
        if p.pixel_size_nm:
            first.setdefault(round(p.pixel_size_nm, 5), p.source)
    if len(first) > 1:
        (a, fa), (b, fb) = list(first.items())[:2]
        raise TemtoolError(
            f"mixed pixel sizes: {fa} is {a} nm/px but {fb} is {b} nm/px; prepare them "
            "separately or pass --pixel-size to declare one size for all"
        )
    return next(iter(first), None)


def _check_out_dir(raw: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuse an output that is, holds or lies inside the raw data (``--overwrite`` would
    delete it), and a non-empty folder without ``overwrite``."""
    r, o = raw.resolve(), out_dir.resolve()
    if o == r or o in r.parents or r in o.parents:
        raise ParameterError(
            "out_dir",
            f"{out_dir} is or overlaps the raw folder {raw}; write the dataset to another folder",
        )
    check_new_folder(out_dir, overwrite)


def prepare(
    raw: str | os.PathLike,
    out_dir: str | os.PathLike,
    patch: int = 512,
    min_particle_px: int = 400,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    xray_threshold: float = 8.0,
    pixel_size_nm: float | None = None,
    overwrite: bool = False,
    channel: int | None = None,
) -> dict:
    """Run the study's preprocessing; writes the dataset atomically and returns its summary."""
    out_dir = Path(out_dir)
    if patch < 8:
        raise ParameterError("patch", f"must be >= 8 px, got {patch}")
    if min_particle_px < 0:
        raise ParameterError("min_particle_px", f"must be >= 0, got {min_particle_px}")
    check_positive("xray_threshold", xray_threshold, allow_none=False)
    check_positive("pixel_size_nm", pixel_size_nm)
    check_split(split)
    _check_out_dir(Path(raw), out_dir, overwrite)
    pairs = find_pairs(raw, channel=channel)
    if not pairs:
        raise TemtoolError(f"{raw}: no micrograph/mask pairs found")
    for p in pairs:
        if min(p.image.shape) < patch:
            raise TemtoolError(
                f"{p.source}: micrograph is {p.image.shape[0]}x{p.image.shape[1]}, smaller than "
                f"the patch size ({patch} px); use smaller patches"
            )
    px = _common_pixel_size(pairs, pixel_size_nm)

    # split by micrograph
    by_micrograph = split_stems(list(range(len(pairs))), split, seed=seed)
    split_of = {i: name for name, items in by_micrograph.items() for i in items}

    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    micro = {"train": 0, "val": 0, "test": 0}
    xrays_total, dropped, frac = 0, 0, []
    sources = {}
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i, p in enumerate(pairs):
            s = split_of[i]
            micro[s] += 1
            clean, nx = remove_xrays(p.image, xray_threshold)
            xrays_total += nx
            img = standardize(clean)
            h, w = img.shape
            for y in range(0, h - patch + 1, patch):
                for x in range(0, w - patch + 1, patch):
                    m = p.mask[y : y + patch, x : x + patch]
                    if int(m.sum()) < min_particle_px:
                        dropped += 1
                        continue
                    stem = f"{p.name}_y{y}_x{x}"
                    write_tiff(tmp / "images" / f"{stem}.tif", img[y : y + patch, x : x + patch], px)
                    write_png(tmp / "masks" / f"{stem}.png", m.astype(np.uint8))
                    splits[s].append(stem)
                    sources[stem] = p.source
                    frac.append(float(m.mean()))
        if not any(splits.values()):
            raise TemtoolError(
                f"{raw}: every patch has fewer than {min_particle_px} particle pixels; lower "
                "--min-particle-px or check the masks"
            )
        summary = {
            "source": "temtool prepare",
            "raw": str(raw),
            "pixel_size_nm": px,
            "regime": None,
            "standardized": "per_micrograph",
            "patch_px": patch,
            "min_particle_px": min_particle_px,
            "xray_threshold": xray_threshold,
            "seed": seed,
            "micrographs": {k: micro[k] for k in micro},
            "patches": {k: len(v) for k, v in splits.items()},
            "patches_dropped": dropped,
            "xrays_replaced": xrays_total,
            "particle_fraction": float(np.mean(frac)) if frac else 0.0,
            "splits": splits,
            "patch_sources": sources,
        }
        (tmp / "dataset.json").write_text(json.dumps(summary, indent=1))
    summary["path"] = str(out_dir)
    return summary


def add_pair(
    folder: str | os.PathLike,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    pixel_size_nm: float | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Add a micrograph and its mask (any labels: non-zero is particle) to a training set in
    the layout :func:`prepare` reads (``FOLDER/images/NAME.tif``, ``FOLDER/masks/NAME.png``),
    as the napari plugin's corrections are kept. An existing pair of that name is replaced only
    with ``overwrite``. Returns the two paths."""
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise TemtoolError(f"{name}: image {image.shape} and mask {mask.shape} must be one 2-D shape")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "micrograph"
    folder = Path(folder)
    img_path, mask_path = folder / "images" / f"{stem}.tif", folder / "masks" / f"{stem}.png"
    if not overwrite and (img_path.exists() or mask_path.exists()):
        raise TemtoolError(f"{img_path}: the training set already holds {stem}; replace it with overwrite")
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(img_path, np.asarray(image, np.float32), pixel_size_nm)
    write_png(mask_path, ((mask > 0) * 255).astype(np.uint8))
    return img_path, mask_path
