"""The napari reader: micrographs as temtool reads them (DM3/DM4, SER, EMD and MRC through
RosettaSciIO, TIFF with its calibration), the layer's scale in nm where the file says it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from temtool.data.io import MICROSCOPY_SUFFIXES, read_image
from temtool.errors import TemtoolError

__all__ = ["READABLE_SUFFIXES", "get_reader", "read_layers"]

READABLE_SUFFIXES = (*MICROSCOPY_SUFFIXES, ".tif", ".tiff")
MAX_FRAMES = 10_000


def get_reader(path):
    """napari's reader hook: :func:`read_layers` for one file temtool reads, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_layers if Path(path).suffix.lower() in READABLE_SUFFIXES else None


def _frames(path: Path):
    """The micrograph, or every frame of a stack (read one by one), and the pixel size."""
    try:
        mg = read_image(path)
        return mg.data, mg.pixel_size_nm
    except TemtoolError as e:
        if "--frame" not in str(e):
            raise
    frames, px = [], None
    for i in range(MAX_FRAMES):
        try:
            mg = read_image(path, frame=i)
        except TemtoolError:
            break
        frames.append(mg.data)
        px = mg.pixel_size_nm
    return np.stack(frames), px


def read_layers(path) -> list[tuple]:
    """One image layer: the micrograph (or stack) as float32, its scale in nm per pixel when
    the file is calibrated, and temtool's record of the pixel size in the layer's metadata."""
    path = Path(path[0] if isinstance(path, list) else path)
    data, px = _frames(path)
    meta = {
        "temtool": {"pixel_size_nm": px, "pixel_size_source": "metadata" if px else None, "file": str(path)}
    }
    kwargs = {"name": path.stem, "metadata": meta}
    if px:
        kwargs["scale"] = (px,) * 2 if data.ndim == 2 else (1.0, px, px)
        kwargs["units"] = ("nm", "nm") if data.ndim == 2 else ("", "nm", "nm")
    return [(data, kwargs, "image")]
