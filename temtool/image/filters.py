"""Filters of 2-D images that return what SciPy's return, in threads, and the thread map
they and the measurement share."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["gaussian_filter", "thread_map"]


def _row_stride(width: int, itemsize: int) -> int:
    """A row length (elements) of at least ``width`` whose byte stride is not a multiple of
    512: rows whose stride is a large power of two (a 2048 or 4096 px wide float32 image) map
    to the same few CPU cache sets, and a pass down the columns then misses the cache at
    every row."""
    if (width * itemsize) % 512:
        return width
    return width + max(1, 64 // itemsize)  # 64 bytes more: an odd number of cache lines


def gaussian_filter(x: np.ndarray, sigma_px: float, workers: int = 2) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(x, sigma_px)`` of a 2-D image, the same values bit for
    bit, faster: in ``workers`` bands of rows in threads (SciPy's filters release the GIL),
    each with a halo of the kernel's radius so no band sees its cut, on a copy whose row
    stride is not a multiple of 512 bytes (:func:`_row_stride`). Other shapes go to SciPy."""
    x = np.asarray(x)
    H, W = x.shape if x.ndim == 2 else (0, 0)
    if x.ndim != 2 or x.dtype.kind != "f" or sigma_px <= 0 or H * W < 2**16:
        return ndi.gaussian_filter(x, sigma_px)
    halo = int(4.0 * float(sigma_px) + 0.5)  # SciPy's kernel radius (truncate=4)
    n = max(1, min(int(workers), H // max(1, 4 * halo)))
    cuts = [round(i * H / n) for i in range(n + 1)]
    Wp = _row_stride(W, x.dtype.itemsize)
    out = np.empty_like(x)

    def band(i: int) -> None:
        a, b = cuts[i], cuts[i + 1]
        lo, hi = max(0, a - halo), min(H, b + halo)
        src = np.empty((hi - lo, Wp), x.dtype)[:, :W]
        src[...] = x[lo:hi]
        dst = np.empty((hi - lo, Wp), x.dtype)[:, :W]
        ndi.gaussian_filter(src, sigma_px, output=dst)
        out[a:b] = dst[a - lo : b - lo]

    thread_map(band, list(range(n)), n)
    return out


def thread_map(fn, items: list, workers: int) -> list:
    """``[fn(x) for x in items]``, in ``workers`` threads when there are several items."""
    if workers < 2 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="temtool-measure") as ex:
        return list(ex.map(fn, items))
