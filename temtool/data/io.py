"""Reading and writing micrographs and masks.

Readers return float32 2-D arrays and, where the file knows it, the pixel size in nm.
Every failure is a :class:`~temtool.errors.TemtoolError` that names the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temtool.errors import TemtoolError

__all__ = [
    "Micrograph",
    "IMAGE_SUFFIXES",
    "read_image",
    "read_mask",
    "write_tiff",
    "write_png",
    "atomic_write",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")


@dataclass
class Micrograph:
    data: np.ndarray  # (H, W) float32
    pixel_size_nm: float | None
    path: Path


def _tiff_pixel_size_nm(tif) -> float | None:
    """Pixel size from ImageJ metadata or the TIFF resolution tags, in nm."""
    page = tif.pages[0]
    ij = tif.imagej_metadata or {}
    unit = str(ij.get("unit", "")).strip().lower().replace("\\u00b5", "u").replace("µ", "u")
    tags = page.tags
    res = tags.get("XResolution")
    if res is None:
        return None
    num, den = res.value
    if num == 0:
        return None
    per_unit = den / num  # units per pixel
    if unit:
        factor = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "micron": 1e3, "a": 0.1, "angstrom": 0.1}
        if unit in factor:
            return per_unit * factor[unit]
        return None
    resunit = tags.get("ResolutionUnit")
    code = int(resunit.value) if resunit is not None else 2
    if code == 3:  # centimetre
        return per_unit * 1e7
    return None  # inch or none: not a physical calibration for micrographs


def read_image(path: str | os.PathLike, channel: int | None = None) -> Micrograph:
    """Read a 2-D micrograph as float32.

    Greyscale files are read as they are; RGB(A) files whose colour channels are equal become
    one channel; a truly coloured image needs ``channel``.
    """
    path = Path(path)
    if not path.is_file():
        raise TemtoolError(f"{path}: no such file")
    suffix = path.suffix.lower()
    pixel_size = None
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                data = tif.asarray()
                pixel_size = _tiff_pixel_size_nm(tif)
        elif suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                data = np.asarray(im)
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            raise TemtoolError(
                f"{path}: unknown image format {suffix!r}; temtool reads {', '.join(IMAGE_SUFFIXES)}"
            )
    except TemtoolError:
        raise
    except Exception as e:  # corrupt, truncated, unreadable
        raise TemtoolError(
            f"{path}: cannot read the file ({type(e).__name__}: {e}); is it corrupt or truncated?"
        ) from None
    data = _to_2d(np.asarray(data), path, channel)
    if not np.isfinite(data).all():
        raise TemtoolError(f"{path}: contains NaN or Inf pixels; fix or remove them before use")
    return Micrograph(data.astype(np.float32, copy=False), pixel_size, path)


def _to_2d(data: np.ndarray, path: Path, channel: int | None) -> np.ndarray:
    data = np.squeeze(data)
    if data.ndim == 2:
        return data
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        if channel is not None:
            return data[..., channel]
        rgb = data[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        raise TemtoolError(
            f"{path}: a coloured RGB image; micrographs are greyscale. Choose a channel "
            "(--channel 0, 1 or 2) if one of them holds the data"
        )
    raise TemtoolError(f"{path}: expected a 2-D image, got an array of shape {data.shape}")


def read_mask(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a mask as uint8 0/1. Accepts 0/1, 0/255, bool, and instance-ID maps."""
    m = read_image(path, channel=channel).data
    values = np.unique(m)
    if values.size == 1 or (values.size == 2 and values[0] == 0):
        return (m > 0).astype(np.uint8)
    if values.min() >= 0 and np.all(values == np.round(values)):
        return (m > 0).astype(np.uint8)  # instance IDs
    raise TemtoolError(
        f"{path}: mask values are not binary-like (found {values.size} distinct values from "
        f"{values.min():g} to {values.max():g}); masks must be 0/1, 0/255, or integer labels"
    )


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_tiff(path: Path, data: np.ndarray, pixel_size_nm: float | None = None) -> None:
    """Write float32 TIFF; the pixel size goes into the ImageJ unit and resolution tags."""
    import tifffile

    kw = {}
    if pixel_size_nm:
        kw = {
            "imagej": True,
            "resolution": (1 / pixel_size_nm, 1 / pixel_size_nm),
            "metadata": {"unit": "nm"},
        }
    atomic_write(Path(path), lambda p: tifffile.imwrite(p, np.asarray(data, np.float32), **kw))


def write_png(path: Path, data: np.ndarray) -> None:
    """Write an integer image (uint8 or uint16) as PNG."""
    from PIL import Image

    arr = np.asarray(data)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16, got {arr.dtype}")
    atomic_write(Path(path), lambda p: Image.fromarray(arr).save(p, format="PNG"))
