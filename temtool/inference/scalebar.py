"""The pixel size from a burned-in scale bar: its label read by OCR, its length measured in px.

Most micrographs that circulate are PNG/JPEG exports and figure panels with no calibration in the
file, only a bar with a label such as "50 nm", "0.2 µm" or "5 Å". :func:`read_scale_bar` reads
every line of text in the image (RapidOCR: detection and recognition models shipped inside the
``rapidocr-onnxruntime`` wheel, run on ONNX Runtime; nothing is downloaded), keeps the lines that
are a length and a unit (:func:`parse_length_nm`), and for each looks for its bar nearby: the
longest solid horizontal stroke of the label's ink colour, close above, below or beside it
(:func:`find_bar`). One label with one bar gives the pixel size, label value / bar length.

Never a guess: no label, a unit it does not know, a label without a bar, a bar shorter than
:data:`MIN_BAR_PX`, or labels that disagree leave the pixel size unknown, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from temtool.image.resample import resample

__all__ = ["ScaleBar", "find_bar", "parse_length_nm", "read_scale_bar", "MIN_BAR_PX"]

MIN_BAR_PX = 20  # a shorter bar cannot give the pixel size to a few per cent (1 px of 20: 5%)
BAR_ASPECT = 3.0  # a bar is at least this many times longer than thick
ISOLATION = 0.5  # a bar's surroundings, three rows above and below, are at most this much ink
AMBIGUOUS = 0.8  # a label box's two extremes about as far from its ground: either may be the ink
RUN_TOLERANCE_PX = 2  # the rows of one bar start and stop within this of each other
AGREEMENT = 0.03  # labels whose pixel sizes differ by more than this disagree
SEARCH_TEXT_HEIGHTS = 4.0  # how far from its label a bar may lie (in label heights, vertically)
OCR_MAX_SIDE_PX = 1024  # larger images are binned for reading (their labels are large too)

_UNITS_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "å": 0.1, "a": 0.1, "ang": 0.1}
_LABEL = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*(nm|um|µm|μm|å|a|ang)\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?)\s*(nm|um|µm|μm|å)(?!\w)", re.IGNORECASE)
_LENGTH_LIKE = re.compile(r"^\s*\d+(?:[.,]\d+)?\s*[a-zµμå]{1,3}\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ScaleBar:
    """What the scale bar gave: ``pixel_size_nm`` (None: unknown, ``reason`` says why), the
    text read, the label's value in nm and the bar's length and box ``(row, col, h, w)`` in px."""

    pixel_size_nm: float | None
    reason: str
    text: str | None = None
    length_nm: float | None = None
    bar_px: int | None = None
    bar_box: tuple[int, int, int, int] | None = None
    others: tuple = field(default_factory=tuple)  # the other labels read, for the record

    def as_dict(self) -> dict:
        return {
            "pixel_size_nm": self.pixel_size_nm,
            "text": self.text,
            "length_nm": self.length_nm,
            "bar_px": self.bar_px,
            "reason": self.reason,
        }


def parse_length_nm(text: str) -> tuple[float | None, str | None]:
    """The length a label such as "50 nm", "0.2µm", "200NM", "5 Å" or "2,5 nm" says, in nm, or
    ``(None, why)``: why is None when the text is not a length at all, else what is wrong with
    it (a unit temtool does not know)."""
    text = re.sub(r"(\d)\.(?=\s*[a-zA-Zµμ])", r"\1", text)  # "10.nm": OCR's stray dot
    m = _LABEL.match(text.replace("\u00c5", "å").replace("\u212b", "å"))
    if m:
        value = float(m.group(1).replace(",", "."))
        if value <= 0:
            return None, f"label {text!r} says a length of zero"
        return value * _UNITS_NM[m.group(2).lower()], None
    if _LENGTH_LIKE.match(text) and not text.strip().isdigit():
        return None, f"label {text!r}: a unit temtool does not know (nm, µm, um, Å)"
    return None, None


def _lines(boxes: list) -> list[tuple[str, tuple[int, int, int, int]]]:
    """OCR boxes ``(polygon, text, score)`` merged into lines: boxes that overlap vertically by
    half their height and lie within 1.5 heights of each other join, left to right (OCR often
    returns "200" and "nm" apart). Returns ``(text, (r0, c0, r1, c1))``."""
    items = []
    for poly, text, _ in boxes:
        p = np.asarray(poly, float)
        items.append([text, int(p[:, 1].min()), int(p[:, 0].min()), int(p[:, 1].max()), int(p[:, 0].max())])
    items.sort(key=lambda t: t[2])
    out: list[list] = []
    for t in items:
        for line in out:
            h = min(t[3] - t[1], line[3] - line[1])
            overlap = min(t[3], line[3]) - max(t[1], line[1])
            if h > 0 and overlap >= 0.5 * h and -h <= t[2] - line[4] <= 1.5 * h:
                line[0] += " " + t[0]
                line[1:] = [min(line[1], t[1]), line[2], max(line[3], t[3]), max(line[4], t[4])]
                break
        else:
            out.append(list(t))
    return [(t[0], (t[1], t[2], t[3], t[4])) for t in out]


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of True in a boolean row."""
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def find_bar(
    image: np.ndarray, text_box: tuple[int, int, int, int], other_text: tuple = ()
) -> tuple[int, int, int, int] | None:
    """The box ``(row, col, h, w)`` of the scale bar belonging to a label at ``text_box``
    ``(r0, c0, r1, c1)``, or None. The bar is a horizontal stroke in the label's ink colour: runs
    of ink in consecutive rows that start and stop within :data:`RUN_TOLERANCE_PX` of each other,
    at least :data:`MIN_BAR_PX` and one label height long, at most 1.5 label heights thick and
    :data:`BAR_ASPECT` times longer than thick, within :data:`SEARCH_TEXT_HEIGHTS` label heights
    above or below the label and overlapping or beside it. End caps are part of the bar; a dotted
    ruler is not a bar. The longest such stroke wins. The ink colour is the label box's extreme
    (dark or bright) that lies further from its ground (the median of the box's edge), thresholded
    halfway to that ground (the other extreme next, when the two are about as far); then, for a
    label printed on a box, the box's colour, thresholded halfway to the median of the search
    window (not the box's own margins). A stroke lying half inside ``other_text`` (the boxes of
    the other lines read) is part of a letter, not a bar."""
    x = np.asarray(image, np.float32)
    H, W = x.shape
    r0, c0, r1, c1 = (max(0, v) for v in text_box)
    th = max(4, r1 - r0)
    box = x[r0 : r1 + 1, c0 : c1 + 1]
    if box.size < 4:
        return None
    lo, hi = np.percentile(box, [2, 98])
    mid = float(np.median(np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])))  # its ground
    if max(mid - lo, hi - mid) < 1e-6:
        return None
    reach = int(SEARCH_TEXT_HEIGHTS * th)
    wr0, wr1 = max(0, r0 - reach), min(H, r1 + reach + 1)
    span = max(2 * (c1 - c0), 0.4 * W)  # bars are often longer than their labels
    wc0, wc1 = max(0, int(c0 - span)), min(W, int(c1 + span) + 1)
    ground = float(np.median(x[wr0:wr1, wc0:wc1]))  # what a bar in the box's colour stands out from
    # the label's ink: the box's extreme further from its median (both, in turn, when the two are
    # within AMBIGUOUS of each other); then, for a label printed on a box of its own (far from
    # the window's median), the box's colour
    dark, bright = ((lo + mid) / 2, True, "ink"), ((hi + mid) / 2, False, "ink")
    tries = [dark, bright] if mid - lo > hi - mid else [bright, dark]
    if min(mid - lo, hi - mid) < AMBIGUOUS * max(mid - lo, hi - mid):
        tries = tries[:1]
    if abs(mid - ground) > 0.5 * max(mid - lo, hi - mid):
        tries.append(((mid + ground) / 2, mid < ground, "box"))
    window = x[wr0:wr1, wc0:wc1]
    for level, is_dark, colour in tries:
        found = []
        ink = window < level if is_dark else window > level
        for bar in _strokes(ink, th, (wc0 > 0, wc1 < W)):
            row, col, h, w = bar[0] + wr0, bar[1] + wc0, bar[2], bar[3]
            if max(col - c1, c0 - (col + w), 0) > 2 * th:  # horizontal distance to the label
                continue
            if any(_inside((row, col, h, w), t) for t in other_text):
                continue
            on_label = row <= r1 and row + h > r0 and col <= c1 and col + w > c0
            if on_label and h >= 0.5 * th:  # the box the label is printed on, not a bar
                continue
            gap = max(r0 - (row + h), row - r1, 0)
            if colour == "box" and gap < th and col < c1 and col + w > c0:  # the box's own margin
                continue
            found.append((row, col, h, w))
        if found:
            return max(found, key=lambda bar: bar[3])  # the longest
    return None


