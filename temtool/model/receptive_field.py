"""Receptive field (RF) of the residual UNet: theoretical, exact and effective.

Three numbers answer "how much of the micrograph does one output pixel see?":

``theoretical_rf_px``
    The convention of Sytwu, Groschner & Scott (2022). Walk from input to output with a
    cumulative stride ``j`` (start ``j = 1``, ``RF = 1``): a k x k convolution with dilation
    ``d`` adds ``(k - 1) * d * j``; a 1x1 convolution adds nothing; max pooling of size ``p``
    adds ``(p - 1) * j`` and then ``j *= p``; nearest upsampling by ``p`` adds nothing and then
    ``j /= p``; decoder convolutions count. Depth 2, pools (2, 2), 3x3 kernels give 44 px.

``exact_rf_px``
    The true worst-case field: the largest extent, over all output pixels, of the set of
    input pixels that can change that output. It is measured on the built Keras model with an
    impulse probe (see :func:`exact_rf_px`), not from the formula. It is never smaller than the
    theoretical value and is larger when a pool size exceeds 2, because nearest upsampling does
    not keep fine and coarse pixels centred on each other: a k-wide decoder convolution after
    upsampling by ``p`` can straddle the boundary between two coarse pixels, so it reaches a
    whole extra coarse pixel (``p * j`` input px) rather than the ``(k - 1) * j`` the formula
    adds, and a fine pixel's deep (upsampled) field sits off-centre relative to its skip
    field, so their union is wider than either. With pools of 2 and 3x3 kernels the two
    effects cancel at depths 1 and 2 (44 px at depth 2), but not from depth 3 (study 96 px,
    exact 100 px): the formula is a convention, the probe is the measurement.

``exact_reach_px``
    The largest one-sided reach of that field: the context a tile must keep (tiling in
    :mod:`temtool.inference.tiling`).

``effective_rf`` (in :mod:`temtool.model.effective_rf`, needs a trained model)
    The gradient-based field of Luo et al. (2016): where the output actually looks.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from temtool.model.architecture import Architecture, build_resunet

__all__ = [
    "RFLayer",
    "rf_breakdown",
    "theoretical_rf_px",
    "exact_rf_px",
    "exact_reach_px",
    "reach_bound_px",
    "tile_reach_px",
    "PROBE_LIMIT_PX",
    "rf_recommendation",
]


PROBE_LIMIT_PX = 1 << 13  # largest probe bundles measure the exact field with


@dataclass(frozen=True)
class RFLayer:
    """One step of the receptive-field walk."""

    layer: str
    stride_px: float  # cumulative stride after this layer, in input pixels
    rf_px: int  # receptive field after this layer, in input pixels


def rf_breakdown(arch: Architecture) -> list[RFLayer]:
    """Per-layer walk of the study's RF convention through the ResUNet.

    Only layers that change the RF or the stride are listed (BatchNorm, ReLU, 1x1 skips and
    concatenations change neither).
    """
    k = arch.kernel_size
    j = 1.0
    rf = 1.0
    rows: list[RFLayer] = []

    def block(prefix: str) -> None:
        nonlocal rf
        for c in (1, 2):
            rf += (k - 1) * j
            rows.append(RFLayer(f"{prefix}_conv{c} ({k}x{k})", j, round(rf)))

    for level, p in enumerate(arch.pools):
        block(f"enc{level}")
        rf += (p - 1) * j
        j *= p
        rows.append(RFLayer(f"pool{level} ({p}x{p})", j, round(rf)))
    block("bottleneck")
    for level in reversed(range(arch.depth)):
        p = arch.pools[level]
        j /= p
        rows.append(RFLayer(f"up{level} (x{p})", j, round(rf)))
        block(f"dec{level}")
    return rows


def theoretical_rf_px(arch: Architecture) -> int:
    """Receptive field in pixels by the study's convention (see module docstring)."""
    return rf_breakdown(arch)[-1].rf_px


def _probe_weights(model) -> None:
    """Make every layer monotone and sign-preserving: positive convolution weights that sum
    to one per output channel, zero biases, BatchNorm as a positive scaling."""
    for layer in model.layers:
        new = []
        for w in layer.weights:
            shape = tuple(w.shape)
            path = w.path if hasattr(w, "path") else w.name
            if path.endswith("kernel"):
                fan_in = math.prod(shape[:-1])
                new.append(np.full(shape, 1.0 / fan_in, dtype="float32"))
            elif path.endswith(("bias", "beta", "moving_mean")):
                new.append(np.zeros(shape, dtype="float32"))
            else:  # gamma, moving_variance
                new.append(np.ones(shape, dtype="float32"))
        if new:
            layer.set_weights(new)


def exact_rf_px(arch: Architecture, max_probe_px: int = 1 << 16) -> int:
    """Exact worst-case receptive field in pixels, measured on the built model.

    Method (independent of :func:`theoretical_rf_px`): build the model, give every
    convolution positive weights, zero biases and neutral BatchNorm, so that an activation is
    positive exactly when some input pixel it depends on is positive (ReLU, max pooling,
    addition and concatenation all preserve "some positive input"). Feed single-pixel
    impulses, one per phase modulo the pool product ``P``; the positive outputs of the impulse
    at ``x`` are the outputs that depend on ``x``. Translation equivariance by ``P`` then gives,
    for every output pixel, the full set of input pixels it depends on; the largest extent is
    returned. The dependence is separable along rows and columns, so only rows are probed.
    """
    return _exact_extent(arch, max_probe_px)[0]


