"""The 8 dihedral transforms of an image (4 rotations, each optionally flipped), in one place
for NumPy arrays (:func:`dihedral`: test-time augmentation on the host, the training feeder)
and for ``keras.ops`` tensors (:func:`dihedral_ops`: augmentation and test-time augmentation
compiled on the backend's device). Keras is imported only by :func:`dihedral_ops`, when called."""

from __future__ import annotations

__all__ = ["dihedral", "dihedral_ops", "tta_members"]

import numpy as np


def tta_members(tta: bool) -> tuple[int, ...]:
    """The dihedral transforms (:func:`temtool.image.dihedral.dihedral` indices) a prediction
    averages: all 8 with test-time augmentation, else the identity."""
    return tuple(range(8)) if tta else (0,)


def dihedral(x: np.ndarray, k: int, axes: tuple[int, int] | None = None, inverse: bool = False) -> np.ndarray:
    """The k-th of the 8 dihedral transforms (k in 0..7: 4 rotations, each optionally
    flipped), or its inverse, of the image ``axes``; by default (-3, -2) of ``(..., H, W, C)``
    and (-2, -1) of ``(H, W)`` arrays."""
    axes = axes or ((-3, -2) if x.ndim >= 3 else (-2, -1))
    if not inverse:
        y = np.rot90(x, k % 4, axes=axes)
        return np.flip(y, axis=axes[1]) if k >= 4 else y
    y = np.flip(x, axis=axes[1]) if k >= 4 else x
    return np.rot90(y, -(k % 4), axes=axes)


def _rot90_ops(x, k: int):
    """``np.rot90(x, k, axes=(1, 2))`` with flips and transposes (``keras.ops.rot90`` by 180
    degrees is wrong for non-square images on the TensorFlow backend, Keras 3.15)."""
    from keras import ops

    k %= 4
    if k == 1:
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)
    if k == 2:
        return ops.flip(ops.flip(x, axis=1), axis=2)
    if k == 3:
        return ops.transpose(ops.flip(x, axis=1), (0, 2, 1, 3))
    return x


def dihedral_ops(x, k: int, inverse: bool = False):
    """:func:`temtool.image.dihedral.dihedral` of a ``(N, H, W, C)`` tensor with ``keras.ops``."""
    from keras import ops

    if not inverse:
        y = _rot90_ops(x, k)
        return ops.flip(y, axis=2) if k >= 4 else y
    y = ops.flip(x, axis=2) if k >= 4 else x
    return _rot90_ops(y, -k)