def _inside(bar: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    """Whether a stroke ``(row, col, h, w)`` lies half inside a text box ``(r0, c0, r1, c1)``."""
    row, col, h, w = bar
    middle = row + h / 2
    overlap = min(col + w, box[3]) - max(col, box[1])
    return box[0] <= middle <= box[2] and overlap >= 0.5 * w


def _strokes(ink: np.ndarray, th: int, clipped: tuple[bool, bool]) -> list[tuple[int, int, int, int]]:
    """The bar-like strokes ``(row, col, h, w)`` in a window's ink mask (see
    :func:`find_bar`): consistent runs in consecutive rows, isolated above and below (three rows
    off, at most :data:`ISOLATION` of the span is ink), so that the edge of a region or a slice
    through a particle is not taken for a bar; a stroke within three rows of the window's top or
    bottom cannot be told from a region the edge cuts, and is not taken. ``clipped``: whether the
    window's left and right sides cut the image (a run touching them is part of something
    larger)."""
    min_len = max(MIN_BAR_PX, th)
    groups: list[list] = []  # [first row, last row, starts, stops]
    for i in range(ink.shape[0]):
        for a, b in _runs(ink[i]):
            if b - a < min_len or (a == 0 and clipped[0]) or (b == ink.shape[1] and clipped[1]):
                continue
            for g in groups:
                if (
                    g[1] == i - 1
                    and abs(g[2][-1] - a) <= RUN_TOLERANCE_PX
                    and abs(g[3][-1] - b) <= RUN_TOLERANCE_PX
                ):
                    g[1] = i
                    g[2].append(a)
                    g[3].append(b)
                    break
            else:
                groups.append([i, i, [a], [b]])
    out = []
    for first, last, starts, stops in groups:
        h = last - first + 1
        a, b = int(np.median(starts)), int(np.median(stops))
        w = b - a
        if h > 1.5 * th or w < BAR_ASPECT * h:
            continue
        above, below = first - 3, last + 3
        if above < 0 or below >= ink.shape[0]:  # too close to the window's (or image's) edge to tell
            continue
        if ink[above, a:b].mean() > ISOLATION or ink[below, a:b].mean() > ISOLATION:
            continue
        out.append((first, a, h, w))
    return out


def _contains(outer: tuple, inner: tuple) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _labels(lines: list, problems: list) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    """The lines that are a length label, and the length tokens inside longer lines (a
    microscope's data bar: "X25,000 1µm WD 3.1mm"), each with its length in nm and its box (a
    token's box: its share of the line's width). What looks like a label with a unit it does
    not know goes to ``problems``."""
    out = []
    for text, (r0, c0, r1, c1) in lines:
        length_nm, why = parse_length_nm(text)
        if why:
            problems.append(why)
        if length_nm is not None:
            out.append((text, length_nm, (r0, c0, r1, c1)))
            continue
        n = max(1, len(text))
        for m in _TOKEN.finditer(text):
            a, b = c0 + (c1 - c0) * m.start() / n, c0 + (c1 - c0) * m.end() / n
            out.append((m.group(0), parse_length_nm(m.group(0))[0], (r0, int(a), r1, int(np.ceil(b)))))
    return out


def _ocr():
    """The RapidOCR engine, made once (its models load in ~0.5 s), or None if not installed."""
    global _ENGINE
    if _ENGINE is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            return None
        # labels are horizontal: no angle classifier (chosen on benchmarks/scale_bar.py: as many
        # labels read, in less time, as with it or with detection on smaller images)
        _ENGINE = RapidOCR(use_cls=False)
    return _ENGINE


_ENGINE = None


def read_scale_bar(image: np.ndarray, ocr=None) -> ScaleBar:
    """The pixel size from ``image``'s scale bar (see the module doc). ``ocr``: a callable taking
    an 8-bit image and returning RapidOCR's ``(boxes, timing)`` (default: the shipped engine)."""
    ocr = ocr or _ocr()
    if ocr is None:
        return ScaleBar(None, "no OCR engine (pip install rapidocr-onnxruntime)")
    x = np.asarray(image, np.float32)
    if x.ndim != 2 or min(x.shape) < 16:
        return ScaleBar(None, "image too small for a scale bar")
    k = max(1, int(np.ceil(max(x.shape) / OCR_MAX_SIDE_PX)))  # large micrographs: read binned
    small = x if k == 1 else resample(x, (max(1, x.shape[0] // k), max(1, x.shape[1] // k)))
    lo, hi = np.percentile(small, [0, 100])
    grey = (
        np.zeros(small.shape, np.uint8) if hi <= lo else ((small - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    )
    boxes, _ = ocr(grey)
    back = np.array([x.shape[1] / small.shape[1], x.shape[0] / small.shape[0]])  # (col, row) to x's px
    boxes = [(np.asarray(poly, float) * back, t, p) for poly, t, p in boxes or []]
    found, problems = [], []
    lines = _lines(boxes)
    for text, length_nm, box in _labels(lines, problems):
        bar = find_bar(x, box, tuple(b for t, b in lines if not _contains(b, box)))
        if bar is None:
            problems.append(f"label {text!r} read, but no bar of at least {MIN_BAR_PX} px beside it")
            continue
        found.append((text.strip(), length_nm, bar))
    if not found:
        return ScaleBar(None, problems[0] if problems else "no scale-bar label (a length and a unit) read")
    sizes = [length / bar[3] for _, length, bar in found]
    if max(sizes) > min(sizes) * (1 + AGREEMENT):
        said = ", ".join(f"{t!r} over {b[3]} px" for t, _, b in found)
        return ScaleBar(None, f"scale bars disagree ({said})", others=tuple(t for t, _, _ in found))
    text, length_nm, bar = max(found, key=lambda f: f[2][3])  # the longest bar measures best
    px = length_nm / bar[3]
    return ScaleBar(
        px,
        f"scale bar {text!r} over {bar[3]} px",
        text=text,
        length_nm=length_nm,
        bar_px=int(bar[3]),
        bar_box=tuple(int(v) for v in bar),
        others=tuple(t for t, _, _ in found if t != text),
    )
