"""The threaded Gaussian filter equals SciPy's."""

import numpy as np


def test_gaussian_filter_equals_scipy_bit_for_bit():
    """Row bands in threads, each with its halo, on a copy with a padded row stride: the same
    values as SciPy's filter for power-of-two and other widths, both float types, wide and
    narrow kernels, and images too small to split."""
    from scipy import ndimage as ndi

    from temtool.image.filters import _row_stride, gaussian_filter

    rng = np.random.default_rng(5)
    for shape in [(256, 512), (300, 256), (130, 777), (64, 64), (1024, 64)]:
        for dtype in (np.float32, np.float64):
            x = rng.random(shape).astype(dtype)
            for sigma in (0.5, 1.0, 3.0, 9.0):
                for workers in (1, 2, 3):
                    y = gaussian_filter(x, sigma, workers=workers)
                    assert y.dtype == x.dtype and y.shape == x.shape
                    assert np.array_equal(y, ndi.gaussian_filter(x, sigma)), (shape, dtype, sigma, workers)
    assert _row_stride(2048, 4) == 2064 and _row_stride(2080, 4) == 2080 and _row_stride(512, 8) == 520
