"""The particle-size histogram of `temtool segment`, drawn with Pillow (which already writes
the other PNGs; Matplotlib would be a second, slower-to-start drawing library for one small
chart). The chart keeps Matplotlib's look: a filled step outline of the counts, a framed axis with
round-numbered ticks (whole numbers for counts), axis labels and a title.
"""

from __future__ import annotations

import math
from os import PathLike

import numpy as np

__all__ = ["histogram_png", "nice_ticks", "size_bins", "tick_labels"]

ORANGE = (255, 127, 14)  # Matplotlib's tab:orange
INK = (0, 0, 0)
SIZE_PX = (480, 360)
# plot area: left, top, right, bottom margins in px
MARGINS_PX = (66, 34, 18, 52)


def size_bins(n_values: int) -> int:
    """Bins for ``n_values`` sizes: about two values a bin, between 5 and 30."""
    return min(30, max(5, n_values // 2))


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values inside ``[lo, hi]``: steps of 1, 2, 2.5 or 5 times a power of ten,
    about ``target`` of them; ``integer``: whole-number steps only (counts)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(1, target)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = first + step * np.arange(int(math.floor((hi - first) / step + 1e-9)) + 1)
    return np.round(ticks, 10)


def tick_labels(ticks) -> list[str]:
    """Tick labels with the fewest decimals that show every tick exactly (2.5 -> "2.5",
    4.6 -> "4.6", 10 -> "10")."""
    t = np.asarray(ticks, float)
    scale = max(1.0, float(np.abs(t).max(initial=0)))
    for decimals in range(7):
        if np.all(np.abs(np.round(t, decimals) - t) <= 1e-9 * scale):
            break
    return [f"{v:.{decimals}f}" for v in t]


def _fonts():
    """Pillow's own scalable font (FreeType; a Pillow built without it gives its small bitmap
    font, which :func:`_text` places as well)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=13), ImageFont.load_default(size=15)


def _text(draw, xy: tuple[float, float], text: str, font, anchor: str, fill=INK) -> None:
    """``draw.text`` at ``xy`` by the ink's box: ``anchor`` "mt" (centred, top at y), "md"
    (centred, bottom at y), "rm" (right end at x, centred on y) or "lt" (left, top); computed
    here, since bitmap fonts take no ``anchor``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy
    dx = {"m": -(left + right) / 2, "r": -right, "l": -left}[anchor[0]]
    dy = {"t": -top, "d": -bottom, "m": -(top + bottom) / 2}[anchor[1]]
    draw.text((round(x + dx), round(y + dy)), text, fill=fill, font=font)


def histogram_png(
    path: str | PathLike, values, xlabel: str, ylabel: str = "particles", title: str | None = None
) -> None:
    """Write the histogram of ``values`` (bins: :func:`size_bins`) as a PNG of
    :data:`SIZE_PX` to ``path`` (plainly: the caller makes it atomic). No values: the empty, labelled axes."""
    from PIL import Image, ImageDraw

    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size:
        counts, edges = np.histogram(values, bins=size_bins(values.size))
    else:
        counts, edges = np.zeros(0, int), np.array([0.0, 1.0])
    top = max(1, int(counts.max()) if counts.size else 1) * 1.05

    W, H = SIZE_PX
    left, upper, right, lower = MARGINS_PX
    x0, x1, y0, y1 = left, W - right, H - lower, upper  # plot area in px (y0: the zero line)
    lo, hi = float(edges[0]), float(edges[-1])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5

    def px_x(v):
        return x0 + (np.asarray(v, float) - lo) * (x1 - x0) / (hi - lo)

    def px_y(c):
        return y0 - np.asarray(c, float) * (y0 - y1) / top

    im = Image.new("RGB", SIZE_PX, "white")
    draw = ImageDraw.Draw(im)
    small, large = _fonts()
    if counts.size:
        ex = np.round(px_x(edges)).astype(int)
        cy = np.round(px_y(counts)).astype(int)
        for a, b, c_px, c in zip(ex[:-1], ex[1:], cy, counts):
            if c > 0:
                draw.rectangle([int(a), int(c_px), max(int(a), int(b) - 1), y0], fill=ORANGE)
    draw.rectangle([x0, y1, x1, y0], outline=INK)

    xt = nice_ticks(lo, hi, 5)
    for v, text in zip(xt, tick_labels(xt)):
        x = int(round(float(px_x(v))))
        draw.line([x, y0, x, y0 + 4], fill=INK)
        _text(draw, (x, y0 + 6), text, small, "mt")
    yt = nice_ticks(0.0, top, 5, integer=True)
    for v, text in zip(yt, tick_labels(yt)):
        y = int(round(float(px_y(v))))
        draw.line([x0 - 4, y, x0, y], fill=INK)
        _text(draw, (x0 - 6, y), text, small, "rm")
    _text(draw, ((x0 + x1) / 2, H - 6), xlabel, large, "md")
    if title:
        _text(draw, ((x0 + x1) / 2, y1 - 8), title, large, "md")
    # the y label, turned a quarter left: drawn on its own strip and rotated
    box = draw.textbbox((0, 0), ylabel, font=large)
    strip = Image.new("L", (box[2] - box[0] + 2, box[3] - box[1] + 2), 0)
    _text(ImageDraw.Draw(strip), (1, 1), ylabel, large, "lt", fill=255)
    strip = strip.rotate(90, expand=True)
    im.paste(Image.new("RGB", strip.size, INK), (6, (y0 + y1 - strip.size[1]) // 2), strip)
    im.save(path, format="PNG")
