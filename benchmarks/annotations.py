"""Burned-in annotations on real micrographs: the held-out real micrographs of
examples/data/real-tem with a label box, a scale bar or a data strip drawn in (as exported
micrographs often carry), segmented by `temtool segment` defaults (annotations ignored) and
with `--keep-annotations` (the previous behaviour). Dice against the hand-drawn mask and the
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
from PIL import Image  # noqa: E402
from real_data import HELD_OUT, count, pairs  # noqa: E402

from temtool.data.io import read_mask  # noqa: E402
from temtool.metrics import binary_scores_np  # noqa: E402
from temtool.segment import ModelChooser, segment_file  # noqa: E402


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
    return x


def main() -> None:
    os.environ.setdefault("TEMTOOL_CACHE", tempfile.mkdtemp())  # the shipped model
    chooser = ModelChooser(None)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, (img, truth) in pairs(HELD_OUT).items():
            n_true = count(truth)
            for kind in ("none", "label box", "scale bar", "data strip"):
                f = tmp / f"{name}.png"
                Image.fromarray(np.clip(draw(img, kind), 0, 255).astype(np.uint8)).save(f)
                for ignore in (True, False):
                    r = segment_file(f, tmp / "out", chooser, ignore_annotations=ignore)
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
