"""Burned-in annotations on real micrographs: the held-out real micrographs of
examples/data/real-tem with a label box, a scale bar or a data strip drawn in (as exported
micrographs often carry), or text written straight onto them (which the check does not
find), segmented by `temtool segment` defaults (annotations ignored) and with
`--keep-annotations` (the previous behaviour). Dice against the hand-drawn mask and the
particle count; the truth keeps the particles the drawing hides, so a perfect result is below
1 there.

    python benchmarks/annotations.py

Prints a Markdown table and the machine it ran on.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from real_data import HELD_OUT, count, pairs  # noqa: E402

from temtool.data.io import read_mask  # noqa: E402
from temtool.inference.choice import ModelChooser
from temtool.inference.pipeline import SegmentOptions, segment_file  # noqa: E402
from temtool.study.metrics import binary_scores_np  # noqa: E402


def draw(x: np.ndarray, kind: str) -> np.ndarray:
    x = x.copy()
    H, W = x.shape
    if kind == "label box":  # black box, white glyphs and bar, bottom right
        x[H - 40 : H - 10, W - 150 : W - 10] = 0
        for k in range(4):
            x[H - 33 : H - 17, W - 140 + 25 * k : W - 125 + 25 * k] = 255
        x[H - 14 : H - 12, W - 140 : W - 40] = 255
    elif kind == "scale bar":  # a white bar on the micrograph
        x[H - 30 : H - 22, W - 130 : W - 30] = 255
    elif kind == "data strip":  # black strip along the bottom with white glyphs
        x[H - 48 :, :] = 0
        for k in range(8):
            x[H - 36 : H - 14, 20 + 40 * k : 40 + 40 * k] = 255
    elif kind in TEXT_KINDS:  # real glyphs (anti-aliased), with no box: what the check misses
        im = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        if kind == "thin bar + white text":  # a 1 px bar with end ticks, its length above it
            y = H - 24
            for line in (
                [(W - 130, y), (W - 30, y)],
                [(W - 130, y - 4), (W - 130, y + 4)],
                [(W - 30, y - 4), (W - 30, y + 4)],
            ):
                d.line(line, fill=255, width=1)
            d.text((W - 80, y - 8), "50 nm", fill=255, font=ImageFont.load_default(size=18), anchor="md")
        elif kind == "white text":
            d.text((W - 20, H - 15), "50 nm", fill=255, font=ImageFont.load_default(size=22), anchor="rd")
        else:  # black text: acquisition data written straight onto the micrograph
            d.text(
                (W - 20, H - 15), "200 kV  x50k", fill=0, font=ImageFont.load_default(size=20), anchor="rd"
            )
        x = np.asarray(im).astype(x.dtype)
    return x


TEXT_KINDS = ("thin bar + white text", "white text", "black text")


def main() -> None:
    os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())  # the shipped model
    chooser = ModelChooser(None)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, (img, truth) in pairs(HELD_OUT).items():
            n_true = count(truth)
            for kind in ("none", "label box", "scale bar", "data strip", *TEXT_KINDS):
                f = tmp / f"{name}.png"
                Image.fromarray(np.clip(draw(img, kind), 0, 255).astype(np.uint8)).save(f)
                for ignore in (True, False):
                    r = segment_file(f, tmp / "out", chooser, SegmentOptions(ignore_annotations=ignore))
                    pred = read_mask(tmp / "out" / f"{name}_mask.png")
                    dice = binary_scores_np(truth, pred)["dice"]
                    rows.setdefault((kind, ignore), []).append((dice, r["particles"], n_true))
    print("| drawn in | annotations | mean Dice | particles found (truth), 4 micrographs |")
    print("|---|---|---|---|")
    for (kind, ignore), v in rows.items():
        found = ", ".join(f"{n} ({t})" for _, n, t in v)
        print(f"| {kind} | {'ignored' if ignore else 'kept'} | {np.mean([x[0] for x in v]):.3f} | {found} |")
    print()
    print(machine())


if __name__ == "__main__":
    main()