def exact_reach_px(arch: Architecture, max_probe_px: int = 1 << 16) -> int:
    """The largest one-sided reach of the exact field, in px: over all output pixels, how far
    before or after itself the farthest input pixel that can change it lies.

    The field is off-centre (nearest upsampling), so this can exceed half of
    :func:`exact_rf_px`; it is the context a tile must keep around the pixels it predicts.
    Measured with the same impulse probe as :func:`exact_rf_px`.
    """
    return _exact_extent(arch, max_probe_px)[1]


def reach_bound_px(arch: Architecture) -> int:
    """An upper bound on :func:`exact_reach_px` from the layer walk alone (no model built),
    for fields too large to probe: every convolution reaches ``(k - 1) / 2 * j`` each way;
    pooling by ``p`` and nearest upsampling by ``p`` shift by at most ``(p - 1) * j``."""
    half = (arch.kernel_size - 1) // 2
    j, reach = 1, 0
    for p in arch.pools:
        reach += 2 * half * j + (p - 1) * j
        j *= p
    reach += 2 * half * j
    for p in reversed(arch.pools):
        j //= p
        reach += (p - 1) * j + 2 * half * j
    return reach


def tile_reach_px(arch: Architecture) -> int:
    """The context a tile keeps for ``arch``: :func:`exact_reach_px` where the field can be
    probed (up to 8192 px), else :func:`reach_bound_px`. What bundles record and what a
    segmenter built without a bundle uses."""
    try:
        return exact_reach_px(arch, PROBE_LIMIT_PX)
    except ValueError:  # too large to probe
        return reach_bound_px(arch)


@functools.lru_cache(maxsize=256)
def _exact_extent(arch: Architecture, max_probe_px: int) -> tuple[int, int]:
    """(exact RF, one-sided reach) in px; cached per architecture (frozen, hashable)."""

    P = arch.pool_product
    theory = theoretical_rf_px(arch)
    height = int(math.ceil((2.5 * theory + 4 * P) / P) * P)
    while True:
        if height > max_probe_px:
            raise ValueError(
                f"exact RF probe would need an image taller than {max_probe_px} px for "
                f"{arch.label()}; use theoretical_rf_px for such large fields"
            )
        supports = _impulse_supports(arch, build_resunet, height)
        if supports is not None:
            break
        height *= 2
    centre = (height // 2) // P * P
    rf, reach = 0, 0
    for o in range(centre, centre + P):
        xs = []
        for phase, rows in enumerate(supports):
            q = rows[(rows - o) % P == 0]
            xs.append(centre + phase + o - q)
        xs = np.concatenate(xs)
        rf = max(rf, int(xs.max() - xs.min() + 1))
        reach = max(reach, int(o - xs.min()), int(xs.max() - o))
    return rf, reach


def _impulse_supports(arch: Architecture, build, height: int):
    """Row supports of the outputs influenced by an impulse at each phase; None if clipped."""
    P = arch.pool_product
    probe = Architecture(
        depth=arch.depth,
        pools=arch.pools,
        filters=(1,) * (arch.depth + 1),  # the number of filters does not change the field
        kernel_size=arch.kernel_size,
        n_classes=2,
    )
    model = build(probe, input_shape=(height, P))
    _probe_weights(model)
    centre = (height // 2) // P * P
    x = np.zeros((P, height, P, 1), dtype="float32")
    for phase in range(P):
        x[phase, centre + phase, phase, 0] = 1.0
    y = np.asarray(model.predict(x, batch_size=max(1, min(P, 8)), verbose=0))
    supports = []
    for phase in range(P):
        rows = np.nonzero((y[phase] > 0).any(axis=(1, 2)))[0]
        if rows.size == 0 or rows[0] == 0 or rows[-1] == height - 1:
            return None
        supports.append(rows)
    return supports


def rf_recommendation(
    feature_nm: float,
    pixel_size_nm: float,
    depth: int = 2,
    pool_choices: tuple[int, ...] = (2, 4, 8),
    kernel_size: int = 3,
) -> list[tuple[tuple[int, ...], int, float]]:
    """Pool sequences of a given depth whose theoretical RF covers a feature, smallest first.

    Parameters
    ----------
    feature_nm : float
        Size the network should see at once, in nm: e.g. a particle diameter, or a lattice
        fringe spacing times the number of fringes it should compare.
    pixel_size_nm : float
        Pixel size of the micrographs in nm/px.

    Returns
    -------
    list of (pools, rf_px, rf_nm)
        Every pool sequence from ``pool_choices`` with ``rf_nm >= feature_nm``, sorted by RF
        (then by pool product, so cheaper networks come first).
    """
    if feature_nm <= 0 or pixel_size_nm <= 0:
        raise ValueError("feature size and pixel size must be positive (nm)")
    out = []
    for pools in itertools.product(pool_choices, repeat=depth):
        arch = Architecture(depth=depth, pools=pools, filters=(1,) * (depth + 1), kernel_size=kernel_size)
        rf = theoretical_rf_px(arch)
        if rf * pixel_size_nm >= feature_nm:
            out.append((tuple(pools), rf, rf * pixel_size_nm))
    out.sort(key=lambda r: (r[1], math.prod(r[0])))
    return out
