"""Tiled inference that equals one whole-image pass, for images of any size.

The *canvas* of an image is the image reflect-padded by a border of ``e`` px on every side
(and on the bottom and right up to a multiple of the pool product ``P``); the prediction of
an image is the network's output on its canvas, cropped back. :func:`predict_tiled` computes
exactly that, tile by tile, with bounded memory:

- tiles overlap by a context margin ``m`` of at least the model's one-sided reach
  (:func:`temtool.model.receptive_field.exact_reach_px`), rounded up to a multiple of ``P``, so an
  output pixel at least ``m`` px inside a tile sees its whole receptive field inside the tile;
- tile origins and sizes are multiples of ``P``, so pooling grids line up with the canvas;
- a tile's weight is 0 within ``m`` px of an edge it shares with a neighbour, then rises over
  ``b`` px (raised cosine) to 1; where a tile edge is the canvas edge there is nothing to wait
  for (the canvas has the same edge), so the weight is 1 up to it.

Every blended pixel is therefore an average of values that each equal the whole-canvas
output, at the image border too (tested), whatever the border ``e``. The border is 16 px by
default (at most ``m``): on the validation sets of the shipped standard model it scored as
well as a border of the full margin (56 px), and a 2048x2048 micrograph costs 3% more network
pixels instead of 11%. Tile sizes grow with the margin (at least twice the overlap), so the
number of tiles stays linear in the image area for any receptive field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TileGeometry",
    "tile_origins",
    "predict_tiled",
    "predict_whole",
]


# reflected border of the canvas, px: chosen on validation (see the module docstring)
DEFAULT_BORDER_PX = 16


def _round_up(n: float, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of tiles of ``tile`` px covering ``[0, length)``, consecutive tiles sharing at
    least ``overlap`` px; the last tile ends at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"tile {tile} px must exceed the overlap {overlap} px")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


@dataclass(frozen=True)
class TileGeometry:
    """How a model's input is cut into tiles.

    ``margin_px`` (multiple of ``pool_product``) is the context each tile keeps at weight 0;
    ``blend_px`` the raised-cosine ramp; ``max_tile_px`` bounds the tiles: a tile holds at most
    ``max_tile_px`` squared pixels, in any shape (more only where the margin needs it);
    ``border_px`` the reflected border of the canvas.
    """

    pool_product: int
    margin_px: int
    blend_px: int
    max_tile_px: int = 1024
    border_px: int = DEFAULT_BORDER_PX

    @classmethod
    def for_model(
        cls,
        pool_product: int,
        reach_px: int,
        margin_px: int | None = None,
        max_tile_px: int = 1024,
        border_px: int = DEFAULT_BORDER_PX,
    ) -> TileGeometry:
        """Geometry for a model whose one-sided reach is ``reach_px``; ``margin_px`` may enlarge
        the context (never shrink it below the reach); ``border_px``: the canvas's reflected
        border (at most the margin)."""
        P = int(pool_product)
        m = _round_up(max(int(reach_px), int(margin_px or 0), 1), P)
        b = max(P, _round_up(16, P))
        return cls(P, m, b, int(max_tile_px), min(max(0, int(border_px)), m))

    @property
    def overlap_px(self) -> int:
        return 2 * self.margin_px + self.blend_px

    def canvas(self, image: np.ndarray) -> np.ndarray:
        """The image reflect-padded by the border, and to multiples of the pool product."""
        h, w = image.shape
        m, P = self.border_px, self.pool_product
        H, W = _round_up(h + 2 * m, P), _round_up(w + 2 * m, P)
        return _reflect_pad(np.asarray(image, np.float32), (m, H - h - m), (m, W - w - m))

    def crop(self, canvas_values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        m = self.border_px
        return canvas_values[..., m : m + shape[0], m : m + shape[1]]

    def _side_options(self, length: int) -> list[tuple[int, int]]:
        """``(tile side, tile count)`` pairs that cover a canvas side of ``length`` px (a
        multiple of the pool product): the whole side, or n tiles sharing the overlap, each a
        multiple of the pool product and at least twice the overlap long (a stride of at
        least the overlap, so any margin costs a bounded factor)."""
        P, ov = self.pool_product, self.overlap_px
        lo = _round_up(ov + max(ov, P), P)
        options = {(length, 1)}
        for n in range(2, length // max(1, lo - ov) + 3):
            t = max(lo, _round_up((length + (n - 1) * ov) / n, P))
            if t < length:
                options.add((t, len(tile_origins(length, t, ov))))
            if t == lo:
                break
        return sorted(options)

    def tile_shape(self, height: int, width: int) -> tuple[int, int]:
        """Tile ``(height, width)`` for a canvas of that size: the fewest pixels computed
        (then the fewest tiles) with at most ``max_tile_px`` squared pixels in a tile, in any
        shape, or the smallest tile the margin allows. Under a budget of 1536x1536 px, a
        2048x2048 micrograph (a 2080x2080 canvas) goes in two full-width strips of 1104 rows:
        6% more pixels than one pass, in half its memory; under 1280x1280 px (the default of
        :class:`temtool.inference.segmenter.Segmenter`) in four tiles of 1104x1104: 12% more, in a quarter."""
        budget = self.max_tile_px**2
        across = self._side_options(width)
        best = None
        for ty, ny in self._side_options(height):
            for tx, nx in across:
                key = (max(0, ty * tx - budget), ny * ty * nx * tx, ny * nx)
                if best is None or key < best[0]:
                    best = (key, (ty, tx))
        return best[1]

    def weights(self, tile: int, first: bool, last: bool) -> np.ndarray:
        """1-D blending weight of a tile; ``first``/``last``: that edge is the canvas edge."""
        m, b = self.margin_px, self.blend_px
        w = np.ones(tile, np.float32)
        r = (0.5 - 0.5 * np.cos(np.pi * (np.arange(b, dtype=np.float32) + 0.5) / b)).astype(np.float32)
        if not first:
            w[:m] = 0
            w[m : m + b] = r
        if not last:
            w[tile - m - b : tile - m] = r[::-1]
            w[tile - m :] = 0
        return w


def _reflect_pad(x: np.ndarray, py: tuple[int, int], px: tuple[int, int]) -> np.ndarray:
    """Reflect padding of any width (repeated reflection for pads wider than the image)."""
    if min(x.shape) < 2:
        return np.pad(x, (py, px), mode="edge")
    return np.pad(x, (py, px), mode="reflect")


# (N, h, w) float32 -> (N, h, w) probabilities, or (N, K, h, w): K maps per tile (e.g. the
# mean and the spread of test-time augmentation), blended alike
Forward = Callable[[np.ndarray], np.ndarray]


def predict_whole(forward: Forward, image: np.ndarray, geometry: TileGeometry) -> np.ndarray:
    """The reference: one pass over the whole canvas, cropped. ``([K,] H, W)`` float32."""
    canvas = geometry.canvas(image)
    return geometry.crop(forward(canvas[None])[0], image.shape)


def tile_plan(image: np.ndarray, geometry: TileGeometry, batch_size: int):
    """What both tiled predictions share: the canvas, tile size, batches of tile origins, 1-D
    blending weights, the summed weights (``norm``) and the tiling summary."""
    canvas = geometry.canvas(image)
    H, W = canvas.shape
    ty, tx = geometry.tile_shape(H, W)
    batch_size = max(1, min(batch_size, geometry.max_tile_px**2 // (ty * tx)))
    ov = geometry.overlap_px
    ys, xs = tile_origins(H, ty, ov), tile_origins(W, tx, ov)
    wy = {y: geometry.weights(ty, y == 0, y + ty == H) for y in ys}
    wx = {x: geometry.weights(tx, x == 0, x + tx == W) for x in xs}
    coords = [(y, x) for y in ys for x in xs]
    # the summed weights, separable as the weights are: norm = outer(ny, nx)
    ny, nx = np.zeros(H, np.float32), np.zeros(W, np.float32)
    for y in ys:
        ny[y : y + ty] += wy[y]
    for x in xs:
        nx[x : x + tx] += wx[x]
    batches = [coords[i : i + batch_size] for i in range(0, len(coords), batch_size)]
    info = {
        "tile_px": [ty, tx],
        "tiles": len(coords),
        "tiles_per_batch": batch_size,
        "margin_px": geometry.margin_px,
        "border_px": geometry.border_px,
        "overlap_px": ov,
    }
    return canvas, (ty, tx), batches, wy, wx, (np.maximum(ny, 1e-12), np.maximum(nx, 1e-12)), info


def _ones_span(w: np.ndarray) -> tuple[int, int]:
    """``[a, b)``: the run of weight 1 between a tile's weighted ends (empty if none)."""
    ones = np.flatnonzero(w == 1)
    if ones.size and np.all(w[ones[0] : ones[-1] + 1] == 1):
        return int(ones[0]), int(ones[-1]) + 1
    return 0, 0


def _blend_into(acc: np.ndarray, p: np.ndarray, y: int, x: int, wy: np.ndarray, wx: np.ndarray) -> None:
    """``acc[..., y:, x:] += p * outer(wy, wx)``, multiplying only the rows (and columns)
    whose weight is not 1: a tile's margins and ramps; a full-width strip has none across."""
    ty, tx = wy.size, wx.size
    sub = acc[..., y : y + ty, x : x + tx]
    a, b = _ones_span(wy)
    across = None if np.all(wx == 1) else wx
    for lo, hi, w in ((0, a, wy[:a, None]), (a, b, None), (b, ty, wy[b:, None])):
        if hi <= lo:
            continue
        q = p[..., lo:hi, :]
        if w is not None:
            q = q * w
        if across is not None:
            q = q * across
        sub[..., lo:hi, :] += q


def _normalise(acc: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``acc / outer(ny, nx)`` in place, dividing only the rows and columns whose summed
    weight is not 1 (where tiles overlap)."""
    ny, nx = norm
    rows, cols = np.flatnonzero(ny != 1), np.flatnonzero(nx != 1)
    if rows.size:
        acc[..., rows, :] /= ny[rows, None]
    if cols.size:
        acc[..., :, cols] /= nx[cols]
    return acc


def predict_tiled(
    forward: Forward, image: np.ndarray, geometry: TileGeometry, batch_size: int = 4
) -> tuple[np.ndarray, dict]:
    """:func:`predict_whole`, computed tile by tile. Returns ``([K,] H, W)`` float32 and a
    summary of the tiling (tile size, number of tiles, margin, overlap). A batch holds at most
    ``batch_size`` tiles and at most the pixels of one largest tile (``max_tile_px`` squared),
    so large tiles do not multiply the memory by the batch size."""
    canvas, (ty, tx), batches, wy, wx, norm, info = tile_plan(image, geometry, batch_size)
    if info["tiles"] == 1:  # the whole canvas at weight 1: nothing to blend
        return geometry.crop(forward(canvas[None])[0], image.shape), info
    acc = None
    for chunk in batches:
        probs = forward(np.stack([canvas[y : y + ty, x : x + tx] for y, x in chunk]))
        if acc is None:
            acc = np.zeros((*probs.shape[1:-2], *canvas.shape), np.float32)
        for (y, x), p in zip(chunk, probs):
            _blend_into(acc, p, y, x, wy[y], wx[x])
    return geometry.crop(_normalise(acc, norm), image.shape), info
